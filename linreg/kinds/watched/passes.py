"""What the watcher reads of the DataLoaders' passes (Passes, the Observer's): each batch an
iterator yields and its tensors, and each pass's end (an epoch's end: a loader ran out, or a
pass whose last batch was fetched is over), put off where a wrapper fetches ahead; and a
number for each loader, sampler and dataset (Numbers). The state it reads and writes is the
Observer's (observed.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import weakref
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.utils.data.dataloader import _BaseDataLoaderIter

from linreg.kinds.watched.kept import Watched
from linreg.kinds.watched.records import LossCall, MicroBatch

# an epoch of known length up to this many batches is watched to its end (its last, short
# update is what short-last-batch reads)
LONGEST = 2048
# the fetched storages whose origin is remembered before those freed are forgotten
ORIGINS = 4096


class Passes:
    """The Observer's reading of DataLoader passes; the attributes it reads and writes are the
    Observer's (set in Observed.__init__, observed.py)."""

    seen: Watched
    ends: list[int]
    pending: list[LossCall]
    at_end: list[LossCall]
    micro: list[MicroBatch]
    backwards: int
    straddles: bool
    held_at_end: int
    last_fetched: dict[int, int]
    ahead: set[int]
    unread_last: dict[int, list[Tensor]]
    done: set[int]
    fed: set[tuple[int, int] | None]
    loader_of: dict[int, tuple[int, int]]
    dataset_of: dict[int, int]
    epoch_of: dict[int, int]
    began: dict[int, int]
    begun_at: dict[int, int]
    yields: dict[int, int]
    rows: dict[int, int]
    samples: collections.deque[weakref.ref[Tensor]]
    longest: int
    source: int | None
    iterator: int | None
    fetched: int
    all_fetched: int
    batched: set[int]
    fetchers: dict[int, tuple[int, int]]
    origins: dict[int, tuple[weakref.ref[Tensor], tuple[int, int]]]
    batch_tensors: collections.deque[Tensor]

    def ran_out(
        self, now: bool = False, at: tuple[int, int] | None = None, fresh: bool = False
    ) -> None:
        """Note an epoch's end: a DataLoader ran out (now), or a pass whose last batch was
        fetched is over: `at` (iterator, dataset) fetches again, a new pass begins (fresh:
        over any loader; zipped loaders end together), or the watch ends (at=None)."""
        over = [
            (it, data)
            for it, data in self.last_fetched.items()
            if at is None or fresh or at[0] == it or at[1] == data
        ]
        for it, _ in over:
            del self.last_fetched[it]
        if at is not None and not fresh and self._ahead(at, now, over):
            over = [(it, data) for it, data in over if it != at[0]]
            now = False
        ended = {it for it, _ in over} | ({at[0]} if now and at is not None else set())
        self.done |= ended
        self.ahead -= ended
        for it in ended:  # their last batches are not held past their passes (an evaluation
            self.unread_last.pop(it, None)  # pass's each N steps, never read by a loss)
        # an epoch's end is a training pass's: one during which a backward() ran (a validation
        # pass under no_grad, every N steps, mid-epoch, is none, over any dataset)
        ran = now and (at is None or self._trained_in(at[0]))
        if ran or any(self._trained_in(it) for it, _ in over):
            if not self.seen.updates or any(self.loader_of.get(it) in self.fed for it in ended):
                self.ends.append(len(self.seen.updates))
            # (a validation pass with grad on, after the last backward(), is another's)
            # (zipped loaders' passes end one by one: each adds its own)
            trained = {it for it in ended if self._trained_in(it)}
            held = {id(c) for c in self.at_end}
            self.at_end += [
                c
                for c in self.pending
                if c.from_batch
                and c.backwards == self.backwards
                and c.fetched_by in trained
                and id(c) not in held
            ]
            if self.micro and not self.straddles:  # the open window runs on
                self.straddles, self.held_at_end = True, len(self.micro)

    def _ahead(self, at: tuple[int, int], now: bool, over: list[tuple[int, int]]) -> bool:
        """Return True, the pass's end put off, where a training pass (at: iterator, dataset)
        ran out (now), or asked past its last batch, before any loss read that batch: a
        wrapper that fetches ahead (accelerate's) still hands it on, so the pass ends at the
        next fetch of another pass, or at the watch's end."""
        it, data = at
        if it not in self.ahead and (it not in self.unread_last or not self._trained_in(it)):
            return False  # (a pass no backward() ran in, an evaluation's, ends no epoch)
        if not now and all(i != it for i, _ in over):
            return False
        self.unread_last.pop(it, None)
        self.ahead.add(it)
        self.last_fetched[it] = data
        return True

    def _trained_before(self, it: int | None) -> bool:
        """Return whether a backward() before the one under way ran in an iterator's pass."""
        return it is not None and self.backwards - 1 > self.began.get(it, -1)

    def _trained_in(self, it: int) -> bool:
        """Return whether a backward() ran since an iterator's pass began (or, for one whose
        start was not seen, at all)."""
        return self.backwards > self.began.get(it, -1)

    def fetch(
        self,
        batch: Any,
        at: tuple[int, int],
        epoch: int | None,
        yielded: int,
        sampler: int,
        samples: int | None = None,
    ) -> None:
        """Count a batch a DataLoader's iterator (`at`: iterator, dataset) yielded, the
        `yielded`th of an epoch of `epoch` batches (None: not known), with its loader's
        sampler (an id), and keep its tensors' storages, with the samples it collated (None:
        not known). An epoch of a known length up to
        LONGEST batches is watched to its end (updates <= batches); its last batch fetched,
        the pass ends at the next fetch (a fetcher that knows the length never asks past it:
        Lightning's)."""
        self.source, self.iterator = at[1], at[0]
        if yielded <= 1:  # a pass's first batch: its backward() calls are counted from here
            self.began[at[0]] = self.backwards
            self.begun_at[at[0]] = len(self.seen.updates)
        if epoch is not None and yielded >= epoch:
            self.last_fetched[at[0]] = at[1]
        self.yields[at[0]] = yielded
        self.dataset_of[at[0]] = at[1]
        self.loader_of[at[0]] = (at[1], sampler)
        if epoch is not None:
            self.epoch_of[at[0]] = epoch
        if epoch is not None and self.longest < epoch + 1 <= LONGEST + 1:
            self.longest = epoch + 1
        self.fetched += 1
        self.all_fetched += 1
        with contextlib.suppress(Exception):  # a tensor without storage: nothing kept
            fetched = _tensors(batch)
            memories = {t.untyped_storage().data_ptr() for t in fetched}
            self.batched |= memories
            self.fetchers.update(dict.fromkeys(memories, at))
            if len(self.origins) > ORIGINS:  # those freed since: their memory is anyone's
                self.origins = {m: o for m, o in self.origins.items() if o[0]() is not None}
            self.origins.update(
                {t.untyped_storage().data_ptr(): (weakref.ref(t), at) for t in fetched}
            )
            self.batch_tensors.extend(fetched)
            self.unread_last[at[0]] = fetched
            if len(self.rows) > ORIGINS:  # (read through origins: a freed one's is let go)
                self.rows = {m: n for m, n in self.rows.items() if m in self.origins}
            if samples and any(samples in t.shape for t in fetched):  # (else not this one's)
                self.rows.update(dict.fromkeys(memories, samples))
                self.samples.extend(weakref.ref(t) for t in fetched)


def _tensors(batch: Any) -> list[Tensor]:
    """Return the tensors a batch holds, in order: in lists, tuples and dicts, and in a
    dataclass's fields (a collate that returns one, or a tuple of one and its metadata)."""
    if isinstance(batch, Tensor):
        return [batch]
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    elif isinstance(batch, Mapping):
        batch = list(batch.values())
    elif not isinstance(batch, (list, tuple)):
        return []
    return [t for v in batch for t in _tensors(v)]


def length(it: _BaseDataLoaderIter) -> int | None:
    """Return the batches of the epoch a DataLoader's iterator runs, None where not known."""
    try:
        return len(it)
    except Exception:  # an IterableDataset without a length
        return None


class Numbers:
    """A number for each object asked about, never another's while the watch runs: held by a
    weak reference, or, for an object none can name (a range as a sampler), kept alive."""

    def __init__(self) -> None:
        self.weak: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.pinned: dict[int, tuple[Any, int]] = {}
        self.counter = itertools.count(1)

    def __call__(self, obj: Any) -> int:
        try:
            n = self.weak.get(obj)
            if n is None:
                n = self.weak[obj] = next(self.counter)
            return n
        except TypeError:
            held = self.pinned.get(id(obj))
            if held is None or held[0] is not obj:
                held = self.pinned[id(obj)] = (obj, next(self.counter))
            return held[1]
