"""The DataLoader seams the watcher goes through (`fetching`): each batch a loader's iterator
yields, told to the Observer (passes.py) with the samples its sampler gave its indices, and the
pass of its sampler they are of; a pass's end (StopIteration). seams.py installs them and puts
torch's own back."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from torch.utils.data.dataloader import _BaseDataLoaderIter, _DatasetKind

from linreg.kinds.watched.observer import Observer
from linreg.kinds.watched.passes import Numbers, length

__all__ = ["fetching"]


def fetching(
    w: Observer, watched: Callable[[], bool], live: list[bool]
) -> tuple[Callable[[_BaseDataLoaderIter], Any], Callable[[_BaseDataLoaderIter], Any]]:
    """Return a DataLoader iterator's __next__ and _next_index, watched (torch's own, as they
    are now, called inside): watched() says whether to read a batch, live[0] whether the watch
    is on (a wrapper a name kept after it passes straight through)."""
    loader_next = _BaseDataLoaderIter.__next__
    index_next = _BaseDataLoaderIter._next_index
    # each iterator's batches' samples, as its sampler gave their indices (workers ask ahead),
    # and the pass of its sampler they are of (a persistent workers' iterator is reset for
    # each epoch, where what it asked ahead of a pass cut short is never yielded)
    samples: dict[int, collections.deque[int | None]] = collections.defaultdict(collections.deque)
    passes: dict[int, Any] = {}
    # each iterator's number, and each loader's sampler's, never reused (CPython reuses a freed
    # object's id: a probe's `next(iter(loader))` and the training pass after it would be one,
    # and a probe's DataLoader made anew took a freed training loader's sampler's id)
    number = Numbers()

    def next_index(self: _BaseDataLoaderIter) -> Any:
        index = index_next(self)  # type: ignore[no-untyped-call]
        if live[0]:
            it, now = number(self), getattr(self, "_sampler_iter", None)
            if passes.get(it) is not now:  # a new pass: what the last asked ahead is let go
                samples[it].clear()
                passes[it] = now
            # a map-style dataset's batches, yielded in order: an iterable one's sampler gives
            # batch_size for its short last batch too, and workers out of order yield theirs
            # as they come
            counted = (
                getattr(self, "_auto_collation", False)
                and getattr(self, "_dataset_kind", None) == _DatasetKind.Map
                and getattr(self, "_in_order", True)
                and hasattr(index, "__len__")
            )
            samples[it].append(len(index) if counted else None)
        return index

    def next_batch(self: _BaseDataLoaderIter) -> Any:
        if not watched():
            return loader_next(self)
        at = (number(self), id(getattr(self, "_dataset", self)))
        fresh = getattr(self, "_num_yielded", 1) == 0  # the first fetch of a new pass
        w.ran_out(at=at, fresh=fresh)  # a pass whose last batch was fetched before: ended
        try:
            batch = loader_next(self)
        except StopIteration:
            w.ran_out(now=True, at=at)
            raise
        except BaseException:  # a sample that failed to load, the code may skip: its count
            if samples[at[0]]:  # is not the next batch's
                samples[at[0]].popleft()
            raise
        # its loader's own sampler: a probe loader over the training set's first rows is
        # another loader over the same dataset
        sampler = number(getattr(self, "_index_sampler", self))
        asked = samples[at[0]]
        w.fetch(
            batch,
            at,
            length(self),
            getattr(self, "_num_yielded", 0),
            sampler,
            asked.popleft() if asked else None,
        )
        return batch

    return next_batch, next_index
