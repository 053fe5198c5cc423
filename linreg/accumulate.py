"""Accumulate losses or gradients over several mini-batches before one update.

Two correct recipes the seed note and common practice get wrong: concatenating batch losses for
one full-batch step per epoch (the seed's first attempt), and normalising a loss accumulated
over micro-batches of uneven size (the loss-normalisation bug fixed in Hugging Face
transformers in 2024).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from linreg import data, loss, model, optim
from linreg._book import BATCH_SIZE, LR
from linreg.config import TrainConfig
from linreg.train import TrainResult, epoch_loss, prepare


def accumulate_losses(
    batches: Iterable[tuple[Tensor, Tensor]], w: Tensor, b: Tensor
) -> tuple[Tensor, int]:
    """Return the per-example losses of all batches, concatenated, and the number of batches."""
    losses = [loss.squared_loss(model.linreg(X, w, b), y) for X, y in batches]
    if not losses:
        raise ValueError("batches is empty: there is nothing to accumulate")
    return torch.cat(losses), len(losses)  # (n, 1), joined along the examples


def accumulate_grad(micro_batches: Iterable[tuple[Tensor, Tensor]], w: Tensor, b: Tensor) -> int:
    """Add to w.grad and b.grad the gradient of the mean squared_loss over all micro-batches."""
    total: Tensor | None = None
    count = 0
    for X, y in micro_batches:
        l = loss.squared_loss(model.linreg(X, w, b), y).sum()  # a sum, not a mean
        total = l if total is None else total + l
        count += X.shape[0]
    if total is None:
        raise ValueError("micro_batches is empty: there is nothing to accumulate")
    # Divide once by the total count: a mean of per-micro-batch means weights a short
    # micro-batch's examples more than the others.
    (total / count).backward()  # type: ignore[no-untyped-call]
    return count


def train_full_batch(
    features: Tensor,
    labels: Tensor,
    *,
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
    num_epochs: int = 300,
    generator: torch.Generator | None = None,
    params: tuple[Tensor, Tensor] | None = None,
) -> TrainResult:
    """Take one gradient-descent step per epoch on the mean loss of all mini-batches."""
    config = TrainConfig(lr, batch_size, num_epochs, generator)
    return fit_per_epoch(features, labels, config, _full_batch_epoch, params)


EpochStep = Callable[[Tensor, Tensor, Tensor, Tensor, TrainConfig], None]


def fit_per_epoch(
    features: Tensor,
    labels: Tensor,
    config: TrainConfig,
    epoch: EpochStep,
    params: tuple[Tensor, Tensor] | None = None,
) -> TrainResult:
    """Run `epoch(features, labels, w, b, config)` once per epoch: one update each."""
    w, b = prepare(features, labels, params, config.generator, leaves=True)
    result = TrainResult(w, b)
    for _ in range(config.num_epochs):
        epoch(features, labels, w, b, config)
        result.num_steps += 1
        result.losses.append(epoch_loss(features, labels, w, b))
    return result


def _full_batch_epoch(
    features: Tensor, labels: Tensor, w: Tensor, b: Tensor, c: TrainConfig
) -> None:
    batches = data.data_iter(c.batch_size, features, labels, generator=c.generator)
    # forward, over every batch
    l, _num_batches = accumulate_losses(batches, w, b)  # (n, 1)
    # backward, once per epoch
    l.sum().backward()  # type: ignore[no-untyped-call]
    # update (no grad) and reset grads: divide by the n examples summed over
    optim.sgd([w, b], c.lr, l.shape[0])
