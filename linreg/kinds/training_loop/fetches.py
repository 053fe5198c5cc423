"""The batches the audit's loader makes, told as the loop fetches them (ShortFetches): the rows
each holds, the passes over it that trained, and a short last batch such a pass skipped before
its forward (within one run: one_run.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from linreg.kinds.training_loop.batching import Batching
from linreg.kinds.training_loop.calls import tensors_in
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.sources import drew


class ShortFetches:
    """Tell each pass over the audit's loader that trained (an update during its full batches)
    and whose short last batch went through no forward before the loader made a full batch
    again (a loop that skips a batch smaller than batch_size before its forward), and the
    rows such passes fetched. A pass with no update (an evaluation, class counts, one sample
    batch) tells nothing; nor does a short batch fetched last, where the loop may have
    stopped (a budget, an early stop), nor one another iterator's batch follows (zipped
    loaders). short-last-batch names a skip only where the rows the loop fed with grad fall
    short of those its training passes fetched: rows carried into the next epoch are fed.

    It also counts the rows the loader's batches hold (Observed.drawn: a forward's draw, which
    tells the loop's own forwards from the data's) and keeps the short batches of passes that
    trained (Observed.shorts: a forward of one that no backward() reached is a skip too)."""

    def __init__(self, batching: Batching) -> None:
        self.batch_size = batching.batch_size
        self.seen: Observed | None = None
        self.rows = 0  # this pass's rows so far
        self.steps_at = 0  # the updates before this pass's first batch
        self.pending: tuple[int, bool] | None = None  # a short batch: forwards before, trained
        self.resumed: int | None = None  # the forwards as the full batch after a skip came

    def collating(self, collate: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        return _Told(collate, self)

    def fetched(self, rows: int, batch: Any = None) -> None:
        """Note a batch of `rows` the loader made (once the run is watched: seen is set); a
        short one's tensors are kept where its pass trained, to tell a forward of that batch
        (a pass of the loop's own, an accuracy in train mode, trains nothing)."""
        seen = self.seen
        if seen is None:
            return
        drew(seen, rows)
        self._resumed(seen)
        short = rows < self.batch_size
        if self.pending is not None and not short:  # a full batch again: the loop moved on
            before, trained = self.pending
            if trained and seen.forwards == before:  # skipped, if it trains on this one
                self.resumed = seen.forwards
            self.pending = None
        if not self.rows:  # a new pass
            self.steps_at = len(seen.steps)
        self.rows += rows
        if short:  # the pass's end
            trained = len(seen.steps) > self.steps_at
            seen.train_rows += self.rows if trained else 0
            if trained:
                seen.shorts.append([t for t in tensors_in([batch], {}) if t.numel()])
            if self.pending is None:
                self.pending = (seen.forwards, trained)
            self.rows = 0

    def _resumed(self, seen: Observed) -> None:
        """A short batch skipped: the model ran again after the full batch that followed it, at
        once or once the loop fetched more (a window fetched whole before its forwards; a loop
        that stopped there, at a budget or an early stop, broke off: it skipped nothing)."""
        if self.resumed is not None and seen.forwards > self.resumed:
            seen.skipped_short += 1
            self.resumed = None

    def finish(self) -> None:
        """Count the rows of a pass the loop left before its short batch, where it trained."""
        seen = self.seen
        if seen is not None:
            self._resumed(seen)
            if self.rows and len(seen.steps) > self.steps_at:
                seen.train_rows += self.rows


class _Told:
    """The audit loader's collate, telling ShortFetches each batch it makes. Pickled into a
    loader's worker process (a loop that rebuilds the loader with num_workers, spawned), it
    collates alone: what a worker makes is not this process's to count."""

    def __init__(self, collate: Callable[[list[Any]], Any], fetches: ShortFetches | None) -> None:
        self.collate, self.fetches = collate, fetches

    def __call__(self, rows: list[Any]) -> Any:
        batch = self.collate(rows)
        if self.fetches is not None:
            self.fetches.fetched(len(rows), batch)
        return batch

    def __getstate__(self) -> dict[str, Any]:
        return {"collate": self.collate, "fetches": None}
