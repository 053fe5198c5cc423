"""linreg's own training loops, correct: what every training-loop property must hold for."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from linreg.kinds.base import Target
from linreg.kinds.training_loop.rows import loss_of
from linreg.kinds.training_loop.settings import TrainingLoopOptions


def fit(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """The plain loop: zero the grads, the batch's mean loss, backward, step; any model."""
    model.train()
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_of(model(X), y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def fit_micro_batches(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """Accumulate each batch over micro-batches of 2 rows: each summed loss / the batch's rows."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad(set_to_none=False)
            for Xm, ym in zip(X.split(2), y.split(2), strict=True):
                (loss_of(model(Xm), ym, "sum") / len(X)).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def linear() -> nn.Module:
    """Return nn.Linear(2, 1): the book's model."""
    return nn.Linear(2, 1)


def mlp() -> nn.Module:
    """Return a small classifier: 4 features, 8 hidden units (ReLU, Dropout), 3 classes."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


LINEAR = TrainingLoopOptions(model=linear, example=(torch.tensor([1.0, -0.5]), torch.tensor([4.2])))


CLASSIFIER = TrainingLoopOptions(
    model=mlp, example=(torch.tensor([0.5, -1.0, 0.25, 2.0]), torch.tensor(2))
)


TRAINING_LOOPS = (
    Target(fit, "training-loop", LINEAR, "fit(nn.Linear, mse_loss)"),
    Target(fit, "training-loop", CLASSIFIER, "fit(MLP, cross_entropy)"),
    Target(fit_micro_batches, "training-loop", LINEAR, "fit_micro_batches(nn.Linear)"),
)
