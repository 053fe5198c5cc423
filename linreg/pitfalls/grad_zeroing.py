"""Forgetting grad.zero_(): backward() adds to .grad, so steps use the sum of all gradients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from linreg import checks, data, loss, model, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.kinds.guards import seeded
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS, LoopOptions
from linreg.kinds.training_loop import (
    CLASSIFIER,
    NO_KNOWN,
    TRAINING_LOOPS,
    Batching,
    Judged,
    Step,
    Wanted,
    carries,
    compare,
    describe,
    full_rows,
    loss_of,
    near,
    options_of,
    unequal_weights,
    unreferenced,
    unscaled,
)
from linreg.kinds.twin_rows import TwinRows, follows_the_closed_form
from linreg.kinds.update_step import STEPS, Update, UpdateStepOptions, fresh
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def sgd_without_zero_grad(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: no `param.grad.zero_()`: the next backward adds to this batch's gradient."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size  # type: ignore[operator]


def train_without_zero_grad(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> train.TrainResult:
    """Mistake: the book's loop with an sgd that never calls `param.grad.zero_()`."""
    w, b = params
    result = train.TrainResult(w, b)
    for _ in range(num_epochs):
        for X, y in data.data_iter(batch_size, features, labels):
            loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
            sgd_without_zero_grad([w, b], lr, len(X))
            result.num_steps += 1
        result.losses.append(train.epoch_loss(features, labels, w, b))
    return result


def loop_without_zero_grad(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: no `optimizer.zero_grad()`: each step applies every gradient so far."""
    for _ in range(num_epochs):
        for X, y in loader:
            loss_of(model(X), y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def zeroes_grads(target: Target, update: Update) -> None:
    """After the step each grad is zeros, or None as optimizer.zero_grad() leaves it."""
    params, lr, batch_size = fresh(update)
    try:
        with torch.no_grad():
            target.fn(params, lr, batch_size)
    except Exception:
        return  # a step that raises is judged by the rebinding and no-grad-update properties
    for i, p in enumerate(params):
        if p.grad is not None and bool(p.grad.any()):
            raise checks.CheckFailed(
                f"params[{i}].grad was not zeroed: {p.grad.reshape(-1).tolist()}: the next "
                "backward() adds to it (or say zeroes_grad=False if the loop zeroes)"
            )


def _single_rows(options: LoopOptions) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    if options.full_batch:  # one row, two or three epochs: a step each
        return sts.twin_rows(sizes=st.just((1, 1)), num_epochs=st.integers(2, 3))
    # one epoch of single-row batches: every step follows another, however epochs are handled
    return sts.twin_rows(sizes=st.integers(2, 4).map(lambda n: (n, 1)))


def _book_update() -> Update:
    return Update(_kit.params_with_grads(), 0.03, BATCH_SIZE)


def _book_loop() -> TwinRows:
    return TwinRows.book(2, 1, 2)


def _zeroes(options: UpdateStepOptions) -> str | None:
    return None if options.zeroes_grad else "zeroes_grad=False: the loop zeroes the grads"


def applies_each_steps_own_gradient(target: Target, batching: Batching) -> None:
    """Every full step applies its own rows' gradient alone, nothing a step before left in
    .grad (on identical rows, every full step the same gradient), and all of its rows: none
    zeroed before the step; a short step too, where it found a gradient in .grad as its first
    backward() began, or the loop zeroed it between two backward() calls (its scale is
    otherwise short-last-batch's)."""

    def explain(j: int, v: Judged, steps: list[Step]) -> str:
        s = v.ratio
        if steps[j].zeroed and not (v.stale or v.carried):
            return (
                "zeroes the grads between the backward() calls of one step (zero_grad inside "
                "the accumulation window): the micro-batches before the zeroing weigh 0 in it; "
                "zero them after optimizer.step() alone"
            )
        if v.stale:
            return (
                f"never zeroes the grads: step {j + 1} applies its own gradient plus what the "
                "step before left in .grad"
                + (
                    " (clipped, which shrinks what is left but does not remove it)"
                    if v.clipped
                    else ""
                )
            )
        if s is not None and j > 0 and near(s, j + 1, v.tol):
            return (
                f"never zeroes the grads: step {j + 1} applies the sum of {j + 1} steps' gradients"
            )
        if s is not None and s > 1.5 and near(s, round(s), v.tol):
            return f"adds up {round(s)} steps' gradients: it zeroes them less often than it steps"
        if v.carried:
            return (
                f"never zeroes the grads: step {j + 1} found a gradient in .grad as its first "
                "backward() began, and applied it with its own"
            )
        return NO_KNOWN

    def excused(j: int, verdicts: Sequence[Judged | None], run: Wanted, by: float | None) -> bool:
        """Nothing found in .grad: rows weighed unequally (micro-batch-accumulation's), or a
        step beside a first full step that has no scale (unscaled: mean-vs-sum's failure)."""
        v = verdicts[j]
        return (
            v is not None
            and not (v.carried or v.stale)
            and (unequal_weights(v, batching) or unscaled(target, batching, run, verdicts))
        )

    # full steps, and any step that found a gradient in .grad: the scale of one fed more rows
    # (it took an epoch's left-overs) or fewer (a short window: an epoch's last, or a first
    # window that counts from 0) is short-last-batch's; what it found in .grad is this one's
    seen = compare(
        target,
        batching,
        lambda j, steps: (
            steps[j].rows == full_rows(target, batching, steps)
            or carries(steps[j])
            or steps[j].zeroed
        ),
        explain,
        relative=True,  # a summed loss's scale is mean-vs-sum's: judged here only relative to it
        excused=excused,
        needs_scale=True,
        zeroing=True,
    )
    # no update held a forward with grad (a framework's module fed through a method of its
    # own is watched there: its probe, unwatched, is not judged)
    if seen.steps and not any(step.calls for step in seen.steps):
        raise checks.LoopRaised(
            f"the loop applied gradients in {len(seen.steps)} optimizer step(s) and never "
            "called the model to train: it calls its submodules (model.head(model.body(X))) "
            "or model.forward(X) itself, which the audit does not watch; call the model "
            "(model(X)), whose forward may call its submodules"
        )
    for j, step in enumerate(seen.steps):  # fed nothing since the update before, it applied
        if j > 0 and not step.calls:  # a gradient (a step that applies none is no update)
            raise checks.CheckFailed(
                f"on {describe(batching, options_of(target))}, optimizer step {j + 1} was fed no "
                f"rows since step {j} yet applied a gradient again: the same micro-batches "
                "moved the params twice (optimizer.step() called again on the same "
                "gradients: a second one in the loop, or after scaler.step(optimizer)?)"
            )


PROPERTIES = (
    Property(
        name="after the step each grad is zeros or None",
        kind="update-step",
        check=zeroes_grads,
        examples=_kit.drawn("updates"),
        holds_for=STEPS,
        refuted_by=(Variant(sgd_without_zero_grad, "optim.sgd", "update-step"),),
        book=_book_update,
        applies=_zeroes,
    ),
    Property(
        name="on identical rows, each step uses its own batch's gradient alone",
        kind="loop",
        check=follows_the_closed_form,
        examples=_single_rows,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(Variant(train_without_zero_grad, None, "loop"),),
        book=_book_loop,
        requires=("backward-twice", "rebinding", "mean-vs-sum"),
    ),
    Property(
        name="every full step applies its own rows' gradient alone",
        kind="training-loop",
        check=applies_each_steps_own_gradient,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(Variant(loop_without_zero_grad, None, "training-loop", CLASSIFIER),),
        book=lambda: Batching((0,) * 6, 2, 2, 0),
        requires=("non-leaf-params",),
        unjudged=unreferenced,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Train the book's run with and without zeroing; compare the losses after 3 epochs."""
    X, y = _kit.book(NUM_EXAMPLES)

    def init() -> list[Tensor]:
        return list(model.init_params(2, generator=_kit.gen(1), dtype=X.dtype))

    right = train.train(X, y, generator=_kit.gen(), params=tuple(init())).losses  # type: ignore[arg-type]
    with seeded(0):
        wrong = train_without_zero_grad(X, y, init(), lr=0.03, batch_size=10, num_epochs=3).losses
    ok = right[-1] < 1e-3 and not (wrong[-1] < 100 * right[-1])
    return Evidence(
        id="grad-zeroing",
        expected=(
            "without grad.zero_() each step uses the sum of all gradients so far: after 3 epochs "
            "the "
            "loss is >= 100x the correct run's"
        ),
        observed=f"loss after 3 epochs: with zeroing {right[-1]:.3g}, without {wrong[-1]:.3g}",
        ok=ok,
        figures={"loss_with_zeroing": right[-1], "loss_without_zeroing": wrong[-1]},
        curves={"with grad.zero_()": right, "without grad.zero_()": wrong},
    )


PITFALL = Pitfall(
    id="grad-zeroing",
    title="Forgetting grad.zero_()",
    explanation=(
        "backward() ADDS to .grad. Without zeroing, the gradient used at step k is the sum of the "
        "gradients of all k batches so far, and training follows a different, wrong trajectory. "
        "Fix: zero after the update (sgd does), or call optimizer.zero_grad(), which sets the "
        "grads to None since torch 2.0."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=6,
    plots=True,
)
