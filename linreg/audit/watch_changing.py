"""Whether a run's multiples of the mean are a coefficient of the code's that changes, which no
multiple can be told from: from full update to full update (a root of the mean, a sum over a
batch's own positive labels: `changing`), from micro-batch to micro-batch inside accumulation
windows (the same per micro-batch: `within`), or ramped before or after the one most updates
keep (a loss weight warmed up: `ramped`). watch_weights.py skips what these return."""

from __future__ import annotations

from linreg.audit.watch_ratios import alike, first_applied, near, weights_of
from linreg.audit.watch_readings import Reading
from linreg.audit.watch_scales import scale_named
from linreg.audit.watch_tally import Verdicts
from linreg.kinds.training_loop import NO_KNOWN

__all__ = ["changing", "most_common", "ramped", "within"]


def most_common(fulls: list[Reading]) -> tuple[float, int]:
    """Return the multiple most full updates apply (each alike, so its relative[0]; the first
    of a tie, 1 where there is none) and how many apply it."""
    scales = [r.relative[0] for r in fulls if r.relative]
    held = [sum(near(s, t) for t in scales) for s in scales]
    return max(zip(scales, held, strict=True), key=lambda x: x[1], default=(1.0, 0))


def changing(
    readings: list[Reading], fulls: list[Reading], held: int, v: Verdicts, term: str
) -> bool:
    """Return whether the full updates each apply a multiple of their own (most of them unlike
    the most common one): a coefficient of the code's that changes from update to update, read
    as a function's own mean's is (watch_terms). A term's: the classes' sum divided by the
    positive anchors' count, as SSD's box sum is (count / num_pos); not a sum divided by each
    batch's rows (per_row), whose rows change the full scales. The one loss's, where no known
    mistake names any of them: a root of the mean (torch.sqrt(F.mse_loss(...))), a sum divided
    by a count of the code's own (a batch's positive labels), which a sum or a nominal divisor
    cannot be told from; kept in v.changing (the least and the most). Not where they are a
    running mean's, or half of them or more show a known mistake; held: how many apply the most
    common one."""
    scales = [r.relative[0] for r in fulls if r.relative]
    if 3 * held >= 2 * len(scales):
        return False
    if term:
        return len({r.per_row for r in readings}) != 1 or readings[0].per_row is None
    # not where they are 1, 1/2, 1/3, ... from the mean itself, then 1 again (a loss divided by
    # the batches or rows seen so far in the epoch), nor where half or more show a known mistake
    # (a sum: a batch of no positive label, its count over 1, is one now and then)
    named = sum(scale_named(s, r, v.meant) != NO_KNOWN for s, r in zip(scales, fulls, strict=True))
    if _seen_so_far(scales) or 2 * named >= len(scales):
        return False
    v.changing = (min(scales), max(scales))
    return True


def within(readings: list[Reading], full: float, alike_ones: int, v: Verdicts) -> bool:
    """Return whether a loss's (or a term's: a detector's classes beside its boxes) full
    updates weigh their micro-batches each at a multiple of its own, which no known mistake
    names: a coefficient of the code's that changes from micro-batch to micro-batch (a root of
    each one's mean, or its sum divided by its own positive labels, each divided by the
    window's micro-batches), read as changing()'s is.
    Where fewer than a third of the full updates weigh theirs alike (alike_ones), no one
    multiple holds two thirds of their micro-batches, fewer than half show a known mistake (a
    mean of means over unequal counts, the first ones never applied) and the multiples at one
    place in the window differ from window to window (a schedule the code fixed per place
    in the window, 1/1, 1/2, ... inside it, stays judged); kept in v.changing, v.within."""
    whole = [r for r in readings if r.count == full and not r.unread and r.relative]
    unlike = [r for r in whole if r.relative and len(r.parts) > 1 and not alike(r.relative)]
    if len(unlike) < 2 or 3 * alike_ones >= len(whole):
        return False
    each = [x for r in unlike if r.relative for x in r.relative]
    if 3 * max(sum(near(x, y) for y in each) for x in each) >= 2 * len(each):
        return False
    named = 0
    for r in unlike:
        rel = r.relative or []
        weights = weights_of(r, rel)
        named += (
            not all(x > 0 for x in rel)
            or first_applied(rel) is not None
            or (len(set(r.parts)) > 1 and alike(weights))
        )
    if 2 * named >= len(unlike):
        return False
    # (in turn, 1, 1/2, 1/3, ... of the first: a loss over the micro-batches or rows seen so
    # far in the epoch, or in the run, where the window's count was meant: review rv68's b17)
    turn = [x for r in readings if r.relative and not r.unread for x in r.relative]
    if _seen_so_far(turn, turn[0]):
        return False
    places: dict[int, list[list[float]]] = {}
    for r in unlike:
        places.setdefault(len(r.parts), []).append(r.relative or [])
    if all(alike([w[i] for w in ws]) for ws in places.values() for i in range(len(ws[0]))):
        return False  # every place in the window at its own multiple, window after window
    v.changing, v.within = (min(each), max(each)), True
    return True


def _seen_so_far(scales: list[float], first: float = 1.0) -> bool:
    """Return whether multiples in turn are first, first/2, first/3, ..., each `first` again
    beginning another such run: a loss divided by the batches seen so far (a running mean;
    first: the mean itself for full updates, a window's count for its micro-batches)."""
    k, grown = 0, True
    for s in scales:
        k = 1 if near(s, first) else k + 1
        grown = grown and near(s, first / k)
    return grown and bool(scales)  # (the first not `first`: first / 1 missed)


def ramped(fulls: list[Reading], scale: float) -> set[int]:
    """Return the full updates of the one loss whose scale is not the most common (scale),
    where that one holds two thirds of them or more and the others all come before it (a weight
    the code warms up: 1/3, 2/3, then 1) or after it (a weight of the next epoch's): a schedule
    of the code's, whose steps no known mistake may name (watch_weights then skips them);
    else none (others among them: judged, each of its own)."""
    on = [r.j for r in fulls if r.relative and near(r.relative[0], scale)]
    off = {r.j for r in fulls if r.relative and not near(r.relative[0], scale)}
    if not off or 3 * len(on) < 2 * len(fulls):
        return set()
    return off if max(off) < min(on) or min(off) > max(on) else set()
