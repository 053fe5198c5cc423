"""How the namers of watched weights (watch_weights.py, watch_terms.py, watch_scales.py)
compare and word a reading's ratios: near and alike, at the run's tolerance (`judged_to`);
a full update's count and window; the first micro-batches never applied; an update that
carried micro-batches left over from before; counts over-counted by a whole number; a
framework's division, in words.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

from linreg.audit.watch_readings import Reading
from linreg.kinds.training_loop.measure import NAMED


def over_counted(readings: list[Reading]) -> list[tuple[Reading, int]]:
    """Return each update with the whole number its divisor exceeds its count by, where every
    update applies count / (count + m) of the mean with m a whole number >= 1 and the scales
    differ (one scale on all is a constant of the loss's own); else []."""
    uniform = [r for r in readings if r.relative and alike(r.relative)]
    out = []
    for r in uniform:
        assert r.relative is not None
        s = r.relative[0]
        extra = r.count * (1 / s - 1) if 0 < s < 1 else 0.0
        if not (1 - 0.02 <= extra < r.count) or abs(extra - round(extra)) > 0.02:
            return []
        if r.count * r.tol > 0.02:  # the dtype cannot tell a whole number from another
            return []
        out.append((r, round(extra)))
    scales = [r.relative[0] for r, _ in out if r.relative]
    return out if len(out) > 1 and not alike(scales) else []


# the relative tolerance ratios are told apart at while a run is judged (judged_to): NAMED,
# or its updates' loosest (a forward under autocast reads weights to bfloat16's precision)
_TOLERANCE: contextvars.ContextVar[float] = contextvars.ContextVar("tolerance", default=NAMED)


@contextlib.contextmanager
def judged_to(tol: float) -> Iterator[None]:
    """Tell ratios apart (near, alike) at tol, where it is looser than NAMED, inside."""
    token = _TOLERANCE.set(max(NAMED, tol))
    try:
        yield
    finally:
        _TOLERANCE.reset(token)


def tolerance() -> float:
    """Return the relative tolerance ratios are told apart at now (judged_to's)."""
    return _TOLERANCE.get()


def alike(xs: list[float]) -> bool:
    return all(near(x, xs[0]) for x in xs)


def near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOLERANCE.get(), abs_tol=1e-6)


def weights_of(r: Reading, rel: list[float]) -> list[float]:
    """Return each micro-batch's weight on the update (its share of the update's count times
    its ratio in rel): what a correct update gives them, c_i / count, where rel is all 1."""
    return [x * c / r.count for x, c in zip(rel, r.parts, strict=True)]


def shown(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


def first_applied(rel: list[float]) -> int | None:
    """Return how many micro-batches an update applied none of before the rest, all alike
    (an epoch's left-over window zeroed before any step); None where it is not so."""
    dropped = next((i for i, x in enumerate(rel) if not near(x, 0)), len(rel))
    return dropped if 0 < dropped < len(rel) and alike(rel[dropped:]) else None


def framework_divides(by: str, g: int) -> str:
    """Return, in words, that a framework's backward() divides each loss by its count g."""
    if by.startswith("Lightning"):
        return f"{by}={g} divides it"
    return f"{by} divides it by gradient_accumulation_steps={g}"


def full_window(readings: list[Reading]) -> tuple[float, int]:
    """Return a full update's count (the most common among the readings that are a combination
    of their micro-batches, the larger of a tie) and the most micro-batches one of that count
    held (its window)."""
    counts = Counter(r.count for r in readings if r.relative is not None)
    full = max(counts, key=lambda c: (counts[c], c), default=0.0)
    return full, max((len(r.parts) for r in readings if r.count == full), default=1)


def carried(at: str, r: Reading, weights: list[float], full: float) -> tuple[str, str]:
    """Return the pitfall, and what it says, of an update that took more micro-batches and
    rows than a full one, weighed unlike: an epoch's last window, never stepped, carried in."""
    return "short-last-batch", (
        f"{at} took more than a full update's {full:g}, and weighs its micro-batches "
        f"{shown(weights)} where a correct update weighs them "
        f"{shown([c / r.count for c in r.parts])}: micro-batches left over from "
        "before (an epoch's last window, never stepped) were carried into it"
    )


def never_applied(at: str, dropped: int, before_end: int) -> tuple[str, str]:
    """Return the pitfall, and what it says, of an update whose first micro-batches' gradient
    was zeroed before its step: an epoch's left-over window dropped where they were all fed
    before an epoch's end that came while it was open (before_end of them were: short-last-
    batch), else zeroing inside the window (grad-zeroing: one model's optimizer zeroed each
    micro-batch, the other's not, so the watch saw no zero_grad)."""
    if dropped <= before_end:
        return "short-last-batch", (
            f"{at}: its first {dropped} micro-batch(es) went through backward() and were never "
            "applied (their gradient zeroed before any step: an epoch's left-over window "
            "dropped): step when the data ends too"
        )
    return "grad-zeroing", (
        f"{at}: its first {dropped} micro-batch(es) went through backward() and were never "
        "applied: their gradient was zeroed before the step, inside the update (zero_grad "
        "inside the accumulation loop: zero once a window, after the step)"
    )


def with_dropped(r: Reading, dropped: Sequence[float], summed: bool) -> Reading:
    """Return an update's reading against the mean of every row it consumed, the counts of
    its micro-batches zeroed before the step (dropped, of its own loader) included: a window's
    loss / k whose first micro-batches were zeroed applies its last one at the window's
    weight, right beside grad-zeroing (where it was read against that micro-batch's own mean,
    a scale of k)."""
    more = sum(dropped)
    if summed or r.relative is None or not more:
        return r
    grown = (r.count + more) / r.count
    return replace(r, count=r.count + more, relative=[x * grown for x in r.relative])
