"""A run's verdicts: the updates a property picks judged (`judge`, in this folder) against what
each should have applied (`wanted`), and the first miss explained, with the ratios of every
update and its weights on its rows' gradients (`compare`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from linreg.checks import CheckFailed
from linreg.kinds.base import Target
from linreg.kinds.training_loop.batching import Batching, count_of, describe
from linreg.kinds.training_loop.judge import (
    Judged,
    judge,
    means_of_means,
    miscount,
    unequal_weights,
)
from linreg.kinds.training_loop.ledger import Observed, Step
from linreg.kinds.training_loop.one_run import full_step_rows
from linreg.kinds.training_loop.settings import options_of, reduced
from linreg.kinds.training_loop.wanted import Wanted, wanted
from linreg.kinds.training_loop.weights import weights_of

# (j, every step's verdict, the run, the full steps' common ratio or None) -> another's cause
Excuse = Callable[[int, Sequence["Judged | None"], "Wanted", float | None], bool]


def compare(
    target: Target,
    batching: Batching,
    which: Callable[[int, list[Step]], bool],
    explain: Callable[[int, Judged, list[Step]], str],
    *,
    relative: bool = False,
    excused: Excuse | None = None,
    needs_scale: bool = False,
    zeroing: bool = False,
) -> Observed:
    """Judge the steps `which(j, steps)` picks against the reference; explain the first miss
    (`explain(j, verdict, steps)`).

    relative=True judges each step against the correct gradient times the ratio of the run's
    first full step (of its most common size) to it: a scale the loop applies to every step
    alike (a summed loss: mean-vs-sum's) is left to the property that judges the scale, so a
    second mistake is still seen on its own. `excused(j, verdicts, run, by)` says that a
    step's miss is another property's cause (by: that ratio, None where it is 1). With
    needs_scale=True a run whose first full step has no scale to be relative to (on two kinds
    of rows it weighs them unequally: micro-batch-accumulation's) judges nothing. A step the
    loop zeroed inside (Step.zeroed: micro-batches it consumed weigh 0) is grad-zeroing's
    (zeroing=True) alone, and no scale to be relative to.
    """
    run = wanted(target, batching)
    seen, ref, wants, tol, scale = run.seen, run.ref, run.wants, run.tol, run.scale
    if ref is None:
        return seen
    first = None
    rows = full_rows(target, batching, seen.steps)
    full = [  # (a step whose rows have no gradient shows no scale: a hinge's margin met)
        j
        for j, step in enumerate(seen.steps)
        if step.rows == rows and (w := wants[j]) is not None and bool(w.any()) and not step.zeroed
    ]
    chosen = wants[full[0]] if relative and full else None
    if chosen is not None:
        first = judge(seen.steps[full[0]], chosen, tol, scale, *run.clips(full[0]))
    if first is not None and first.carried and first.own is not None:
        first = replace(first, ok=math.isclose(first.own, 1, rel_tol=tol), ratio=first.own)
    if needs_scale and first is not None and not first.ok and unequal_weights(first, batching):
        return seen
    by = first.ratio if first is not None and not first.ok and first.ratio else None
    if by is not None and by > 0:
        wants = [None if w is None else w * by for w in wants]
        scale *= by
    verdicts = [
        None if w is None else judge(step, w, tol, scale, *run.clips(j))
        for j, (step, w) in enumerate(zip(seen.steps, wants, strict=True))
    ]

    def absolutely(j: int) -> bool:
        """Judged relative to the first full step, a step that is right as it is, or whose own
        ratio is a miscount of its targets (on two kinds of rows, each step's own): the first
        full step's scale is mean-vs-sum's, which judges the absolute scale, to name."""
        want = run.wants[j]
        if by is None or want is None:
            return False
        alone = judge(seen.steps[j], want, tol, run.scale, *run.clips(j))
        return alone.ok or bool(miscount(seen.steps[j], ref, alone.ratio, tol))

    bad = [
        j
        for j, v in enumerate(verdicts)
        if v is not None
        and not v.ok
        and which(j, seen.steps)
        and (zeroing or not seen.steps[j].zeroed)
        and not (excused is not None and excused(j, verdicts, run, by))
        and not absolutely(j)
    ]
    if bad:
        j = bad[0]
        v = verdicts[j]
        assert v is not None
        step = seen.steps[j]
        if by is None:  # the notes read absolute ratios
            v = replace(
                v,
                note=miscount(step, ref, v.ratio, tol) or means_of_means(step, ref, v, tol, scale),
            )
        where = describe(batching, options_of(target))
        relative_to = f" times the first full step's {by:.4g}" if by is not None and by > 0 else ""
        weights = None  # a stale step's gradient holds the step before's rows too
        if not v.stale:
            reading = v.reading
            weights = weights_of(step, ref, reduced(target) == "sum", reading)
        measured = {
            "ratios": [None if u is None else u.ratio for u in verdicts],
            "failing": bad,
            "batching": where,
            "reference": ref.source,
            "weights": weights,
        }
        why = v.note or explain(j, v, seen.steps)
        if step.unreached and why == NO_KNOWN:  # what the ledger saw, where no ratio tells
            why = unreached_why(step)
        if weights is not None and len(weights.rows) > 1 and (v.ratio is None or why == NO_KNOWN):
            why += f" ({weights})"  # no multiple of the correct gradient: how it weighed rows
        raise CheckFailed(
            f"on {where}, step {j + 1} of {len(seen.steps)} "
            f"(micro-batches of {step.sizes} rows) applied "
            f"{'no gradient' if step.applied is None else _times(v.ratio)} the gradient a "
            f"correct loop applies{' (before clipping)' if v.clipped else ''}"
            f"{relative_to}: the "
            f"{reduced(target)} of its rows' gradients, each from {ref.source}; per step: "
            f"{_ratios(verdicts)}; it {why}",
            measured,
        )
    return seen


def full_rows(target: Target, batching: Batching, steps: Sequence[Step]) -> int:
    """Return the rows of a full step: the batch_size * k rows the batching hands a window
    where a step took them (a first or last window may be short), else the most common among
    steps of k micro-batches, else among all; the nominal rows, which no step took, in a run
    of one step of another count than k (k > 1): no step of it is full."""
    k = count_of(options_of(target), batching)
    nominal = batching.batch_size * k
    if any(step.rows == nominal for step in steps):
        return nominal
    windows = [step for step in steps if len(step.sizes) == k]  # of k micro-batches: full
    if not windows and k > 1 and len(steps) == 1:  # one step of another count: none full
        return nominal  # (shorter: `undecided`; longer: a window that took the left-over)
    return full_step_rows(windows or steps)


def undecided(target: Target, batching: Batching, steps: Sequence[Step]) -> bool:
    """Return True for a run of one step that holds fewer than the k micro-batches drawn or
    given (k > 1): a first window short of them, or a loop that never gathers k, which runs
    of more steps tell apart. Neither full (full_rows) nor short (short-last-batch's): no
    property judges its step."""
    k = count_of(options_of(target), batching)
    return k > 1 and len(steps) == 1 and len(steps[0].sizes) < k


def unscaled(
    target: Target, batching: Batching, run: Wanted, verdicts: Sequence[Judged | None]
) -> bool:
    """Return True if the run's first full step, finding nothing in .grad, applied no multiple
    of its correct gradient (a term summed beside a mean, a penalty on the params beside a
    summed loss): mean-vs-sum judges that step, and fails it on identical rows."""
    rows = full_rows(target, batching, run.seen.steps)
    first = next(
        (v for s, v in zip(run.seen.steps, verdicts, strict=True) if s.rows == rows and v), None
    )
    return (
        first is not None
        and not first.ok
        and first.ratio is None
        and not (first.carried or first.stale)
    )


def crosses(batching: Batching, drop_last: bool, steps: Sequence[Step], j: int) -> bool:
    """Return True if step j's rows start in one epoch of the batching and end in the next."""
    per_epoch = batching.n - (batching.n % batching.batch_size if drop_last else 0)
    start = sum(step.rows for step in steps[:j])
    return per_epoch > 0 and start // per_epoch != (start + steps[j].rows - 1) // per_epoch


def unreached_why(step: Step) -> str:
    """Return what an update's forwards no backward() reached tell: their rows weigh 0."""
    unreached = [step.calls[i].rows for i in step.unreached]
    return (
        f"fed the model {len(unreached)} of its {len(step.calls)} micro-batches "
        f"({sum(unreached)} row(s)) that no backward() reached: their rows weigh 0 "
        "(loss.backward() under the step's `if`? call it on every micro-batch)"
    )


def _times(s: float | None) -> str:
    return "a gradient unlike" if s is None else f"{s:.4g} times"


def _ratios(verdicts: Sequence[Judged | None]) -> str:
    shown = ["-" if v is None else "?" if v.ratio is None else f"{v.ratio:.3g}" for v in verdicts]
    return "[" + ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "") + "]"


NO_KNOWN = "matches no known mistake of this catalogue"
