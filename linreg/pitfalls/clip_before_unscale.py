"""Clipping with a loss scaler: unscale the gradients first, then clip them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from linreg.checks import CheckFailed
from linreg.kinds.training_loop import (
    LINEAR,
    Batching,
    close,
    describe,
    factor,
    loss_of,
    options_of,
    wanted,
)
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

MAX_NORM = 1.0  # the clip the loops below ask for (a common choice: transformers' default)

# --- the correct loop and the wrong variant ---------------------------------------------------


def fit_scaled_clipped(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """With a GradScaler: scale the loss, backward, unscale_, clip, step, update."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            scaler.scale(loss_of(model(X), y)).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(optimizer)  # the true gradients, before the clip measures them
            nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
            scaler.step(optimizer)
            scaler.update()


# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def loop_clip_before_unscale(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: clip_grad_norm_ on the still-scaled gradients; scaler.step unscales after."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            scaler.scale(loss_of(model(X), y)).backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
            scaler.step(optimizer)
            scaler.update()


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def unscales_before_clipping(target: Target, batching: Batching) -> None:
    """Where a GradScaler unscales, nothing has clipped the gradients backward() left: an
    update whose gradient was right before unscale_ and is smaller after it (by more than the
    scale) was clipped while still scaled."""
    run = wanted(target, batching)
    if run.ref is None:
        return
    seen, tol = run.seen, run.tol
    for j, (step, want) in enumerate(zip(seen.steps, run.wants, strict=True)):
        before, got = step.before_clipping, step.unscaled
        if step.scale is None or before is None or got is None or want is None:
            continue  # no loss scaler unscaled this update: nothing to judge
        scale = float(want.abs().max())
        if not close(before, want, tol, scale) or close(got, want, tol, scale):
            continue  # right after unscale_, or not right before it: not this mistake
        s = factor(got, before, tol)
        changed = "unlike" if s is None else f"{s:.3g} times"
        raise CheckFailed(
            f"on {describe(batching, options_of(target))}, step {j + 1} of {len(seen.steps)}: "
            f"GradScaler.unscale_ found gradients {changed} what backward() left divided by the "
            f"scale ({step.scale:g}), which was the correct gradient: they were changed while "
            f"still scaled. clip_grad_norm_ before unscale_ measures a norm {step.scale:g} "
            "times the true one, so it clips nearly every step, and far below max_norm once "
            "unscaled: call scaler.unscale_(optimizer) before clipping",
            {"factor": s, "scale": step.scale, "step": j + 1},
        )


FIT_SCALED = Target(fit_scaled_clipped, "training-loop", LINEAR, "fit_scaled_clipped(nn.Linear)")

PROPERTIES = (
    Property(
        name="a loss scaler unscales the gradients backward() left: nothing clips them before",
        kind="training-loop",
        check=unscales_before_clipping,
        examples=_kit.training_runs,
        holds_for=(FIT_SCALED,),
        refuted_by=(Variant(loop_clip_before_unscale, None, "training-loop", LINEAR),),
        book=lambda: Batching((0, 0, 1, 1, 0), 2, 1, 0),
        requires=("non-leaf-params",),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def _applied_norm(fit: Any) -> tuple[float, float]:
    """Return one step's true gradient norm and the norm of the gradient the step applied."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    X = torch.tensor([[1.0, -0.5], [2.0, 0.5], [-1.0, 1.5]])
    y = torch.tensor([[4.2], [1.0], [-2.0]])
    true = torch.autograd.grad(loss_of(model(X), y), list(model.parameters()))
    applied: list[Tensor] = []

    def record(opt: Optimizer, args: Any, kwargs: Any) -> None:
        applied.extend(p.grad.detach().clone() for p in model.parameters() if p.grad is not None)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    handle = optimizer.register_step_pre_hook(record)
    try:
        fit(model, [(X, y)], optimizer, num_epochs=1)
    finally:
        handle.remove()
    return float(torch.cat([g.reshape(-1) for g in true]).norm()), float(
        torch.cat([g.reshape(-1) for g in applied]).norm()
    )


def demo() -> Evidence:
    """One step of each loop on three rows: the norm of the gradient each applied."""
    true, right = _applied_norm(fit_scaled_clipped)
    _, wrong = _applied_norm(loop_clip_before_unscale)
    scale = torch.amp.GradScaler("cpu").get_scale()
    ok = abs(right - min(true, MAX_NORM)) < 1e-4 * true and wrong < 1e-3 * right
    return Evidence(
        id="clip-before-unscale",
        expected=(
            f"unscale_ then clip applies min(|g|, max_norm = {MAX_NORM:g}); clipping the scaled "
            f"gradient applies max_norm / scale = {MAX_NORM / scale:.3g} in norm"
        ),
        observed=(
            f"true gradient norm {true:.4g}; applied: unscale then clip {right:.4g}, clip "
            f"before unscale {wrong:.3g} ({right / wrong:.0f}x smaller)"
        ),
        ok=ok,
        figures={"true_norm": true, "unscale_then_clip": right, "clip_before_unscale": wrong},
    )


PITFALL = Pitfall(
    id="clip-before-unscale",
    title="Clipping the gradients a loss scaler has not unscaled",
    explanation=(
        "With mixed precision's GradScaler, backward() leaves the gradients multiplied by the "
        "scale (65536 to start). clip_grad_norm_ called before scaler.unscale_ compares "
        "max_norm with a norm 65536 times the true one, so the clip fires on almost every step "
        "and, once scaler.step unscales, leaves a gradient of norm max_norm / 65536: a clip "
        "65536 times stronger than the one asked for. Fix: scaler.unscale_(optimizer) "
        "before clipping, then scaler.step(optimizer) (PyTorch's AMP recipe)."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=22,
)
