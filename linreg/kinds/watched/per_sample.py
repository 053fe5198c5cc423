"""A mean per sample of the elements a mask keeps, then over the samples: each sequence's
kept tokens summed and divided by its own count of them, `((l * m).sum(1) / m.sum(1)).mean()`
(a sequence-level average: each sample weighs alike, whatever its length). Read from the graph
after the mask (masks.py) as a sum over the sample's other dims whose one use divides it by a
tensor of the samples' kept counts (clamped at 1 or not, or the batch's own lengths holding
them); the loss is then the sum over the samples of each one's mean (its gradients taken so,
its count the samples, `.mean()`'s, those that kept none too, or else those that kept one:
LossCall.others), and its elements are judged alike within a sample once each is weighed by
its sample's count (losses._weighed)."""

from __future__ import annotations

from math import prod
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.graphs import one_use

# what may stand between the mask and the sum over a sample's elements, keeping their order
_IN_ORDER = ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "CloneBackward0")


def per_sample(
    users: dict[int, list[Any]], mask_node: Any, kept: Tensor
) -> tuple[Tensor, int, int] | None:
    """Return, for each element of the masked loss (kept, in the loss's shape), its sample's
    count of kept elements, the samples that kept one and all the samples, where the masked
    loss's one use is a sum over every dim but the first whose one use divides it by those
    counts (a sample of none: any divisor, the count clamped); else None."""
    walked = one_use(users, mask_node, _IN_ORDER)
    if walked is None:
        return None
    node = walked[1]
    if type(node).__name__ != "SumBackward1" or getattr(node, "_saved_keepdim", True):
        return None
    sizes = tuple(getattr(node, "_saved_self_sym_sizes", ()))
    ndim = len(sizes)
    dims = {d - 2**64 if d >= 2**63 else d for d in getattr(node, "_saved_dim", ())}
    if ndim < 2 or {d % ndim for d in dims} != set(range(1, ndim)) or kept.numel() != prod(sizes):
        return None
    found = users.get(id(node), [])
    if len(found) != 1 or type(found[0]).__name__ != "DivBackward0":
        return None
    div = found[0]
    if [m for m, _ in div.next_functions] != [node, None]:  # (the sums divided, not dividing)
        return None
    by = getattr(div, "_saved_other", None)
    if not isinstance(by, Tensor) or by.requires_grad or tuple(by.shape) != (sizes[0],):
        return None
    counts = kept.reshape(sizes).flatten(1).sum(1).to(torch.float64)
    given = by.detach().to(device=counts.device, dtype=torch.float64)
    some = counts > 0
    if not bool(some.any()) or not torch.allclose(given[some], counts[some], rtol=1e-6, atol=0):
        return None
    each = torch.where(some, counts, torch.ones_like(counts))  # (a row of none weighs 0 anyway)
    per = each.reshape(sizes[0], *([1] * (ndim - 1))).expand(sizes).reshape(kept.shape)
    return per, int(some.sum()), int(sizes[0])
