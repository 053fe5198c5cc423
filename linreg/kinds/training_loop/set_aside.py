"""A probe's batch an update set aside (the Watcher's): a batch whose gradient the loop read,
then zeroed before the update's own backward() (a gradient-norm probe, a scoring pass on a
batch of a loader of its own), is no micro-batch of the update; unless the whole run shows
no probe, the update is read again as fed at the end (`_settle`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import Tensor

from linreg.kinds.training_loop.calls import Call, memory_of
from linreg.kinds.training_loop.feeds import Feeds
from linreg.kinds.training_loop.gradient_hooks import zeroed_in
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.sources import source_of


@dataclass(frozen=True)
class Probed:
    """An update that set aside a probe's batch (its gradient read, then zeroed before the
    update's own): what it is read as if the batch was the update's own, the passes the
    batches set aside came from, and those batches (their memory; a held-out set's, of the
    loop's own, none)."""

    step: int
    zeroed: bool
    calls: list[Call]
    carried: Tensor | None
    unreached: tuple[int, ...]
    passes: frozenset[int | None]
    batches: frozenset[int]


class SetAside:
    """The Watcher's reading of probes' batches; the attributes it reads and writes are the
    Watcher's (set in Watcher.__init__)."""

    seen: Observed
    feeds: Feeds
    calls: list[Call]  # the calls since the last update
    resets: dict[int, list[int]]  # GradientHooks.resets
    streams: set[int | None]  # the passes whose batches updates consumed
    early: set[int]  # the passes that ran out before the first update
    probed: list[Probed]  # updates that set a probe's batch aside

    def _set_aside(
        self, applied: Tensor | None, kept: Tensor | None, carried: Tensor | None
    ) -> tuple[bool, list[Call]]:
        """Return whether the loop zeroed inside the update and the calls it consumed (those
        of idle passes, a probe's, set aside: zeroed_in); where some were set aside, note
        what the update reads as if they were its own, till finish (_settle)."""
        idle, held_out = self._idle(), self.feeds.held_out
        zeroed, consumed = zeroed_in(
            self.calls, self.resets, applied, kept, self.seen.held, idle, held_out
        )
        if idle and len(consumed) < len(self.calls):  # read as a probe's: kept till finish()
            strict = zeroed_in(self.calls, self.resets, applied, kept, self.seen.held, (), held_out)
            if len(strict[1]) != len(consumed):
                calls, ids = strict[1], {id(c) for c in consumed}
                set_aside = [c for c in self.calls if id(c) not in ids]
                self.probed.append(
                    Probed(
                        len(self.seen.steps),
                        strict[0],
                        calls,
                        carried if len(calls) == len(self.calls) else None,
                        self.feeds.unreached(calls),
                        frozenset(source_of(self.seen, c) for c in set_aside) & idle,
                        frozenset(
                            m
                            for c in set_aside
                            if (m := memory_of(c)) is not None and m in self.seen.held
                        ),
                    )
                )
        return zeroed, consumed

    def _idle(self) -> set[int]:
        """Return the passes over the data that are no stream: no update consumed a batch of
        them, and each made one batch (a probe's) or ran out before the first update (a
        listed loader's: a pass that runs out beside the training one, zipped, is a stream)."""
        seen = self.seen
        return {
            number
            for number in range(1, seen.began + 1)
            if number not in self.streams
            and (
                number in self.early
                or seen.pass_rows.get(number, 0) <= seen.pass_batch.get(number, 1)
            )
        }

    def _settle(self) -> None:
        """Read as they were fed the updates that set a probe's batch aside, unless the whole
        run shows the probe: each batch set aside is one that more than one update set aside
        (the same batch, read again before each step: a fresh iterator's first batch each
        time is not told from a second pass zeroed inside every window), its pass still idle
        at the end (no second batch made: a stream's is); or rows of the loop's own."""
        idle = self._idle()
        times = Counter(m for probed in self.probed for m in probed.batches)
        for probed in self.probed:
            if all(times[m] > 1 for m in probed.batches) and probed.passes <= idle:
                continue
            step = self.seen.steps[probed.step]
            step.zeroed, step.calls, step.carried = probed.zeroed, probed.calls, probed.carried
            step.unreached = probed.unreached
