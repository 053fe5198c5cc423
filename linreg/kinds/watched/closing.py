"""How an update is closed (`close`): what its steps applied, read param by param as numbers
(no gradient is kept): directly, whether it applied its rows' mean (applied.py); where not, the
inner products its weights are solved from, per micro-batch or per term (a loss function's, or
a head's: on_heads); where its losses fall into objectives that reach no param of another's
(two models, each its own backward()), each objective on its own rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from linreg.kinds.watched.applied import applied_mean, clamped, flat, scaled, summed
from linreg.kinds.watched.heads import Piece
from linreg.kinds.watched.records import Column, LossCall, MicroBatch, Open, Update


def _terms(mb: MicroBatch, split: set[str]) -> list[list[LossCall]]:
    """Return a micro-batch's loss calls, those of one term together (term_of): a loss per row
    or per step added up is one term (its sum); losses of different functions are each a term
    of their own (a multi-task loss: mse + 0.5 * cross_entropy), as they are where each task's
    loss goes through its own backward() (a head per task on a shared trunk)."""
    by: dict[str, list[LossCall]] = {}
    for c in mb.losses:
        by.setdefault(term_of(c, split), []).append(c)
    return list(by.values())


def _several(micro: list[MicroBatch], calls: list[list[LossCall]], split: set[str]) -> bool:
    """Return whether the calls are terms weighed each its own way, not one mean: more than a
    term a micro-batch, or of several functions (or heads: split)."""
    return len(calls) > len(micro) or len({term_of(c[0], split) for c in calls}) > 1


def _pooled(micro: list[MicroBatch], calls: list[list[LossCall]], split: set[str]) -> bool:
    """Return whether terms that are tasks of one function on heads of their own (split) are
    to be read first as one mean of all their rows (tasks pooled into one mean on purpose,
    where the update applied it): where the tasks' counts differ, and the calls would be one
    mean but for their heads. (Where the counts are equal, so is the average of the tasks'
    means: an update of a nominal divisor, read as terms, shows it beside the others.)"""
    tasks: defaultdict[str, float] = defaultdict(float)  # each term's count
    for c in calls:
        tasks[term_of(c[0], split)] += sum(x.count for x in c)
    by_function = [c for mb in micro for c in _terms(mb, set())]
    return len(set(tasks.values())) > 1 and not _several(micro, by_function, set())


def on_heads(micro: list[MicroBatch]) -> set[str]:
    """Return the loss functions whose calls in the micro-batches reached two heads or more
    (graphs.head: the params nearest their input): tasks of one function, a regression per
    head on a shared trunk, each the mean of its own rows, not one mean over both tasks' rows.
    Two sources pooled through stems of their own into one head, or a mixture of experts
    routed by its rows, end on one head: one objective."""
    reach: dict[str, dict[int, set[int]]] = {}  # per function, per head: the params reached
    read: dict[int, set[Piece | None]] = {}  # per head: the pieces of an output read
    for mb in micro:
        for c in mb.losses:
            if c.head:
                reach.setdefault(c.name, {}).setdefault(c.head, set()).update(c.grads)
                read.setdefault(c.head, set()).add(c.piece)
    # tasks each reach a param another does not (its head), or read columns of one output that
    # another does not (heads.Head.apart); where two heads' losses reach the same params and
    # read the same, one objective's losses end on each (a contrastive loss's two
    # directions, each its own matmul, on the same two towers)
    return {
        name
        for name, heads in reach.items()
        if len(heads) > 1
        and len({(frozenset(r), frozenset(read[h])) for h, r in heads.items()}) == len(heads)
    }


def term_of(c: LossCall, split: set[str]) -> str:
    """Return the term a loss call is of: its function's, and its head's where the update's
    calls of that function reached several (on_heads)."""
    return f"{c.name or 'loss'} (head {c.head})" if c.name in split and c.head else c.name


def close(
    update: Open, tol: float, terms: Callable[[list[MicroBatch]], bool] | None = None
) -> Update:
    """Return an update's numbers (_close); where its losses fall into objectives that reach
    no param of another's (_apart), each one's too (parts): two models are two objectives,
    each the mean of its own rows, not one over the rows of both. terms tells whether a
    part's micro-batches are terms of one objective (Steps.terms), as the update's are."""
    reached = _reached(update)
    whole = _close(reached, tol)
    if len(reached.params) < len(update.params):
        whole = replace(whole, aside=len(update.params) - len(reached.params))
    apart = [] if update.blind or whole.elsewhere else _apart(reached)
    if len(apart) < 2:
        return whole
    parts = (
        replace(
            update,
            params=ps,
            micro=ms,
            terms=update.terms if terms is None else terms(ms),
            before_end=before,
        )
        for ps, ms, before in apart
    )
    return replace(whole, parts=tuple(_close(part, tol) for part in parts))


def _reached(update: Open) -> Open:
    """Return the update read on the params its losses reached, where others applied a
    gradient beside them: a learnable weight of its losses (Kendall's log-variances, in
    `exp(-s) * loss + s`), or a param a term written by hand alone reaches. Nothing read says
    what those should apply; the rest is read as its losses explain it (a term the watch does
    not read that reaches them too leaves the update unexplained, as before)."""
    reached = {key for mb in update.micro for c in mb.losses for key in c.grads}
    if not reached or update.blind:  # (a backward() of no loss read may explain the rest)
        return update
    aside = {  # (not one whose .grad held a gradient before the update's first backward():
        id(p)  # grad-zeroing reads it, where the code zeroed the model's alone)
        for p in update.params
        if id(p) not in reached
        and (g := update.applied.get(id(p))) is not None
        and bool(g.any())
        and ((held := update.carried.get(id(p))) is None or not bool(held.any()))
    }
    if not aside or all(id(p) in aside for p in update.params):
        return update
    return replace(update, params=[p for p in update.params if id(p) not in aside])


def _apart(update: Open) -> list[tuple[list[Tensor], list[MicroBatch], int]]:
    """Return the update's params and micro-batches split by the params its losses reached:
    losses that reach a param in common are one objective's (a shared trunk, micro-batches of
    one model); so are losses on one optimizer's params that one backward() reached (heads on
    a frozen trunk, their losses added, or weighed, by the code), and all of one optimizer's
    where each such set's losses are of functions no other's are: tasks (a head's price
    regressed, another's kind classified, each its own backward()); one set of params per
    objective, each with its losses alone (two models, each its own backward(), in one
    optimizer or two; heads of which two share a function: a linear probe per task, read
    apart whatever a third holds). One set (no split) where a loss reached no
    param stepped, or a param no loss reached applied a gradient (a penalty by hand: whose it
    is is not seen)."""
    stepped = {id(p): p for p in update.params}
    # per objective: its params, its backward()s (by position), its losses' functions
    sets: list[Objective] = []
    for i, mb in enumerate(update.micro):
        for c in mb.losses:
            reached = stepped.keys() & c.grads.keys()
            if not reached:
                return []
            joined = [s for s in sets if not s[0].isdisjoint(reached)]
            sets = [s for s in sets if s[0].isdisjoint(reached)]
            sets.append(
                (
                    reached.union(*(s[0] for s in joined)),
                    {i}.union(*(s[1] for s in joined)),
                    {c.name}.union(*(s[2] for s in joined)),
                )
            )
    for group in update.stepped:  # on one optimizer's params: one backward()'s, or tasks
        on = _joined(
            [s for s in sets if not s[0].isdisjoint(group)],
            lambda a, b: not a[1].isdisjoint(b[1]),
        )
        names = [n for s in on for n in s[2]]
        if len(names) == len(set(names)):  # each its own function: a task each, one objective
            on = _joined(on, lambda a, b: True)
        sets = [s for s in sets if s[0].isdisjoint(group)] + on
    unreached = stepped.keys() - set().union(*(s[0] for s in sets))
    if len(sets) < 2 or any(
        (g := update.applied.get(key)) is not None and bool(g.any()) for key in unreached
    ):
        return []
    out = []
    for params, backwards, _ in sets:
        micro = [
            replace(mb, losses=mine)
            for mb in update.micro
            if (mine := [c for c in mb.losses if not params.isdisjoint(c.grads)])
        ]
        before = sum(i < update.before_end for i in backwards)  # its own, before an epoch's end
        out.append(([p for key, p in stepped.items() if key in params], micro, before))
    return out


Objective = tuple[set[int], set[int], set[str]]  # its params, backward()s, losses' functions


def _joined(sets: list[Objective], one: Callable[[Objective, Objective], bool]) -> list[Objective]:
    """Return the sets joined where one(a, b) holds of any two, as they were (connected
    components: the same whatever the order of the backward() calls that made them)."""
    parent = list(range(len(sets)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(sets):
        for j in range(i):
            if one(a, sets[j]):
                parent[root(i)] = root(j)
    out: dict[int, Objective] = {}
    for i, (params, backwards, names) in enumerate(sets):
        held = out.setdefault(root(i), (set(), set(), set()))
        held[0].update(params)
        held[1].update(backwards)
        held[2].update(names)
    return list(out.values())


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
    split = on_heads(update.micro)
    calls = [c for mb in update.micro for c in _terms(mb, split)]  # each micro-batch's, per term
    several = _several(update.micro, calls, split)
    group = hash(tuple(sorted(id(p) for p in update.params)))
    pooled = bool(split) and _pooled(update.micro, calls, split)
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
    for p in update.params:
        key = id(p)
        got, before, held = update.applied.get(key), update.before.get(key), update.carried.get(key)
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
        norm_clipped=update.norm_clipped, group=group, norm=norm, hand=hand,
        optimizers=optimizers,
        hand_before=hand_before, one_row=_one_row(update.micro), penalty=(qq, sq, qa, qb),
        zeroed=zeroed, divided=_divided(update.micro),
        again=bool(update.micro) and all(mb.again for mb in update.micro),
        epoch=min((mb.epoch for mb in update.micro if mb.epoch is not None), default=None),
        others=others,
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
