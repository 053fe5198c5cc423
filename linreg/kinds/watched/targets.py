"""Where a loss's target came from (Targets, the Observer's LossReader's): a fetched batch's
tensors, a view of them, its rows cast or moved (y.float(), y.to(device)), the samples' own
tensors stacked, a token batch shifted (y[:, 1:]), or rows a mask picked (b[m]; the values
told by batch_values.py); which loader fetched it, and how many
samples its batch held. The state it reads and writes is the Observer's (observed.py).
"""

from __future__ import annotations

import collections
import weakref
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.batch_values import Picked, cast, picked, shifted, stacked, within


class Targets:
    """The LossReader's reading of targets; the attributes it reads and writes are the
    Observer's (set in Observed.__init__, observed.py)."""

    source: int | None  # the dataset of the last batch fetched
    iterator: int | None  # the iterator that fetched it
    batched: set[int]  # the storages of the update's fetched tensors
    fetchers: dict[int, tuple[int, int]]  # each such storage's iterator and dataset
    origins: dict[int, tuple[weakref.ref[Tensor], tuple[int, int]]]  # storages fetched before
    batch_tensors: collections.deque[Tensor]  # the latest fetched tensors
    unread_last: dict[int, list[Tensor]]  # each iterator's last batch, till a loss reads it
    rows: dict[int, int]  # each fetched tensor's storage: its batch's samples
    samples: collections.deque[weakref.ref[Tensor]]  # the latest with known samples

    def _fetched(self, target: Any) -> tuple[int | None, int | None]:
        """Return the iterator that fetched a target's batch and its dataset (else the last
        to fetch one's)."""
        return self._held(_storage(target)) or (self.iterator, self.source)

    def _held(self, memory: int | None) -> tuple[int, int] | None:
        """Return the iterator and dataset whose fetched batch a storage holds (its tensors',
        or one the code made of them that is still alive: origins), else None."""
        if memory is None:
            return None
        if memory in self.fetchers:
            return self.fetchers[memory]
        origin = self.origins.get(memory)
        alive = None if origin is None else origin[0]()
        return None if origin is None or _storage(alive) != memory else origin[1]

    def _rows(self, target: Any) -> int | None:
        """Return the samples of the fetched batch a target is (a view of its tensors, or one
        of them flattened, or its samples' first or last elements each, flattened: a token
        batch shifted, y[:, 1:].reshape(-1)), as its sampler gave their indices; None where
        not known."""
        memory = _storage(target)
        if memory is None or target.is_sparse:
            return None
        origin = self.origins.get(memory)
        if origin is not None and _storage(origin[0]()) == memory:
            return self.rows.get(memory)
        with torch.no_grad():
            flat = target.detach().reshape(-1)
            for ref in reversed(self.samples):
                fetched = ref()
                n = None if fetched is None else self.rows.get(_storage(fetched) or 0)
                if fetched is not None and n and within(flat, fetched, n):
                    return n
        return None

    def _found(self, target: Any, chosen: Picked | None = None) -> tuple[int, int] | None:
        """Return the iterator and dataset whose fetched batch a target is: a view of its
        tensors, its rows cast or moved (y.float(), y.to(device)), or rows a mask picked of
        it (b[m]: chosen, _picked_from's); None where none (not the last loader to fetch: two
        loaders zipped, the other's batch fetched after it)."""
        held = self._held(_storage(target))
        if held is not None:
            return held
        if not isinstance(target, Tensor):
            return None
        mask_of = None if chosen is None else chosen.fetched
        for fetched in reversed(self.batch_tensors):
            by = self._held(_storage(fetched))
            if by is not None and (fetched is mask_of or cast(target, fetched)):
                return by
        return None

    def _from_batch(self, target: Any, chosen: Picked | None = None) -> bool:
        """Return whether a target is a fetched batch's: a view of its tensors, rows of one cast
        or moved (y.float(), y.to(device): a new storage, the batch's values; float64 rows
        rounded to float32), the samples' own tensors stacked (a list of dicts, each
        sample's boxes: detectron2's), a token batch shifted, or rows a mask picked (chosen,
        _picked_from's)."""
        if _storage(target) in self.batched:
            return True
        return isinstance(target, Tensor) and (
            any(cast(target, f) for f in self.batch_tensors)
            or stacked(target, self.batch_tensors)
            or shifted(target, self.batch_tensors)
            or chosen is not None
        )

    def _picked_from(self, target: Any) -> Picked | None:
        """Return the fetched tensor (the newest) whose rows a mask picked a target holds (b[m]:
        batch_values.picked), and the rows, told once a loss; None where none, or the target
        is a view of a fetched tensor."""
        if not isinstance(target, Tensor) or _storage(target) in self.batched:
            return None
        return picked(target, self.batch_tensors)

    def _read_last(self, target: Any) -> None:
        """Note that a loss read a target of an iterator's last batch fetched (a view of it):
        that batch was handed on. (Not its values: a batch's few class labels may equal the
        next one's; a target cast or moved only puts off the end of its pass, _ahead.)"""
        if not isinstance(target, Tensor) or not self.unread_last:
            return
        memory = _storage(target)
        for it, fetched in list(self.unread_last.items()):
            if any(_storage(t) == memory for t in fetched):
                del self.unread_last[it]


def _storage(t: Any) -> int | None:
    """Return the address of a tensor's storage (its views share it), None if not a tensor."""
    return t.untyped_storage().data_ptr() if isinstance(t, Tensor) else None


def same_of(t: Any, under: list[Tensor]) -> tuple[Any, int, dict[int, tuple[int, float]]] | None:
    """Return what tells a target, as it is now, at the leaves under its loss as they are
    (LossCall.same); None where it cannot be told."""
    if not isinstance(t, Tensor) or not under:
        return None
    try:  # (an inference tensor, made under torch.inference_mode(), keeps no version)
        with torch.no_grad():  # (one copy to the host a device, not one a param)
            by_device: dict[torch.device, list[Tensor]] = {}
            for p in under:
                by_device.setdefault(p.device, []).append(p)
            sums: dict[int, float] = {}
            for on in by_device.values():
                totals = torch.stack([p.detach().sum().float() for p in on]).cpu().tolist()
                sums.update(zip(map(id, on), totals, strict=True))
        leaves = {id(p): (p._version, sums[id(p)]) for p in under}
        return (weakref.ref(t), t._version, leaves)
    except RuntimeError:
        return None


def view_of(t: Any) -> tuple[Any, ...] | None:
    """Return what tells one tensor's elements from another's: its storage, offset, shape and
    strides (chunks and slices of one batch share a storage, not a view)."""
    if not isinstance(t, Tensor):
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


def constant_of(t: Any) -> float | None:
    """Return the one value of a target of two or more equal elements, else None."""
    if not isinstance(t, Tensor) or t.numel() < 2 or t.is_sparse:
        return None
    flat = t.detach().reshape(-1)
    return float(flat[0]) if bool((flat == flat[0]).all()) else None
