"""Which params an update is read on (`set_aside`: those its read losses reached, where a
learnable weight of its losses moved beside them) and how it splits into objectives that
reach no param of another's (`apart`: two models, each its own backward(); tasks on one
optimizer's params), each read on its own rows (closing.close).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import Tensor

from linreg.kinds.watched.records import MicroBatch, Open

Objective = tuple[set[int], set[int], set[str]]  # its params, backward()s, losses' functions


def set_aside(update: Open) -> Open:
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


def apart(update: Open) -> list[tuple[list[Tensor], list[MicroBatch], int]]:
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
