"""The count a loss the code reduced itself divides by, read from the run: where it sums its
loss (reduction="sum" or "none") and divides by a count of its own, that count may be what
torch's own mean divides by (its targets, or their class weights' sum), its class-weighted
targets' own count (sum / len(y)), or its batch's samples where each holds several elements
(fairseq's --sentence-avg: a sum over tokens / the sentences). Each is a mean of its own; the
one the code meant is the one under which more of its updates applied the mean of their rows
than under torch's count, in the run as a whole, so a nominal divisor on one short batch is
named against that mean.
"""

from __future__ import annotations

from dataclasses import replace

from linreg.audit.watch_readings import Reading, near
from linreg.audit.watch_readings import read as _read
from linreg.kinds.watched.records import Update

SAID = {  # each other count, as the report says it was read
    "targets": "their targets, each weighed by its class weight (the code divides its "
    "class-weighted sum by the targets, where torch's own mean divides by their weights' sum)",
    "rows": "their batch's samples, each a sum over its elements (the code divides by the "
    "samples: a sentence's tokens summed, averaged over the sentences)",
}


def meant(updates: list[Update]) -> tuple[list[Update], str]:
    """Return the updates read with the counts their losses' code divided by: torch's, or the
    other count (Update.others) under which more updates applied the mean, two thirds of
    those read at least (else torch's); and that count's key ("": torch's)."""
    keys = sorted({k for u in updates for part in (u, *u.parts) for k, _ in part.others})
    if not keys:
        return updates, ""
    tallies = {k: _tally(updates, k) for k in keys}
    best = max(keys, key=lambda k: tallies[k][0])
    right, torchs, read = tallies[best]  # (a divisor of the code's may equal it now and then:
    if right <= torchs or 3 * right < 2 * read:  # a time-major batch's time steps, its samples
        return updates, ""  # in some batches)
    return [_as(u, best) for u in updates], best


def _as(u: Update, key: str) -> Update:
    """Return the update with its micro-batches' counts `key` (its own where it has none)."""
    parts = tuple(_as(part, key) for part in u.parts)
    counts = dict(u.others).get(key)
    if counts is None:
        return replace(u, parts=parts) if parts else u
    return replace(u, counts=list(counts), parts=parts)


def _tally(updates: list[Update], key: str) -> tuple[int, int, int]:
    """Return, of the updates (or parts of one) whose losses may divide by the count `key`, how
    many applied the mean of their rows' gradients under it, how many under torch's count, and
    how many were read as weights on their micro-batches at all."""
    right = torchs = read = 0
    for j, u in enumerate(updates):
        for part in u.parts or (u,):
            counts = dict(part.others).get(key)
            if part.columns or counts is None or all(n <= 1 for n in counts):
                continue  # (a sample each: its sum and its mean are one, a count that tells
                # nothing: batches of one sample, a dataset of batches made ahead)
            mine = _read(j, _as(part, key), False)
            read += mine is not None and bool(mine.relative)
            right += _the_mean(mine)
            torchs += _the_mean(_read(j, part, False))
    return right, torchs, read


def _the_mean(r: Reading | None) -> bool:
    """Return whether a reading applied the mean of its rows' gradients (each weight 1)."""
    return r is not None and bool(r.relative) and all(near(x, 1) for x in r.relative or ())
