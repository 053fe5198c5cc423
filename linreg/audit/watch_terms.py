"""The weights of one term of a loss made of several (a multi-task loss) whose function
reduced as meant itself: the scale on it is a coefficient of the code's, so only how each
update weighs its micro-batches against one another is judged (watch_verdicts.py judges
the rest)."""

from __future__ import annotations

from linreg.audit.watch_readings import Reading, alike, first_applied, never_applied, shown
from linreg.audit.watch_tally import Verdicts


def coefficients(readings: list[Reading], updates: int, v: Verdicts, term: str) -> None:
    """Name the weights of a term whose function reduced as meant itself (mse_loss's mean,
    where the mean is meant): the scale on it is the code's coefficient, which may change from
    update to update (a weight ramped up, a weight per epoch), so only how each update weighs
    its micro-batches against one another is judged, and only for a known mistake: alike over
    unequal counts, or the first ones never applied."""
    v.free.append(term)
    for r in readings:
        v.at = r.j
        at = (
            f"update {r.j + 1} of {updates}, its {term} term ({len(r.parts)} micro-batch(es), "
            f"{r.count:g} counted)"
        )
        if r.unread or r.relative is None:
            v.unread.add(r.j)
            continue
        scale = sum(x * c for x, c in zip(r.relative, r.parts, strict=True)) / r.count
        if len(r.parts) < 2 or not scale > 0:
            continue  # one micro-batch: its weight is the coefficient alone
        rel = [x / scale for x in r.relative]  # relative to the update's own coefficient
        unequal = len(set(r.parts)) > 1
        if alike(rel):
            if unequal:
                v.judged["micro-batch-accumulation"].add(r.j)
            continue
        weights = [x * c / r.count for x, c in zip(rel, r.parts, strict=True)]
        dropped = first_applied(rel)
        if dropped is not None:
            v.fail("short-last-batch", never_applied(at, dropped))
        elif unequal and alike(weights):
            v.fail(
                "micro-batch-accumulation",
                f"{at} weighs its {len(r.parts)} micro-batches alike over counts "
                f"{shown(r.parts)}: divide each one's summed loss by the update's count",
            )
        # else: no known mistake, and a coefficient changed between its micro-batches (a
        # weight warmed up batch by batch) would look the same: not judged
