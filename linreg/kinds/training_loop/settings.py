"""What the audit is told about a loop (its Options: the model factory, the example, the
optimizer, the loss, the accumulation count, ...), each checked as it is given; what it draws
for one run (a Batching) is batching.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from linreg import _validate
from linreg.kinds import guards
from linreg.kinds.base import Target, TargetError
from linreg.kinds.options import Options, option, read_from_run
from linreg.kinds.training_loop.batching import Batching, first_runs
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


def _loss_or_none(name: str, value: object) -> Any:
    """A loss function, or a loss module's class (nn.MSELoss, as the command line names it):
    made with its defaults, as `nn.MSELoss()` is."""
    if isinstance(value, type):
        if not issubclass(value, nn.Module):
            raise TargetError(
                f"{name} must be a function (output, y) -> loss, got the class {value.__name__}"
            )
        try:
            return value()
        except Exception as e:
            raise TargetError(
                f"{name}: the loss class {value.__name__} cannot be made with its defaults "
                f"({type(e).__name__}: {e}): name a function (output, y) -> loss"
            ) from None
    return _callable_or_none("a function (output, y) -> loss")(name, value)


EXAMPLE_HELP = (
    "one sample, unbatched, as the dataset holds it: (x, y), each one tensor, or a dict of "
    "tensors, one per part (or a function returning one)"
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
        "the loss the loop trains, (output, y) -> the batch's mean loss, or a loss module's "
        "class, made with its defaults (default: the model's "
        "own where its output carries one, else cross-entropy for class labels and mean "
        "squared error otherwise, confirmed against the loop)",
        flag="--loss",
        check=_loss_or_none,
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
        check=_validate.positive_finite_or_none,
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


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Return plain SGD (the audit holds its lr at 0: only the gradients are read)."""
    return torch.optim.SGD(params, lr=0.1)


def reduced(target: Target) -> str:
    """Return how a step reduces its rows' gradients: "sum" or "mean"."""
    return "sum" if options_of(target).reduction == "sum" else "mean"
