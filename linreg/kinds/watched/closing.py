"""How an update is closed (`close`): what its steps applied, read param by param as numbers
(no gradient is kept): directly, whether it applied its rows' mean (applied.py); where not, the
inner products its weights are solved from, per micro-batch or per term (a loss function's, or
a head's: terms.py); where its losses fall into objectives that reach no param of another's
(two models, each its own backward()), each objective on its own rows (apart.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from linreg.kinds.watched.apart import apart, set_aside
from linreg.kinds.watched.applied import applied_mean, clamped, flat, scaled, summed
from linreg.kinds.watched.kept import Column, Update
from linreg.kinds.watched.records import LossCall, MicroBatch, Open, counted_by
from linreg.kinds.watched.terms import is_pooled, of_several, splits, steps, term_of, terms_of


def close(
    update: Open, tol: float, terms: Callable[[list[MicroBatch]], bool] | None = None
) -> Update:
    """Return an update's numbers (_close), on the params its losses reached (set_aside);
    where its losses fall into objectives that reach no param of another's (apart), each
    one's too (parts): two models are two objectives,
    each the mean of its own rows, not one over the rows of both. terms tells whether a
    part's micro-batches are terms of one objective (Steps.terms), as the update's are."""
    reached = set_aside(update)
    whole = _close(reached, tol)
    if len(reached.params) < len(update.params):
        whole = replace(whole, aside=len(update.params) - len(reached.params))
    split = [] if update.blind or whole.elsewhere else apart(reached)
    if len(split) < 2:
        return whole
    parts = (
        replace(
            update,
            params=ps,
            micro=ms,
            terms=update.terms if terms is None else terms(ms),
            before_end=before,
        )
        for ps, ms, before in split
    )
    return replace(whole, parts=tuple(_close(part, tol) for part in parts))


def _close(update: Open, tol: float) -> Update:
    """Return an update's numbers, read param by param (no vector of every param at once is
    built): first whether it applied the mean of its rows (or a clipping of it) to the relative
    tolerance tol, directly; where not, the float64 inner products its weights are solved from."""
    value_clipped = bool(update.clip_bounds) and clamped(update, tol)
    if value_clipped:  # elementwise, no factor of it: read before clipping, as it was meant
        update = replace(update, applied=dict(update.before))
    counts = [mb.count for mb in update.micro]
    optimizers = hash(tuple(sorted(update.optimizers)))
    if counts and _elsewhere(update):  # its optimizers stepped params no loss reached
        none = torch.zeros(0, dtype=torch.float64)
        empty = (none, none, none, 0.0, 0.0, 0.0, False, False, update.blind)
        return Update(counts, *empty, tol=tol, elsewhere=True, optimizers=optimizers)
    split = splits(update.micro)
    calls = [c for mb in update.micro for c in terms_of(mb, split)]  # each micro-batch's, per term
    several = of_several(update.micro, calls, split)
    group = hash(tuple(sorted(id(p) for p in update.params)))
    by_head = any(not by for by in split.values())  # (tasks on heads of their own)
    pooled = by_head and is_pooled(update.micro, calls, split)
    keys = sorted({k for mb in update.micro for c in mb.losses for k in c.others})
    others = (
        () if several else tuple((k, tuple(mb.count_by(k) for mb in update.micro)) for k in keys)
    )
    if counts and not update.blind and (not several or pooled):
        right, through = applied_mean(update, sum(counts), tol)
        if right is not None:
            none = torch.zeros(0, dtype=torch.float64)
            return Update(
                counts, none, none, none, 0.0, 0.0, 0.0, False, True, 0, True,
                right or value_clipped, tol,
                terms=update.terms, dropped=update.dropped, redone=update.redone,
                dropped_counts=update.dropped_counts, foreign=update.foreign,
                crossed=update.crossed,
                before_end=update.before_end,
                calls=max(len(mb.losses) for mb in update.micro),
                steps=steps(update.micro),
                norm=0.0 if right or value_clipped else through, group=group,
                optimizers=optimizers, others=others, right_total=sum(counts),
            )  # fmt: skip
    m = len(calls) if several else len(update.micro)
    gram = torch.zeros(m, m, dtype=torch.float64)
    sa, sb = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    qq = torch.zeros(PENALTIES, PENALTIES, dtype=torch.float64)
    sq = torch.zeros(m, PENALTIES, dtype=torch.float64)
    qa, qb = (
        torch.zeros(PENALTIES, dtype=torch.float64),
        torch.zeros(PENALTIES, dtype=torch.float64),
    )
    aa = bb = ab = 0.0
    carried = applied_any = False
    zeroed = 0
    found = False  # a gradient the steps found in any param's .grad (0 or not)
    for p in update.params:
        key = id(p)
        got, before, held = update.applied.get(key), update.before.get(key), update.carried.get(key)
        found = found or got is not None
        a = flat(got, p)
        applied_any = applied_any or bool(a.any())
        held_any = held is not None and bool(held.any())
        carried = carried or held_any
        if held_any:
            a = a - flat(held, p)
        # before clipping: most updates clip nothing, and it is what they applied
        same = before is None or before is got or (got is not None and torch.equal(before, got))
        b = a if same else flat(before, p) - (flat(held, p) if held_any else 0.0)
        zeroed += not same and bool(b.any()) and not a.any()
        a_a = float(a @ a)
        aa += a_a
        bb += a_a if same else float(b @ b)
        ab += a_a if same else float(a @ b)
        penalized = _penalties(p)
        if penalized is not None:  # (into its rows of the PENALTIES)
            at, q = penalized
            qq[at.unsqueeze(1), at] += q @ q.T
            q_a = q @ a
            qa[at] += q_a
            qb[at] += q_a if same else q @ b
        if m:
            if several:
                s = torch.stack([flat(summed(MicroBatch(c), p), p) for c in calls])
            else:
                s = torch.stack([flat(summed(mb, p), p) for mb in update.micro])
            gram += s @ s.T
            s_a = s @ a
            sa += s_a
            sb += s_a if same else s @ b
            if penalized is not None:
                sq[:, at] += s @ q.T
    columns = tuple(
        Column(
            term_of(c[0], split) or "loss",
            sum(x.count for x in c),
            all(x.from_batch for x in c),
            "mean" if len(c) == 1 and c[0].reduction == "mean"
            else "sum" if all(x.reduction == "sum" for x in c) else "",
            len(c),
            all(x.weights == () for x in c),
            _per_row(c),
            tuple(sorted(
                (k, counted_by(k, c))
                for k in set.intersection(*(set(x.others) for x in c))
            )),
        )
        for c in calls
    ) if several else ()  # fmt: skip
    norm, hand, hand_before = scaled(aa, bb, ab, tol, value_clipped or update.norm_clipped)
    return Update(
        counts, gram, sa, sb, aa, bb, ab, carried, applied_any, update.blind,
        clipped=value_clipped, tol=tol, terms=update.terms, dropped=update.dropped,
        dropped_counts=update.dropped_counts, redone=update.redone, crossed=update.crossed,
        before_end=update.before_end,
        foreign=update.foreign, columns=columns,
        calls=max((len(mb.losses) for mb in update.micro), default=1),
        steps=steps(update.micro),
        norm_clipped=update.norm_clipped, group=group, norm=norm, hand=hand,
        optimizers=optimizers,
        hand_before=hand_before, one_row=_one_row(update.micro), penalty=(qq, sq, qa, qb),
        zeroed=zeroed, divided=_divided(update.micro),
        again=bool(update.micro) and all(mb.again for mb in update.micro),
        epoch=min((mb.epoch for mb in update.micro if mb.epoch is not None), default=None),
        others=others, zeros=found and not applied_any and not zeroed,
    )  # fmt: skip


def _per_row(calls: list[LossCall]) -> float | None:
    """Return the numbers that weighed each call times its target's rows, where that is one
    number for all the calls (a sum divided by the batch's rows), else None."""
    found = {
        round(math.prod(c.weights) * c.target[2][0], 9)
        for c in calls
        if c.weights and c.target is not None and len(c.target[2])
    }
    return found.pop() if len(found) == 1 and all(c.weights for c in calls) else None


PENALTIES = 4  # the penalties on the params an update is read beside (_penalties)


def _penalties(p: Tensor) -> tuple[Tensor, Tensor] | None:
    """Return the gradients of the penalties an update may hold beside its losses on one param,
    and which of the PENALTIES they are: L2's (the param) and L1's (its sign), each on the
    weights (2+ dims: rows 0 and 2) or on the rest (biases, norms' scales: rows 1 and 3),
    apart: d2l's penalty on w alone, or one on every param (up to its coefficient, the code's:
    weight decay added to .grad by hand too). None for a frozen param: none reaches it."""
    if not p.requires_grad:
        return None
    value = p.detach().reshape(-1).double()
    rest = int(p.ndim < 2)
    return torch.tensor([rest, 2 + rest]), torch.stack([value, value.sign()])


def _elsewhere(update: Open) -> bool:
    """Return True if the update's optimizers stepped params none of which any loss its
    micro-batches reached has, and none of which holds a gradient: an optimizer built over
    another model (one made again after it, a copy), so the model trained never moves."""
    reached = {key for mb in update.micro for c in mb.losses for key in c.grads}
    return reached.isdisjoint(map(id, update.params)) and not any(
        g is not None and bool(g.any()) for g in update.applied.values()
    )


def _divided(micro: list[MicroBatch]) -> tuple[str, int]:
    """Return the framework whose backward() divided every micro-batch's loss by one count,
    and that count (("", 1): none, or not the same for all)."""
    counts = {mb.divided for mb in micro}
    return counts.pop() if len(counts) == 1 else ("", 1)


def _one_row(micro: list[MicroBatch]) -> bool:
    """Return whether every loss the micro-batches reached had a target of one row (its leading
    size 1): each micro-batch's count is then one row's elements, and a loss summed over a
    row's outputs, its own constant, applies that many times the mean, as a sum would."""
    return bool(micro) and all(
        c.target is not None and len(c.target[2]) >= 1 and c.target[2][0] == 1
        for mb in micro
        for c in mb.losses
    )


def unread(tol: float) -> Update:
    """Return an update that could not be read (its gradients of a kind the watcher cannot
    take apart): fed, not judged."""
    none = torch.zeros(0, dtype=torch.float64)
    return Update(
        [], none.reshape(0, 0), none, none, 0.0, 0.0, 0.0, False, True, 1, tol=tol, unreadable=True
    )


def finite(u: Update) -> bool:
    """Return whether an update's numbers are all finite (not where a gradient was NaN: a
    label left NaN, a mean of no element)."""
    tensors = (u.gram, u.sa, u.sb)
    return (
        all(bool(torch.isfinite(t).all()) for t in tensors)
        and all(math.isfinite(x) for x in (u.aa, u.bb, u.ab))
        and all(finite(part) for part in u.parts)
    )
