"""Which forwards fed an update: those a `backward()` reached, and those no `backward()` reached
that were the data's (micro-batches thrown away: they weigh 0), told from the loop's own (an
evaluation, a log line, a peek at a prediction). `Feeds` keeps what tells them apart as the
loop runs; the hooks fill it in (watcher.py, forwards.py)."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from types import CodeType

import torch
from torch import Tensor

from linreg.kinds.training_loop.calls import Call, input_key, memory_of, within
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.rows import foreign, of_the_data
from linreg.kinds.training_loop.sites import evaluates
from linreg.kinds.training_loop.sources import ANOTHER, made_at, source_of, whole_pass


class Feeds:
    """What tells an update's forwards apart, kept across the run."""

    def __init__(self, data: Sequence[Tensor] | None = None) -> None:
        # the first tensor of each distinct row of the data the loop was handed, where known
        self.data = data
        self.reached: set[int] = set()  # the calls a backward() went through (by id)
        # the calls that feed no update unless a backward() reaches them: made in eval mode,
        # or on the batch the last update consumed
        self.unless_reached: set[int] = set()
        # the inputs (memory, shape, version) of the forwards the updates so far consumed, kept
        # alive by their steps: a batch fed again without a draw (itertools.cycle's) is data
        self.fed_before: set[tuple[int, torch.Size, int]] = set()
        # the functions the forwards a backward() reached were made in (each frame's): a
        # forward made in another whose name says it evaluates (estimate_loss, validate) is the
        # loop's own; one made in these alone, on another line (a branch that forgot its
        # backward), or in a helper of another name (a micro-step that forgot it), is not
        self.codes: set[CodeType] = set()
        # the memory of the inputs a backward() reached, by the draw they came after: a draw
        # whose forwards a backward() reached on one batch alone is that batch (not the data
        # drawn up front for the whole run)
        self.batches: dict[int, set[int | None]] = {}
        self.groups: set[int] = set()  # the draws forwards came after (Call.drawn)
        # where the batches a backward() reached came from (sources.source_of): the passes
        # over a DataLoader, None for rows read outside any, ANOTHER for tensors of the loop's
        self.trained_from: set[int | None] = set()
        self.read_alone: set[int | None] = set()  # rows read outside any pass, fed untrained

    def consumed(
        self,
        calls: list[Call],
        last: list[Call],
        seen: Observed,
    ) -> list[Call]:
        """Return the calls since the last update that it consumed (`last`: those the update
        before consumed; seen: the run's records, its draws of the audit's data counted): a
        forward in grad mode that no backward() reached fed no update where it was made in
        eval mode (a validation pass written without torch.no_grad()); in a function whose
        name says it evaluates and in which no forward a backward() reached was made
        (estimate_loss, validate), on data it drew itself or after a draw whose batch trained
        (a batch the loop drew, then logged and skipped, is the data's); on the batch the last
        update consumed (an accuracy read after the step) or on rows of a batch a pass this
        update or the last consumed (a peek at X[:1]'s prediction); after a draw of the
        audit's data (a batch of its loader, a get_batch() call, a dataset's row) whose one
        batch a backward() reached, or before any, on another input than that batch and than
        any an update consumed before, unless it is a batch of another pass fed after a batch
        that trained (a fixed row predicted for a log line; a batch's chunks, data drawn up
        front, a batch itertools.cycle replays, and a zipped loader's batch, are the data's);
        on a batch of a whole pass over a DataLoader that trained nothing, whose draws came
        between those of the passes that trained, or on one row read outside any pass, where
        what trained came from a pass (a loss over the training set; a log line's dataset[0]);
        on a batch of a pass that trained nothing, made and fed with no event of the passes
        that trained between, within the life of one or after its end, or fed after this
        update's last backward() from another DataLoader (an evaluation that breaks after a
        few batches, after the step or before it; a validation iterator kept across steps);
        or on more distinct rows than the data holds (a held-out set). One on the data's rows
        in train mode, made where the loop trains, did (a loop that calls backward() on every
        k-th batch alone, or forgets it in a branch, throws the others away, transformed or
        not). A method's calls (Lightning's training_step, which may call backward itself) all
        count."""
        reached = [c for c in calls if id(c) in self.reached]
        applied = reached + last
        draws = seen.draws
        self.codes.update(code for c in reached for code in c.site)
        for c in reached:
            self.batches.setdefault(c.drawn, set()).add(memory_of(c))
            self.trained_from.add(source_of(seen, c))
        # the draws of this update a backward() reached: each at its first such forward, and
        # the rows of its largest such forward
        first_reached: dict[int, int] = {}
        trained_rows: dict[int, int] = {}
        for i, c in enumerate(calls):
            if id(c) in self.reached:
                first_reached.setdefault(c.drawn, i)
                trained_rows[c.drawn] = max(trained_rows.get(c.drawn, 0), c.rows)
        fetched = bool(draws)
        opened = min(first_reached.values(), default=len(calls))  # the first trained forward
        self.groups.update(c.drawn for c in calls)

        def evaluation(c: Call) -> bool:
            # made in a function that says it evaluates and never trained, on data it drew
            # itself, or drawn for a batch that trained (or before any draw)
            untrained = c.drawn != 0 and c.drawn not in self.batches
            by = draws[c.drawn].by if c.drawn in draws else frozenset()
            return any(
                code not in self.codes and evaluates(code) and (not untrained or code in by)
                for code in c.site
            )

        def after_a_trained_draw(i: int, c: Call, source: int | None) -> bool:
            # before any draw, or after a draw whose one batch a backward() reached, on another
            # input than that batch (its chunks are the data's) and than any an update consumed,
            # and not on the data's rows before that batch's forward (one thrown away, of data
            # drawn up front)
            if input_key(c) in self.fed_before:
                return False
            if source not in (None, ANOTHER) and source in self.trained_from:
                return False  # a batch of a pass that trained, never applied (a prefetcher's)
            if source not in (None, ANOTHER) and i > opened:
                return False  # of another pass, fed after a batch that trained (zipped)
            if c.drawn == 0:
                return True
            batch = self.batches.get(c.drawn, set())
            # the data's rows forwarded before a batch of a draw larger than the batch (data
            # drawn up front: the rows drawn one at a time since the forwards before) are the
            # data's; before a batch that was the whole draw, a fixed row's (a probe)
            drawn = (draws[c.drawn].rows if c.drawn in draws else 0) or c.drawn - max(
                (g for g in self.groups if g < c.drawn), default=0
            )
            before = i < first_reached.get(c.drawn, i) and drawn != trained_rows.get(c.drawn, 0)
            return (
                len(batch) == 1
                and memory_of(c) not in batch
                and not (before and self.data is not None and of_the_data(c, self.data))
            )

        sources = {id(c): source_of(seen, c) for c in calls}  # where each batch came from

        @functools.cache
        def trained_events() -> list[tuple[int, int]]:
            # the events of the passes that trained, by their clocks: their draws and ends,
            # and the forwards of their batches a backward() reached in this update
            return sorted(
                (clock, other)
                for other in self.trained_from
                if other is not None and other != ANOTHER
                for clock in seen.pass_events.get(other, [])
                + [d.clock for d in reached if sources[id(d)] == other]
            )

        def interleaved(source: int) -> bool:
            # an event of a pass that trained came among a pass's own (from its first draw to
            # the last forward this update fed it)
            mine = seen.pass_events.get(source, [0])
            last = max([mine[-1]] + [d.clock for d in calls if sources[id(d)] == source])
            events = trained_events()
            at = bisect.bisect_left(events, (mine[0], 0))
            return at < len(events) and events[at][0] < last

        def another_pass(c: Call, source: int | None) -> bool:
            # fed a batch of a whole pass over a DataLoader no batch of which a backward()
            # reached, no event of a pass that trained among its own (a loss over the training
            # set, after the step or before it; not a loader zipped with the one that trains),
            # or the one row read outside any pass the untrained forwards were fed (a log
            # line's dataset[0]), where every batch that trained came from a pass; not a batch
            # of a pass cut short (next(iter(loader)) for each micro-batch), rows read by index
            # that vary (a replay's), nor where a batch that trained was one the loop made
            trained = self.trained_from
            if source == ANOTHER or not trained or ANOTHER in trained or source in trained:
                return False
            if source is None:
                self.read_alone.add(memory_of(c))
                return len(self.read_alone) == 1
            return whole_pass(seen, source) and not interleaved(source)

        def same_loader(source: int) -> bool:
            # a pass over the DataLoader a batch this update trained on came from
            sampler = seen.pass_sampler.get(source)
            return sampler is not None and any(
                seen.pass_sampler.get(sources[id(d)] or 0) is sampler for d in reached
            )

        def in_a_gap(c: Call, source: int | None) -> bool:
            # fed a batch of a pass that trained nothing, that batch made and this forward fed
            # it with no event of the passes that trained between (their draws and ends, the
            # forwards of their batches a backward() reached), after the end of one or within
            # the life of one (events of it before and after): an evaluation on a few batches,
            # or a validation batch of an iterator kept across steps, after a step, at the top
            # of the body or after an epoch; or fed after this update's last backward() and
            # before its step, from another DataLoader than this update trained on (an
            # evaluation there, on a batch drawn then or before). Not a loader zipped with the
            # one that trains, fed after its batch, a memory's batch fed after the batch's
            # forward and before its backward(), nor a pass per micro-batch (each drawn once,
            # none ended; its last forgotten after the window's last backward())
            if source is None or source == ANOTHER or source in self.trained_from:
                return False
            if reached and c.clock > seen.backward_at and not same_loader(source):
                return True  # fed after this update's last backward(), of another loader
            made = made_at(seen, c)
            events = trained_events()
            at = bisect.bisect_left(events, (made, 0))
            if not 0 < at < len(events) or events[at][0] <= c.clock:
                return False
            if events[at - 1][0] in seen.pass_ends:
                return True
            alive = {other for _, other in events[:at]}  # passes with events before it
            return any(other in alive for _, other in events[at:])

        def own(i: int, c: Call) -> bool:
            source = sources[id(c)]
            return (
                id(c) in self.unless_reached
                or evaluation(c)
                or another_pass(c, source)
                or in_a_gap(c, source)
                or any(within(c, a) for a in applied)
                or (fetched and after_a_trained_draw(i, c, source))
                or self.held_out(c)
            )

        return [
            c
            for i, c in enumerate(calls)
            if c.method != "forward" or id(c) in self.reached or not own(i, c)
        ]

    def held_out(self, call: Call) -> bool:
        """Return True if call was fed rows of the loop's own: a held-out set's (foreign)."""
        return self.data is not None and foreign(call, self.data)

    def unreached(self, calls: list[Call]) -> tuple[int, ...]:
        """Return the positions of the forwards among calls that no backward() reached."""
        return tuple(
            i for i, c in enumerate(calls) if c.method == "forward" and id(c) not in self.reached
        )

    def stepped(self, calls: list[Call]) -> None:
        """Note the inputs an update consumed."""
        self.fed_before.update(k for k in map(input_key, calls) if k is not None)

    def forget_all_but(self, calls: list[Call]) -> None:
        """Keep the marks of these calls alone (the ids of calls no longer kept may be reused)."""
        live = {id(c) for c in calls}
        self.reached &= live
        self.unless_reached &= live
