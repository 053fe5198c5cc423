"""The checks the pitfall properties are built from, as plain functions: use them directly too.

Each `check_*` returns quietly when what it checks holds and raises `CheckFailed` (an
AssertionError) saying what it saw when it does not. They need no test framework. The
properties that use them live with their pitfall (`linreg/pitfalls/<id>.py`), which the test
suite, `linreg.audit` and `python -m linreg pitfalls` all run; `tolerance` is the one rule for
comparing results by dtype.
"""

from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from math import ceil
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import BatchSampler, SequentialSampler

from linreg import _validate

Batches = Iterable[tuple[Tensor, Tensor]]
Iterate = Callable[[int, Tensor, Tensor], Batches]  # (batch_size, features, labels) -> batches


class CheckFailed(AssertionError):
    """A property did not hold; `measured` holds what it measured, as plain data, if anything
    can be drawn from it (a training loop's ratio per step)."""

    def __init__(self, message: str, measured: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.measured = measured


class LoopRaised(Exception):
    """The target itself raised: reported once, as the target raising, not as a pitfall."""


# What torch and Python raise when the code has one of the catalogue's pitfalls: such an
# exception is the pitfall's evidence, any other is the target's own error.
SYMPTOMS = (
    "Trying to backward through the graph a second time",  # backward-twice
    "a leaf Variable that requires grad is being used in an in-place operation",  # no-grad-update
    # rebinding, non-leaf-params: a .grad that is None, zeroed or used
    "'NoneType' object has no attribute 'zero_'",
    "'NoneType' object has no attribute 'data'",
    "unsupported operand type(s) for *: 'float' and 'NoneType'",
    "unsupported operand type(s) for /: 'NoneType'",
    "does not require grad and does not have a grad_fn",  # a graph cut (.detach(), no_grad)
)


def is_symptom(e: BaseException) -> bool:
    """Return whether e is what torch or Python raise for one of the catalogue's pitfalls."""
    return any(symptom in str(e) for symptom in SYMPTOMS)


def where(
    e: BaseException, *, file: str | None = None, outside: tuple[str, ...] = ("/torch/", "/linreg/")
) -> str:
    """Return " at FILE:LINE in fn: code" for the deepest frame of e in file, if one is, else
    for the deepest one outside the `outside` folders ("" when there is none)."""
    every = traceback.extract_tb(e.__traceback__)
    frames = [f for f in every if f.filename == file] or [
        f for f in every if not any(folder in f.filename for folder in outside)
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} in {f.name}" + (f": {f.line}" if f.line else "")


def _fail(message: str) -> CheckFailed:
    return CheckFailed(message)


def compared(what: str, got: Tensor, want: Tensor) -> dict[str, Any]:
    """Return what a check compared, as plain data a picture can draw (at most 64 values)."""
    return {
        "compared": what,
        "got": got.detach().double().reshape(-1)[:64].tolist(),
        "expected": want.detach().double().reshape(-1)[:64].tolist(),
    }


# --- batches -----------------------------------------------------------------------------------


def epoch_indices(
    iterate: Iterate, n: int, batch_size: int, *, pairs: bool = True
) -> list[list[int]]:
    """Run one epoch of iterate on an index dataset and return each batch's sample indices.

    Row i of the features holds i, its label -i; with pairs, each batch's labels must be its
    features' own.
    """
    features = torch.arange(n, dtype=torch.float64).reshape(n, 1)  # row i holds i
    labels = -features  # pairs must stay together
    out: list[list[int]] = []
    for k, (X, y) in enumerate(iterate(batch_size, features, labels)):
        if pairs and not torch.equal(y.reshape(-1), -X.reshape(-1)):
            rows = [int(i) for i in X.reshape(-1).tolist()]
            got = [int(-v) for v in y.reshape(-1).tolist()]
            raise _fail(
                f"a batch's labels do not belong to its features: batch {k} holds the "
                f"features of rows {rows[:5]} with the labels of rows {got[:5]}"
            )
        out.append([int(i) for i in X.reshape(-1).tolist()])
    return out


def check_epoch_partition(
    batches: Sequence[Sequence[int]], n: int, batch_size: int, drop_last: bool
) -> None:
    """Check one epoch's batches: a partition of range(n), or all full batches with drop_last."""
    sizes = [len(bt) for bt in batches]
    seen = [i for bt in batches for i in bt]
    if len(set(seen)) != len(seen):
        raise _fail(f"a sample appears twice in one epoch: sizes {sizes}")
    if not set(seen) <= set(range(n)):
        raise _fail("a batch holds an index outside range(n)")
    # With no sample twice and every index in range(n), the sizes settle the rest: all n
    # samples without drop_last, all but the last n % batch_size with it.
    if drop_last:
        if sizes != [batch_size] * (n // batch_size):
            raise _fail(f"drop_last: expected {n // batch_size} full batches, got sizes {sizes}")
    else:
        last = n - batch_size * ((n - 1) // batch_size)
        expected = [batch_size] * (ceil(n / batch_size) - 1) + [last]
        if sizes != expected:
            raise _fail(f"expected batch sizes {expected}, got {sizes}")


def batch_sampler_sizes(n: int, batch_size: int, drop_last: bool) -> list[int]:
    """Return the batch sizes torch's BatchSampler gives for n samples (the oracle)."""
    sampler = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last)
    return [len(bt) for bt in sampler]


def check_sizes_match_batch_sampler(
    batches: Sequence[Sequence[int]], n: int, batch_size: int, drop_last: bool
) -> None:
    """Check the batch sizes equal BatchSampler's for the same n, batch_size and drop_last."""
    ours = [len(bt) for bt in batches]
    theirs = batch_sampler_sizes(n, batch_size, drop_last)
    if ours != theirs:
        raise _fail(f"batch sizes {ours} differ from BatchSampler's {theirs}")


def check_every_sample_seen(
    epochs: Callable[[], Sequence[Sequence[int]]], n: int, max_epochs: int
) -> int:
    """Check that calling epochs() repeatedly sees every sample within max_epochs; return when."""
    unseen = set(range(n))
    for epoch in range(1, max_epochs + 1):
        for bt in epochs():
            unseen.difference_update(bt)
        if not unseen:
            return epoch
    raise _fail(
        f"{len(unseen)} of {n} samples never seen in {max_epochs} epochs, e.g. {sorted(unseen)[:5]}"
    )


# --- trajectories -----------------------------------------------------------------------------


@dataclass
class Trajectory:
    """An on_step callback that records (w, b) after every step, as float64 copies."""

    steps: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def __call__(self, step: int, w: Tensor, b: Tensor) -> None:
        """Record the params after this step."""
        del step
        self.steps.append(
            (
                w.detach().flatten().to(torch.float64, copy=True),
                b.detach().flatten().to(torch.float64, copy=True),
            )
        )


def check_same_trajectory(
    a: Sequence[tuple[Tensor, Tensor]],
    b: Sequence[tuple[Tensor, Tensor]],
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> None:
    """Check two runs took the same number of steps and agree on (w, b) after each one."""
    if len(a) != len(b):
        raise _fail(f"the runs took {len(a)} and {len(b)} steps")
    pairs = zip(a, b, strict=True)  # pragma: no mutate  (lengths checked above)
    for k, (pa, pb) in enumerate(pairs, 1):
        for name, x, y in (("w", pa[0], pb[0]), ("b", pa[1], pb[1])):
            if not torch.allclose(x, y, rtol=rtol, atol=atol):
                gap = float((x - y).abs().max())
                raise _fail(f"step {k}: {name} differs by {gap:.3g} ({x.tolist()} vs {y.tolist()})")


# --- the update step --------------------------------------------------------------------------

UpdateStep = Callable[[list[Tensor], float, int], None]


def tolerance(dtype: torch.dtype, *, steps: bool = False) -> float:
    """Return the relative (and absolute) tolerance for results of dtype: the one rule.

    steps=True: for a result compounded over a run (a loop's params after a dozen steps, a
    gradient read through a model), where rounding adds up.
    """
    return _TOLERANCE[steps].get(dtype, 2e-2 if steps else 1e-2)


# one operation: a few ulps of float64, of float32; a run of a dozen steps: a hundred times more
_TOLERANCE = {
    False: {torch.float64: 1e-12, torch.float32: 1e-5},
    True: {torch.float64: 1e-10, torch.float32: 1e-4},
}


def _params_with_grads(params: object) -> list[Tensor]:
    if not isinstance(params, (list, tuple)) or not all(isinstance(p, Tensor) for p in params):
        raise TypeError(f"params must be a list of tensors, got {type(params).__name__}")
    for i, p in enumerate(params):
        if p.grad is None:
            raise ValueError(f"params[{i}].grad is None: run backward() or set .grad first")
    return list(params)


def check_update_in_place(
    step: UpdateStep,
    params: list[Tensor],
    lr: float,
    batch_size: int,
    *,
    zeroes_grad: bool = True,
    under_no_grad: bool = False,
    divides_by_batch_size: bool = True,
    rtol: float | None = None,
    atol: float = 0.0,
) -> None:
    """Check step changes the caller's params in place to p - lr*grad/B and keeps them leaves.

    params must be leaves that require grad, with .grad set. With zeroes_grad, each grad must
    afterwards be zeros or None (optimizer.zero_grad()); with under_no_grad the step is called
    inside torch.no_grad(), as a trainer that wraps it does; divides_by_batch_size=False
    expects p - lr*grad (a step for the gradient of a mean loss). rtol follows the dtype.
    """
    params = _params_with_grads(params)
    step = _validate.function("step", step)
    lr = _validate.positive_finite("lr", lr)
    batch_size = _validate.positive_int("batch_size", batch_size)
    objects = list(params)
    divisor = batch_size if divides_by_batch_size else 1
    formula = "p - lr*grad/B" if divides_by_batch_size else "p - lr*grad"
    with torch.no_grad():
        before = [p.clone() for p in params]
        expected = [p - lr * p.grad / divisor for p in params]  # type: ignore[operator]
    try:
        with torch.no_grad() if under_no_grad else contextlib.nullcontext():
            step(params, lr, batch_size)
    except Exception as e:
        if not is_symptom(e):  # the step's own error, not a pitfall: reported as the error
            raise LoopRaised(f"the update step raised {type(e).__name__}: {e}{where(e)}") from e
        unchanged = all(
            torch.equal(p.detach(), old)
            for p, old in zip(objects, before, strict=True)  # pragma: no mutate  (same length)
        )
        raise _fail(
            f"the update step raised {type(e).__name__}: {e}"
            + ("; the caller's params did not change" if unchanged else "")
        ) from e
    if len(params) != len(objects):
        raise _fail(f"the update step changed params from {len(objects)} to {len(params)} tensors")
    rows = zip(params, objects, before, expected, strict=True)  # pragma: no mutate  (as above)
    for i, (p, obj, old, want) in enumerate(rows):
        if p is not obj:
            raise _fail(f"params[{i}] was replaced by another tensor")
        tol = tolerance(p.dtype) if rtol is None else rtol
        now = p.detach()
        # relative to the sizes of p and of the step, so that p - step near 0 is no problem
        if not bool(((now - want).abs() <= atol + tol * (old.abs() + (old - want).abs())).all()):
            if torch.equal(now, old):
                raise _fail(
                    f"params[{i}] did not change, expected {formula} = {want.tolist()}: "
                    "an update that rebinds a name (param = param - ...) never reaches it"
                )
            raise CheckFailed(
                f"params[{i}] is {p.tolist()}, expected {formula} = {want.tolist()}",
                compared(f"params[{i}] after the step", now, want),
            )
        if zeroes_grad and p.grad is not None and bool(p.grad.any()):
            raise _fail(f"params[{i}].grad was not zeroed: {p.grad}")
    check_params_are_leaves(params)


def check_params_are_leaves(params: Sequence[Tensor]) -> None:
    """Check each param is a leaf that requires grad and has no grad_fn."""
    for i, p in enumerate(params):
        if not p.is_leaf:  # a tensor with a grad_fn is never a leaf
            raise _fail(f"params[{i}] is not a leaf: grad_fn {p.grad_fn}")
        if not p.requires_grad:
            raise _fail(f"params[{i}] no longer requires grad")


# --- losses and gradients ---------------------------------------------------------------------

Reduction = Literal["none", "mean", "sum"]


def check_loss_per_example(
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    y_hat: Tensor,
    y: Tensor,
    *,
    reduction: Reduction = "none",
    scale: float = 0.5,
    rtol: float | None = None,
) -> None:
    """Check loss_fn(y_hat, y) equals scale * nn.MSELoss(reduction)(y_hat, y reshaped).

    The defaults are the book's squared_loss: (y_hat - y)^2 / 2 per example. With
    reduction="none" any shape with one element per example will do. rtol follows the dtype.
    """
    loss_fn = _validate.function("loss_fn", loss_fn)
    y_hat = _validate.floating_tensor("y_hat", y_hat)
    y = _validate.floating_tensor("y", y)
    reduction = _validate.choice("reduction", reduction, ("none", "mean", "sum"))
    scale = _validate.positive_finite("scale", scale)
    if y.numel() != y_hat.numel():
        raise ValueError(f"y has {y.numel()} elements but y_hat has {y_hat.numel()}")
    got = loss_fn(y_hat, y)
    if not isinstance(got, Tensor):
        raise _fail(f"the loss returned {type(got).__name__}, expected a tensor")
    with torch.no_grad():
        per_example = scale * F.mse_loss(y_hat, y.reshape(y_hat.shape), reduction="none")
        want = per_example if reduction == "none" else getattr(per_example, reduction)()
    n = y_hat.numel()
    broadcast = (
        f": labels of shape {tuple(y.shape)} broadcast against predictions of shape "
        f"{tuple(y_hat.shape)}; reshape y to y_hat's shape"
    )
    flat = y.shape != y_hat.shape
    if got.numel() != want.numel():
        expected = f"{n} (one per example)" if reduction == "none" else "1"
        raise _fail(
            f"loss has shape {tuple(got.shape)}, expected {expected} element(s) for "
            f"reduction={reduction!r}{broadcast if flat else ''}"
        )
    tol = rtol if rtol is not None else max(tolerance(got.dtype), tolerance(y_hat.dtype))

    def close(value: Tensor) -> bool:
        value = value.detach().reshape(want.shape).to(want.dtype)
        return bool(torch.allclose(value, want, rtol=tol, atol=tol * float(want.abs().max())))

    if not close(got):
        gap = float((got.detach().reshape(want.shape) - want).abs().max())  # dtypes promote
        # the labels' shape is to blame when the same loss on reshaped labels is right
        why = broadcast if flat and close(loss_fn(y_hat, y.reshape(y_hat.shape))) else ""
        raise CheckFailed(
            f"loss differs from {scale:g} * (y_hat - y)^2 (reduction={reduction!r}) by "
            f"{gap:.3g}: got {_short(got.detach())}, expected {_short(want)}"
            f"{why or _ratio(got.detach(), want, n, reduction)}",
            compared(f"the loss (reduction={reduction!r})", got.reshape(want.shape), want),
        )


def _short(t: Tensor) -> str:
    values = t.reshape(-1).tolist()
    text = ", ".join(f"{v:.6g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")
    return text if t.ndim == 0 else f"[{text}]"


def _ratio(got: Tensor, want: Tensor, n: int, reduction: Reduction) -> str:
    """Name the likely mistake from the ratio of two losses, or say nothing."""
    total, expected = float(got.sum()), float(want.sum())
    if expected == 0:
        return ""
    r = total / expected
    scale = "the scale is off (0.5 for the book's (y_hat - y)^2 / 2, 1 for nn.MSELoss)"
    known = [
        (2.0, f"twice the expected: {scale}"),
        (0.5, f"half the expected: {scale}"),
    ]
    if reduction == "mean":
        known.append((n, f"{n} times the expected: it sums where a mean was declared"))
    if reduction == "sum":
        known.append((1 / n, f"1/{n} of the expected: it takes the mean where a sum was declared"))
    for factor, what in known:
        if math.isclose(r, factor, rel_tol=1e-4):
            return f" ({what})"
    return ""


def check_grads_close(
    got: Sequence[Tensor | None],
    want: Sequence[Tensor],
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Check each gradient in got is close to its counterpart in want (tolerance by dtype)."""
    if len(got) != len(want):
        raise _fail(f"{len(got)} gradients, expected {len(want)}")
    pairs = zip(got, want, strict=True)  # pragma: no mutate  (lengths checked above)
    for i, (g, e) in enumerate(pairs):
        if g is None:
            raise _fail(f"grad {i} is None")
        tol = tolerance(torch.promote_types(g.dtype, e.dtype))
        if not torch.allclose(
            g, e, rtol=tol if rtol is None else rtol, atol=tol if atol is None else atol
        ):
            raise _fail(f"grad {i} differs by {float((g - e).abs().max()):.3g}")


@dataclass(frozen=True)
class Saved:
    """What autograd saved for backward while a function ran."""

    count: int  # tensors saved
    nbytes: int  # their bytes in all
    new_nbytes: int  # bytes of saved tensors that share no storage with the inputs


def saved_for_backward(fn: Callable[[], Tensor], inputs: Iterable[Tensor]) -> tuple[Tensor, Saved]:
    """Run fn and count the tensors autograd saves for backward, and their bytes."""
    input_storages = {t.untyped_storage().data_ptr() for t in inputs}
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    distinct = {
        t.untyped_storage().data_ptr(): t for t in saved
    }  # a tensor saved twice counts once
    new = [t for ptr, t in distinct.items() if ptr not in input_storages]
    return out, Saved(
        count=len(saved),
        nbytes=sum(t.untyped_storage().nbytes() for t in distinct.values()),
        new_nbytes=sum(t.untyped_storage().nbytes() for t in new),
    )


def check_no_graph(fn: Callable[[], object], inputs: Iterable[Tensor]) -> None:
    """Check fn's result holds no graph: it has no grad_fn, so nothing saved stays alive.

    A result that was detached (`model(x).detach()`) passes: whatever autograd saved while fn
    ran is freed with the graph. A result that is not a tensor (a float) holds no graph either.
    """
    fn = _validate.function("fn", fn)
    out, saved = saved_for_backward(fn, inputs)  # type: ignore[arg-type]
    grad_fn = out.grad_fn if isinstance(out, Tensor) else None
    if grad_fn is not None:
        raise _fail(
            f"the evaluation built a graph ({grad_fn}) holding {saved.count} saved "
            f"tensors, {saved.new_nbytes} bytes beyond its inputs"
        )


def check_converges(got: Sequence[Tensor], target: Sequence[Tensor], *, bound: float) -> None:
    """Check the distance from got to target (all entries, Euclidean) is at most bound."""
    if len(got) != len(target):
        raise _fail(f"{len(got)} tensors to compare with {len(target)}")
    pairs = zip(got, target, strict=True)  # pragma: no mutate  (lengths checked above)
    gap = torch.cat([(g.detach().double() - t.double()).reshape(-1) for g, t in pairs])
    dist = float(gap.norm())
    if not dist <= bound:
        raise _fail(f"distance to the target {dist:.3g} exceeds the bound {bound:.3g}")
