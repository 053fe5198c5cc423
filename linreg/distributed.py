"""Data across ranks: sharding with no padding, and torch's DistributedSampler.

`shard_iter` shards an epoch by rank so that every sample is on exactly one rank;
`index_sampler` and `sampler_epochs` wrap DistributedSampler, which needs no process group
when told its rank and world size. The DDP runs the pitfalls use live in
linreg.pitfalls._ddp, started by linreg.pitfalls._spawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from linreg import _validate

# --- sharding ----------------------------------------------------------------------------------


def shard_indices(n: int, *, rank: int, world_size: int, epoch: int, seed: int = 0) -> Tensor:
    """Return this rank's indices for the epoch: every sample on exactly one rank, no padding."""
    n = _validate.positive_int("n", n)
    world_size = _validate.positive_int("world_size", world_size)
    epoch = _validate.non_negative_int("epoch", epoch)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    # Every rank draws the same permutation (seed + epoch), then takes every world_size-th one.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return order[rank::world_size]


def shard_iter(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield this rank's mini-batches for one epoch; `epoch` is required, so it reshuffles.

    Shards differ in length by at most one: under DDP, wrap uneven inputs in
    `torch.distributed.algorithms.Join`, or every rank must take the same number of steps.
    """
    batch_size = _validate.positive_int("batch_size", batch_size)
    features, labels = _validate.dataset(features, labels)
    mine = shard_indices(len(features), rank=rank, world_size=world_size, epoch=epoch, seed=seed)
    X, y = features[mine], labels[mine]
    return ((X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(mine), batch_size))


def index_sampler(
    n: int, *, world_size: int, rank: int, seed: int = 0, drop_last: bool = False
) -> DistributedSampler[int]:
    """Return a shuffling DistributedSampler over the indices range(n), no process group needed."""
    dataset: Any = range(n)  # the sampler only needs len(); any sized object will do
    return DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
    )


def sampler_epochs(sampler: DistributedSampler[Any], epochs: int) -> list[list[int]]:
    """Return the sampler's indices for each epoch, calling set_epoch before each."""
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out
