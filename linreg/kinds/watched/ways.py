"""The numbers a loss is weighed by on its way to a backward()'s root (`weighed`): products
and quotients by a number through sums of losses or of all a loss's elements, reshapes
weighing nothing, a loss scaler's scale none; and the divisions alone (`divisors`: a loss
divided by a framework's accumulation count, again by the code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

import torch
from torch import Tensor

from linreg.kinds.watched.graphs import RESHAPES


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
    if kind.rstrip("0123456789").removesuffix("Backward") in RESHAPES:
        return (), node.next_functions[:1], summed  # l.sum(0, keepdim=True).squeeze()
    return None


def _whole_sum(node: Any) -> bool:
    """Return whether a sum over dims (SumBackward1) summed every element: one is left."""
    sizes, dims = tuple(node._saved_self_sym_sizes), node._saved_dim
    if not sizes or not dims:  # a number, or dim=() or None: every dim
        return True
    summed = {d % len(sizes) for d in dims}
    return bool(math.prod(n for d, n in enumerate(sizes) if d not in summed) == 1)


def scaler_scale(node: Any, scales: Mapping[int, float] | None) -> float:
    """Return the scale where a backward()'s root is GradScaler.scale's product
    (scaler.scale(loss)), else 0."""
    if type(node).__name__ != "MulBackward0" or not _scaled(node, scales):
        return 0.0
    other = _operand(node)
    return 0.0 if other is None else float(other)


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
