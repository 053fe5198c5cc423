"""A mask of the code's on a loss it reduces itself (reduction="none"), read from the graph
before the backward() that reaches it runs: `(l * mask).sum() / mask.sum()`, `l[mask].mean()`,
`l.masked_select(mask)`, `l.masked_fill(~mask, 0)`, `torch.where(mask, l, 0)`. The loss is
then the loss of the elements the mask keeps (its gradients theirs, taken now through the
graph still whole; its count theirs), and its elements are judged alike among those alone.

A mask is a tensor that needs no grad, 0 or 1 at each element (a product by it), or the
condition an index, a select, a fill or a where takes, between which and the loss nothing
stands but reshapes that keep the elements' order. Zeros a loss makes itself (a hinge's
relu, a clamp) are no mask: nothing but the graph's own nodes stands there, and the
elements they zero fail the check of weights alike (losses._weighed), as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.graphs import users
from linreg.kinds.watched.records import LossCall

# what may stand between a per-element loss and its mask, keeping its elements' order
_IN_ORDER = ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0",
             "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
             "UnsqueezeBackward0", "CloneBackward0", "ToCopyBackward0")  # fmt: skip


def masked(calls: Iterable[LossCall], roots: list[Any]) -> None:
    """Read each reduction="none" loss of two or more elements that a backward() (its roots'
    nodes) reaches through a mask alone as the loss of the elements the mask keeps; one whose
    mask keeps none of its counted elements is left unread (LossCall.alike: no gradient to
    weigh). The caller holds the watch busy: the passes below are the watch's."""
    read = [c for c in calls if c.by_code and c.elements > 1 and c.output is not None]
    if not read:
        return
    of = users(roots)
    for c in read:
        assert c.output is not None
        mask = _kept(of, c.node, c.output)
        if mask is None or bool(mask.all()):
            continue
        # the elements its mean counts that the mask keeps (a class-index target not ignored);
        # none where class weights weigh them (no mask read beside those)
        if c.counted is None:
            c.alike = False
            continue
        counted = c.counted.to(mask.device)
        kept = mask & counted
        if not bool(kept.any()):  # (no gradient to weigh: not read)
            c.alike = False
            continue
        trained = [p for p in c.under if p.requires_grad]
        c.taking = True  # (the hook on its output runs as this pass begins there)
        try:
            grads = torch.autograd.grad(
                c.output,
                trained,
                grad_outputs=kept.to(c.output.dtype),
                retain_graph=True,
                allow_unused=True,
            )
        except Exception:  # (a graph that allows no second pass: left unread)
            c.alike = False
            continue
        finally:
            c.taking = False
        c.grads = {id(p): g.detach() for p, g in zip(trained, grads, strict=True) if g is not None}
        every = c.count  # the elements its mean would count, the mask aside
        c.kept, c.count = mask, float(kept.sum())
        # (a sum over the kept tokens divided by the batch's sentences: its rows still)
        c.others = {k: n for k, n in c.others.items() if k == "rows" and n != c.count}
        # every element its mean would count, the mask aside: a mean the code may mean where
        # the mask selects by the loss's own values, else a known mistake (watch_counts)
        c.others["elements" if _by_value(c.output.detach(), mask, counted) else "unmasked"] = every


def _kept(users: dict[int, list[Any]], node: Any, output: Tensor) -> Tensor | None:
    """Return which of a loss output's elements its one use under the roots keeps, where that
    use is a mask (in the output's shape); None where it is anything else, or used twice."""
    while True:
        found = users.get(id(node), [])
        if len(found) != 1:
            return None
        user = found[0]
        if type(user).__name__ not in _IN_ORDER:
            break
        node = user
    condition = _condition(user, node)
    if condition is None or condition.numel() != output.numel():
        return None
    return condition.reshape(output.shape).to(output.device)


def _condition(user: Any, node: Any) -> Tensor | None:
    """Return which elements a node keeps of its input `node` (a bool tensor of the input's
    shape), where it is a mask; else None."""
    kind = type(user).__name__
    inputs = [m for m, _ in user.next_functions]
    if kind == "MulBackward0" and inputs.count(node) == 1 and None in inputs:
        own, other = getattr(user, "_saved_self", None), getattr(user, "_saved_other", None)
        mask = other if inputs[0] is node else own
        if not isinstance(mask, Tensor) or mask.requires_grad or mask.ndim == 0:
            return None
        ones = mask != 0
        if not bool((mask[ones] == 1).all()):  # weights of the code's own, not a mask
            return None
        return ones
    if kind in ("MaskedSelectBackward0", "MaskedFillBackward0"):
        mask = getattr(user, "_saved_mask", None)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            return None
        return mask if kind == "MaskedSelectBackward0" else ~mask
    if kind == "IndexBackward0":
        indices: tuple[Any, ...] = tuple(getattr(user, "_saved_indices", ()))
        index = indices[0] if len(indices) == 1 else None
        return index if isinstance(index, Tensor) and index.dtype == torch.bool else None
    if kind == "WhereBackward0" and inputs.count(node) == 1 and None in inputs:
        condition = getattr(user, "_saved_condition", None)
        if not isinstance(condition, Tensor):
            return None
        return condition if inputs[0] is node else ~condition
    return None


def _by_value(output: Tensor, mask: Tensor, counted: Tensor) -> bool:
    """Return whether a mask keeps the counted elements whose loss is above (or below) a
    value and drops the rest: a selection by the loss's own values (hard examples, `keep =
    l > l.median()`), which a mean over every element may mean (a hinge's zeros), where a
    mask of missing labels or padding is a mean over what it keeps."""
    kept, dropped = output[mask & counted], output[~mask & counted]
    if not kept.numel() or not dropped.numel():
        return False
    return bool(kept.min() > dropped.max()) or bool(kept.max() < dropped.min())
