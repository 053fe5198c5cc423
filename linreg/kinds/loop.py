"""The loop kind: `fn(features, labels, params, *, lr, batch_size, num_epochs)` trains params.

A loop is observed only through what it is given and what it returns (`train_loop`): it may
train `params` in place and return None, return new [w, b], a model, or an object with .w and
.b. The epoch-loss kind (`linreg.kinds.epoch_loss`) shares its signature, less num_epochs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from linreg import _kind_names as names
from linreg import _validate
from linreg.checks import CheckFailed
from linreg.kinds.base import Kind, Target, TargetError, keyword_only
from linreg.kinds.guards import guarded, seeded
from linreg.kinds.late import late
from linreg.kinds.options import Options, floating_dtype, name_of, option, timeout_option
from linreg.kinds.runs import copy_params

SIGNATURE = "fn(features, labels, params, *, lr, batch_size, num_epochs)"
EPOCH_SIGNATURE = "fn(features, labels, params, *, lr, batch_size)"


@dataclass(frozen=True)
class ObjectiveOptions(Options):
    """What a loop or an epoch promises: the objective it descends, the dtype it trains in."""

    objective: Literal["book", "mse"] = option(
        "book",
        "the mean of r^2 / 2 per step (book: the book's loop, or nn.MSELoss() + optim.SGD at "
        "lr / 2) or of r^2 (mse: nn.MSELoss() + optim.SGD at lr)",
        flag="--objective",
        choices=("book", "mse"),
    )
    dtype: torch.dtype = option(
        torch.float32,
        "the dtype of the data and params",
        flag="--dtype",
        choices=(torch.float32, torch.float64),
        check=floating_dtype,
    )
    timeout: float | None = timeout_option("the loop or epoch")


@dataclass(frozen=True)
class LoopOptions(ObjectiveOptions):
    """What a loop promises beyond its signature."""

    full_batch: bool = option(
        False,
        "every step takes the whole data (batch_size = n)",
        flag="--full-batch",
        check=_validate.flag,
    )
    drop_last: bool = option(
        False,
        "the n % B left-over rows are dropped each epoch",
        flag="--drop-last",
        check=_validate.flag,
    )


def build(fn: Callable[..., Any], options: Options) -> Callable[..., Any]:
    """Return fn once it takes a loop's signature (params positional or by keyword)."""
    try:
        check_loop_signature(fn)
    except TypeError as e:
        raise TargetError(f"{name_of(fn)}: a loop {e}") from None
    return fn


def check_loop_signature(fn: Callable[..., object], *, epochs: bool = True) -> None:
    """Raise TypeError if fn cannot be called as a loop (params positional or by keyword).

    epochs=False: the one-epoch signature, without num_epochs.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: judged when called
        return
    kwargs = {"lr": 0, "batch_size": 0, **({"num_epochs": 0} if epochs else {})}
    try:
        if keyword_only(fn, "params"):
            sig.bind(0, 0, params=0, **kwargs)
        else:
            sig.bind(0, 0, 0, **kwargs)
    except TypeError as e:
        signature = SIGNATURE if epochs else EPOCH_SIGNATURE
        raise TypeError(f"must take {signature}: {e}") from None


def call_with_params(
    fn: Callable[..., Any], features: Tensor, labels: Tensor, params: list[Tensor], **kwargs: Any
) -> Any:
    """Call fn(features, labels, params, **kwargs), params by keyword if fn takes it so."""
    if keyword_only(fn, "params"):
        return fn(features, labels, params=params, **kwargs)
    return fn(features, labels, params, **kwargs)


def train_loop(
    target: Target,
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> list[Tensor]:
    """Run a loop target and return the params it trained: float64 copies of w (d,) and b (1,).

    The loop may train `params` in place and return None, return new [w, b], return the model
    (an nn.Module whose parameters are a weight and a bias), or return an object with .w and
    .b (linreg's TrainResult); nn.Linear's (1, d) weight is flattened.
    """
    kwargs = {"lr": lr, "batch_size": batch_size, "num_epochs": num_epochs}
    with guarded("the loop"):
        out = call_with_params(target.fn, features, labels, params, **kwargs)
    if out is None:
        got: list[object] = list(params)
    elif isinstance(out, torch.nn.Module):  # a model with one weight and one bias
        got = list(out.parameters())
    elif hasattr(out, "w") and hasattr(out, "b"):
        got = [out.w, out.b]
    elif isinstance(out, Tensor) or not hasattr(out, "__iter__"):
        got = [out]
    else:
        got = list(out)
    d = features.shape[1]
    tensors = [t for t in got if isinstance(t, Tensor)]
    if len(got) != 2 or len(tensors) != 2 or [t.numel() for t in tensors] != [d, 1]:
        raise CheckFailed(
            f"the loop returned {type(out).__name__}: expected None (params trained in place), "
            f"[w, b] with {d} and 1 elements, a model with such parameters, or an object with "
            ".w and .b"
        )
    return [t.detach().reshape(-1).to(torch.float64, copy=True) for t in tensors]


def run_loop(target: Target, run: dict[str, Any]) -> list[Tensor]:
    """Run a loop target on a drawn run (linreg.testing.strategies.loop_runs), RNGs seeded."""
    features = run["features"]
    batch_size = len(features) if target.options.full_batch else run["batch_size"]
    with seeded(run["seed"]):
        return train_loop(
            target,
            features,
            run["labels"],
            list(copy_params(run["params"])),
            lr=run["lr"],
            batch_size=batch_size,
            num_epochs=run["num_epochs"],
        )


def curvature(options: ObjectiveOptions) -> float:
    """Return c in the objective's gradient c * r * x: 1 for the book's r^2 / 2, 2 for r^2."""
    return 1.0 if options.objective == "book" else 2.0


LOOPS = (
    Target(late("train.train"), "loop", LoopOptions(), "train"),
    # torch's (the oracle: nn.Linear + nn.MSELoss + optim.SGD); its summed variant is checked
    # step for step against the mean by mean-vs-sum's property
    Target(
        late("concise.train_concise"),
        "loop",
        LoopOptions(objective="mse"),
        "train_concise",
        oracle=True,
    ),
)
FULL_BATCH_LOOPS = (
    Target(
        late("accumulate.train_full_batch"),
        "loop",
        LoopOptions(full_batch=True),
        "train_full_batch",
    ),
    Target(
        late("concise.train_concise"),
        "loop",
        LoopOptions(objective="mse", full_batch=True),
        "train_concise(batch_size=n)",
        oracle=True,
    ),
)

KIND = Kind(
    name=names.LOOP,
    signature=SIGNATURE,
    summary="a training loop of the book's kind on (features, labels) and params [w, b]",
    options=LoopOptions,
    build=build,
    calls="the loop",
    doc=(
        "params are [w (d, 1), b (1,)], leaves that require grad (params may be a keyword-only "
        "argument, as in linreg.train); it trains them and returns them, or None when it "
        "trains them in place. The data and params come in dtype, with 2 features; the "
        "loop's RNGs are seeded per example."
    ),
)
