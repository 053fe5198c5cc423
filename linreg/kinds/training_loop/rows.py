"""The rows the audit hands a loop: copies of the user's example and of a contrast row whose
gradient differs (for token labels: one that counts fewer targets), and how their labels and
the usual loss are read; whether the rows a forward was fed are theirs (`of_the_data`) or a
held-out set's (`foreign`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from linreg.kinds.training_loop.calls import Call, first_value, tensors_in

INPUT_KEYS = ("input_ids", "x", "inputs", "input", "pixel_values", "features")


LABEL_KEYS = ("labels", "label", "y", "target", "targets")


IGNORE_INDEX = -100  # the targets a token loss does not count (nn.CrossEntropyLoss's default)


Example = tuple[Tensor, Tensor] | dict[str, Tensor]


def contrast(x: Tensor) -> Tensor:
    """Return a row unlike x, valid wherever x is: x + 1 for floats; 0 (or 1) for indices."""
    if x.is_floating_point() or x.is_complex():
        return x + 1
    return torch.zeros_like(x) if bool(x.any()) else torch.ones_like(x)


def as_example(example: Any) -> Example:
    """Return a sample as (x, y) tensors or a dict of tensors; raise TypeError otherwise."""
    if isinstance(example, Mapping):
        if not example:
            raise TypeError("the example is an empty dict: give the sample's tensors by name")
        try:
            return {str(k): torch.as_tensor(v) for k, v in example.items()}
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"the example's values must be tensors or numbers: {e}") from None
    if not isinstance(example, (tuple, list)) or len(example) != 2:
        raise TypeError(
            f"the example must be one (x, y) sample or a dict of tensors, got "
            f"{type(example).__name__}"
            + (f" of length {len(example)}" if isinstance(example, (tuple, list)) else "")
        )
    for name, v in zip("xy", example, strict=True):
        if isinstance(v, (tuple, list)) and _holds_tensors(v):
            raise TypeError(
                f"the example's {name} is a {type(v).__name__} of {len(v)} parts holding "
                "tensors, which a DataLoader collates apart, each into a batch of its own: "
                "the audit's rows hold x and y as one tensor each; give a dict example that "
                "names each part (x, y_reg, y_cls, ...), and a loop that reads them by name "
                "from its dict batches"
            )
    try:
        x, y = (torch.as_tensor(v) for v in example)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"the example's x and y must be tensors or numbers: {e}") from None
    return x, y


def _holds_tensors(v: Any) -> bool:
    """Return True if a (nested) sequence holds a tensor or a dict (numbers alone: one tensor)."""
    if isinstance(v, (Tensor, Mapping)):
        return True
    return isinstance(v, (tuple, list)) and any(_holds_tensors(p) for p in v)


def input_key(example: Mapping[str, Tensor]) -> str:
    """Return the key of a dict example whose value the contrast row changes."""
    return next((k for k in INPUT_KEYS if k in example), next(iter(example)))


def label_key(example: Mapping[str, Tensor]) -> str | None:
    """Return the key of a dict example's labels (None if it names none)."""
    return next((k for k in LABEL_KEYS if k in example), None)


def labels_of(example: Example) -> Tensor | None:
    """Return the example's labels: y, or a dict's labels (None if it names none)."""
    if isinstance(example, tuple):
        return example[1]
    label = label_key(example)
    return None if label is None else example[label]


def rows_of(example: Example, kinds: Iterable[int]) -> list[Any]:
    """Return the rows: the example (0) or its contrast row (1), as the dataset holds them."""
    if isinstance(example, tuple):
        x, y = example
        # token labels the example pads with IGNORE_INDEX: the contrast row counts fewer too
        pair = ((x, y), (contrast(x), fewer_targets(y) if padded(y) else y))
        return [pair[k] for k in kinds]
    key = input_key(example)
    other = {**example, key: contrast(example[key])}
    label = label_key(example)
    if label is not None:  # token labels: the contrast row counts fewer targets
        other[label] = fewer_targets(example[label])
    return [dict(example) if k == 0 else dict(other) for k in kinds]


def padded(labels: Tensor) -> bool:
    """Return True for token labels that pad with IGNORE_INDEX (a tuple example's are then its
    contrast row's too, fewer: rows_of; and each row's are read by its input: held_labels)."""
    return not labels.is_floating_point() and bool((labels == IGNORE_INDEX).any())


def fewer_targets(labels: Tensor) -> Tensor:
    """Return token labels with every target but the last set to IGNORE_INDEX (-100).

    The contrast row then counts one target where the example counts several, so a step that
    takes the mean of its micro-batches' means over uneven counts of targets shows.
    """
    counted = (labels != IGNORE_INDEX).nonzero()
    if labels.ndim == 0 or labels.is_floating_point() or len(counted) < 2:
        return labels
    out = torch.full_like(labels, IGNORE_INDEX)
    last = tuple(counted[-1].tolist())
    out[last] = labels[last]
    return out


def held_labels(
    example: Example, args: Sequence[Any], kwargs: Mapping[str, Any], rows: int
) -> dict[str, Tensor]:
    """Return the labels a dict batch held for the rows a forward was fed without them (the
    loop popped them first, or fed the input alone: `model(batch["input_ids"])`), or a tuple
    example's padded token labels (the contrast row's count fewer), each row's found by its
    input, by keyword or first, among the rows the audit handed out; {} where the forward was
    fed labels, or a row is none of them."""
    label: str | None
    if isinstance(example, tuple):  # (x, y): y held apart, each row's read by its x if padded
        if not padded(example[1]):
            return {}
        label, fed = LABEL_KEYS[0], args[0] if args else None
        pairs = [(x, y) for x, y in rows_of(example, (0, 1))]
    elif any(k in kwargs for k in LABEL_KEYS):
        return {}
    else:
        label, key = label_key(example), input_key(example)
        fed = kwargs.get(key, args[0] if args else None)
        pairs = [(r[key], r[label]) for r in rows_of(example, (0, 1))] if label else []
    if label is None or not isinstance(fed, Tensor) or fed.shape[:1] != (rows,):
        return {}
    found = []
    for i in range(rows):
        labels = next((y for x, y in pairs if _same(fed[i], x)), None)
        if labels is None:
            return {}
        found.append(labels)
    held = torch.stack(found)
    if any(_same(v, held) for v in [*args[1:], *kwargs.values()] if isinstance(v, Tensor)):
        return {}  # fed by position (model(x, y)): the forward's own, row by row
    return {label: held}


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a.detach().cpu().to(b.dtype), b))


def loss_of(y_hat: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Return cross-entropy for class labels, else mean squared error, under reduction."""
    if y.dtype in (torch.int64, torch.int32):
        return nn.functional.cross_entropy(y_hat, y, reduction=reduction)
    return nn.functional.mse_loss(y_hat, y, reduction=reduction)


def foreign(call: Call, data: Sequence[Tensor]) -> bool:
    """Return True if call was fed rows of the loop's own (a held-out set): more distinct rows
    than the data the audit handed the loop holds (`data`: its example row's first tensor,
    and its contrast row's where the run mixes them), since no transform that maps equal rows
    to equal rows (a cast, a normalization, a reshape) makes more, and a row far from each of
    them, since a random augmentation of the data (noise, jitter) does make more, near them.
    Rows of another size than the data's (a crop, a resize) are none of a held-out set's."""
    first = first_value(call)
    if first is None or first.ndim == 0 or first.shape[0] <= len(data):
        return False
    rows = first.reshape(first.shape[0], -1).double()
    if int(torch.unique(rows, dim=0).shape[0]) <= len(data):
        return False
    ref = [d.reshape(-1).to(rows.device, torch.float64) for d in data]
    if any(r.numel() != rows.shape[1] for r in ref):
        return False
    far = 0.25 * max(float(r.abs().max()) for r in ref) + 1e-6
    nearest = torch.stack([(rows - r).abs().amax(1) for r in ref]).amin(0)
    return bool((nearest > far).any())


def of_the_data(call: Call, data: Sequence[Tensor]) -> bool:
    """Return True if every row call was fed is one of the data's rows, as they are."""
    first = first_value(call)
    if first is None or first.ndim == 0:
        return False
    return all(_a_data_row(r, data) for r in first.reshape(first.shape[0], -1))


def _a_data_row(row: Tensor, data: Sequence[Tensor]) -> bool:
    """Return True if a flattened row is one of the data's rows, as it is."""
    return any(
        d.numel() == row.numel() and torch.equal(row, d.reshape(-1).to(row.device, row.dtype))
        for d in data
    )


def firsts(example: Example, kinds: Iterable[int]) -> list[Tensor] | None:
    """Return the first tensor of each of the rows (the example: 0, its contrast row: 1), as
    the data the loop is handed holds them; None where a row holds none."""
    found = [tensors_in([row], {})[:1] for row in rows_of(example, kinds)]
    return [t for first in found for t in first] if found and all(found) else None


def padding(call: Call, drawn: int, data: Sequence[Tensor]) -> list[int]:
    """Return the rows (by position) of a forward that the loop made to fill a short batch up
    to a full one's rows, as fixed-shape code does (XLA's, a compiled model's): as many as it
    was fed beyond the `drawn` rows of the batch it came after, each one value throughout (a
    pad value) and none of the data's rows (`data`: the first tensor of the example's row and
    of its contrast row); [] where they are not so many."""
    first = first_value(call)
    if first is None or first.ndim == 0 or first.shape[0] != call.rows or not 0 < drawn < call.rows:
        return []
    rows = first.reshape(first.shape[0], -1)
    made = [
        i
        for i in range(call.rows)
        if bool((rows[i] == rows[i, :1]).all()) and not _a_data_row(rows[i], data)
    ]
    return made if len(made) == call.rows - drawn else []
