"""The loss kind: `fn(y_hat, y)` returns scale * (y_hat - y)^2, reduced (the book's squared_loss).

Its properties compare the value and its gradient with torch's `F.mse_loss`, for labels of
shape (n, 1) and, unless told otherwise, (n,).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from linreg import _validate
from linreg.targets.base import Kind, Options, binds, option

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
    """Return fn once it takes (y_hat, y)."""
    binds(fn, SIGNATURE, None, None)
    return fn


KIND = Kind(
    name="loss",
    signature=SIGNATURE,
    summary="a loss (the book's squared_loss): scale * (y_hat - y)^2, reduced",
    options=LossOptions,
    build=build,
    doc="scale is 0.5 for the book's squared_loss, 1.0 for nn.MSELoss.",
)
