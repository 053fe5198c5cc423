"""The epoch-loss kind: `fn(features, labels, params, *, lr, batch_size)` trains one epoch.

It returns the epoch's loss as it reports it (a float, or a one-element tensor): the mean of
the objective over the epoch's examples (linreg.train.train_epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

from linreg import _kind_names as names
from linreg.checks import LoopRaised
from linreg.kinds.base import Kind, Target, TargetError
from linreg.kinds.guards import guarded, seeded
from linreg.kinds.late import late
from linreg.kinds.loop import (
    EPOCH_SIGNATURE,
    ObjectiveOptions,
    call_with_params,
    check_loop_signature,
)
from linreg.kinds.options import name_of
from linreg.kinds.runs import copy_params


def build(fn: Callable[..., Any], options: ObjectiveOptions) -> Callable[..., Any]:
    """Return fn once it takes an epoch's signature (params positional or by keyword)."""
    try:
        check_loop_signature(fn, epochs=False)
    except TypeError as e:
        raise TargetError(f"{name_of(fn)}: an epoch {e}") from None
    return fn


def run_epoch(target: Target, run: dict[str, Any]) -> Any:
    """Run one epoch of an epoch-loss target on a drawn run, RNGs seeded; return its report."""
    with seeded(run["seed"]), guarded("the epoch"):
        reported = call_with_params(
            target.fn,
            run["features"],
            run["labels"],
            list(copy_params(run["params"])),
            lr=run["lr"],
            batch_size=run["batch_size"],
        )
    # what the epoch returns is its own error, not a pitfall, unless it is a finite loss
    if isinstance(reported, Tensor) and reported.numel() == 1:
        value = float(reported.detach())
    elif isinstance(reported, (int, float)) and not isinstance(reported, bool):
        value = reported = float(reported)
    else:
        raise LoopRaised(
            f"the epoch returned {type(reported).__name__}: expected the loss it reports, a float "
            "or a one-element tensor"
        )
    if not math.isfinite(value):
        raise LoopRaised(f"the epoch reported a loss of {value} on finite data")
    return reported


EPOCHS = (Target(late("train.train_epoch"), "epoch-loss", ObjectiveOptions(), "train_epoch"),)

KIND = Kind(
    name=names.EPOCH_LOSS,
    signature=EPOCH_SIGNATURE,
    summary="one epoch of training that returns the loss it reports for the epoch",
    options=ObjectiveOptions,
    build=build,
    calls="the epoch",
    doc=(
        "fn trains params for one epoch and returns the epoch's loss as it reports it (a "
        "float, or a one-element tensor): the mean of the objective over the epoch's "
        "examples. With lr = 0 the report must be the full-data loss; it must hold no graph."
    ),
)
