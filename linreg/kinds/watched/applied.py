"""What an update's steps applied beside what its micro-batches' losses call for: their rows'
mean as it is or clipped (`applied_mean`), .grad clamped by clip_grad_value_ (`clamped`), a
factor of what .grad held before (`scaled_by`, `scaled`); and the flat float64 gradients they
are read in (`flat`, `summed`, `dot`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from linreg.kinds.watched.records import MicroBatch, Open


def scaled(
    aa: float, bb: float, ab: float, tol: float, clipped: bool
) -> tuple[float, float, float]:
    """Return |what an update applied| where it applied what it held before (let through),
    and that and |before| where it applied a factor below 1 of it with no clip of torch's by
    norm (a clip by hand, or a division), from its inner products: (norm, hand, hand_before)."""
    if aa <= 0 or clipped:
        return 0.0, 0.0, 0.0
    s, same = scaled_by(aa, bb, ab, tol)
    if same:
        return math.sqrt(aa), 0.0, 0.0
    if s is not None and 0 < s < 1 - tol:
        return 0.0, math.sqrt(aa), math.sqrt(bb)
    return 0.0, 0.0, 0.0


def scaled_by(aa: float, bb: float, ab: float, tol: float) -> tuple[float | None, bool]:
    """Return, from the inner products of what an update applied (A) and what it held before
    (B), the s with A = s B (None: none, to the tolerance relative to |A|) and whether A is
    B as it was."""
    if bb <= 0:
        return None, False
    s = ab / bb
    scaled = aa - 2 * s * ab + s * s * bb  # |A - s B|^2
    same = aa - 2 * ab + bb  # |A - B|^2
    return (s if scaled <= tol**2 * aa else None), same <= tol**2 * aa


def applied_mean(update: Open, total: float, tol: float) -> tuple[bool | None, float]:
    """Return whether the update applied its rows' mean as it is (False) or clipped (True),
    compared element by element in the gradients' dtype; None where it did neither (or found
    a gradient in .grad: that is judged on its own; or applied a factor below 1 of it with no
    clip_grad_norm_ called: a clip by hand, or a division, watch_readings.by_hand tells).
    Beside it: |what it applied|, where it was right as it is."""
    rows = []  # per param: what it applied, what backward() left, the mean of its rows
    aw = ww = aa = 0.0
    for p in update.params:
        key = id(p)
        held = update.carried.get(key)
        if held is not None and bool(held.any()):
            return None, 0.0
        grads = [g for g in (summed(mb, p) for mb in update.micro) if g is not None]
        w = (torch.stack(grads).sum(0) if len(grads) > 1 else grads[0]) / total if grads else None
        a = update.applied.get(key)
        rows.append((a, update.before.get(key), w))
        d = a if w is None else -w if a is None else a - w
        if d is not None:
            aw += dot(d, d)
        ww += 0.0 if w is None else dot(w, w)
        aa += 0.0 if a is None else dot(a, a)
    if aw <= tol**2 * max(ww, aa):
        return False, math.sqrt(aa)
    bw = bb = ab = 0.0  # before clipping: right, and what it applied a factor of it
    for a, b, w in rows:
        b = a if b is None else b
        if b is None:
            continue
        d = b if w is None else b - w
        bw, bb = bw + dot(d, d), bb + dot(b, b)
        ab += 0.0 if a is None else dot(a, b)
    if bb == 0 or bw > tol**2 * max(ww, bb):
        return None, 0.0
    s = ab / bb
    off = sum(dot(a - s * b, a - s * b) for a, b, _ in rows if a is not None and b is not None)
    if not (0 < s <= 1 + tol and off <= tol**2 * aa) or (s < 1 - tol and not update.norm_clipped):
        return None, 0.0
    return True, 0.0


def clamped(update: Open, tol: float) -> bool:
    """Return whether what each param's step applied is what .grad held before
    clip_grad_value_, clamped to [-bound, bound] for the params it clipped (each its own
    bound), as it was for the others, all times one factor in (0, 1] (1: the code's value clips
    and nothing more; below 1: clipped by norm after, where clip_grad_norm_ was called)."""
    pairs = []
    for p in update.params:
        got, before = update.applied.get(id(p)), update.before.get(id(p))
        if got is None or before is None:
            if got is not before:
                return False
            continue
        bound = update.clip_bounds.get(id(p))
        want = before if bound is None else before.clamp(-bound, bound)
        pairs.append((got, want, max(update.clip_bounds.values()) if bound is None else bound))
    ww = sum(dot(w, w) for _, w, _ in pairs)
    f = sum(dot(g, w) for g, w, _ in pairs) / ww if ww > 0 else 1.0  # the norm clip's factor
    if not update.norm_clipped:  # no clip_grad_norm_: a factor is the code's own (a division
        f = 1.0  # it made on .grad after the clip), not a clipping
    elif not 0 < f <= 1 + tol:
        return False
    return all(
        torch.allclose(got, f * want, rtol=tol, atol=tol * max(f * bound, 1e-12))
        for got, want, bound in pairs
    )


def dot(x: Tensor, y: Tensor) -> float:
    return float(torch.dot(x.reshape(-1), y.reshape(-1)))


def flat(t: Tensor | None, p: Tensor) -> Tensor:
    if t is None:
        return torch.zeros(p.numel(), dtype=torch.float64)
    t = t.detach()
    return (t.to_dense() if t.is_sparse else t).reshape(-1).double()  # SparseAdam's grads


def summed(mb: MicroBatch, p: Tensor) -> Tensor | None:
    parts = [c.grads[id(p)] for c in mb.losses if id(p) in c.grads]
    return torch.stack(parts).sum(0) if parts else None
