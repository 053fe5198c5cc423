"""Gradient accumulation over uneven micro-batches: sum, then divide once by the total count."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer

from linreg import accumulate, checks, loss, model
from linreg._book import BATCH_SIZE
from linreg.kinds.late import late
from linreg.kinds.runs import copy_params, params_like
from linreg.kinds.training_loop import (
    LINEAR,
    NO_KNOWN,
    TRAINING_LOOPS,
    Batching,
    Judged,
    Reference,
    Step,
    Wanted,
    beside_a_sum,
    close,
    compare,
    crosses,
    full_rows,
    loss_of,
    options_of,
    reduced,
    summed_means,
    unjudged_beside_a_sum,
    unreached_why,
    unscaled,
    weights_of,
    wide_run,
)
from linreg.kinds.training_loop.shared import tallied, tally
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

JUDGED = "a step of two kinds of rows"  # what the property judges (its not-judged reason)

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def accumulate_grad_mean_of_means(
    micro_batches: Iterator[tuple[Tensor, Tensor]] | Sequence[tuple[Tensor, Tensor]],
    w: Tensor,
    b: Tensor,
) -> int:
    """Mistake: `loss = mean(l_i.mean() for each micro-batch)`: short micro-batches weigh more."""
    means = [loss.squared_loss(model.linreg(X, w, b), y).mean() for X, y in micro_batches]
    (sum(means) / len(means)).backward()  # type: ignore[union-attr]
    return len(means)


def loop_mean_of_micro_means(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: each micro-batch's mean loss / the number of micro-batches (of 2 rows)."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            micro = list(zip(X.split(2), y.split(2), strict=True))
            for Xm, ym in micro:
                (loss_of(model(Xm), ym) / len(micro)).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def full_batch_gradient(target: Target, case: dict[str, Any]) -> None:
    """Accumulating over the micro-batches gives the full batch's gradient of the mean loss."""
    X, y = case["features"], case["labels"]
    w, b = copy_params(case["params"])
    want = torch.autograd.grad(F.mse_loss(X @ w + b, y) / 2, (w, b))  # squared_loss has a 1/2
    target.fn(list(zip(X.split(case["sizes"]), y.split(case["sizes"]), strict=True)), w, b)
    checks.check_grads_close([w.grad, b.grad], want)


def _book() -> dict[str, Any]:
    sizes = [BATCH_SIZE, BATCH_SIZE, 3]
    X, y = _kit.book(sum(sizes))
    return {"features": X, "labels": y, "sizes": sizes, "params": params_like(X, 0)}


def weighs_every_row_alike(target: Target, batching: Batching) -> None:
    """With two kinds of rows, each step applies the mean of its own rows' gradients.

    Judged beside the others: a step that applies a multiple of that mean weighs its rows
    alike (the multiple is mean-vs-sum's or short-last-batch's to judge), one that adds a
    multiple of it to what it found in .grad is grad-zeroing's, and a window longer than a full
    one, or across an epoch's end with the epoch's left-over carried into it unzeroed, is
    short-last-batch's; here fails any other step that weighs its own rows unequally (a window
    across an epoch's end, as Ignite counts them, too). One overlap stays: a window holding an
    epoch's short last batch, divided by its count of batches, is a mean of means and, where
    that count is the nominal one, short-last-batch's too; the two read alike, so a
    short-last-batch failure leaves this property not judged (requires)."""
    options = options_of(target)

    def judged(j: int, steps: list[Step]) -> bool:
        return steps[j].rows <= full_rows(target, batching, steps)

    def excused(j: int, verdicts: Sequence[Judged | None], run: Wanted, by: float | None) -> bool:
        v, step = verdicts[j], run.seen.steps[j]
        if v is None or v.ratio is not None or v.stale or (v.carried and v.own is not None):
            return True
        if len(set(step.row_keys)) < 2 and not step.unreached:
            return True  # rows of one kind, all reached: no weighting, its scale's to judge
        if run.ref is not None and run.ref.weights is None and _unlike_targets(step, run.ref):
            tally(batching, **{UNLIKE: 1})  # the loop's own references, rows of unlike counts
            return True  # of targets: weighed by them or alike, the loss's (not seen)
        if crosses(batching, options.drop_last, run.seen.steps, j) and v.carried:
            return True  # an epoch's left-over carried, unzeroed, into it: short-last-batch's
        if run.seen.broadcast and not v.carried and len(step.sizes) == 1:
            return True  # one micro-batch, whose loss broadcast predictions against labels:
            # each row's loss holds the others' labels, which reads as unequal weights
            # (label-shape's); no mean of micro-batch means is in one
        if (
            not v.carried
            and run.ref is not None
            and unscaled(target, batching, run, verdicts)
            and weights_of(step, run.ref, reduced(target) == "sum", v.reading) is None
        ):
            # no weighting of its rows at all, beside full steps of no scale: a term summed
            # beside a mean (mean-vs-sum's, which names it on identical rows); not judged here
            beside_a_sum(batching, JUDGED)
            return True
        # its micro-batches' means added up undivided: mean-vs-sum's k-fold scale, which over
        # micro-batches of unequal counts is also a mean of means times k: one mistake, named
        # there (its fix, dividing by the step's rows or targets, mends both)
        summed = (
            summed_means(step, run.ref) if run.ref is not None and len(step.calls) > 1 else None
        )
        reading = v.reading
        if reading is not None and v.carried and step.carried is not None:
            reading = reading - step.carried  # its own part: what it found is grad-zeroing's
        return summed is not None and close(reading, summed, run.tol, run.scale * len(step.calls))

    def explain(j: int, v: Judged, steps: list[Step]) -> str:
        if steps[j].unreached:  # seen, not guessed from the weights
            return unreached_why(steps[j])
        if len(steps[j].sizes) == 1:  # one micro-batch: no mean of means can be the cause
            return f"weighs the rows of its one micro-batch unequally: it {NO_KNOWN}"
        return (
            "weighs the rows of a step unequally (a mean of micro-batch means, over "
            "micro-batches of unequal sizes?): sum the per-row losses and divide once by the "
            "step's number of rows"
        )

    compare(target, batching, judged, explain, relative=True, excused=excused)


UNLIKE = "own references, unlike counts of targets"


def _unlike_targets(step: Step, ref: Reference) -> bool:
    """Return whether a step's rows count unlike numbers of labelled targets (ref.labelled, set
    with no weights where each row's reference is the loop's own: references._own_labelled)."""
    if ref.labelled is None:
        return False
    return len({ref.labelled.get(key) for key in set(step.row_keys)}) > 1


def _unjudged(target: Target) -> str | None:
    """Return why the property held on nothing it could judge (None: it judged): steps whose
    rows count unlike targets beside references of the loop's own, else as a property that
    excuses steps beside a sum (unjudged_beside_a_sum)."""
    if tallied(UNLIKE):
        return (
            "not judged: each row's reference was the loop's own gradient, and its rows count "
            "unlike numbers of targets: whether a step weighs them by their targets (a token "
            "mean) or alike (a mean of each row's mean) is the loss's, which the audit could "
            "not find (name it with loss= to judge it)"
        )
    return unjudged_beside_a_sum(JUDGED)(target)


PROPERTIES = (
    Property(
        name="accumulating over micro-batches gives the full batch's gradient",
        kind="accumulate-grad",
        check=full_batch_gradient,
        examples=_kit.drawn("micro_batches"),
        holds_for=(
            Target(late("accumulate.accumulate_grad"), "accumulate-grad", name="accumulate_grad"),
        ),
        refuted_by=(
            Variant(accumulate_grad_mean_of_means, "accumulate.accumulate_grad", "accumulate-grad"),
        ),
        book=_book,
    ),
    Property(
        name="with two kinds of rows each step applies the mean of its own rows' gradients",
        kind="training-loop",
        check=weighs_every_row_alike,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(Variant(loop_mean_of_micro_means, None, "training-loop", LINEAR),),
        book=lambda: Batching((0, 0, 1, 1, 0, 1, 0), 3, 1, 0),
        requires=("non-leaf-params", "short-last-batch"),
        unjudged=_unjudged,
        last=lambda options: (wide_run(options),),  # chunks of a batch of its own: uneven
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Accumulate over micro-batches of sizes 10, 10, 3; measure each recipe's gradient error."""
    sizes = [BATCH_SIZE, BATCH_SIZE, 3]
    X, y = _kit.book(sum(sizes))
    errors = {}
    for fn in (accumulate.accumulate_grad, accumulate_grad_mean_of_means):
        w, b = model.init_params(2, generator=_kit.gen(), dtype=X.dtype)
        want = torch.autograd.grad(((X @ w + b - y) ** 2 / 2).mean(), (w, b))
        fn(list(zip(torch.split(X, sizes), torch.split(y, sizes), strict=True)), w, b)
        errors[fn.__name__] = max(
            float((p.grad - g).abs().max())  # type: ignore[operator]
            for p, g in zip((w, b), want, strict=True)
        )
    ok = errors["accumulate_grad"] < 1e-12 < errors["accumulate_grad_mean_of_means"]
    return Evidence(
        id="micro-batch-accumulation",
        expected=(
            f"over micro-batches of sizes {sizes}, sum / total count gives the full-batch gradient "
            "(1e-12); the mean of means does not"
        ),
        observed=(
            f"largest gradient error: sum / count {errors['accumulate_grad']:.1e}, mean of means "
            f"{errors['accumulate_grad_mean_of_means']:.3g}"
        ),
        ok=ok,
        figures={"gradient_error": errors, "micro_batch_sizes": sizes},
    )


PITFALL = Pitfall(
    id="micro-batch-accumulation",
    title="Gradient accumulation over uneven micro-batches",
    explanation=(
        "Accumulating gradients over micro-batches of different sizes, the mean of the "
        "per-micro-batch mean losses weighs the examples of a short micro-batch more than the "
        "others, so the gradient is not the full batch's. Fix: sum the per-example losses and "
        "divide once by the total count (the loss-normalisation bug fixed in Hugging Face "
        "transformers in 2024)."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=11,
)
