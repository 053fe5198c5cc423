"""The book's minibatch stochastic gradient descent."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from linreg import _validate


def sgd(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Update each param in place by -lr * grad / batch_size, then zero its grad."""
    lr = _validate.positive_finite("lr", lr)
    batch_size = _validate.positive_int("batch_size", batch_size)
    for i, param in enumerate(params):
        if param.grad is None:
            raise ValueError(f"params[{i}].grad is None: call backward() first")
    # No graph for the update itself: `-=` on a leaf that requires grad is illegal in grad mode,
    # and the update is not part of the model.
    step = lr / batch_size
    with torch.no_grad():
        for param in params:
            grad: Tensor = param.grad  # type: ignore[assignment]  # checked above
            param.sub_(grad, alpha=step)  # param -= lr * grad / B, in place, in one op
            grad.zero_()
