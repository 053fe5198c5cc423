"""The book's from-scratch loop, exactly as d2l writes it, and its concise loop: the baselines."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def data_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    num_examples = len(features)
    indices = list(range(num_examples))
    random.shuffle(indices)  # a Python list, shuffled every epoch
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def linreg(X: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return torch.matmul(X, w) + b


def squared_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size  # type: ignore[operator]
            param.grad.zero_()  # type: ignore[union-attr]


def train_book(features: Tensor, labels: Tensor, seed: int = 0) -> tuple[Tensor, Tensor, float]:
    """Run the book's loop: lr 0.03, 3 epochs, batch 10, the NOMINAL batch size to sgd."""
    random.seed(seed)
    torch.manual_seed(seed)
    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True, device=features.device)
    b = torch.zeros(1, requires_grad=True, device=features.device)
    lr, num_epochs, net, loss, batch_size = 0.03, 3, linreg, squared_loss, 10
    for _epoch in range(num_epochs):
        for X, y in data_iter(batch_size, features, labels):
            l = loss(net(X, w, b), y)
            l.sum().backward()  # type: ignore[no-untyped-call]
            sgd([w, b], lr, batch_size)
        with torch.no_grad():
            train_l = loss(net(features, w, b), labels)
    return w, b, float(train_l.mean())


def train_concise(features: Tensor, labels: Tensor, seed: int = 0) -> tuple[Tensor, Tensor, float]:
    """Run the book's concise loop: DataLoader, nn.Linear, nn.MSELoss, optim.SGD(lr=0.03)."""
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(features, labels), batch_size=10, shuffle=True)
    linear = nn.Linear(2, 1).to(features.device)
    net = nn.Sequential(linear)
    linear.weight.data.normal_(0, 0.01)
    linear.bias.data.fill_(0)
    loss = nn.MSELoss()
    trainer = torch.optim.SGD(net.parameters(), lr=0.03)
    for _epoch in range(3):
        for X, y in loader:
            l = loss(net(X), y)
            trainer.zero_grad()
            l.backward()
            trainer.step()
        l = loss(net(features), labels)
    return linear.weight.detach().T, linear.bias.detach(), float(l.detach())
