"""The loss kind: `fn(y_hat, y)` returns scale * (y_hat - y)^2, reduced (the book's squared_loss).

Its properties compare the value and its gradient with torch's `F.mse_loss`, for labels of
shape (n, 1) and, unless told otherwise, (n,).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from linreg import _validate
from linreg.targets.base import Kind, Options, TargetError, binds, name_of, option

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
    return fn


KIND = Kind(
    name="loss",
    signature=SIGNATURE,
    summary="a loss (the book's squared_loss): scale * (y_hat - y)^2, reduced",
    options=LossOptions,
    build=build,
    doc="scale is 0.5 for the book's squared_loss, 1.0 for nn.MSELoss.",
)
