"""Losses of one function on one prediction, each on a target of its own and weighed by numbers
(mixup's `lam * ce(out, y_a) + (1 - lam) * ce(out, y_b)`, cutmix's, a label smoothed by hand):
one loss on the prediction's rows, whose target is their mix (`mixed`). Read apart, as one
term of two calls, an update applies what no count of theirs explains (lam and 1 - lam on
their means), and no update of the loop could be judged.
"""

from __future__ import annotations

import math
from dataclasses import replace

from torch import Tensor

from linreg.kinds.watched.records import LossCall

__all__ = ["mixed"]


def mixed(calls: list[LossCall]) -> tuple[list[LossCall], dict[int, list[LossCall]]]:
    """Return the loss calls one backward() reached, those that mix targets on one prediction
    each replaced by one call: its per-element loss (or gradients, taken already) the calls'
    weighed by their shares of the weights (lam, 1 - lam), its count one call's, its weight
    their weights' sum (1 for mixup's, so none). Mixed: two calls or more of one function and
    head, on the same prediction tensor (alive), with targets of their own, reduced by torch
    alike (not reduction='none'), each weighed by numbers alone (LossCall.weights) that are
    not negative, of one count. Also return, for each one call (by id), the calls it is of."""
    groups: dict[tuple[str, int, int], list[LossCall]] = {}
    for c in calls:
        predicted = None if c.predicted is None else c.predicted()
        if predicted is not None and c.weights is not None and not c.by_code:
            groups.setdefault((c.name, c.head, id(predicted)), []).append(c)
    merged: dict[int, LossCall] = {}  # the first of each group's id -> the group's one call
    of: dict[int, list[LossCall]] = {}
    for group in groups.values():
        one = _one(group)
        if one is not None:
            merged[id(group[0])] = one
            of[id(one)] = group
    if not of:
        return calls, of
    gone = {id(c) for group in of.values() for c in group}
    return [merged.get(id(c), c) for c in calls if id(c) not in gone or id(c) in merged], of


def _one(group: list[LossCall]) -> LossCall | None:
    """Return the group's calls as one loss (see mixed), or None where they do not mix."""
    first = group[0]
    targets = [c.target for c in group]
    if (
        len(group) < 2
        or None in targets
        or len(set(targets)) < len(targets)
        or len({c.reduction for c in group}) > 1
        or any(not math.isclose(c.count, first.count) for c in group)
    ):
        return None
    weights = [math.prod(c.weights or ()) for c in group]
    total = sum(weights)
    if min(weights) < 0 or total <= 0:
        return None
    shares = [w / total for w in weights]
    kept = [c.per for c in group if c.per is not None]
    if kept and (len(kept) < len(group) or len({p.shape for p in kept}) > 1):
        return None
    base = next((c for c in group if c.from_batch), first)  # its target: the batch's
    one = replace(
        base,
        node=first.node,
        weights=() if math.isclose(total, 1.0) else (total,),
        from_batch=any(c.from_batch for c in group),
        under=list({id(p): p for c in group for p in c.under}.values()),
    )
    if kept:  # each per-element loss held, its gradients taken as the backward() begins
        per = shares[0] * kept[0]
        for s, p in zip(shares[1:], kept[1:], strict=True):
            per = per + s * p
        one.per = per
        return one
    grads: dict[int, Tensor] = {}  # (taken as each loss was computed)
    for s, c in zip(shares, group, strict=True):
        for key, g in c.grads.items():
            grads[key] = grads[key] + s * g if key in grads else s * g
    one.grads = grads
    return one
