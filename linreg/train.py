"""The book's training loop for linear regression from scratch, made correct.

Not a framework: one loop, labelled by stage (forward, backward, update, reset). It differs
from the book in one place: `sgd` gets the ACTUAL size of each batch, so a short last batch
takes a step of the right size. `grad="analytic"` computes the same gradients by hand (no
autograd) and is the speed floor the benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from linreg import _validate, data, loss, model, optim

StepCallback = Callable[[int, Tensor, Tensor], None]


@dataclass
class TrainResult:
    """The trained parameters, the full-data loss after each epoch, and the step count."""

    w: Tensor  # (d, 1)
    b: Tensor  # (1,)
    losses: list[float] = field(default_factory=list)
    num_steps: int = 0


def full_loss(features: Tensor, labels: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Return the mean squared_loss over the full data, computed without building a graph."""
    # An evaluation is never backpropagated: under no_grad autograd saves nothing for it
    # (in grad mode it would keep the (n, 1) residual alive until the result is freed).
    with torch.no_grad():
        return loss.squared_loss(model.linreg(features, w, b), labels).mean()


def epoch_loss(features: Tensor, labels: Tensor, w: Tensor, b: Tensor) -> float:
    """Return full_loss as a Python float."""
    return float(full_loss(features, labels, w, b))


def prepare(
    features: Tensor,
    labels: Tensor,
    params: tuple[Tensor, Tensor] | None,
    generator: torch.Generator | None,
    *,
    leaves: bool,
) -> tuple[Tensor, Tensor]:
    """Check the dataset and return (w, b): the given params, or the book's initial ones."""
    features, labels = _validate.dataset(features, labels)
    if params is None:
        w, b = model.init_params(features.shape[1], generator=generator, dtype=features.dtype)
        w, b = (p.detach().to(features.device).requires_grad_(leaves) for p in (w, b))
        return w, b
    if not isinstance(params, (tuple, list)) or len(params) != 2:
        raise TypeError("params must be a pair (w, b)")
    w, b = _validate.params_for(features, *params)
    if leaves and not (w.is_leaf and w.requires_grad and b.is_leaf and b.requires_grad):
        raise ValueError('params must be leaves that require grad for grad="autograd"')
    return w, b


def train(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = 0.03,
    batch_size: int = 10,
    num_epochs: int = 3,
    generator: torch.Generator | None = None,
    grad: Literal["autograd", "analytic"] = "autograd",
    drop_last: bool = False,
    params: tuple[Tensor, Tensor] | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train w and b by minibatch SGD on the squared loss; given params are updated in place."""
    grad = _validate.choice("grad", grad, ("autograd", "analytic"))
    lr = _validate.positive_finite("lr", lr)
    batch_size = _validate.positive_int("batch_size", batch_size)
    num_epochs = _validate.non_negative_int("num_epochs", num_epochs)
    generator = _validate.generator(generator)
    drop_last = _validate.flag("drop_last", drop_last)
    on_step = _validate.callback("on_step", on_step)
    w, b = prepare(features, labels, params, generator, leaves=grad == "autograd")
    step = _autograd_step if grad == "autograd" else _analytic_step
    result = TrainResult(w, b)
    for _ in range(num_epochs):
        batches = data.data_iter(
            batch_size, features, labels, drop_last=drop_last, generator=generator
        )
        for X, y in batches:
            step(X, y, w, b, lr)
            result.num_steps += 1
            if on_step is not None:
                on_step(result.num_steps, w, b)
        result.losses.append(epoch_loss(features, labels, w, b))
    return result


def _autograd_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, lr: float) -> None:
    # forward
    l = loss.squared_loss(model.linreg(X, w, b), y)  # (B, 1)
    # backward
    l.sum().backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated
    # update (no grad) and reset grads: sgd does both, with the batch's real size
    optim.sgd([w, b], lr, X.shape[0])


def _analytic_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, lr: float) -> None:
    # The gradients of sum((Xw + b - y)^2 / 2) are X^T r and sum(r), r the residual.
    with torch.no_grad():
        # forward
        r = torch.addmm(b, X, w).sub_(y.reshape(-1, 1))  # (B, 1)
        # backward by hand, update in place
        step = lr / X.shape[0]
        w.addmm_(X.T, r, alpha=-step)
        b.sub_(r.sum(), alpha=step)
