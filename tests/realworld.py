"""Training code as people write it: correct versions and their buggy twins.

Written the way public from-scratch implementations and tutorials write them (d2l's chapter,
the nn.Linear + optim.SGD tutorial loop, class-based steps under a trainer's no_grad, full-batch
loops, a hand-written `a.grad = None`). `tests/test_audit.py` audits each: the correct ones must
pass with zero false alarms, each twin must fail naming its pitfall. Lines marked `# adapter`
are what a user adds to point the audit at code written this way.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

# --- iterators -------------------------------------------------------------------------------


def d2l_data_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[Any]:
    num_examples = len(features)
    indices = list(range(num_examples))
    random.shuffle(indices)
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def randperm_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[Any]:
    order = torch.randperm(len(features))
    for i in range(0, len(features), batch_size):
        j = order[i : i + batch_size]
        yield features.index_select(0, j), labels.index_select(0, j)


def loader_iter(batch_size: int, features: Tensor, labels: Tensor) -> DataLoader[Any]:
    return DataLoader(TensorDataset(features, labels), batch_size, shuffle=True)  # adapter


def loader_iter_drop_last(batch_size: int, features: Tensor, labels: Tensor) -> DataLoader[Any]:
    return DataLoader(TensorDataset(features, labels), batch_size, shuffle=True, drop_last=True)


def ordered_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[Any]:
    """Twin: no shuffling at all."""
    for i in range(0, len(features), batch_size):
        yield features[i : i + batch_size], labels[i : i + batch_size]


def floor_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[Any]:
    """Twin: `range(num_examples // batch_size)` batches: the left-over samples vanish."""
    indices = list(range(len(features)))
    random.shuffle(indices)
    for i in range(len(features) // batch_size):
        j = torch.tensor(indices[i * batch_size : (i + 1) * batch_size])
        yield features[j], labels[j]


def apart_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[Any]:
    """Twin: features and labels permuted with two different permutations."""
    fi, li = torch.randperm(len(features)), torch.randperm(len(features))
    for i in range(0, len(features), batch_size):
        yield features[fi[i : i + batch_size]], labels[li[i : i + batch_size]]


# --- update steps ----------------------------------------------------------------------------


def d2l_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def data_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """`.data -=`, zeroing left to the loop (audited with zeroes_grad=False)."""
    for param in params:
        param.data -= lr * param.grad / batch_size


def data_sub_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    for param in params:
        param.data.sub_(lr * param.grad.data / batch_size)
        param.grad.data.zero_()


class SGD:
    """A class-based step for a mean loss; the trainer wraps step() in torch.no_grad()."""

    def __init__(self, params: list[Tensor], lr: float) -> None:
        self.params, self.lr = params, lr

    def step(self) -> None:
        for param in self.params:
            param -= self.lr * param.grad

    def zero_grad(self) -> None:
        for param in self.params:
            if param.grad is not None:
                param.grad.zero_()


def class_step(params: list[Tensor], lr: float, batch_size: int) -> None:
    SGD(params, lr).step()  # adapter: under_no_grad, no division, the trainer zeroes


def optim_step(params: list[Tensor], lr: float, batch_size: int) -> None:
    trainer = torch.optim.SGD(params, lr=lr / batch_size)  # adapter
    trainer.step()  # adapter
    trainer.zero_grad()  # adapter: grads become None


def rebinding_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Twin: `param = param - ...`."""
    with torch.no_grad():
        for param in params:
            param = param - lr * param.grad / batch_size
            param.grad.zero_()


def grad_mode_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Twin: no torch.no_grad()."""
    for param in params:
        param -= lr * param.grad / batch_size
        param.grad.zero_()


def unzeroed_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Twin: no zero_()."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size


# --- losses ----------------------------------------------------------------------------------


def d2l_squared_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def mean_half_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    return ((y_hat - y.reshape(y_hat.shape)) ** 2 / 2).mean()


def view_as_mse(y_hat: Tensor, y: Tensor) -> Tensor:
    return nn.functional.mse_loss(y_hat, y.view_as(y_hat))


def mean_loss_no_reshape(y_hat: Tensor, y: Tensor) -> Tensor:
    """Twin: right for (n, 1) labels, an (n, n) broadcast for (n,)."""
    return ((y_hat - y) ** 2 / 2).mean()


def summed_as_mean(y_hat: Tensor, y: Tensor) -> Tensor:
    """Twin: a sum where the mean was meant."""
    return ((y_hat - y.reshape(y_hat.shape)) ** 2).sum()


def no_half(y_hat: Tensor, y: Tensor) -> Tensor:
    """Twin: no / 2, declared as the book's."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2


def detached_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    """Twin: the loss cut from the graph."""
    return torch.tensor(float(((y_hat - y.reshape(y_hat.shape)) ** 2).mean()))


# --- loops -----------------------------------------------------------------------------------


def d2l_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:  # adapter: the book's script as a function of what the audit gives
    w, b = params  # adapter
    for _epoch in range(num_epochs):
        for X, y in d2l_data_iter(batch_size, features, labels):
            l = d2l_squared_loss(torch.matmul(X, w) + b, y)
            l.sum().backward()
            d2l_sgd([w, b], lr, X.shape[0])
        with torch.no_grad():
            train_l = d2l_squared_loss(torch.matmul(features, w) + b, labels)
            print(f"epoch {_epoch + 1}, loss {float(train_l.mean()):f}", end="\r")


def d2l_loop_nominal(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Twin: the book's `sgd([w, b], lr, batch_size)`."""
    w, b = params
    for _epoch in range(num_epochs):
        for X, y in d2l_data_iter(batch_size, features, labels):
            d2l_squared_loss(torch.matmul(X, w) + b, y).sum().backward()
            d2l_sgd([w, b], lr, batch_size)


def torch_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
    reduction: str = "mean",
) -> nn.Module:
    net = nn.Sequential(nn.Linear(features.shape[1], 1))
    with torch.no_grad():  # adapter
        net[0].weight.copy_(params[0].T)  # adapter
        net[0].bias.copy_(params[1])  # adapter
    loss = nn.MSELoss(reduction=reduction)
    trainer = torch.optim.SGD(net.parameters(), lr=lr)
    data_iter = DataLoader(TensorDataset(features, labels), batch_size, shuffle=True)
    for _epoch in range(num_epochs):
        for X, y in data_iter:
            l = loss(net(X), y)
            trainer.zero_grad()
            l.backward()
            trainer.step()
        print(f"epoch {_epoch + 1}, loss {float(loss(net(features), labels)):f}", end="\r")
    return net  # adapter: its parameters are the trained [w, b]


def torch_loop_sum(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> nn.Module:
    """Twin: MSELoss(reduction='sum') at the mean's lr."""
    return torch_loop(
        features,
        labels,
        params,
        lr=lr,
        batch_size=batch_size,
        num_epochs=num_epochs,
        reduction="sum",
    )


def full_batch_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
    zero: bool = True,
) -> list[Tensor]:
    model = nn.Linear(features.shape[1], 1)
    model.weight.data = params[0].detach().T.clone()  # adapter
    model.bias.data = params[1].detach().clone()  # adapter
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(num_epochs):
        loss = criterion(model(features), labels)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [model.weight, model.bias]


def full_batch_loop_unzeroed(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> list[Tensor]:
    """Twin: no optimizer.zero_grad()."""
    return full_batch_loop(
        features, labels, params, lr=lr, batch_size=batch_size, num_epochs=num_epochs, zero=False
    )


class Trainer:
    """A class-based trainer: it wraps the step in no_grad and zeroes after it."""

    def __init__(self, params: list[Tensor], lr: float, batch_size: int) -> None:
        self.optim, self.batch_size = SGD(params, lr), batch_size

    def fit(self, features: Tensor, labels: Tensor, num_epochs: int) -> None:
        w, b = self.optim.params
        for _ in range(num_epochs):
            for X, y in randperm_iter(self.batch_size, features, labels):
                mean_half_loss(X @ w + b, y).backward()
                with torch.no_grad():
                    self.optim.step()
                self.optim.zero_grad()


def trainer_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:  # adapter
    Trainer(params, lr, batch_size).fit(features, labels, num_epochs)  # adapter


def manual_none_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
    forget: bool = False,
) -> None:
    """The polynomial-fit style: mean of r^2, `a.grad = None` by hand."""
    a, c = params
    for _ in range(num_epochs):
        for X, y in d2l_data_iter(batch_size, features, labels):
            loss = ((X @ a + c - y) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                a -= lr * a.grad
                c -= lr * c.grad
            if not forget:
                a.grad = None
                c.grad = None


def manual_none_loop_forgets(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Twin: the `a.grad = None` lines forgotten."""
    manual_none_loop(
        features,
        labels,
        params,
        lr=lr,
        batch_size=batch_size,
        num_epochs=num_epochs,
        forget=True,
    )


def data_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """`.data` updates with zeroing in the loop."""
    w, b = params
    for _ in range(num_epochs):
        for X, y in loader_iter(batch_size, features, labels):
            d2l_squared_loss(X @ w + b, y).mean().backward()
            w.data -= lr * w.grad.data
            b.data -= lr * b.grad.data
            w.grad.data.zero_()
            b.grad.data.zero_()


def copies_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Twin: trains copies of the params; the caller's never change."""
    w, b = (p.detach().clone().requires_grad_() for p in params)
    for _ in range(num_epochs):
        for X, y in d2l_data_iter(batch_size, features, labels):
            d2l_squared_loss(X @ w + b, y).sum().backward()
            d2l_sgd([w, b], lr, X.shape[0])


def stored_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Twin: the trainer keeps the generator: one epoch of data for every epoch."""
    w, b = params
    batches = d2l_data_iter(batch_size, features, labels)
    for _ in range(num_epochs):
        for X, y in batches:
            d2l_squared_loss(X @ w + b, y).sum().backward()
            d2l_sgd([w, b], lr, X.shape[0])


def ordered_loop(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Twin: the rows in their stored order, every epoch."""
    w, b = params
    for _ in range(num_epochs):
        for X, y in ordered_iter(batch_size, features, labels):
            d2l_squared_loss(X @ w + b, y).sum().backward()
            d2l_sgd([w, b], lr, X.shape[0])


def full_batch_summed(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Twin: a full-batch loop on the summed loss at the mean's lr."""
    w, b = params
    for _ in range(num_epochs):
        d2l_squared_loss(features @ w + b, labels).sum().backward()
        d2l_sgd([w, b], lr, 1)


# --- epochs that report their loss -------------------------------------------------------------


def d2l_epoch(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> float:
    """d2l's train_epoch_ch3 style: an accumulator of floats, weighted by the batch sizes."""
    w, b = params
    total, count = 0.0, 0
    for X, y in d2l_data_iter(batch_size, features, labels):
        l = d2l_squared_loss(X @ w + b, y)
        l.sum().backward()
        with torch.no_grad():
            for p in (w, b):
                p -= lr * p.grad / X.shape[0]
                p.grad.zero_()
        total += float(l.sum())
        count += X.shape[0]
    return total / count


def item_epoch(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> float:
    """A DataLoader loop that logs `loss.item() * len(X)`, divided by the dataset size."""
    w, b = params
    running = 0.0
    for X, y in loader_iter(batch_size, features, labels):
        loss = mean_half_loss(X @ w + b, y)
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad, b.grad = None, None
        running += loss.item() * len(X)
    return running / len(features)


def tensor_epoch(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> Tensor:
    """Twin: `total_loss += loss`, the tensor: history accumulates across the epoch."""
    w, b = params
    total_loss: Any = 0
    for X, y in loader_iter(batch_size, features, labels):
        loss = mean_half_loss(X @ w + b, y)
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad, b.grad = None, None
        total_loss += loss * len(X)
    return total_loss / len(features)


def mean_of_means_epoch(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> float:
    """Twin: the mean of the batch means."""
    w, b = params
    losses = []
    for X, y in loader_iter(batch_size, features, labels):
        loss = mean_half_loss(X @ w + b, y)
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad, b.grad = None, None
        losses.append(loss.item())
    return sum(losses) / len(losses)
