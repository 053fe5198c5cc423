"""A clip of the gradient's norm, torch's or the loop's own: which updates of a run it explains
(each a factor below 1 of what it was before the clip, all at one norm), and which of them
were right before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from linreg.kinds.training_loop.ledger import Step
from linreg.kinds.training_loop.measure import close, factor, norm_width, one_norm, shows_a_clip


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
