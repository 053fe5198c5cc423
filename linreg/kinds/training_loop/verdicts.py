"""A run's verdicts: the loop run at lr 0 beside what each update should have applied
(`wanted`), the updates a property picks judged (`judge`, in this folder) and the first miss
explained, with the ratios of every update and its weights on its rows' gradients (`compare`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from torch import Tensor

from linreg.checks import CheckFailed
from linreg.kinds.base import Target
from linreg.kinds.training_loop.batching import Batching, count_of, describe
from linreg.kinds.training_loop.calls import Call, memory_of, storage_of
from linreg.kinds.training_loop.judge import (
    Judged,
    clipped_by_norm,
    count_of_step,
    judge,
    means_of_means,
    miscount,
    unequal_weights,
    want_of,
)
from linreg.kinds.training_loop.ledger import Observed, Step
from linreg.kinds.training_loop.measure import tolerance
from linreg.kinds.training_loop.one_run import full_step_rows, run_at_zero_lr
from linreg.kinds.training_loop.references import references
from linreg.kinds.training_loop.row_gradients import Reference
from linreg.kinds.training_loop.settings import options_of, reduced
from linreg.kinds.training_loop.shared import kept, said, say, tallied, tally
from linreg.kinds.training_loop.weights import weights_of

# (j, every step's verdict, the run, the full steps' common ratio or None) -> another's cause
Excuse = Callable[[int, Sequence["Judged | None"], "Wanted", float | None], bool]


@dataclass(frozen=True)
class Wanted:
    """A run at lr 0, and what each of its updates should have applied."""

    seen: Observed
    ref: Reference | None  # each row's own gradient; None: the run gives no reference
    wants: list[Tensor | None]  # each update's correct gradient (None: a row without one)
    tol: float  # the relative tolerance in the model's dtype
    scale: float  # the largest entry of any update's correct gradient
    by_norm: frozenset[int] = frozenset()  # the updates a clip of the norm explains
    right_by_norm: frozenset[int] = frozenset()  # those of them right before it

    def clips(self, j: int) -> tuple[bool, bool]:
        """Return whether a clip of the norm explains update j, and whether it was right
        before it (judge's by_norm, right_by_norm)."""
        return j in self.by_norm, j in self.right_by_norm


def wanted(target: Target, batching: Batching) -> Wanted:
    """Run the loop at lr 0 on a batching; return what it did beside what it should have
    (within an audit, once: `shared`)."""
    return kept("wanted", target, batching, lambda: _wanted(target, batching))


def _wanted(target: Target, batching: Batching) -> Wanted:
    model, seen = run_at_zero_lr(target, batching)
    ref = references(target, model, seen, batching.seed)
    tol = tolerance(model, seen.calls)
    if ref is None:
        return Wanted(seen, None, [], tol, 0.0)
    if ref.live is not None and any(_trains_beyond(s.live, ref.live) for s in seen.steps):
        # the loop's own references lack what its one-row run froze: the steps that trained
        # it are judged on the other params alone (a copy: the run is shared as it was seen)
        steps = [_on(s, ref.live) if _trains_beyond(s.live, ref.live) else s for s in seen.steps]
        seen = replace(seen, steps=steps)
        say(
            "steps that trained params the loop's one-row run had frozen are judged on the "
            "others alone: each row's reference is the loop's own gradient, which has none "
            "for those (name the loss with loss= to judge them)"
        )
    wants = [want_of(step, ref, reduced(target) == "sum") for step in seen.steps]
    scale = max((float(w.abs().max()) for w in wants if w is not None), default=0.0)
    counts = [count_of_step(step, ref) for step in seen.steps]
    clipped = clipped_by_norm(seen.steps, wants, counts, tol, scale)
    if ref.own:
        say(
            ref.own
            if ref.added
            else f"each row's reference was the loop's own gradient on that row alone: {ref.own}"
        )
    tally(batching, judged=1, clipped_blind=len(clipped.blind), scale_shown=clipped.scale_shown)
    return Wanted(seen, ref, wants, tol, scale, clipped.by_norm, clipped.right)


def _on(step: Step, mask: Tensor) -> Step:
    """Return a copy of a step read on the params mask holds alone (Step.keep)."""
    kept = copy.copy(step)
    kept.keep(mask)
    kept.live = mask if step.live is None else step.live * mask
    return kept


def _trains_beyond(step: Tensor | None, ref: Tensor) -> bool:
    """Return whether a step trained (Step.live; None: every param) an entry ref lacks."""
    return bool(((1.0 if step is None else step) * (1 - ref)).any())


def notes(passed: bool) -> str:
    """Return what the runs showed that limits the verdicts, for the report ("" if nothing):
    references that are the loop's own (said as the runs met them), and, on a report that
    passed, a clip by hand that scaled every update (blind_note: a failing report's runs count
    its shrinking too)."""
    return "; ".join(n for n in (*said(), blind_note() if passed else "") if n)


def blind_note() -> str:
    """Return what the report says where runs clipped every update by hand after an unseen
    change of .grad and no run let a right update of more than one row through ("" elsewhere):
    those updates are right only up to the clip's factor, and no update showed the scale."""
    blind = tallied("clipped_blind")
    if not blind or tallied("scale_shown"):
        return ""
    return (
        f"in {len(blind)} of the {len(tallied('judged'))} runs judged, a clip that is not "
        "torch's scaled every update down to one norm, from a gradient other than backward()'s: "
        f"those {sum(blind.values())} updates are right only up to the clip's factor, since a "
        "division of .grad of yours before the clip (as fairseq's multiply_grads) is not seen, "
        "and without it (a loss summed where a mean is meant) they would read the same; a "
        "max_norm that lets some updates through judges their scale"
    )


def compare(
    target: Target,
    batching: Batching,
    which: Callable[[int, list[Step]], bool],
    explain: Callable[[int, Judged, list[Step]], str],
    *,
    relative: bool = False,
    excused: Excuse | None = None,
    needs_scale: bool = False,
) -> Observed:
    """Judge the steps `which(j, steps)` picks against the reference; explain the first miss
    (`explain(j, verdict, steps)`).

    relative=True judges each step against the correct gradient times the ratio of the run's
    first full step (of its most common size) to it: a scale the loop applies to every step
    alike (a summed loss: mean-vs-sum's) is left to the property that judges the scale, so a
    second mistake is still seen on its own. `excused(j, verdicts, run, by)` says that a
    step's miss is another property's cause (by: that ratio, None where it is 1). With
    needs_scale=True a run whose first full step has no scale to be relative to (on two kinds
    of rows it weighs them unequally: micro-batch-accumulation's) judges nothing.
    """
    run = wanted(target, batching)
    seen, ref, wants, tol, scale = run.seen, run.ref, run.wants, run.tol, run.scale
    if ref is None:
        return seen
    first = None
    rows = full_rows(target, batching, seen.steps)
    full = [j for j, step in enumerate(seen.steps) if step.rows == rows and wants[j] is not None]
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
    steps of k micro-batches, else among all."""
    k = count_of(options_of(target), batching)
    nominal = batching.batch_size * k
    if any(step.rows == nominal for step in steps):
        return nominal
    windows = [step for step in steps if len(step.sizes) == k]  # of k micro-batches: full
    return full_step_rows(windows or steps)


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


def dropped_shorts(seen: Observed) -> int:
    """Return the updates that hold a forward no backward() reached of a short last batch the
    audit's loader made in a pass that trained (the batch, or a view of it: a batch smaller
    than batch_size skipped after its forward), where such batches are all the run's forwards
    no backward() reached (others: backward() on every k-th batch, the weights' to name). An
    epoch's last update never steps one: it shows where an update followed, and not at all
    on a loop handed no loader of the audit's."""
    shorts = {storage_of(t) for t in seen.shorts} - {None}

    def short(call: Call) -> bool:
        return memory_of(call) in shorts

    unreached = [[short(step.calls[i]) for i in step.unreached] for step in seen.steps]
    if not shorts or not all(all(marks) for marks in unreached):
        return 0
    return sum(bool(marks) for marks in unreached)


def _times(s: float | None) -> str:
    return "a gradient unlike" if s is None else f"{s:.4g} times"


def _ratios(verdicts: Sequence[Judged | None]) -> str:
    shown = ["-" if v is None else "?" if v.ratio is None else f"{v.ratio:.3g}" for v in verdicts]
    return "[" + ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "") + "]"


NO_KNOWN = "matches no known mistake of this catalogue"
