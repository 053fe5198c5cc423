"""A mask of the code's on a loss it reduces itself (reduction="none"), read from the graph
before the backward() that reaches it runs: `(l * mask).sum() / mask.sum()`, `l[mask].mean()`
(a mask of whole samples too: `l[keep].mean()`, keep of [B] on l of [B, T]),
`l.masked_select(mask)`, `l.masked_fill(~mask, 0)`, `torch.where(mask, l, 0)`. The loss is
then the loss of the elements the mask keeps (its gradients theirs, taken now through the
graph still whole; its count theirs), and its elements are judged alike among those alone.

A mask is a tensor that needs no grad, 0 or 1 at each element (a product by it), or the
condition an index, a select, a fill or a where takes, between which and the loss nothing
stands but reshapes that keep the elements' order (and no broadcast that grows the loss).
Zeros a loss makes itself (a hinge's relu, a clamp) are no mask: nothing but the graph's own
nodes stands there, and the elements they zero fail the check of weights alike
(losses._weighed), as before.

Only a mask the batch's data tells beyond chance is read (`of_data`): the fetched tensor the
code masked with (a validity flag), a fetched 0/1 tensor that is the mask and pads (an
attention mask, shifted or not), or one whose dropped elements, and those alone, are NaN or
one fill value (missing labels, padding, invalid pixels). There a mean over the elements kept
is meant, and one over every element (`(l * mask).mean()`) is a known mistake.
A mask the code makes of the model's outputs (hard examples kept by their loss, or by a
confidence) may mean either: not read, the update not judged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.graphs import one_use, users
from linreg.kinds.watched.per_sample import per_sample
from linreg.kinds.watched.records import LossCall

# what may stand between a per-element loss and its mask, keeping its elements' order
_IN_ORDER = ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0",
             "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
             "UnsqueezeBackward0", "CloneBackward0", "ToCopyBackward0")  # fmt: skip
# the masks taken element by element, the loss's shape theirs
_ELEMENTWISE = ("MulBackward0", "WhereBackward0", "MaskedFillBackward0")


def masked(
    calls: Iterable[LossCall], roots: list[Any], fetched: Callable[[], list[Tensor]]
) -> None:
    """Read each reduction="none" loss of two or more elements that a backward() (its roots'
    nodes) reaches through a mask alone, one the data tells (fetched: the batches' tensors,
    asked for once a mask is found), as the loss of the elements the mask keeps; one whose
    mask keeps none of its counted elements, or the data does not tell, is left unread
    (LossCall.alike). The caller holds the watch busy: the passes below are the watch's."""
    calls = list(calls)
    read = [c for c in calls if c.by_code and c.elements > 1 and c.output is not None]
    if not read:
        return
    of = users(roots)
    targets = {c.target[0] for c in calls if c.target is not None}  # (their storages)
    tensors: list[Tensor] | None = None
    for c in read:
        assert c.output is not None
        found = _kept(of, c.node, c.output)
        if found is None or bool(found[0].all()):
            continue
        mask, raw, at = found
        tensors = fetched() if tensors is None else tensors
        # the elements its mean counts that the mask keeps (a class-index target not ignored);
        # none where class weights weigh them (no mask read beside those)
        if c.counted is None or (told := of_data(mask, raw, tensors, targets)) is None:
            c.alike = False
            continue
        counted = c.counted.to(mask.device)
        kept = mask & counted
        if not bool(kept.any()):  # (no gradient to weigh: not read)
            c.alike = False
            continue
        # (a mean per sample of its kept elements, then over the samples: per_sample.py)
        each = per_sample(of, at, kept)
        weights = kept.to(c.output.dtype)
        if each is not None:
            weights = weights / each[0].to(weights)
        trained = [p for p in c.under if p.requires_grad]
        c.taking = True  # (the hook on its output runs as this pass begins there)
        try:
            grads = torch.autograd.grad(
                c.output,
                trained,
                grad_outputs=weights,
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
        # (a sum over the kept tokens divided by the batch's sentences: its rows still, or
        # the samples of the tensor that told the mask, where its target was made anew)
        c.others = {k: n for k, n in c.others.items() if k == "rows" and n != c.count}
        samples = told.shape[0] if told.ndim else 0
        if "rows" not in c.others and 1 < samples < c.elements and c.elements % samples == 0:
            c.others["rows"] = float(samples)
        c.others["unmasked"] = every  # every element, the mask aside: a known mistake's
        if each is not None:  # its count the samples (or those that kept an element)
            c.per_sample, c.count = each[0], float(each[2])
            c.others = {"kept samples": float(each[1])} if each[1] != each[2] else {}


def _kept(users: dict[int, list[Any]], node: Any, output: Tensor) -> tuple[Tensor, int, Any] | None:
    """Return which of a loss output's elements its one use under the roots keeps, where that
    use is a mask (in the output's shape), the storage of the tensor the code masked with, and
    the mask's node; None where that use is anything else, or the output is used twice."""
    walked = one_use(users, node, _IN_ORDER)
    if walked is None:
        return None
    node, user = walked
    found_mask = mask_of(user, node)
    if found_mask is None:
        return None
    condition, raw = found_mask
    if type(user).__name__ in _ELEMENTWISE:  # (a mask that broadcasts the loss to more
        shape = output_shape(node)  # elements is no mask of its elements: l of [B, 1] times m [B])
        if shape is None or output_shape(user) != shape:
            return None
        condition = torch.broadcast_to(condition, shape)
    elif condition.ndim and type(user).__name__ == "IndexBackward0":  # l[keep] of [B] on [B, T]:
        shape = output_shape(node)  # whole samples kept, each element of a sample as it
        if shape is None or tuple(condition.shape) != shape[: condition.ndim]:
            return None
        fill = (1,) * (len(shape) - condition.ndim)
        condition = torch.broadcast_to(condition.reshape(*condition.shape, *fill), shape)
    if condition.numel() != output.numel():
        return None
    kept = condition.reshape(output.shape).to(output.device)
    return kept, raw.untyped_storage().data_ptr(), user


def output_shape(node: Any) -> tuple[int, ...] | None:
    """Return the shape of a node's output (the gradient it takes), None where not told."""
    try:
        return tuple(node._input_metadata[0].shape)
    except Exception:
        return None


def mask_of(user: Any, node: Any) -> tuple[Tensor, Tensor] | None:
    """Return which elements a node keeps of its input `node` (a bool tensor of the input's
    shape), where it is a mask, and the tensor the code masked with; else None."""
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
        return ones, mask
    if kind in ("MaskedSelectBackward0", "MaskedFillBackward0"):
        mask = getattr(user, "_saved_mask", None)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            return None
        return (mask if kind == "MaskedSelectBackward0" else ~mask), mask
    if kind == "IndexBackward0":
        indices: tuple[Any, ...] = tuple(getattr(user, "_saved_indices", ()))
        index = indices[0] if len(indices) == 1 else None
        if isinstance(index, Tensor) and index.dtype == torch.bool:
            return index, index
        return None
    if kind == "WhereBackward0" and inputs.count(node) == 1 and None in inputs:
        condition = getattr(user, "_saved_condition", None)
        if not isinstance(condition, Tensor):
            return None
        return (condition if inputs[0] is node else ~condition), condition
    return None


def of_data(mask: Tensor, raw: int, fetched: list[Tensor], targets: set[int]) -> Tensor | None:
    """Return the fetched tensor (of the update's batches) that tells a mask (its elements in
    the loss's order), else None: one of 0s and 1s that is the mask and pads (each sample's
    elements a run of 1s beside a run of 0s: an attention mask; not a loss's target, nor one
    element a sample, which hard examples may equal by chance: a binary label, a flag), or
    one whose dropped elements, two or more and those alone, are NaN (missing labels) or one
    value beside data (a negative fill beside two values or more; padding's value among four
    ids or more; 0 among continuous values: invalid pixels, unseen keypoints), each as
    fetched, or each sample's first or last element dropped (a shift: attention_mask[:, 1:]);
    or the fetched tensor the code masked with itself, a view of it (a validity flag, the
    known labels of a multi-label batch), not a loss's target (raw: its storage)."""
    keep = mask.reshape(-1)
    if bool(keep.all()) or int((~keep).sum()) < 2:
        return None
    with torch.no_grad():
        for f in fetched:
            memory = f.untyped_storage().data_ptr()
            own = memory in targets
            if memory == raw and not own:  # the code masked with the batch's own tensor
                return f
            if any(_tells(g, keep, own) for g in _aligned(f, keep)):
                return f
    return None


def _tells(g: Tensor, keep: Tensor, own: bool) -> bool:
    """Return whether a fetched tensor (aligned: _aligned) tells the mask keep (of_data);
    own: the tensor is a loss's target."""
    flat = g.reshape(-1).to(keep.device)
    if flat.is_floating_point() and not bool(torch.isfinite(flat).all()):
        return torch.equal(torch.isnan(flat), ~keep)  # missing labels
    if bool(((flat == 0) | (flat == 1)).all()):
        return not own and torch.equal(flat != 0, keep) and _pads(g)  # the mask, fetched
    dropped, kept = flat[~keep], flat[keep]
    value = dropped[0]
    if not bool((dropped == value).all()) or bool((kept == value).any()):
        return False
    if bool(value < 0):  # a negative fill: -100, -1 (a label uncertain or missing)
        return _distinct(kept) >= 2
    if flat.is_floating_point():  # 0 among continuous values (invalid pixels)
        return bool(value == 0) and _distinct(kept) > kept.numel() // 2
    return _distinct(kept) >= 4  # a pad among ids


def _pads(g: Tensor) -> bool:
    """Return whether each sample of a 0/1 tensor (two or more elements each) is a run of 1s
    beside a run of 0s (right or left padding), as an attention mask is."""
    if g.ndim < 2 or g.shape[-1] < 2:
        return False
    rows = g.reshape(-1, g.shape[-1]).to(torch.int8)
    steps = rows[:, 1:] - rows[:, :-1]
    return bool((steps <= 0).all()) or bool((steps >= 0).all())


def _aligned(f: Tensor, keep: Tensor) -> Iterator[Tensor]:
    """Yield a fetched tensor as it may stand against a mask's elements: whole, or each
    sample's without its first or last element."""
    if f.is_sparse or not f.numel():
        return
    n = keep.numel()
    views = [f] + ([f[..., 1:], f[..., :-1]] if f.ndim >= 2 else [])
    for v in views:
        if v.numel() == n:
            yield v


def _distinct(t: Tensor) -> int:
    """Return how many distinct values a tensor holds."""
    return int(torch.unique(t).numel())
