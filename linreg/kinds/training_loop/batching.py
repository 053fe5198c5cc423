"""What the audit draws for one run of a loop (a Batching: its rows, in batches, for a number
of epochs), the steps a correct loop takes on it, and the runs a slow loop's audit makes first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # its options are read, never built: settings.py imports this module
    from linreg.kinds.training_loop.settings import TrainingLoopOptions


@dataclass(frozen=True)
class Batching:
    """One run of a loop: n rows (0 = the example, 1 = the contrast row) in batches, in order."""

    rows: tuple[int, ...]
    batch_size: int
    num_epochs: int
    seed: int  # torch's and Python's RNGs, seeded before the model is built and the loop runs
    accumulation_steps: int | None = None  # the count the loop is handed (None: the options')

    @property
    def n(self) -> int:
        """Return the number of rows."""
        return len(self.rows)

    @property
    def batches(self) -> int:
        """Return the batches of one epoch, the short last one included."""
        return -(-self.n // self.batch_size)

    def __plain__(self) -> dict[str, Any]:
        """Return the batching as a report shows it: the count only where one was drawn."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.accumulation_steps is None:
            del shown["accumulation_steps"]
        return shown

    def steps(self, accumulation_steps: int, drop_last: bool = False) -> list[tuple[int, ...]]:
        """Return the rows each optimizer step of a correct loop consumes, over every epoch."""
        b, k = self.batch_size, accumulation_steps
        end = self.n - self.n % b if drop_last else self.n
        batches = [self.rows[i : i + b] for i in range(0, end, b)]
        groups = [sum(batches[j : j + k], ()) for j in range(0, len(batches), k)]
        return groups * self.num_epochs


def first_runs(options: TrainingLoopOptions) -> tuple[Batching, ...]:
    """Return the runs a slow loop's audit makes first, each one batchings(options,
    steps="either", mixed=None, max_epochs=2) can draw: rows of both kinds, alternating, in
    batches of 3, one full step (more where the loop needs more batches an epoch), then the
    epoch's rest, for 2 epochs, and that run's one epoch (a budget of its own shows, and
    exhausted-generator reads it again).

    Each update then follows a full one (grad-zeroing judges a short step that found a
    gradient in .grad). With no count the rest is a short last batch (with drop_last, a
    second full step: one would be the whole epoch). With a count k, the epoch's batches are
    no multiple of k, so that its one epoch ends on a partial window however the loop counts
    its windows (over epochs too), and its last window holds unequal micro-batches: k - 2
    full batches and a row (with drop_last, k - 1 whole batches). At k = 2 no window can be
    both: the first run's rest is a window of a full batch and a row, and the second run is
    one row past the full window. A loop that takes a count draws 3. Together they hold what
    each property of the kind judges: a step after a full step, a short one, an epoch's end,
    a run's end, rows whose gradients differ.
    """
    drawn = 3 if options.draws_count else None
    k = drawn or options.accumulation_steps or 1
    b = 3
    least = options.least_batches
    if k == 1 and options.drop_last:  # two full steps: one would be the whole epoch
        whole = b * max(2, least)
    else:  # one full window, then the rest: every epoch at least `least` batches long
        whole = b * k * max(1, -(-(least - 1) // k))

    def run(rest: int, epochs: int) -> Batching:
        return Batching(tuple(i % 2 for i in range(whole + rest)), b, epochs, 0, drawn)

    if k == 1:
        rest = 1
    elif options.drop_last:
        rest = b * (k - 1)
    elif k == 2:
        return run(b + 1, 2), run(1, 1)
    else:
        rest = b * (k - 2) + 1
    return run(rest, 2), run(rest, 1)


WIDE = 37  # rows in the wide run's batches: a prime, so no chunk size nor count splits one evenly


def wide_run(options: TrainingLoopOptions) -> Batching:
    """Return the run an audit makes last: one window of batches of WIDE rows, for one epoch.

    The drawn runs' batches hold 5 rows at most, so a loop that splits each batch into chunks
    of 4, 8 or 16 (or into 2 or 4 by torch.chunk) splits them evenly or not at all, and a mean
    of its chunks' means applies the mean. A prime number of rows splits unevenly under every
    chunk size and count; the example's rows first and the contrast row's after weigh each
    chunk's share (or a lone last row's) apart. A loop that takes a count is handed 1; one
    given a count k runs one full window of k batches (at least the batches it needs).
    """
    k = 1 if options.draws_count else options.accumulation_steps or 1
    half = WIDE // 2 + 1
    batch = (0,) * half + (1,) * (WIDE - half)
    batches = max(k, options.least_batches)
    return Batching(batch * batches, WIDE, 1, 0, 1 if options.draws_count else None)


def expected_steps(batching: Batching, accumulation_steps: int, drop_last: bool = False) -> int:
    """Return the number of optimizer steps a correct loop takes on the batching."""
    return len(batching.steps(accumulation_steps, drop_last))


def count_of(options: TrainingLoopOptions, batching: Batching | None = None) -> int:
    """Return the accumulation count of a run: the one drawn for it, else the options' (1
    where none was given or read)."""
    drawn = batching.accumulation_steps if batching is not None else None
    return drawn or options.accumulation_steps or 1


def describe(batching: Batching, options: TrainingLoopOptions) -> str:
    """Return the batching in words, for a failure message."""
    rows = "rows of both kinds" if len(set(batching.rows)) > 1 else "identical rows"
    count = batching.accumulation_steps
    return (
        f"{batching.n} {rows} in batches of {batching.batch_size}"
        + (f", accumulation count {count}" if count is not None else "")
        + f", for {batching.num_epochs} epoch(s)"
        + (" (drop_last)" if options.drop_last else "")
    )
