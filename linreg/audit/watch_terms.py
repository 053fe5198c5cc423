"""The weights of one term of a loss made of several (a multi-task loss) whose function
reduced as meant itself: the scale on it is a coefficient of the code's, so only how each
update weighs its micro-batches against one another is judged, and a shorter update against
the full ones where they all keep one coefficient (watch_weights.py judges the rest)."""

from __future__ import annotations

from collections import Counter

from linreg.audit.watch_ratios import (
    alike,
    carried,
    first_applied,
    full_window,
    near,
    never_applied,
    shown,
    weights_of,
)
from linreg.audit.watch_readings import Reading
from linreg.audit.watch_tally import Shortfall, Verdicts


def coefficients(readings: list[Reading], updates: int, v: Verdicts, term: str) -> None:
    """Name the weights of a term whose function reduced as meant itself (mse_loss's mean,
    where the mean is meant), or of the one loss ("") whose full updates each applied a
    multiple of their own: the scale on it is the code's coefficient, which may change from
    update to update (a weight ramped up, a weight per epoch, a root of the mean), so only how
    each update weighs its micro-batches against one another is judged, and only for a known
    mistake: alike over unequal counts, or the first ones never applied."""
    v.free.append(term)
    _shorter(readings, updates, v, term)
    full, windows = full_window(readings)
    for r in readings:
        v.at = r.j
        at = (
            f"update {r.j + 1} of {updates}{f', its {term} term' if term else ''} "
            f"({len(r.parts)} micro-batch(es), {r.count:g} counted)"
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
        weights = weights_of(r, rel)
        if full and r.count > full and len(r.parts) > windows:  # more micro-batches too
            v.fail(*carried(at, r, weights, full))
            continue
        dropped = first_applied(rel)
        if dropped is not None:
            v.fail(*never_applied(at, dropped, r.before_end))
        elif unequal and alike(weights):
            v.fail(
                "micro-batch-accumulation",
                f"{at} weighs its {len(r.parts)} micro-batches alike over counts "
                f"{shown(r.parts)}: divide each one's summed loss by the update's count",
            )
        # else: no known mistake, and a coefficient changed between its micro-batches (a
        # weight warmed up batch by batch) would look the same: not judged


def _shorter(readings: list[Reading], updates: int, v: Verdicts, term: str) -> None:
    """Judge a term's shorter updates against its full ones (of the most common count), where
    the term is in every micro-batch and every full update weighs its micro-batches alike at
    one coefficient: a coefficient the code keeps applies on a shorter update too.

    One that applies it times its share of a full update's micro-batches (or, where it is
    1, of its rows) weighs each micro-batch at a fixed coefficient whatever the window holds:
    a nominal divisor on the shorter update (short-last-batch) where the full ones apply the
    mean (a coefficient of 1), means added up undivided on the full ones (mean-vs-sum) where
    the shorter one does, and either elsewhere, named once for the run (Verdicts.shortfalls).
    One scaled by its share of a full update's rows where the coefficient is a full update's
    count is a sum over the rows (mean-vs-sum). A coefficient that changes (ramped, per
    epoch) leaves the full ones unlike, or the shorter one at none of these: not judged."""
    scales: list[tuple[Reading, float]] = []
    # a term on some micro-batches alone: its share is not theirs, but where it holds one
    # share of every update's (a task's own backward() beside another's, each window)
    shares = {len(r.parts) / r.micro for r in readings if r.micro}
    for r in readings:
        if r.unread or r.relative is None or (len(r.parts) != r.micro and len(shares) > 1):
            continue
        s = sum(x * c for x, c in zip(r.relative, r.parts, strict=True)) / r.count
        if s > 0 and alike([x / s for x in r.relative]):
            scales.append((r, s))
    counts = Counter(r.count for r, _ in scales)
    full = max(counts, key=lambda c: (counts[c], c), default=0.0)
    fulls = [(r, s) for r, s in scales if r.count == full]
    if len(fulls) < 2 or not alike([s for _, s in fulls]):
        return
    coefficient, parts = fulls[0][1], max(len(r.parts) for r, _ in fulls)
    of_term = f", its {term} term" if term else ""
    for r, s in scales:
        if r.count >= full:
            continue
        at = f"update {r.j + 1} of {updates}{of_term} "
        at += f"({len(r.parts)} micro-batch(es), {r.count:g} counted)"
        share, by_rows = len(r.parts) / parts, r.count / full
        fixed = near(s, coefficient * share) and not near(share, 1)  # each micro-batch alike
        if near(s, coefficient):
            v.shorter[term].add(r.j)
        elif fixed or (near(s, coefficient * by_rows) and near(coefficient, 1)):
            v.shorter[term].add(r.j)
            what = (
                f"{parts} micro-batches where it took {len(r.parts)}"
                if fixed
                else f"{full:g} counted where it took {r.count:g}"
            )
            kind = "nominal" if near(coefficient, 1) else "undivided" if near(s, 1) else "either"
            v.shortfalls.append(Shortfall(kind, r.j, at, s / coefficient, what, coefficient))
        elif near(s, coefficient * by_rows) and near(coefficient, full):
            v.at = r.j
            v.fail(
                "mean-vs-sum",
                f"every full update{of_term} applies {coefficient:.4g} times the mean "
                f"of its {full:g} counted, and {at} applies {s:.4g} times its own: a factor "
                "that grows with the rows (a loss summed over them, or multiplied by the batch "
                "size) where a mean was meant",
            )


def name_shortfalls(v: Verdicts) -> None:
    """Name the run's shorter updates whose terms apply a fixed coefficient per micro-batch
    (_shorter) once. Means added up undivided on the full updates and a nominal divisor on
    the shorter ones give the same numbers ((2 * mse + ce) / k is mse + 0.5 * ce undivided):
    mean-vs-sum where some term's shorter update applies its mean and no term's full ones do
    (the full ones are k times it), else short-last-batch, saying it may be either where no
    term's full updates apply its mean alone."""
    if not v.shortfalls:
        return
    kinds = {x.kind for x in v.shortfalls}
    if kinds == {"undivided"} or kinds == {"undivided", "either"}:
        x = next(x for x in v.shortfalls if x.kind == "undivided")
        v.at = x.j
        v.fail(
            "mean-vs-sum",
            f"every full update applies {x.coefficient:.4g} times the mean of its rows where "
            f"{x.at} applies its own mean: it adds up its micro-batches' mean losses undivided "
            "(divide each one's summed loss by the update's count)",
        )
        return
    x = next((x for x in v.shortfalls if x.kind == "nominal"), v.shortfalls[0])
    either = (
        ""
        if kinds == {"nominal"}
        else " (or the full updates add their micro-batches' means undivided, each at the "
        "coefficient the shorter one applies: the numbers are the same; either way, divide "
        "each micro-batch's summed loss by the count its update took)"
    )
    v.at = x.j
    v.fail(
        "short-last-batch",
        f"{x.at} applies {x.ratio:.4g} times the coefficient every full update applies to its "
        f"mean: it divides by a full update's {x.what} (a nominal batch size or accumulation "
        f"count){either}",
    )
