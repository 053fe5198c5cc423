"""The book's training loop for linear regression from scratch, made correct.

Not a framework: one loop, labelled by stage (forward, backward, update, reset). It differs
from the book in one place: `sgd` gets the ACTUAL size of each batch, so a short last batch
takes a step of the right size. `grad="analytic"` computes the same gradients by hand (no
autograd) and is the speed floor the benchmarks compare against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from linreg import _validate, data, loss, model, optim
from linreg._book import BATCH_SIZE, LR, NUM_EPOCHS
from linreg.config import StepCallback, TrainConfig


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
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
    num_epochs: int = NUM_EPOCHS,
    generator: torch.Generator | None = None,
    grad: Literal["autograd", "analytic"] = "autograd",
    drop_last: bool = False,
    params: tuple[Tensor, Tensor] | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train w and b by minibatch SGD on the squared loss; given params are updated in place.

    Training stops after the first epoch whose full-data loss is not finite (it diverged).
    """
    grad = _validate.choice("grad", grad, ("autograd", "analytic"))
    config = TrainConfig(lr, batch_size, num_epochs, generator, drop_last, on_step)
    step = _autograd_step if grad == "autograd" else _analytic_step
    return fit(features, labels, config, step, params, leaves=grad == "autograd")


Step = Callable[[Tensor, Tensor, Tensor, Tensor, TrainConfig], None]  # (X, y, w, b, config)


def fit(
    features: Tensor,
    labels: Tensor,
    config: TrainConfig,
    step: Step,
    params: tuple[Tensor, Tensor] | None = None,
    *,
    leaves: bool = True,
) -> TrainResult:
    """Run the training loop with the given step: train's, or a wrong variant's."""
    w, b = prepare(features, labels, params, config.generator, leaves=leaves)
    labels = labels.reshape(-1, 1)  # once: the loss then needs no reshape per batch
    result = TrainResult(w, b)
    for _ in range(config.num_epochs):
        batches = data.data_iter(
            config.batch_size,
            features,
            labels,
            drop_last=config.drop_last,
            generator=config.generator,
        )
        for X, y in batches:
            step(X, y, w, b, config)
            result.num_steps += 1
            if config.on_step is not None:
                config.on_step(result.num_steps, w, b)
        result.losses.append(epoch_loss(features, labels, w, b))
        if not math.isfinite(result.losses[-1]):
            break  # diverged: the epochs left would only compute inf and NaN
    return result


def stable_bound(features: Tensor, *, objective: Literal["book", "mse"] = "book") -> float:
    """Return 2 / lambda_max of the loss's Hessian: the largest stable full-batch lr.

    For the mean of r^2 / 2 (the book's loss) the Hessian is A^T A / n with A = [X, 1]; the
    mean of r^2 doubles it. Full-batch gradient descent converges below the bound and diverges
    above it; mini-batches are less stable still.
    """
    X = _validate.floating_tensor("features", features).detach().double()
    objective = _validate.choice("objective", objective, ("book", "mse"))
    A = torch.cat([X, torch.ones_like(X[:, :1])], dim=1)  # [X, 1], in X's dtype and device
    lam = float(torch.linalg.eigvalsh(A.T @ A / len(X)).max())
    return 2.0 / (lam * (2.0 if objective == "mse" else 1.0))


def train_epoch(
    features: Tensor,
    labels: Tensor,
    params: tuple[Tensor, Tensor] | list[Tensor],
    *,
    lr: float,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> float:
    """Run one epoch of minibatch SGD on params (w, b) in place; return its mean training loss.

    The loss reported is the mean of squared_loss over the epoch's examples, each as the model
    saw it in its batch: a sum of Python floats divided by the count, so it holds no graph, and
    a short last batch weighs by its size. lr = 0 reports the loss without training.
    """
    lr = _validate.non_negative_finite("lr", lr)
    batch_size = _validate.positive_int("batch_size", batch_size)
    generator = _validate.generator(generator)
    # params are given, so prepare draws nothing: the generator only shuffles, below
    w, b = prepare(features, labels, tuple(params), None, leaves=True)  # type: ignore[arg-type]
    total, count = 0.0, 0
    for X, y in data.data_iter(batch_size, features, labels, generator=generator):
        # forward
        l = loss.squared_loss(model.linreg(X, w, b), y)  # (B, 1)
        # backward
        l.sum().backward()  # type: ignore[no-untyped-call]
        # update (no grad) and reset grads
        if lr > 0:
            optim.sgd([w, b], lr, X.shape[0])
        else:
            w.grad, b.grad = None, None
        # report: a float, so the running total holds no graph
        total += float(l.detach().sum())
        count += X.shape[0]
    return total / count


def _autograd_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, config: TrainConfig) -> None:
    # forward
    l = loss.squared_loss(model.linreg(X, w, b), y)  # (B, 1)
    # backward
    l.sum().backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated
    # update (no grad) and reset grads: sgd does both, with the batch's real size
    optim.sgd([w, b], config.lr, X.shape[0])


def _analytic_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, config: TrainConfig) -> None:
    # The gradients of sum((Xw + b - y)^2 / 2) are X^T r and sum(r), r the residual.
    with torch.no_grad():
        # forward
        r = torch.addmm(b, X, w).sub_(y)  # (B, 1): y is (B, 1) already
        # backward by hand, update in place
        step = config.lr / X.shape[0]
        w.addmm_(X.T, r, alpha=-step)
        b.sub_(r.sum(), alpha=step)
