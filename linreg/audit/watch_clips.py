"""Clipping read in a watched update: updates a clip of the norm by hand explains (`by_hand`:
all of one set of params landing on one norm, with no clip_grad_norm_ called), a clip by hand
of an update divided right before it, unseen (`unseen_clip`), and whether what an update
applied is a clipping of what .grad held before it (`a_clipping`); `residual`, the distance
of an update from a combination of its micro-batches' gradients, from inner products alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from linreg.kinds.training_loop.measure import norm_width, one_norm, shows_a_clip
from linreg.kinds.watched import Update, scaled_by


def by_hand(updates: Sequence[Update]) -> list[Update]:
    """Return the updates, each a clip of the norm by hand explains marked so (hand_ok: read
    before it): the updates of one set of params that applied a factor below 1 of what they
    held before with no clip_grad_norm_ called all land on one norm, none of theirs let through
    as it was is longer, and the run shows it is a clip: one let through, or befores of
    different norms brought to the same (a framework's own clip, DeepSpeed's). A mean's
    gradient divided again by its rows is no such clip: its norm goes with the rows."""
    out = list(updates)
    for group in {u.group for u in updates if u.hand > 0}:
        mine = [j for j, u in enumerate(updates) if u.group == group]
        hand = [j for j in mine if updates[j].hand > 0]
        width = norm_width(max(updates[j].tol for j in hand))
        through = [updates[j].norm for j in mine if updates[j].norm > 0]
        befores = [updates[j].hand_before for j in hand]
        if shows_a_clip(befores, bool(through), width) and one_norm(
            [updates[j].hand for j in hand], befores, through, width
        ):
            # a division of .grad before the clip is unseen: a clip of the correct update is
            # right where the run let a right update through, or clipped every one (no scale
            # showed through it; the report says so)
            let = [  # (over one row or target, a sum is the mean: no scale shows)
                updates[j] for j in mine if updates[j].norm > 0 and sum(updates[j].counts) != 1
            ]
            let_right = any(u.right and not u.clipped for u in let)
            unseen = "shown" if let_right else "" if let else "blind"
            for j in hand:
                out[j] = replace(updates[j], hand_ok=True, hand_unseen=unseen)
    return out


def unseen_clip(
    gram: torch.Tensor,
    b_dots: torch.Tensor,
    bb: float,
    a_dots: torch.Tensor,
    aa: float,
    want: torch.Tensor,
    tol: float,
) -> bool:
    """Return whether a clip by hand applied a factor below 1 of the correct update (A = s W,
    0 < s < 1) while what backward() left was not the correct update (B != W): a division of
    .grad between the two, unseen, made it right before the clip."""
    ww = float(want @ gram @ want)
    if ww <= 0:
        return False
    tol2 = tol**2
    if residual(gram, b_dots, bb, want) <= tol2 * max(ww, bb):
        return False  # right before the clip as backward() left it: read there
    s = float(want @ a_dots) / ww
    return 0 < s < 1 - tol and residual(gram, a_dots, aa, s * want) <= tol2 * max(aa, ww)


def residual(gram: torch.Tensor, dots: torch.Tensor, rr: float, w: torch.Tensor) -> float:
    """Return |R - sum w_i M_i|^2 from the inner products: <M_i, M_j>, <M_i, R> and |R|^2."""
    return float(rr - 2 * (w @ dots) + w @ gram @ w)


def a_clipping(u: Update) -> bool:
    """Return whether what an update applied (A) is a clipping of what .grad held before it
    (B): s times B for one s in (0, 1], and not B itself; below 1 only where clip_grad_norm_
    was called in it (else the factor is the code's own division of .grad, read as applied)."""
    s, same = scaled_by(u.aa, u.bb, u.ab, u.tol)
    if s is None or same or not 0 < s <= 1 + u.tol:
        return False
    return s >= 1 - u.tol or u.norm_clipped or u.hand_ok
