"""DDP training runs: inside the ranks, and the one-process references they are checked against.

A `Setup` is one training run's data and hyperparameters; a worker `fn(rank, world_size, run)`
runs inside the ranks that `linreg.pitfalls._spawn.spawn` starts; `jobs` runs several (worker, run)
pairs in one process group, since processes are slow to start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from linreg.data import synthetic_data
from linreg.distributed import index_sampler

Steps = list[tuple[Tensor, Tensor]]  # (w, b) after each step, float64
Worker = Callable[[int, int, "Setup"], Any]


@dataclass(frozen=True)
class Setup:
    """One training run: its data (from seed), batch size, lr, epochs and loss reduction."""

    n: int
    d: int
    batch_size: int
    lr: float
    num_epochs: int
    seed: int
    reduction: Literal["mean", "sum"] = "mean"

    def data(self) -> tuple[Tensor, Tensor]:
        """Return float64 features (n, d) and labels (n, 1), drawn from the seed."""
        g = torch.Generator().manual_seed(self.seed)
        true_w = torch.randn(self.d, generator=g, dtype=torch.float64)
        return synthetic_data(true_w, 1.5, self.n, generator=g)

    def linear(self) -> nn.Linear:
        """Return nn.Linear(d, 1) with the book's init, drawn from seed + 1: every run's start."""
        net = nn.Linear(self.d, 1, dtype=torch.float64)
        g = torch.Generator().manual_seed(self.seed + 1)
        with torch.no_grad():
            net.weight.copy_(0.01 * torch.randn(1, self.d, generator=g, dtype=torch.float64))
            net.bias.zero_()
        return net

    def rank_batches(self, rank: int, world_size: int, epoch: int) -> list[list[int]]:
        """Return this rank's batches of indices for the epoch, from a DistributedSampler."""
        sampler = index_sampler(self.n, world_size=world_size, rank=rank, seed=self.seed)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]


def trajectory(
    run: Setup,
    net: nn.Linear,
    model: nn.Module,
    batches: Callable[[int], Sequence[list[int]]],
    lr: float,
) -> Steps:
    """Train model (net, or net inside DDP) with MSELoss and plain SGD; (w, b) after each step."""
    X, y = run.data()
    criterion = nn.MSELoss(reduction=run.reduction)
    steps: Steps = []
    for epoch in range(run.num_epochs):
        for j in batches(epoch):
            criterion(model(X[j]), y[j]).backward()  # under DDP: averaged over the ranks
            # optim.SGD's step, written out: torch.optim's first use imports torch._dynamo,
            # seconds in every rank's fresh process
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(p.grad, alpha=-lr)  # type: ignore[arg-type]
                    p.grad = None
            steps.append((net.weight.detach().reshape(-1).clone(), net.bias.detach().clone()))
    return steps


def ddp_trajectory(rank: int, world_size: int, run: Setup, *, scale_sum_lr: bool = True) -> Steps:
    """Train under DDP on this rank's shard; a summed loss's lr is multiplied by world_size.

    DDP AVERAGES the gradients over the ranks, so with reduction="sum" each rank's summed
    gradient is divided by world_size: the lr times world_size makes up for it.
    """
    from torch.nn.parallel import DistributedDataParallel

    net = run.linear()
    lr = run.lr * (world_size if run.reduction == "sum" and scale_sum_lr else 1)
    return trajectory(
        run, net, DistributedDataParallel(net), lambda e: run.rank_batches(rank, world_size, e), lr
    )


def single_process_trajectory(run: Setup, world_size: int) -> Steps:
    """Train one process on the union of the ranks' batches, step for step: the reference."""

    def union(epoch: int) -> list[list[int]]:
        per_rank = [run.rank_batches(r, world_size, epoch) for r in range(world_size)]
        return [[i for batch in batches for i in batch] for batches in zip(*per_rank, strict=True)]

    net = run.linear()
    return trajectory(run, net, net, union, run.lr)


def ddp_full_shard_gradient(rank: int, world_size: int, run: Setup) -> list[Tensor]:
    """Return the DDP gradient of MSELoss(mean) when each rank takes its whole shard at once."""
    from torch.nn.parallel import DistributedDataParallel

    X, y = run.data()
    net = run.linear()
    model = DistributedDataParallel(net)  # held: its reducer all-reduces during backward
    j = list(index_sampler(run.n, world_size=world_size, rank=rank, seed=run.seed))
    nn.functional.mse_loss(model(X[j]), y[j]).backward()  # type: ignore[no-untyped-call]
    return [p.grad.detach().clone() for p in (net.weight, net.bias)]  # type: ignore[union-attr]


def padded_gradient_identity(run: Setup, world_size: int) -> tuple[Tensor, ...]:
    """Return (total * g_DDP - n * g_full) the padding predicts: the duplicates' gradients.

    With padding, DDP averages R equal shards of total = R * ceil(n / R) samples, so
    total * g_DDP = n * g_full + the sum of the per-sample gradients of the repeated samples.
    """
    X, y = run.data()
    net = run.linear()
    seen: set[int] = set()
    repeated: list[int] = []
    for r in range(world_size):
        for i in index_sampler(run.n, world_size=world_size, rank=r, seed=run.seed):
            if i in seen:
                repeated.append(i)
            seen.add(i)
    per_sample = nn.functional.mse_loss(net(X[repeated]), y[repeated], reduction="sum")
    return torch.autograd.grad(per_sample, (net.weight, net.bias))


def jobs(rank: int, world_size: int, pairs: Sequence[tuple[Worker, Setup]]) -> list[Any]:
    """Setup each (worker, run) pair in turn, in one process group; return their results."""
    return [worker(rank, world_size, run) for worker, run in pairs]
