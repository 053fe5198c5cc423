"""The linear model y_hat = Xw + b and the book's initial parameters."""

from __future__ import annotations

import torch
from torch import Tensor

from linreg import _validate


def linreg(X: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Return X @ w + b, shape (n, 1) for X (n, d) and w (d, 1)."""
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {tuple(X.shape)}")
    if w.shape != (X.shape[1], 1):
        raise ValueError(
            f"w must have shape ({X.shape[1]}, 1) for X of shape {tuple(X.shape)}, "
            f"got {tuple(w.shape)}"
        )
    return torch.addmm(b, X, w)  # X @ w + b in one op


def init_params(
    num_inputs: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Return w ~ N(0, 0.01^2) of shape (num_inputs, 1) and b = 0, both leaves requiring grad."""
    num_inputs = _validate.positive_int("num_inputs", num_inputs)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    generator = _validate.generator(generator)
    w = (0.01 * torch.randn(num_inputs, 1, generator=generator, dtype=dtype)).requires_grad_()
    b = torch.zeros(1, dtype=dtype, requires_grad=True)
    return w, b
