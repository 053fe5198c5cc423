"""The book's squared loss, per example."""

from __future__ import annotations

from torch import Tensor


def squared_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    """Return (y_hat - y)^2 / 2 per example, with y reshaped to y_hat's shape first."""
    if y.numel() != y_hat.numel():
        raise ValueError(
            f"y has {y.numel()} elements but y_hat has {y_hat.numel()}: "
            f"shapes {tuple(y.shape)} and {tuple(y_hat.shape)}"
        )
    # Without the reshape, (n, 1) - (n,) broadcasts silently to (n, n). Labels already in
    # y_hat's shape (train reshapes them once) skip it: a shape compare costs less than a view.
    if y.shape != y_hat.shape:
        y = y.reshape(y_hat.shape)
    return (y_hat - y) ** 2 / 2
