"""How an autograd graph is read: its leaves that require grad, its nodes and their users,
whether a per-element loss is reduced whole (a sum or a mean of it), and what a loss's mean
divides by (the numbers a loss is weighed by on its way to the root: ways.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.records import LossCall

_INDEXED = ("cross_entropy", "nll_loss")  # class-index targets: -100 and class weights count


def leaves(node: Any) -> list[Tensor]:
    """Return the leaf tensors that require grad under an autograd node, in a fixed order."""
    out: dict[int, Tensor] = {}
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        variable = getattr(n, "variable", None)
        if isinstance(variable, Tensor):
            out.setdefault(id(variable), variable)
        stack += [m for m, _ in n.next_functions]
    return list(out.values())


class Leaves:
    """leaves(), for the losses computed between two backward() calls: the first MANY walked
    whole; from then on (a loss a time step, each on the steps before it) each node's leaves
    kept, so that a loss's walk stops at the nodes an earlier one's went through, where a walk
    each would cost the square of the sequence's length; those of a walk that met none of
    them kept alone (an evaluation's losses with grad on, each its own graph, are not all
    held). clear() at each backward()."""

    MANY = 8

    def __init__(self) -> None:
        self.walks = 0
        self.memo: dict[int, tuple[Any, tuple[Tensor, ...]]] = {}  # held: ids stay theirs

    def clear(self) -> None:
        self.walks, self.memo = 0, {}

    def __call__(self, node: Any) -> list[Tensor]:
        self.walks += 1
        if self.walks <= self.MANY or node is None:
            return leaves(node)
        before, met = len(self.memo), id(node) in self.memo
        made: dict[int, tuple[Any, tuple[Tensor, ...]]] = {}
        stack = [(node, False)]
        while stack:  # after its inputs, each node: its own leaf and theirs, in a fixed order
            n, inputs_done = stack.pop()
            if id(n) in self.memo:
                continue
            below = [m for m, _ in n.next_functions if m is not None]
            if not inputs_done:
                stack.append((n, True))
                stack += [(m, False) for m in below if id(m) not in self.memo]
                met = met or any(  # (a param's own node every graph on it shares)
                    id(m) in self.memo and id(m) not in made and not hasattr(m, "variable")
                    for m in below
                )
                continue
            out: dict[int, Tensor] = {}
            variable = getattr(n, "variable", None)
            if isinstance(variable, Tensor):
                out[id(variable)] = variable
            for m in below:
                out.update((id(t), t) for t in self.memo[id(m)][1])
            made[id(n)] = self.memo[id(n)] = (n, tuple(out.values()))
        if before and not met:
            self.memo = made
        return list(self.memo[id(node)][1])


def leaves_of(call: LossCall) -> list[Tensor]:
    return call.under


def _nodes(roots: list[Any]) -> Iterator[Any]:
    """Yield every autograd node under the roots, once each."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        stack += [m for m, _ in n.next_functions]


def users(roots: list[Any]) -> dict[int, list[Any]]:
    """Return, for each autograd node under the roots (its id), the nodes that use its output
    there."""
    found: dict[int, list[Any]] = {}
    for n in _nodes(roots):
        for m, _ in n.next_functions:
            if m is not None:
                found.setdefault(id(m), []).append(n)
    return found


def one_use(
    users: dict[int, list[Any]], node: Any, through: tuple[str, ...]
) -> tuple[Any, Any] | None:
    """Follow a node's one use (users: graph's users()) through the nodes named in `through`
    (reshapes that keep its elements' order): return the last of those (or the node itself)
    and the first use that is none of them; None where a node on the way has other than one
    use."""
    while True:
        found = users.get(id(node), [])
        if len(found) != 1:
            return None
        if type(found[0]).__name__ not in through:
            return node, found[0]
        node = found[0]


def graph(roots: list[Any], accumulators: bool = True) -> set[int]:
    """Return the ids of every autograd node under the roots; accumulators=False leaves out
    the leaves' own nodes (AccumulateGrad), which every graph on the same params shares."""
    return {id(n) for n in _nodes(roots) if accumulators or not hasattr(n, "variable")}


# what a per-element loss may pass through on its way to a sum or a mean of all its elements
RESHAPES = ("View", "UnsafeView", "ReshapeAlias", "Permute", "Transpose", "T", "Squeeze",
             "Unsqueeze", "Clone")  # fmt: skip
_WHOLE = ("SumBackward0", "MeanBackward0", "SumBackward1", "MeanBackward1")


def reduced_whole(roots: list[Any], node: Any) -> bool:
    """Return whether every use of a node's output under the roots is a sum or a mean (over
    any dims, through reshapes): `l.mean()`, `l.sum() / n`, `l.mean(0)`; not a weight of the
    code's (`l * w`), which, on an output of one element, looks like a coefficient."""
    of = users(roots)

    def whole(n: Any, depth: int) -> bool:
        found = of.get(id(n), [])
        return bool(found) and all(
            type(u).__name__ in _WHOLE
            or (
                type(u).__name__.rstrip("0123456789").removesuffix("Backward") in RESHAPES
                and depth < 8
                and whole(u, depth + 1)
            )
            for u in found
        )

    return whole(node, 0)


def count_of(name: str, per: Tensor, given: dict[str, Any]) -> tuple[float, float | None]:
    """Return what the loss's mean divides by: class-index targets not ignored, else every
    element; and where class weights weigh them, their weights' sum (what torch's own mean
    divides by), else None. `given` is the call's arguments by name."""
    kept = not_ignored(name, given)
    if kept is None:
        return float(per.numel()), None
    target, weight = given["target"], given.get("weight")
    weighted = float(weight[target[kept]].sum()) if isinstance(weight, Tensor) else None
    return float(kept.sum()), weighted


def counted(name: str, per: Tensor, given: dict[str, Any]) -> Tensor | None:
    """Return which of a reduction="none" loss's elements its mean would count (count_of): the
    class-index targets not ignored, else every element; None where class weights weigh them."""
    kept = not_ignored(name, given)
    if kept is None:
        return torch.ones_like(per, dtype=torch.bool)
    if isinstance(given.get("weight"), Tensor) or kept.shape != per.shape:
        return None
    return kept.detach()


def not_ignored(name: str, given: dict[str, Any]) -> Tensor | None:
    """Return which class-index targets of a loss's call are not its ignore_index, where its
    targets are class indices (cross_entropy's, nll_loss's); else None."""
    target = given.get("target")
    if name in _INDEXED and isinstance(target, Tensor) and not target.is_floating_point():
        kept: Tensor = target != given.get("ignore_index", -100)
        return kept
    return None
