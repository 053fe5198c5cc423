"""One update's verdict: whether it applied the correct gradient (the mean, or sum, of its
rows' own gradients) directly or as a clipping of it, what it found in .grad, and which known
mistake its own numbers name (a miscount of targets, a mean of micro-batch means, rows weighed
unequally).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    weight = [ref.weight(key) for key in keys]
    total = torch.stack([ref.grads[key] * w for key, w in zip(keys, weight, strict=True)]).sum(0)
    if step.live is not None:  # the params frozen at the step train nothing there
        total = total * step.live
    return total if summed else total / max(sum(weight), 1e-12)


def count_of_step(step: Step, ref: Reference) -> float:
    """Return the rows a step consumed, or the targets they count where they count tokens: its
    mean is its sum over this (one: the two are the same, and show no scale)."""
    return sum(ref.weight(k) for k in step.row_keys)


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
        counts = [sum(ref.weight(k) for k in call.row_keys) for call in step.calls]
        what = f"whose counts of targets differ ({[round(c) for c in counts]})"
        fix = "divide each one's summed loss by the step's count of targets (num_items_in_batch)"
    else:
        what, fix = f"of {step.sizes} rows", "divide each one's summed loss by the step's rows"
    return f"takes the mean of its {len(step.calls)} micro-batches' mean losses, {what}: {fix}"
