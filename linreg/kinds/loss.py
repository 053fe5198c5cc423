"""The loss kind: `fn(y_hat, y)` returns scale * (y_hat - y)^2, reduced (the book's squared_loss).

Its properties compare the value and its gradient with torch's `F.mse_loss`, for labels of
shape (n, 1) and, unless told otherwise, (n,).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from linreg import _kind_names as names
from linreg import _validate
from linreg.checks import LoopRaised
from linreg.kinds.base import Kind, TargetError, binds
from linreg.kinds.options import Options, name_of, option, timeout_option

SIGNATURE = "fn(y_hat, y)"


@dataclass(frozen=True)
class LossOptions(Options):
    """What a loss promises beyond its signature."""

    reduction: Literal["none", "mean", "sum"] = option(
        "none",
        "how it reduces over the examples",
        flag="--reduction",
        choices=("none", "mean", "sum"),
    )
    scale: float = option(
        0.5,
        "the factor before (y_hat - y)^2: 0.5 for the book, 1 for nn.MSELoss",
        flag="--scale",
        check=_validate.positive_finite,
    )
    flat_labels: bool = option(
        True,
        "the labels are always (n, 1): labels of shape (n,) are not tried",
        flag="--no-flat-labels",
        check=_validate.flag,
    )
    timeout: float | None = timeout_option("the loss")


def build(fn: Callable[..., Any], options: LossOptions) -> Callable[..., Any]:
    """Return fn once it takes (y_hat, y) and returns a tensor: a loss that returns something
    else is refused once, in one line, not by each property in its own words."""
    binds(fn, SIGNATURE, None, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = fn(torch.zeros(2, 1, requires_grad=True), torch.zeros(2, 1))
    except Exception:
        return fn  # a loss that raises: the properties say on which input
    if not isinstance(got, torch.Tensor):
        raise TargetError(
            f"{name_of(fn)} returned {type(got).__name__} on y_hat and y of shape (2, 1), "
            "expected a tensor"
        )
    return returns_a_finite_tensor(fn)


def returns_a_finite_tensor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return fn that raises LoopRaised, the target's own error and not a pitfall, when it
    returns no tensor, or a value that is not finite on finite y_hat and y."""

    @functools.wraps(fn)
    def loss(y_hat: Tensor, y: Tensor) -> Any:
        got = fn(y_hat, y)
        on = f"on y_hat of shape {tuple(y_hat.shape)} and y of shape {tuple(y.shape)}"
        if not isinstance(got, torch.Tensor):
            raise LoopRaised(f"the loss returned {type(got).__name__} {on}, expected a tensor")
        finite = bool(torch.isfinite(y_hat).all()) and bool(torch.isfinite(y).all())
        if finite and not bool(torch.isfinite(got.detach()).all()):
            value = "nan" if bool(got.detach().isnan().any()) else "inf"
            raise LoopRaised(f"the loss returned {value} {on}, both finite")
        return got

    return loss


KIND = Kind(
    name=names.LOSS,
    signature=SIGNATURE,
    summary="a loss (the book's squared_loss): scale * (y_hat - y)^2, reduced",
    options=LossOptions,
    build=build,
    calls="the loss",
    doc="scale is 0.5 for the book's squared_loss, 1.0 for nn.MSELoss.",
)
