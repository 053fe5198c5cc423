"""A run's wants: the loop run at lr 0 on a batching, beside what each of its updates should
have applied (`wanted`, once an audit: `shared`), and what the runs showed that limits the
verdicts (`notes`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import Tensor

from linreg.kinds.base import Target
from linreg.kinds.training_loop.batching import Batching
from linreg.kinds.training_loop.clipped import clipped_by_norm
from linreg.kinds.training_loop.judge import count_of_step, want_of
from linreg.kinds.training_loop.ledger import Observed, Step
from linreg.kinds.training_loop.measure import tolerance
from linreg.kinds.training_loop.one_run import run_at_zero_lr
from linreg.kinds.training_loop.references import references
from linreg.kinds.training_loop.row_gradients import Reference
from linreg.kinds.training_loop.settings import reduced
from linreg.kinds.training_loop.shared import kept, said, say, tallied, tally


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
    if ref.padding:  # rows the loop made to pad a short batch: none of the data's
        seen = replace(seen, steps=[_unpadded(s, ref.padding) for s in seen.steps])
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
    unwanted = bool(seen.steps) and all(w is None for w in wants)  # no step had a reference
    tally(
        batching,
        judged=1,
        unwanted=int(unwanted),
        clipped_blind=len(clipped.blind),
        scale_shown=clipped.scale_shown,
    )
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


def unreferenced(target: Target | None = None) -> str | None:
    """Return why no step of the audit's runs could be judged (None: some could): each fed
    rows that have no reference, rows the loop made from the data's (an attack's
    perturbation, a mix of two rows), where each row's reference is the loop's own gradient
    on a row it was handed. A step-judging property that held there held on nothing (its
    reason, short); an audit all of whose runs are so is an error, never a pass
    (unreferenced_error, the whole of it)."""
    del target
    judged, unwanted = tallied("judged"), tallied("unwanted")
    if not judged or set(unwanted) != set(judged):
        return None
    return "not judged: no step of any run had a reference for every row it trained on"


def unreferenced_error() -> str | None:
    """Return the audit's error where no step of its runs could be judged (unreferenced)."""
    if unreferenced() is None:
        return None
    return (
        "no step of any run could be judged: each trained on rows the loop made from the ones "
        "it was handed (an attack's perturbation, a mix of two rows), which have no reference "
        "where each row's is the loop's own gradient on a row it was handed"
    )


def beside_a_sum(batching: Batching, what: str) -> None:
    """Note that a property excused a step of the run (what: the steps it judges, "a shorter
    step") beside full steps that apply no multiple of their correct gradient: a term summed
    beside a mean, mean-vs-sum's to name (unjudged_beside_a_sum reads it)."""
    tally(batching, **{f"beside a sum: {what}": 1})


def unjudged_beside_a_sum(what: str) -> Callable[[Target], str | None]:
    """Return the unjudged hook of a property that excuses steps beside a sum (beside_a_sum):
    where it excused one, it held on no step it could read; else, as every step property,
    where no step had a reference (unreferenced)."""

    def unjudged(target: Target) -> str | None:
        if tallied(f"beside a sum: {what}"):
            return (
                "not judged: the full steps applied no multiple of their correct gradient (a "
                f"term summed beside a mean: mean-vs-sum's), so {what} has no scale to be read "
                "against"
            )
        return unreferenced(target)

    return unjudged


def _unpadded(step: Step, padding: frozenset[bytes]) -> Step:
    """Return a step whose forwards count the rows the loop made to pad them (Call.padded)
    apart from the data's."""
    calls = [
        replace(c, padded=n) if (n := sum(key in padding for key in c.row_keys)) else c
        for c in step.calls
    ]
    return replace(step, calls=calls)
