"""What the graph of a loss written by hand tells (by_hand.py reads it): whether the input of
its whole sum is a penalty on params (an elementwise function of params of its shape alone),
the elements a mask of the batch's keeps of it (masks.py's reading), its rows (the batch's
samples, not a reduction over them: `l.mean(0)`; or a token batch flattened), and the
difference it takes between predictions and labels, where it is one (label-shape's: a
prediction of (B, 1) broadcast against labels of (B,) to (B, B))."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.masks import mask_of, of_data, output_shape


def of_a_param(per: Tensor, most: int = 6) -> bool:
    """Return whether a tensor is an elementwise function of params of its own shape alone
    (`w.pow(2)`, `w.abs()`, `w * w`: a penalty's, whose sum is no loss of the batch): the
    graph below it, of at most `most` nodes, ends at those params alone."""
    stack: list[Any] = [per.grad_fn]
    seen = ends = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > most:
            return False
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            if variable.shape != per.shape:
                return False
            ends += 1
            continue
        stack += [m for m, _ in node.next_functions if m is not None]
    return ends > 0


def masks(per: Tensor) -> bool:
    """Return whether a tensor is the elements a mask selected (`l[mask]`; not those integer
    indices picked, `logp[range(n), y]`)."""
    if type(per.grad_fn).__name__ != "IndexBackward0":
        return False
    indices = tuple(getattr(per.grad_fn, "_saved_indices", ()))
    return len(indices) == 1 and isinstance(indices[0], Tensor) and indices[0].dtype == torch.bool


def masked(per: Tensor, fetched: list[Tensor]) -> tuple[float, int, int] | None:
    """Return, where a tensor is a loss masked by the code (`l * mask`, `l[mask]`,
    `l.masked_fill(~mask, 0)`, `torch.where(mask, l, 0)`: masks.py's, the mask the batch's
    data tells), the elements the mask keeps, those of the loss before it, and its first dim
    (its rows); None where it is not, or a kept element's loss is 0."""
    node = per.grad_fn
    below = [m for m, _ in node.next_functions if m is not None] if node is not None else []
    shape = output_shape(below[0]) if len(below) == 1 else None
    found = mask_of(node, below[0]) if shape else None
    if found is None or shape is None:
        return None
    keep, raw = found
    if masks(per):  # (the kept elements alone, each in the loss's shape)
        if tuple(keep.shape) != shape or per.numel() != int(keep.sum()):
            return None
        alive = bool(per.detach().ne(0).all())
    else:  # (elementwise: every element, 0 where dropped; not one grown to more elements)
        if tuple(per.shape) != shape:
            return None
        keep = torch.broadcast_to(keep, shape).to(per.device)
        alive = bool(per.detach()[keep].ne(0).all())
    if not alive or of_data(keep, raw.untyped_storage().data_ptr(), fetched, set()) is None:
        return None
    return float(keep.sum()), math.prod(shape), shape[0]


def flattened(first: int, rows: int, fetched: list[Tensor]) -> bool:
    """Return whether a first dim is a batch's samples times their elements, as a fetched
    tensor of the batch holds them (a token batch flattened, `logits.view(-1, V)`), or one
    fewer each (shifted for the next token)."""
    if first <= rows or first % rows:
        return False
    each = first // rows
    return any(
        f.ndim >= 2 and f.shape[0] == rows and f[0].numel() in (each, each + 1) for f in fetched
    )


# reductions over some dims: the dims they took are saved (`_saved_dim`)
_PARTIAL = ("SumBackward1", "MeanBackward1")
# what a difference's square or magnitude passes through on its way to the loss: one input
_ELEMENTWISE = ("PowBackward0", "AbsBackward0", "MulBackward0", "DivBackward0", "NegBackward0",
                "SqrtBackward0", "SmoothL1LossBackward0", "ClampMinBackward0", "ViewBackward0",
                "SqueezeBackward0", "SqueezeBackward1")  # fmt: skip


def on_rows(per: Tensor, rows: int) -> bool:
    """Return whether a tensor's first dim may be its batch's samples, each element a loss of
    its own row's: not the output of a reduction over them (`l.mean(0)`, whose dim 0 is the
    outputs'), nor a transpose, nor a tensor whose graph mixes the rows (mixes_rows)."""
    node = per.grad_fn
    kind = type(node).__name__
    if kind in ("TBackward0", "TransposeBackward0", "PermuteBackward0"):
        return False
    if kind in _PARTIAL:
        sizes = tuple(getattr(node, "_saved_self_sym_sizes", ()))
        dims = tuple(getattr(node, "_saved_dim", ()) or ())
        if not sizes or any(d % len(sizes) == 0 for d in dims):
            return False
    return not mixes_rows(node, rows)


_SOFTMAX = ("SoftmaxBackward0", "LogSoftmaxBackward0")
_TRANSPOSES = ("TBackward0", "TransposeBackward0", "PermuteBackward0")


def mixes_rows(node: Any, rows: int, most: int = 256) -> bool:
    """Return whether the graph below a node (its first `most` nodes) mixes a batch's rows
    into one another's elements: a softmax over dim 0 of `rows` (ListNet's list, the batch),
    or a product whose first operand is a transposed activation contracting over as many as
    the rows (Barlow Twins' z1.T @ z2: a features-by-features matrix, whose first dim may equal the
    batch's by chance). A Linear's product (by a param transposed, the second operand), a
    similarity of rows (z1 @ z2.T) and a normalization over the batch (BatchNorm's) keep each
    row's own element a row's."""
    stack: list[Any] = [node]
    seen: set[int] = set()
    while stack and len(seen) < most:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        kind = type(n).__name__
        if kind in _SOFTMAX and getattr(n, "_saved_dim", None) == 0:
            shape = output_shape(n)
            if shape and shape[0] == rows:
                return True
        if kind in ("MmBackward0", "BmmBackward0") and n.next_functions:
            first = n.next_functions[0][0]
            below = (
                first.next_functions[0][0] if first is not None and first.next_functions else None
            )
            shape = output_shape(first) if first is not None else None
            if (
                type(first).__name__ in _TRANSPOSES
                and not hasattr(below, "variable")
                and shape
                and shape[-1] == rows  # (contracting over them: (h.T @ U) of h [H, B] is not)
            ):
                return True
        stack += [m for m, _ in n.next_functions]
    return False


def compared(per: Tensor, most: int = 8) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Return, where a loss by hand is a difference of predictions and labels (that need no
    grad) under its square, magnitude or a number (`(y_hat - y) ** 2 / 2`, `(y - y_hat).abs()`),
    the predictions' shape and the difference's; None where it is none (a cross-entropy)."""
    node = per.grad_fn
    for _ in range(most):
        inputs = [(m, k) for m, k in node.next_functions] if node is not None else []
        below = [(m, k) for m, k in inputs if m is not None]
        kind = type(node).__name__
        if kind in ("SubBackward0", "RsubBackward1", "AddBackward0") and len(inputs) == 2:
            if len(below) != 1:  # (two of grad: not predictions against labels)
                return None
            made, at = below[0]
            own = output_shape(node)
            try:
                shape = tuple(made._input_metadata[at].shape)
            except Exception:
                return None
            return None if own is None else (shape, own)
        if kind not in _ELEMENTWISE or len(below) != 1:
            return None
        node = below[0][0]
    return None
