"""One update's verdict: whether it applied the correct gradient (the mean, or sum, of its
rows' own gradients) directly or as a clipping of it, what it found in .grad, and which known
mistake its own numbers name (a miscount of targets, a mean of micro-batch means, rows weighed
unequally).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from linreg.kinds.training_loop.batching import Batching
from linreg.kinds.training_loop.ledger import Step
from linreg.kinds.training_loop.measure import (
    NAMED,
    clipping,
    close,
    factor,
    near,
    norm_width,
    one_norm,
    shows_a_clip,
)
from linreg.kinds.training_loop.row_gradients import Reference


@dataclass(frozen=True)
class Judged:
    """One step's verdict: what it applied as a multiple of the correct gradient."""

    ok: bool
    ratio: float | None  # None: not a multiple of the correct gradient
    clipped: bool  # the applied gradient is a clipping of what it was before a clip
    stale: bool = False  # it is the correct gradient plus what the step before left in .grad
    note: str = ""  # a known mistake the step's own numbers name (a miscount of targets)
    own: float | None = None  # what it applied beyond what it found in .grad, as a multiple
    carried: bool = False  # it found a gradient in .grad: the loop did not zero it
    tol: float = NAMED  # the relative tolerance it was judged at: its ratio is named at that
    reading: Tensor | None = None  # the gradient its ratio reads: as applied, or before a clip


def want_of(step: Step, ref: Reference, summed: bool) -> Tensor | None:
    """Return the correct gradient of a step: the mean (or sum) of its rows' own gradients,
    each weighed by the targets it counts where the rows count tokens."""
    keys = step.row_keys
    if not keys or any(key not in ref.grads for key in keys):
        return None
    weight = [1.0 if ref.weights is None else ref.weights.get(key, 1.0) for key in keys]
    total = torch.stack([ref.grads[key] * w for key, w in zip(keys, weight, strict=True)]).sum(0)
    if step.live is not None:  # the params frozen at the step train nothing there
        total = total * step.live
    return total if summed else total / max(sum(weight), 1e-12)


def count_of_step(step: Step, ref: Reference) -> float:
    """Return the rows a step consumed, or the targets they count where they count tokens: its
    mean is its sum over this (one: the two are the same, and show no scale)."""
    return sum(1.0 if ref.weights is None else ref.weights.get(k, 1.0) for k in step.row_keys)


def judge(
    step: Step,
    want: Tensor,
    tol: float,
    scale: float,
    by_norm: bool = False,
    right_by_norm: bool = False,
) -> Judged:
    """Return whether a step applied the correct gradient, directly or as a clipping of it; a
    loop that never zeroes adds it to what the step found in .grad (stale, own).

    What was clipped is the gradient as torch's clipping found it, as the loss scaler unscaled
    it or, where something changed the still-scaled gradient first (a clip before unscale_:
    clip-before-unscale's to name), what backward() left over the scale; each param as its
    own clip found it, where parts were clipped apart. The step is right if one of those is
    right and what it applied is a clipping of it: clamped (by value), or a factor below 1
    where the run shows a clip of the norm (by_norm; right_by_norm: right before it,
    `clipped_by_norm`); elsewhere such a factor is a division the loop made (a mean's gradient
    divided again by its rows), and the step is read as it applied it."""
    if close(step.applied, want, tol, scale):
        return Judged(True, 1.0, False, tol=tol, reading=step.applied)
    if right_by_norm:
        before = next((g for g in step.unclipped if close(g, want, tol, scale)), want)
        return Judged(True, 1.0, True, tol=tol, reading=before)
    clipped = [
        g
        for g in step.unclipped
        if not close(step.applied, g, tol, scale) and clipping(step.applied, g, tol)
    ]
    right = [  # clamped, or scaled where the run shows a clip of the norm
        g
        for g in clipped
        if close(g, want, tol, scale) and (by_norm or factor(step.applied, g, tol) is None)
    ]
    if right:
        return Judged(True, 1.0, True, tol=tol, reading=right[0])
    apart = step.clipped_apart if each_clip_a_clipping(step, tol) else None
    if apart is not None and close(apart, want, tol, scale):
        return Judged(True, 1.0, True, tol=tol, reading=apart)
    if not by_norm:  # scaled down with no clip's one norm: a division, read as applied
        clipped = [g for g in clipped if factor(step.applied, g, tol) is None]
    if not clipped and apart is not None:
        clipped = [apart]  # its parts clipped apart: read before their clips
    reading = clipped[0] if clipped else step.applied
    # what .grad held as the step's first backward() began, as the gradient hook saw it: on
    # identical rows a sum of two means reads as a step plus the one before, so staleness is
    # what was seen, not what the step before applied
    found = step.carried if carries(step) else None
    stale = found is not None and close(reading, want + found, tol, scale)
    own = factor(reading - found, want, tol) if found is not None and reading is not None else None
    return Judged(
        False,
        factor(reading, want, tol),
        bool(clipped),
        stale,
        own=own,
        carried=bool(found is not None),
        tol=tol,
        reading=reading,
    )


def each_clip_a_clipping(step: Step, tol: float) -> bool:
    """Return True if, in a step whose calls of torch's clipping clipped some params alone,
    what each call found of its params became a clipping of it (or stayed as it was), from
    one call to the next and to the step."""
    if step.applied is None or not step.clips_apart:
        return False
    states = [*step.clip_found, step.applied]
    for i, covered in enumerate(step.clip_covered):
        part = covered.bool()
        if not part.any():
            continue
        for a, b in zip(states[i + 1 :], states[i:], strict=False):
            later, earlier = a[part], b[part]
            scale = float(earlier.abs().max())
            if not (close(later, earlier, tol, scale) or clipping(later, earlier, tol)):
                return False
    return True


class Clipped(NamedTuple):
    """The updates of a run a clip of the gradient's norm explains (clipped_by_norm)."""

    by_norm: frozenset[int] = frozenset()
    right: frozenset[int] = frozenset()  # those right before the clip
    # right only up to the clip: a clip by hand after the loop's own division of .grad that
    # scaled every update of the run, so no update showed the scale before it
    blind: frozenset[int] = frozenset()
    # the run let a right update through whose count is not 1: its scale showed right
    scale_shown: bool = False


def clipped_by_norm(
    steps: Sequence[Step],
    wants: Sequence[Tensor | None],
    counts: Sequence[float],
    tol: float,
    scale: float,
) -> Clipped:
    """Return the updates a clip of the gradient's norm (torch's, or the loop's own) explains,
    and those of them right before it: each applied a factor below 1 of what it was before the
    clip (as torch's clipping last found it, else as backward() left it), all at one norm (L2,
    or the largest entry), while every update the clip let through was no longer than that and
    each it scaled was longer. Right: right before its clip, or (a clip after the loop divided
    .grad itself, where nothing was seen between) a factor below 1 of the correct gradient
    where the run let an update through as it was, right, or clipped every one (an update of
    one row or target, whose sum is its mean, shows no scale either way). A mean's
    gradient divided again by its rows is no clip: its norm goes with them.
    """
    near_norm = norm_width(tol)

    def below(applied: Tensor, g: Tensor, seen: bool) -> bool:  # a factor of g in (0, 1)
        # where torch's clipping was called (seen) any factor below 1 is its clip (a norm of
        # 1.006 clipped to 1.0 is 0.994); a clip by hand must be further than norms lie apart
        r = factor(applied, g, tol)
        return r is not None and 0 < r < (1 if seen else 1 - near_norm)

    through: list[Tensor] = []  # what each update let through was before the clip
    clipped: dict[int, Tensor] = {}  # what each update it scaled was before the clip
    right: set[int] = set()
    # it let an update through as it was, right, or one at all, that shows its scale (its
    # count is not 1: over one row or target, a sum is the mean)
    let_right = let_any = False
    for j, (step, want) in enumerate(zip(steps, wants, strict=True)):
        applied = step.applied
        if want is None or applied is None or step.clips_apart:
            continue  # (parts clipped apart: each_clip_a_clipping's)
        # before the clip: as torch's last clip found it, else as backward() left it (over
        # the loss scaler's scale)
        before = step.clip_found[-1] if step.clip_found else step.before_clipping
        seen = bool(step.clip_found)
        if before is None:
            continue
        if close(applied, want, tol, scale) or close(applied, before, tol, scale):
            right_through = close(applied, want, tol, scale)
            through.append(want if right_through else before)
            let_right = let_right or (right_through and counts[j] != 1)
            let_any = let_any or counts[j] != 1
        elif below(applied, before, seen) and close(before, want, tol, scale):
            clipped[j] = before
            right.add(j)
        elif not seen and below(applied, want, seen):
            clipped[j] = want  # the loop's own division between (unseen): right where shown
        elif below(applied, before, seen):
            clipped[j] = before
    if not clipped:
        return Clipped(scale_shown=let_right)
    if not any(
        one_norm(
            [float(norm(steps[j].applied)) for j in clipped],
            [float(norm(g)) for g in clipped.values()],
            [float(norm(g)) for g in through],
            near_norm,
        )
        for norm in (torch.linalg.vector_norm, lambda g: g.abs().max())
    ):
        return Clipped(scale_shown=let_right)
    # unseen before a clip by hand after the loop's own division of .grad: right where the run
    # let an update through right, or clipped every one (then no scale showed through it)
    shown = let_right or not let_any
    unseen = {j for j, g in clipped.items() if j not in right and shown and g is wants[j]}
    # a clip by hand (none of torch's ran) shows only beside another update: one it let
    # through, or one it scaled from another norm to the same; alone, a wrong update's factor
    # below 1 is as much the loop's own division, and is read as it applied it
    befores = [float(torch.linalg.vector_norm(g)) for g in clipped.values()]
    if not shows_a_clip(befores, bool(through), near_norm):
        clipped = {j: g for j, g in clipped.items() if steps[j].clip_found or j in right}
    return Clipped(
        frozenset(clipped),
        frozenset(right | unseen),
        blind=frozenset() if let_any else frozenset(unseen),
        scale_shown=let_right,
    )


def carries(step: Step) -> bool:
    """Return True if a step found a gradient in .grad as its first backward() began (the
    loop did not zero it since the step before)."""
    return step.carried is not None and bool(step.carried.any())


def unequal_weights(v: Judged | None, batching: Batching) -> bool:
    """Return True if, on two kinds of rows, what a step applied beyond what it found in .grad
    is no multiple of the correct gradient: it weighs its own rows unequally,
    micro-batch-accumulation's to name (a scale, or what .grad carried, stays the others')."""
    if v is None or v.stale or len(set(batching.rows)) < 2:
        return False
    return (v.own if v.carried else v.ratio) is None


def miscount(step: Step, ref: Reference, ratio: float | None, tol: float) -> str:
    """Return the mistake a step's ratio names when its rows count tokens, else ""."""
    if ratio is None or ref.weights is None or ref.labelled is None:
        return ""
    keys = step.row_keys
    counted = sum(ref.weights.get(key, 0.0) for key in keys)
    labelled = sum(ref.labelled.get(key, 0.0) for key in keys)
    if labelled > counted > 0 and near(ratio, counted / labelled, tol):
        return (
            f"divides by the step's {labelled:.0f} labels that are not -100 where its loss counts "
            f"{counted:.0f} targets: counted before the model's causal shift (count "
            "labels[..., 1:] != -100)"
        )
    return ""


def summed_means(step: Step, ref: Reference) -> Tensor | None:
    """Return the sum of a step's micro-batches' own mean gradients (None: a row without one)."""
    means = [
        want_of(Step(None, None, None, [call], live=step.live), ref, summed=False)
        for call in step.calls
    ]
    known = [m for m in means if m is not None]
    return torch.stack(known).sum(0) if known and len(known) == len(means) else None


def means_of_means(step: Step, ref: Reference, v: Judged, tol: float, scale: float) -> str:
    """Return the mistake's name if the step applied the mean of its micro-batches' means (read
    before clipping where judge found the step clipped)."""
    summed = summed_means(step, ref) if len(step.calls) > 1 else None
    if summed is None or not close(v.reading, summed / len(step.calls), tol, scale):
        return ""
    if ref.weights is not None:
        counts = [sum(ref.weights.get(k, 1.0) for k in call.row_keys) for call in step.calls]
        what = f"whose counts of targets differ ({[round(c) for c in counts]})"
        fix = "divide each one's summed loss by the step's count of targets (num_items_in_batch)"
    else:
        what, fix = f"of {step.sizes} rows", "divide each one's summed loss by the step's rows"
    return f"takes the mean of its {len(step.calls)} micro-batches' mean losses, {what}: {fix}"
