"""Where each batch the loop fed came from: its draws of the audit's data (a batch, a
dataset's row) and the passes over a DataLoader that made them, each pass numbered, its
batches held by their memory and its end noted, on the run's record (Observed).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data.dataloader import _DatasetKind

from linreg.kinds.training_loop.calls import Call, memory_of, storage_of, tensors_in
from linreg.kinds.training_loop.ledger import Draw, Observed
from linreg.kinds.training_loop.sites import site


def drew(seen: Observed, rows: int, batch: bool = True, value: Any = None) -> None:
    """Note a draw of the audit's data, where the loop made it: its rows, a batch of them or
    a dataset's row, the functions that made it and the pass over a DataLoader it was made in
    (value: what was drawn, held where it was read outside any pass)."""
    source = _pass_of(seen, seen.drawing)
    seen.drawn += rows
    seen.draws[seen.drawn] = Draw(rows if batch else 0, frozenset(site()))
    if source is not None:
        seen.pass_rows[source] = seen.pass_rows.get(source, 0) + rows
    elif value is not None:
        _hold(seen, value, None)


def batch_made(seen: Observed, it: object, batch: Any) -> None:
    """Note a batch a pass over a DataLoader (it, its iterator) made, by its memory."""
    source = _pass_of(seen, it, made=True)
    if source is not None:
        _event(seen, source)
        _hold(seen, batch, source, seen.clock)


def pass_ended(seen: Observed, it: object) -> None:
    """Note that a pass over a DataLoader (it, its iterator) found no batch left."""
    try:
        source = seen.passes.get(it)
    except TypeError:  # an iterator that cannot be weakly referenced: no pass told
        return
    if source is not None:
        _event(seen, source)
        seen.pass_ends.add(seen.clock)


def _event(seen: Observed, source: int) -> None:
    seen.clock += 1
    seen.pass_events.setdefault(source, []).append(seen.clock)


def _hold(seen: Observed, value: Any, source: int | None, clock: int = 0) -> None:
    for t in tensors_in([value], {}):
        memory = storage_of(t)
        if memory is not None:
            seen.held[memory] = (t, source, clock)


ANOTHER = -1  # the source of a forward fed none of the batches held (a tensor of the loop's)


def _held_of(seen: Observed, call: Call) -> tuple[Tensor, int | None, int] | None:
    """Return what is held of the batch a forward was fed (None: none of the batches held)."""
    memory = memory_of(call)
    return seen.held.get(memory) if memory is not None else None


def source_of(seen: Observed, call: Call) -> int | None:
    """Return where the batch a forward was fed came from: a pass's number, None (read outside
    any pass), or ANOTHER (none of the batches held: one the loop made)."""
    held = _held_of(seen, call)
    return ANOTHER if held is None else held[1]


def made_at(seen: Observed, call: Call) -> int:
    """Return when the pass that made the batch a forward was fed made it (its clock; 0: no
    pass made it)."""
    held = _held_of(seen, call)
    return 0 if held is None else held[2]


def whole_pass(seen: Observed, source: int) -> bool:
    """Return True if a pass drew its last batch and every row of the data the audit handed
    the loop (but those a drop_last leaves: fewer than its batch)."""
    return source in seen.ended and seen.pass_rows.get(
        source, 0
    ) > seen.handed - seen.pass_batch.get(source, 1)


def _pass_of(seen: Observed, it: object | None, made: bool = False) -> int | None:
    """Return the number of a pass over a DataLoader (it, its iterator; None: none), noting
    its batch size and length once, and that it ended at its last batch (made: that batch is
    made, and counted; else it is being made)."""
    if it is None:
        return None
    try:
        number = seen.passes.get(it)
        if number is None:
            seen.began += 1
            number = seen.passes[it] = seen.began
            sampler = seen.pass_sampler[number] = getattr(it, "_index_sampler", None)
            batches = getattr(sampler, "batch_size", None)
            seen.pass_batch[number] = batches if isinstance(batches, int) else 1
            seen.pass_length[number] = _length(it)
    except TypeError:  # an iterator that cannot be weakly referenced: no pass told
        return None
    length = seen.pass_length.get(number)
    yielded = getattr(it, "_num_yielded", None)
    if length is not None and isinstance(yielded, int) and yielded + (not made) >= length:
        seen.ended.add(number)  # its last batch
    return number


def _length(it: object) -> int | None:
    """Return the batches a pass over a map-style dataset makes (its index sampler's length),
    or None: an iterable dataset's (asking would make torch warn when it yields more), or a
    sampler of no length (an endless one raises)."""
    if getattr(it, "_dataset_kind", None) != _DatasetKind.Map:
        return None
    try:
        return len(it._index_sampler)  # type: ignore[attr-defined]
    except Exception:
        return None
