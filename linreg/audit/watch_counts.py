"""The count a loss the code reduced itself divides by, read from the run: where it sums its
loss (reduction="sum" or "none") and divides by a count of its own, that count may be its
targets (the default), their class weights' sum (sum / w[y].sum(), torch's own mean), or its
batch's rows, each several elements (fairseq's --sentence-avg: a sum over tokens / the
sentences). Each is a mean of its own; the one the code meant is the one under which more of
its updates applied the mean of their rows than under its targets, in the run as a whole, so a
nominal divisor on one short batch is named against that mean.
"""

from __future__ import annotations

from dataclasses import replace

from linreg.audit.watch_readings import near, read
from linreg.kinds.watched.records import Update

SAID = {  # each other count, as the report says it was read
    "weights": "their class weights' sum (the code divides its class-weighted sum by it, as "
    "torch's own mean does)",
    "rows": "their batch's rows, each a sum over its elements (the code divides by the rows: "
    "a sentence's tokens summed, averaged over the sentences)",
}


def meant(updates: list[Update]) -> tuple[list[Update], str]:
    """Return the updates read with the counts their losses' code divided by: their targets,
    or the other count (Update.others) under which more updates applied the mean (ties: their
    targets); and that count's key ("": their targets)."""
    keys = sorted({k for u in updates for part in (u, *u.parts) for k, _ in part.others})
    if not keys:
        return updates, ""
    votes = {k: _rights([_as(u, k) for u in updates]) for k in keys}
    best = max(keys, key=lambda k: votes[k])
    if votes[best] <= _rights(updates):
        return updates, ""
    return [_as(u, best) for u in updates], best


def _as(u: Update, key: str) -> Update:
    """Return the update with its micro-batches' counts `key` (its own where it has none)."""
    parts = tuple(_as(part, key) for part in u.parts)
    counts = dict(u.others).get(key)
    if counts is None:
        return replace(u, parts=parts) if parts else u
    return replace(u, counts=list(counts), parts=parts)


def _rights(updates: list[Update]) -> int:
    """Return how many updates (or parts of one) applied the mean of their rows' gradients."""
    right = 0
    for j, u in enumerate(updates):
        for part in u.parts or (u,):
            r = read(j, part, False) if not part.columns else None
            rel = None if r is None else r.relative
            right += bool(rel) and all(near(x, 1) for x in rel or ())
    return right
