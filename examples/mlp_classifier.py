"""A small MLP classifier trained with cross-entropy, written as a practitioner writes it.

Audited in the README with `python -m linreg audit training-loop` (run from this folder):
`fit` is the plain loop; `fit_accumulated` accumulates gradients over 4 batches the common
way, dividing each batch's loss by 4, also in an epoch's last step when fewer batches are left.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


class Net(nn.Module):
    """4 features, 32 hidden units with dropout, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def sample() -> tuple[Tensor, int]:
    """One (x, y) of the dataset, as it holds it: 4 features and a class index."""
    return torch.tensor([0.2, -1.3, 0.7, 2.0]), 2


def adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer the project trains with."""
    return torch.optim.Adam(params, lr=1e-3)


def fit(
    model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(num_epochs):
        model.train()
        for X, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()


def fit_accumulated(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    *,
    num_epochs: int,
    accumulation_steps: int = 4,
) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(num_epochs):
        model.train()
        optimizer.zero_grad()
        for i, (X, y) in enumerate(loader):
            loss = loss_fn(model(X), y) / accumulation_steps
            loss.backward()
            if (i + 1) % accumulation_steps == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()


def fit_in_chunks(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    *,
    num_epochs: int,
    chunk: int = 2,
) -> None:
    """Bounds memory by running each batch in chunks of `chunk` rows, averaging their mean
    losses: right when the chunks are equal, a mean of means when the last is smaller."""
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(num_epochs):
        model.train()
        for X, y in loader:
            optimizer.zero_grad()
            chunks = list(zip(X.split(chunk), y.split(chunk), strict=True))
            for X_chunk, y_chunk in chunks:
                (loss_fn(model(X_chunk), y_chunk) / len(chunks)).backward()
            optimizer.step()
