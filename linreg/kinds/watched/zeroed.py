"""The micro-batches the code zeroed before an update's own (Zeroed, the Observer's): let go
(a throwaway pass, zero_grad inside the window: the update's weights tell which), but a
probe's, set aside (a batch of an iterator no update applied a batch of, that yielded one,
beside a stream's; or a whole pass over data no update applied, run between two steps: a
gradient probe over a loader of its own). The state it reads and writes is the Observer's
(observed.py).
"""

from __future__ import annotations

import collections
from typing import Any

from linreg.kinds.watched.kept import Watched
from linreg.kinds.watched.records import MicroBatch, Open


class Zeroed:
    """The Observer's reading of micro-batches zeroed before an update (Steps.after's)."""

    seen: Watched
    cut: int  # the micro-batches before the update's own: zeroed by the code, not stepped
    stepping: set[int | None]  # the iterators whose batches the last update applied
    yields: dict[int, int]  # the batches each iterator yielded so far
    dataset_of: dict[int, int]  # each iterator's dataset
    zeroed_by: collections.Counter[int | None]  # the updates before which each iterator's
    # batches were zeroed
    long: set[int | None]  # the datasets an iterator of more than one batch fed an update from
    fed: set[tuple[int, int] | None]  # the loaders any update applied a batch of
    loader_of: dict[int, tuple[int, int]]  # each iterator's loader
    done: set[int]  # the iterators whose pass ended
    begun_at: dict[int, int]  # the updates made when each iterator's pass began

    def _let_go_zeroed(self, kept: list[MicroBatch], zeroed: list[MicroBatch]) -> list[MicroBatch]:
        """Return the micro-batches zeroed before the update's own (kept) that are let go, the
        rest a probe's (Watched.probed), and note the update's iterators as streams."""
        own = _iterators(kept)
        streams = self.stepping | own
        self.fed |= {self.loader_of.get(it) for it in own if it is not None}
        # micro-batches zeroed before the update's own are let go, but a probe's: of an
        # iterator no update applied a batch of, that yielded one (a fixed batch taken once,
        # or a fresh iterator's first each time), beside a stream's batches (an iterator that
        # yielded more, fed an update before, or a later pass over a dataset one that yielded
        # more fed an update from: one-batch iterators on every side, next(iter(loader)) each
        # micro-batch, are no probe's), or one whose iterator's batch was zeroed before an
        # update before (a fixed probe's, taken once: fresh ones come from new iterators);
        # so is a whole pass over data no update applied, run between two steps (a gradient
        # probe over a loader of its own)
        idle = {
            it
            for it, n in self.yields.items()
            if it not in streams
            and (
                n <= 1
                or (
                    it in self.done  # (not replayed: itertools.cycle, a listed loader)
                    and self.begun_at.get(it) == len(self.seen.updates)
                    and self.loader_of.get(it) not in self.fed
                )
            )
        }
        stream = all(
            it is not None
            and (
                it in self.stepping
                or self.yields.get(it, 0) > 1
                or self.dataset_of.get(it) in self.long
            )
            for it in own
        )
        self.long |= {
            self.dataset_of.get(it) for it in own if it is not None and self.yields.get(it, 0) > 1
        }
        let_go = [
            mb
            for mb in zeroed
            if not (
                _aside(mb, idle) and (stream or all(self.zeroed_by[it] for it in _iterators([mb])))
            )
        ]
        self.zeroed_by.update({it for mb in zeroed for it in _iterators([mb])})
        self.seen.probed += self.cut - len(let_go)
        self.stepping = streams
        return let_go


def let_go_from(update: Open, let_go: list[MicroBatch]) -> None:
    """Note on an update the micro-batches zeroed before it and let go: how many, the counts
    of those from its own loaders, whether they were on its own targets again (SAM, an
    attack, a closure) and whether they came from another loader than its own."""
    kept = update.micro
    update.dropped = len(let_go)
    loaders = _loaders(kept)
    update.dropped_counts = tuple(mb.count for mb in let_go if _loaders([mb]) & loaders)
    update.redone = _targets(let_go) <= _targets(kept)  # the same targets again
    update.foreign = _sources(let_go).isdisjoint(_sources(kept))  # another loader's


def _sources(micro: list[MicroBatch]) -> set[int | None]:
    return {mb.source for mb in micro}


def _iterators(micro: list[MicroBatch]) -> set[int | None]:
    """Return the iterators that fetched the targets the micro-batches' losses were called on."""
    return {c.fetched_by for mb in micro for c in mb.losses}


def _aside(mb: MicroBatch, idle: set[int]) -> bool:
    """Return True if every target a micro-batch's losses read was fetched by an iterator that
    is no stream (idle: none of its batches an update applied, and it yielded one batch, or
    ran a whole pass between two steps): a probe's batch, its gradient read, then zeroed
    before the step."""
    its = _iterators([mb])
    return bool(its) and its <= idle


def _loaders(micro: list[MicroBatch]) -> set[int | None]:
    """Return the datasets whose loaders fetched the targets the micro-batches' losses were
    called on (a validation loader's pass between a batch and its loss is not the batch's)."""
    return {c.fetched_from for mb in micro for c in mb.losses}


def _targets(micro: list[MicroBatch]) -> set[tuple[Any, ...]]:
    """Return the views of the targets the micro-batches' losses were called on."""
    return {c.target for mb in micro for c in mb.losses if c.target is not None}
