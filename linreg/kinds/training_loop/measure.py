"""How two gradients compare: the tolerance of a model's dtype, closeness relative to a scale,
the factor one is of the other, and whether one is a clipping of the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from linreg import checks
from linreg.kinds.training_loop.calls import Call


def tolerance(model: nn.Module, calls: Sequence[Call] = ()) -> float:
    """Return the relative tolerance for a step's gradient, in the model's dtype, or in the
    lower precision torch.autocast ran any of the calls' forward passes in."""
    p = next(iter(model.parameters()), None)
    dtypes = [p.dtype if p is not None else torch.float32]
    dtypes += [call.autocast[1] for call in calls if call.autocast is not None]
    return max(checks.tolerance(dtype, steps=True) for dtype in dtypes)


NAMED = 1e-3  # the relative tolerance a ratio is named at (a k, a count of rows), at least


def near(a: float, b: float, tol: float) -> bool:
    """Return True if a ratio a is b, to the run's tolerance (at least NAMED): a forward under
    autocast reads ratios to its lower precision."""
    return math.isclose(a, b, rel_tol=max(NAMED, tol))


def close(got: Tensor | None, want: Tensor, tol: float, scale: float) -> bool:
    """Return True if a gradient matches the expected one, relative to scale."""
    if got is None:
        return bool(want.abs().max() == 0)
    return float((got - want).abs().max()) <= tol * max(scale, 1e-12)


def factor(got: Tensor | None, want: Tensor, tol: float) -> float | None:
    """Return s if got is s * want (to the tolerance), else None."""
    if got is None:
        return 0.0
    norm = float(want @ want)
    if norm == 0:
        return None
    s = float(got @ want) / norm
    scale = float(want.abs().max()) * max(1.0, abs(s))
    return s if close(got, s * want, tol, scale) else None


def clipping(applied: Tensor | None, before: Tensor | None, tol: float) -> bool:
    """Return True if applied is before clipped: scaled by a factor in (0, 1], or clamped."""
    if applied is None or before is None:
        return False
    scale = float(before.abs().max())
    s = factor(applied, before, tol)
    if s is not None and 0 < s <= 1 + tol:
        return True
    t = float(applied.abs().max())
    return 0 < t < scale and close(applied, before.clamp(-t, t), tol, scale)


def norm_width(tol: float) -> float:
    """Return how far apart (relative) norms may lie and still be one clip's one norm: ten times
    the dtype's tolerance, at least 1%, at most 5% (half precision's 2e-2 would make it 20%)."""
    return min(max(10 * tol, 1e-2), 0.05)


def one_norm(
    scaled: Sequence[float], before: Sequence[float], through: Sequence[float], width: float
) -> bool:
    """Return True if the updates a clip scaled below 1 (the norms of what each applied and of
    what each held before) show one clip of the norm: all at one norm, each longer before it,
    and none of those it let through as they were (their norms) longer than that."""
    m = scaled[0]
    return (
        all(math.isclose(x, m, rel_tol=width) for x in scaled)
        and all(n <= m * (1 + width) for n in through)
        and all(b >= m * (1 - width) for b in before)
    )


def shows_a_clip(before: Sequence[float], let_through: bool, width: float) -> bool:
    """Return True if a run shows that its updates scaled below 1 were clipped, not divided: one
    let through as it was, or norms before of more than one size brought to one."""
    return let_through or any(not math.isclose(b, before[0], rel_tol=width) for b in before)
