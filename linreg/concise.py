"""The book's concise implementation: DataLoader, nn.Linear, nn.MSELoss and optim.SGD.

Used as the oracle the from-scratch code is checked against, and as a benchmark baseline.
Batches come from `linreg.data.data_iter` when a generator is given, so both loops can be fed
the very same batches; otherwise from a `DataLoader` as in the book.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from linreg import _validate, data
from linreg._book import BATCH_SIZE, LR, NUM_EPOCHS
from linreg.config import StepCallback, TrainConfig
from linreg.train import TrainResult

Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]


def train_concise(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
    num_epochs: int = NUM_EPOCHS,
    generator: torch.Generator | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    drop_last: bool = False,
    params: tuple[Tensor, Tensor] | None = None,
    on_step: StepCallback | None = None,
    loader: Literal["data_iter", "DataLoader"] = "data_iter",
) -> TrainResult:
    """Train nn.Linear with nn.MSELoss and optim.SGD; with reduction="sum", use lr / B per batch."""
    config = TrainConfig(lr, batch_size, num_epochs, generator, drop_last, on_step)
    reduction = _validate.choice("reduction", reduction, ("mean", "sum"))
    loader = _validate.choice("loader", loader, ("data_iter", "DataLoader"))
    # grad(sum) = B * grad(mean): with the sum, divide by each batch's real size B.
    per_batch = (lambda size: config.lr / size) if reduction == "sum" else None
    return run(features, labels, config, params, reduction, loader, per_batch)


def run(
    features: Tensor,
    labels: Tensor,
    config: TrainConfig,
    params: tuple[Tensor, Tensor] | None,
    reduction: Literal["mean", "sum"],
    loader: Literal["data_iter", "DataLoader"],
    lr_per_batch: Callable[[int], float] | None,
) -> TrainResult:
    """Build the book's concise model, loss, optimizer and batches; run its loop."""
    features, labels = _validate.dataset(features, labels)
    labels = labels.reshape(-1, 1)  # nn.MSELoss warns and broadcasts on (n,) vs (n, 1)
    net = make_linear(features, params, config.generator)
    criterion = nn.MSELoss(reduction=reduction)
    trainer = torch.optim.SGD(net.parameters(), lr=config.lr)
    batches = make_batches(
        features, labels, config.batch_size, config.drop_last, config.generator, loader
    )
    return fit(
        net,
        criterion,
        trainer,
        batches,
        features,
        labels,
        config.num_epochs,
        config.on_step,
        lr_per_batch,
    )


def fit(
    net: nn.Linear,
    criterion: nn.Module,
    trainer: torch.optim.Optimizer,
    batches: Batches,
    features: Tensor,
    labels: Tensor,
    num_epochs: int,
    on_step: StepCallback | None,
    lr_per_batch: Callable[[int], float] | None = None,
) -> TrainResult:
    """Run the book's concise loop; lr_per_batch(B), when given, sets the lr for each batch."""
    result = TrainResult(net.weight.detach().T, net.bias.detach())
    for _ in range(num_epochs):
        for X, y in batches():
            if lr_per_batch is not None:
                trainer.param_groups[0]["lr"] = lr_per_batch(X.shape[0])
            l = criterion(net(X), y)
            trainer.zero_grad()
            l.backward()
            trainer.step()
            result.num_steps += 1
            if on_step is not None:
                on_step(result.num_steps, result.w, result.b)
        with torch.no_grad():
            result.losses.append(float(criterion(net(features), labels)))
    return result


def make_linear(
    features: Tensor, params: tuple[Tensor, Tensor] | None, generator: torch.Generator | None
) -> nn.Linear:
    """Return nn.Linear(d, 1) initialised from params (w, b), or as the book does."""
    d = features.shape[1]
    net = nn.Linear(d, 1, dtype=features.dtype, device=features.device)
    with torch.no_grad():
        if params is None:
            net.weight.normal_(0, 0.01, generator=generator)
            net.bias.zero_()
        else:
            w, b = _validate.params_for(features, *params)
            net.weight.copy_(w.T)
            net.bias.copy_(b.reshape(1))
    return net


def make_batches(
    features: Tensor,
    labels: Tensor,
    batch_size: int,
    drop_last: bool,
    generator: torch.Generator | None,
    loader: Literal["data_iter", "DataLoader"],
) -> Batches:
    """Return a callable giving one epoch of batches from data_iter or from a DataLoader."""
    if loader == "DataLoader":
        dl = DataLoader(
            TensorDataset(features, labels),
            batch_size=batch_size,
            shuffle=True,
            drop_last=drop_last,
            generator=generator,
        )
        return lambda: dl
    return lambda: data.data_iter(
        batch_size, features, labels, drop_last=drop_last, generator=generator
    )
