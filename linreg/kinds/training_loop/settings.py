"""What the audit is told about a loop (its Options: the model factory, the example, the
optimizer, the loss, the accumulation count, ...) and what it draws for one run (a Batching).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from linreg import _validate
from linreg.kinds import guards
from linreg.kinds.base import Target, TargetError
from linreg.kinds.options import Options, option, read_from_run, seconds
from linreg.kinds.training_loop.rows import Example, as_example

SIGNATURE = "fn(model, loader/dataset/get_batch, [optimizer], num_epochs/max_steps)"


FLOOR = guards.FLOOR  # seconds: the least time a run of the loop is given (see limit_of)
MOST_DRAWN = 4  # the largest accumulation count drawn for a loop that takes one, given none
SLOW = 0.05  # seconds an update, in the probe's run, past which the examples hold fewer
LONG = 1.0  # seconds: one gap between the probe's updates this long shows a slow loop at once


def _factory(name: str, value: object) -> Callable[[], nn.Module]:
    if not callable(value):
        raise TargetError(
            f"{name} must be a zero-argument factory of an nn.Module, got {type(value).__name__}"
        )
    return value


def _callable_or_none(what: str) -> Callable[[str, object], Any]:
    def check(name: str, value: object) -> Any:
        if value is not None and not callable(value):
            raise TargetError(f"{name} must be {what}, got {type(value).__name__}")
        return value

    return check


EXAMPLE_HELP = (
    "one sample, unbatched, as the dataset holds it: (x, y), or a dict of tensors (or a "
    "function returning one)"
)


def example_option() -> Any:
    """Return the example option's field: the training loop's, and each framework's."""
    return option(
        None,
        EXAMPLE_HELP,
        flag="--example",
        check=checked_example,
        imported="object",
        required=True,
        compare=False,
    )


def checked_example(name: str, value: object) -> Example:
    """Return the example option as (x, y) tensors or a dict of tensors; raise TargetError."""
    try:
        return as_example(value() if callable(value) else value)
    except TypeError as e:
        raise TargetError(str(e)) from None


@dataclass(frozen=True)
class TrainingLoopOptions(Options):
    """What a training loop is given, and how it steps."""

    model: Callable[[], nn.Module] = option(
        None,
        "a zero-argument factory of a fresh nn.Module (a class will do)",
        flag="--model",
        check=_factory,
        imported="callable",
        required=True,
        compare=False,
    )
    example: Example = example_option()
    optimizer: Callable[..., torch.optim.Optimizer] | None = option(
        None,
        "a factory params -> torch.optim.Optimizer, for a loop that takes one (default: SGD)",
        flag="--optimizer",
        check=_callable_or_none("a factory params -> torch.optim.Optimizer"),
        imported="callable",
        compare=False,
    )
    loss: Callable[[Any, Tensor], Tensor] | None = option(
        None,
        "the loss the loop trains, (output, y) -> the batch's mean loss (default: the model's "
        "own where its output carries one, else cross-entropy for class labels and mean "
        "squared error otherwise, confirmed against the loop)",
        flag="--loss",
        check=_callable_or_none("a function (output, y) -> loss"),
        imported="callable",
        compare=False,
    )
    accumulation_steps: int | None = option(
        None,
        "the loop steps once per this many batches (windows may cross an epoch's end; the "
        "last is stepped too). Default: read from the run for a loop that takes no count; "
        f"drawn for each example (1 to {MOST_DRAWN}) for a loop that takes one",
        flag="--accumulation-steps",
        check=_validate.positive_int_or_none,
    )
    reduction: str = option(
        "mean",
        "a step applies the mean (or the sum) of its rows' gradients",
        flag="--reduction",
        choices=("mean", "sum"),
    )
    drop_last: bool = option(
        False,
        "the audit's DataLoader drops each epoch's short last batch (drop_last=True)",
        flag="--drop-last",
    )
    timeout: float | None = option(
        None,
        "seconds one run of the loop may take (default: 50 times its first small run, and at "
        f"least {FLOOR:g} s)",
        flag="--timeout",
        check=seconds,
    )
    draws_count: bool = read_from_run(
        False,
        "the loop takes an accumulation count and none was given: each example draws one",
    )
    slow: bool = read_from_run(
        False,
        f"the loop's first run took over {SLOW:g} s from one update to the next (the median; "
        "a large model, or work of its own after each step; that run is ended once two gaps in "
        f"a row are over it, or its first is over {LONG:g} s): its audit first makes two runs "
        "that hold what every property judges (4 and 2 updates, for a loop that steps every "
        "batch), then smaller ones while its time lasts (batches of 3 rows at most, at most 2 "
        "full steps an epoch, 2 model inits), and reports a failure unshrunk",
    )
    least_batches: int = read_from_run(
        1,
        "the fewest batches an epoch the loop runs on, up to one window: it raised on fewer "
        "(its examples hold at least this many, and what it raised there is not judged)",
    )

    def first_examples(self) -> tuple[Batching, ...]:
        """Return the runs a slow loop's audit makes first (`first_runs`), else none."""
        return first_runs(self) if self.slow else ()


def options_of(target: Target) -> TrainingLoopOptions:
    """Return a training-loop target's options."""
    options = target.options
    assert isinstance(options, TrainingLoopOptions), f"{target} is not a training-loop target"
    return options


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


def expected_steps(batching: Batching, accumulation_steps: int, drop_last: bool = False) -> int:
    """Return the number of optimizer steps a correct loop takes on the batching."""
    return len(batching.steps(accumulation_steps, drop_last))


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Return plain SGD (the audit holds its lr at 0: only the gradients are read)."""
    return torch.optim.SGD(params, lr=0.1)


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


def reduced(target: Target) -> str:
    """Return how a step reduces its rows' gradients: "sum" or "mean"."""
    return "sum" if options_of(target).reduction == "sum" else "mean"
