"""How an autograd graph is read: its leaves that require grad, its nodes, whether a
per-element loss is reduced whole (a sum or a mean of it), and what a loss's mean divides by.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

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


def graph(roots: list[Any], accumulators: bool = True) -> set[int]:
    """Return the ids of every autograd node under the roots; accumulators=False leaves out
    the leaves' own nodes (AccumulateGrad), which every graph on the same params shares."""
    return {id(n) for n in _nodes(roots) if accumulators or not hasattr(n, "variable")}


# what a per-element loss may pass through on its way to a sum or a mean of all its elements
_RESHAPES = ("View", "UnsafeView", "ReshapeAlias", "Permute", "Transpose", "T", "Squeeze",
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
                type(u).__name__.rstrip("0123456789").removesuffix("Backward") in _RESHAPES
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
    target = given.get("target")
    if name in _INDEXED and isinstance(target, Tensor) and not target.is_floating_point():
        kept = target != given.get("ignore_index", -100)
        weight = given.get("weight")
        weighted = float(weight[target[kept]].sum()) if isinstance(weight, Tensor) else None
        return float(kept.sum()), weighted
    return float(per.numel()), None


def counted(name: str, per: Tensor, given: dict[str, Any]) -> Tensor | None:
    """Return which of a reduction="none" loss's elements its mean would count (count_of): the
    class-index targets not ignored, else every element; None where class weights weigh them."""
    target = given.get("target")
    if name in _INDEXED and isinstance(target, Tensor) and not target.is_floating_point():
        if isinstance(given.get("weight"), Tensor) or target.shape != per.shape:
            return None
        kept: Tensor = target != given.get("ignore_index", -100)
        return kept.detach()
    return torch.ones_like(per, dtype=torch.bool)


def divisors(node: Any, losses: set[int], past_sums: bool = False) -> tuple[float, ...]:
    """Return the numbers a loss was divided by on its way to a backward()'s root (`loss / 2 /
    k`, each a division by a number): from the root's node down to one of the losses' nodes
    (ids), () where anything else stands between (a sum of losses, a product), but for
    products by a number at the root (a loss scaler's scale, on the loss as backward() got
    it); past_sums: those above a sum too (`(ce + kl) / k`: every term divided)."""
    while type(node).__name__ == "MulBackward0" and _a_number(getattr(node, "_saved_other", None)):
        node = node.next_functions[0][0]
    out: list[float] = []
    while node is not None and id(node) not in losses:
        division = type(node).__name__ == "DivBackward0"
        other = getattr(node, "_saved_other", None) if division else None
        if past_sums and type(node).__name__ == "AddBackward0":
            return tuple(out)
        if not _a_number(other):
            return ()
        out.append(float(other))
        node = node.next_functions[0][0]
    return tuple(out) if node is not None else ()


def weighed(
    node: Any, losses: set[int], scales: Mapping[int, float] | None = None
) -> dict[int, tuple[float, ...]]:
    """Return, for each loss (its node's id) a backward()'s root (node) reaches through sums of
    losses (`la + lb`, `sum(losses)`) or of all a loss's elements (`l.sum()`,
    `l.sum(dim=(0, 1))`, `l.sum(1).sum(0)`), the numbers it is multiplied or divided by on its
    way there: () where none; a loss reached only through anything else (a product by a tensor,
    a mask, a mean, a sum over some dims whose sums are not summed in turn), or not at all, is
    left out. Reshapes weigh nothing, and so do losses stacked or joined where every element is
    summed (`torch.stack(ls).sum()`). A loss scaler's scale is none (scales: the storages and
    values of GradScaler.scale's, on the loss or a term of it; else, at the root, _scaler), and
    so is a Python float 1.0; any other number is one, a count of 1 too; a division by 0 stands
    between. One walk for every loss, each node met once (at its least depth, up to 64), the
    first way to each loss taken."""
    while type(node).__name__ == "MulBackward0" and (_scaled(node, scales) or _scaler(node)):
        node = node.next_functions[0][0]
    found: dict[int, tuple[float, ...]] = {}
    depths: dict[tuple[int, bool], int] = {}
    walk: list[tuple[Any, int, bool, tuple[float, ...]]] = [(node, 0, False, ())]  # a stack,
    # children pushed last-first: met in their order
    while walk:
        node, depth, summed, numbers = walk.pop()
        if node is None or depth > 64:
            continue
        if id(node) in losses:
            found.setdefault(id(node), numbers)
            continue
        key = (id(node), summed)
        if depths.get(key, 65) <= depth:
            continue
        depths[key] = depth
        step = _step(node, scales, summed)
        if step is not None:
            more, below, below_summed = step
            walk.extend((c, depth + 1, below_summed, numbers + more) for c, _ in reversed(below))
    return found


def _step(
    node: Any, scales: Mapping[int, float] | None, summed: bool
) -> tuple[tuple[float, ...], tuple[Any, ...], bool] | None:
    """Return what a node weighs a loss below it by, the nodes below it a weight passes to,
    and whether every element of theirs is summed above; None where it passes none (weighed)."""
    kind = type(node).__name__
    if kind == "MulBackward0" and _scaled(node, scales):  # a GradScaler's, on a term
        return (), node.next_functions[:1], summed
    if kind in ("MulBackward0", "DivBackward0"):
        other = _operand(node)
        if other is None or not math.isfinite(float(other)) or float(other) == 0:
            return None
        # a Python float 1.0 (a task's weight of 1, `weights[task] * loss`) weighs nothing;
        # an int or a tensor of 1 may be a count of the code's that is 1 here (num_pos)
        literal = other.dtype == torch.float64 and not other.ndim and float(other) == 1
        value = float(other) if kind == "MulBackward0" else 1 / float(other)
        return (() if literal else (value,)), node.next_functions[:1], summed
    if kind == "SumBackward0" or (kind == "SumBackward1" and (summed or _whole_sum(node))):
        return (), node.next_functions, True  # every element summed: the code's own sum
    if kind == "AddBackward0" and getattr(node, "_saved_alpha", 1) == 1:
        return (), node.next_functions, summed
    if kind in ("StackBackward0", "CatBackward0") and summed:
        return (), node.next_functions, summed  # each loss's elements among those summed
    if kind.rstrip("0123456789").removesuffix("Backward") in _RESHAPES:
        return (), node.next_functions[:1], summed  # l.sum(0, keepdim=True).squeeze()
    return None


def _whole_sum(node: Any) -> bool:
    """Return whether a sum over dims (SumBackward1) summed every element: one is left."""
    sizes, dims = tuple(node._saved_self_sym_sizes), node._saved_dim
    if not sizes or not dims:  # a number, or dim=() or None: every dim
        return True
    summed = {d % len(sizes) for d in dims}
    return bool(math.prod(n for d, n in enumerate(sizes) if d not in summed) == 1)


def _scaled(node: Any, scales: Mapping[int, float] | None) -> bool:
    """Return whether a product's number is a GradScaler's scale (its storage and value,
    noted: a storage freed and reused holds another number)."""
    other = _operand(node)
    if other is None or not scales:
        return False
    return scales.get(other.untyped_storage().data_ptr()) == float(other)


def _scaler(node: Any) -> bool:
    """Return whether a product's number is a loss scaler's scale, one not GradScaler's
    (DeepSpeed's, a Python number): a power of two from 1024."""
    other = _operand(node)
    return other is not None and float(other) >= 1024 and math.log2(float(other)).is_integer()


def _operand(node: Any) -> Tensor | None:
    """Return the number a product or quotient node took (loss * 2, loss / n), else None (a
    product by a tensor: its other operand saved too)."""
    other = getattr(node, "_saved_other", None)
    if not _a_number(other) or getattr(node, "_saved_self", None) is not None:
        return None
    return other


def _a_number(t: Any) -> TypeGuard[Tensor]:
    """Return whether t is a number held as a tensor (an operand autograd saved)."""
    return isinstance(t, Tensor) and t.numel() == 1 and not t.requires_grad
