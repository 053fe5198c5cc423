"""The count a loss the code reduced itself divides by, read from the run: where it sums its
loss (reduction="sum" or "none") and divides by a count of its own, that count may be what
torch's own mean divides by (its targets, or their class weights' sum), its class-weighted
targets' own count (sum / len(y)), or its batch's samples where each holds several elements
(fairseq's --sentence-avg: a sum over tokens / the sentences). Each is a mean of its own; the
one the code meant is the one under which more of its updates applied the mean of their rows
than under torch's count, in the run as a whole, so a nominal divisor on one short batch is
named against that mean. An update that applies no mean under that count but exactly the mean
under another of its own (two objectives, one averaged over the sentences, one over the tokens,
in turn) is read under that one: a divisor that is no count of its rows matches none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from linreg.audit.watch_ratios import near
from linreg.audit.watch_readings import Reading
from linreg.audit.watch_readings import read as _read
from linreg.audit.watch_tally import Verdicts
from linreg.kinds.watched.kept import Update

SAID = {  # each other count, as the report says it was read
    "targets": "their targets, each weighed by its class weight (the code divides its "
    "class-weighted sum by the targets, where torch's own mean divides by their weights' sum)",
    "rows": "their batch's samples, each a sum over its elements (the code divides by the "
    "samples: a sentence's tokens summed, averaged over the sentences)",
    # (a mask of the code's: missing labels, padding; its divisor counts what it drops)
    "unmasked": "every element of the loss, those the code's mask drops too",
    "kept samples": "the samples that kept an element, each its kept elements' mean (those "
    "the mask drops wholly aside)",
    "picked": "their batch's samples, each a sum over the rows a mask picked of it (the code "
    "divides by the samples, or by a fixed count: a detector's boxes at its positive anchors, "
    "summed per image)",
    "positives": "their positive labels, at least 1 (the code divides a binary loss's sum by "
    "the batch's positives, or a classification's by its targets of a class other than the "
    "background's 0: a detector's num_pos)",
}
TORCHS = "their targets, as torch's own mean counts them"


def meant(updates: list[Update]) -> tuple[list[Update], str, dict[str, int], str]:
    """Return the updates read with the counts their losses' code divided by: torch's, or the
    other count (Update.others) under which more updates applied the mean, two thirds of
    those read at least (else torch's); that count's key ("": torch's); per other key, the
    updates (or parts of one) read under it because they applied the mean there alone; and
    the other count under which they apply one multiple as well, where one of the two is
    every element's and no update applied the mean itself ("" else): with a weight of the
    code's, each sample's kept elements summed and averaged over the samples, and the mean
    over every element, give the same numbers where every sample has as many elements."""
    keys = sorted({k for u in updates for part in (u, *u.parts) for k, _ in part.others})
    if not keys:
        return updates, "", {}, ""
    read_by = {k: _readings(updates, k) for k in keys}
    tallies = {k: _tally(*read_by[k]) for k in keys}
    common = not any(right or torchs for right, torchs, _ in tallies.values())
    if common:  # no mean anywhere: a weight of the code's, read on every element's count
        tallies = {k: _tally(*read_by[k], common=True) for k in keys}  # alone (a time-major
    # sum over the time steps keeps one multiple under its samples' count by chance)
    candidates = [k for k in keys if k == "unmasked"] if common else keys
    best = max(candidates, key=lambda k: tallies[k][0], default="")
    either = next(
        (
            k
            for k in keys
            if common and best and k != best
            and tallies[k][0] == tallies[best][0] > tallies[best][1]
        ),
        "",
    )  # fmt: skip
    if best:
        right, torchs, read = tallies[best]  # (a divisor of the code's may equal it now and
        if right <= torchs or 3 * right < 2 * read:  # then: a time-major batch's time steps,
            best = ""  # its samples in some batches)
    leaves = [(j, leaf) for j, u in enumerate(updates) for leaf in u.parts or (u,)]
    # the mean, or the one multiple of it most updates apply under the run's count: a constant
    # of the code's (0.5 * loss), at which a short batch's own count may meet another by chance
    # (an update of several terms, read on its columns, is none of these: watch_terms')
    under = {
        id(leaf): None if leaf.columns else _read(j, _as(leaf, best), False) for j, leaf in leaves
    }
    scale = _common(list(under.values()))
    means = {key: _the_mean(r, scale) for key, r in under.items()}
    alone = {
        id(leaf): None if means[id(leaf)] else _alone(j, leaf, best, ["", *keys])
        for j, leaf in leaves
    }
    runs = [_samples(leaf) for _, leaf in leaves if means[id(leaf)]]
    borne = {k for k in alone.values() if k is not None and _borne(k, leaves, alone, runs)}

    def taken(u: Update) -> Update:
        if u.parts:
            return replace(_as(u, best), parts=tuple(taken(part) for part in u.parts))
        k = alone[id(u)]
        return _as(u, k if k is not None and k in borne else best)

    counted = Counter(k for k in alone.values() if k is not None and k in borne)
    return [taken(u) for u in updates], best, dict(counted), either if best else ""


def _alone(j: int, u: Update, run: str, keys: list[str]) -> str | None:
    """Return the first count of its own (a key: "" torch's) other than the run's under which
    an update (one part of one) that applies no mean under the run's applies exactly the mean;
    None where none (read under the run's: a nominal divisor)."""
    if u.columns:
        return None
    for k in keys:
        if k != run and (not k or _may(u, k)) and _the_mean(_read(j, _as(u, k), False)):
            return k
    return None


def _borne(
    key: str,
    leaves: list[tuple[int, Update]],
    alone: dict[int, str | None],
    runs: list[float],
) -> bool:
    """Return whether the updates that apply the mean under `key` alone are an objective of
    their own (two in turn, one averaged over the sentences, one over the tokens): one of
    them has as many samples as one of the updates that apply the mean under the run's count
    (`runs`: their samples). Where they all have fewer (a short last batch alone), the count
    is the one a nominal divisor meets there by chance (8 rows of 4 outputs each divided by a
    full batch's 32), and the update, read under the run's count, is named."""
    under = [_samples(u) for _, u in leaves if alone[id(u)] == key]
    return not runs or max(under) >= min(runs)


def _samples(u: Update) -> float:
    """Return an update's samples: its batches' (rows) where known, else its targets, else
    its counts (torch's)."""
    others = dict(u.others)
    return sum(others.get("rows", others.get("targets", u.counts)))


def _as(u: Update, key: str) -> Update:
    """Return the update with its micro-batches' counts `key` (its own where it has none)."""
    if not key:  # torch's: its own
        return u
    parts = tuple(_as(part, key) for part in u.parts)
    counts = dict(u.others).get(key)
    if counts is None:
        return replace(u, parts=parts) if parts else u
    return replace(u, counts=list(counts), parts=parts)


def _readings(updates: list[Update], key: str) -> tuple[list[Reading | None], list[Reading | None]]:
    """Return the updates (or parts of one) whose losses may divide by the count `key` read
    under it, and read under torch's count."""
    mine: list[Reading | None] = []
    torchs: list[Reading | None] = []
    for j, u in enumerate(updates):
        for part in u.parts or (u,):
            if not part.columns and _may(part, key):
                mine.append(_read(j, _as(part, key), False))
                torchs.append(_read(j, part, False))
    return mine, torchs


def _tally(
    mine: list[Reading | None], torchs: list[Reading | None], common: bool = False
) -> tuple[int, int, int]:
    """Return, of the updates (or parts of one) read under a count of their own (mine) and
    under torch's (torchs, _readings), how many applied the mean of their rows' gradients
    under the first, how many under torch's, and how many were read as weights on their
    micro-batches at all. common: the mean times the one multiple most apply under each count
    (_common), where no update applied the mean itself under any: a weight of the code's
    (0.5 * (l * m).sum() / m.sum(), or its twin 0.5 * (l * m).mean(), whose multiple is one
    under every element's count alone)."""
    at, theirs = (_common(mine), _common(torchs)) if common else (1.0, 1.0)
    read = sum(r is not None and bool(r.relative) for r in mine)
    right = sum(_the_mean(r, at) for r in mine)
    return right, sum(_the_mean(r, theirs) for r in torchs), read


def _may(u: Update, key: str) -> bool:
    """Return whether an update's losses may divide by their count `key`: they have it, and it
    is more than one somewhere (a sample each: its sum and its mean are one, a count that tells
    nothing: batches of one sample, a dataset of batches made ahead)."""
    counts = dict(u.others).get(key)
    return counts is not None and any(n > 1 for n in counts)


def _the_mean(r: Reading | None, scale: float = 1.0) -> bool:
    """Return whether a reading applied the mean of its rows' gradients (each weight 1), or
    that times a scale (each weight the scale)."""
    return r is not None and bool(r.relative) and all(near(x, scale) for x in r.relative or ())


def _common(readings: list[Reading | None]) -> float:
    """Return the one multiple of the mean two thirds of the readings or more apply (each of
    their weights that multiple), else 1."""
    scales = [r.relative[0] for r in readings if r is not None and r.relative]
    most = max(scales, key=lambda s: sum(_the_mean(r, s) for r in readings), default=1.0)
    return most if 3 * sum(_the_mean(r, most) for r in readings) >= 2 * len(scales) else 1.0


def _kept_over_samples(rs: list[Reading], torchs: list[Reading]) -> bool:
    """Return whether a term on rows a mask picked of a batch, read under the batch's samples
    (its images), applies one multiple of their mean in two thirds of its readings or more,
    none its count times the mean (a sum over the samples), where under torch's count no one
    multiple holds: each sample's sum times a constant of the code's (a detector's boxes
    summed at the positive anchors, divided by a fixed count), its count of targets changing
    from batch to batch. A sum grown on a shorter batch is named as a constant's is
    (watch_constants.py)."""
    kept = _common(list(rs))
    summed = any(r.count >= 2 and _the_mean(r, r.count) for r in rs)
    return not near(kept, 1) and not summed and near(_common(list(torchs)), 1)


def terms_meant(
    readings: dict[tuple[int, str], list[Reading]],
    alternatives: dict[tuple[int, str], dict[str, list[Reading]]],
    v: Verdicts,
) -> None:
    """Read each term of several under the other count its calls may divide by (a detector's
    classification summed over the batch's positives, beside a box regression's mean), where
    under it two thirds of the term's readings or more apply the mean, and more than under
    torch's count (meant's rule, a term at a time), one of them at a count of 2 or more (where
    the count is 1, its mean is its sum: a sum undivided reads the same), and none applies its
    own count times the mean (that sum's); note it (Verdicts.terms_counted)."""
    for key, by in alternatives.items():
        torchs = sum(_the_mean(r) for r in readings[key])
        for other, rs in sorted(by.items()):
            if other == "unmasked":  # (every element, a mask's drops too: a known mistake's)
                continue
            right = sum(_the_mean(r) for r in rs)
            read_ = sum(r.relative is not None for r in rs)
            told = any(r.count >= 2 and _the_mean(r) for r in rs)
            summed = any(r.count >= 2 and _the_mean(r, r.count) for r in rs)
            mean = right > torchs and 3 * right >= 2 * read_ and told and not summed
            kept = other == "picked" and not right + torchs  # (a constant over the images)
            if mean or (kept and _kept_over_samples(rs, readings[key])):
                readings[key] = rs
                v.terms_counted[key[1]] = other
                break
