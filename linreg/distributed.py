"""Pitfalls at scale: sharding, DistributedSampler and DDP over torch.distributed.

`shard_iter` shards an epoch by rank with no padding; `spawn` starts R local processes joined
by the gloo backend over 127.0.0.1, with a hard timeout, and ends them all as soon as one fails.
Not a launcher for real jobs: it exists so that tests and the report can run DDP on one machine.
The rank workers (`ddp_*`) are top-level functions, as the "spawn" start method needs.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
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


# --- processes ---------------------------------------------------------------------------------


class DistributedFailure(RuntimeError):
    """A rank died, failed, or the group did not finish in time; all ranks were ended."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gloo_available() -> bool:
    """Return whether torch.distributed with the gloo backend can be used here."""
    return bool(torch.distributed.is_available() and torch.distributed.is_gloo_available())


def _describe(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _entry(
    rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...], out: str
) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)  # R processes on a small machine: no oversubscription
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=30),
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
        torch.distributed.barrier()  # leave together: no rank tears down under another's feet
    finally:
        torch.distributed.destroy_process_group()
    # Skip the interpreter's teardown: gloo's threads can abort it ("terminate called without
    # an active exception", seen here once under load). The result is saved; exit cleanly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _raise_if_failed(procs: list[Any]) -> None:
    # A rank killed by a signal is the likely cause; the others then fail on a reset connection,
    # often before this sees the first death: name the signal deaths first.
    failed = sorted(
        ((r, p.exitcode) for r, p in enumerate(procs) if p.exitcode),
        key=lambda rc: (rc[1] >= 0, rc[0]),
    )
    if failed:
        raise DistributedFailure(
            "; ".join(f"rank {r} {_describe(c)}" for r, c in failed) + "; all ranks were ended"
        )


def spawn(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 60.0) -> list[Any]:
    """Run fn(rank, world_size, *args) in world_size processes; return each rank's result.

    Raises DistributedFailure naming the ranks that died or failed (signal deaths first), or
    saying that the group timed out; in every case all ranks are ended before it returns.
    """
    if not gloo_available():
        raise DistributedFailure("torch.distributed with the gloo backend is not available")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="linreg-ddp-") as out:
        port = free_port()
        procs = [
            ctx.Process(
                target=_entry, args=(r, world_size, port, fn, args, out), name=f"linreg-rank{r}"
            )
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        try:
            while True:
                _raise_if_failed(procs)
                if all(p.exitcode == 0 for p in procs):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    running = [r for r, p in enumerate(procs) if p.exitcode is None]
                    raise DistributedFailure(
                        f"timed out after {timeout:g} s with ranks {running} still running; "
                        "all ranks were ended"
                    )
                wait([p.sentinel for p in procs if p.exitcode is None], timeout=min(left, 0.5))
            return [
                torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world_size)
            ]
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
            for p in procs:
                p.join(10)


# --- DDP, inside the ranks ---------------------------------------------------------------------

Params = list[tuple[Tensor, Tensor]]  # (w, b) after each step, float64


def case_data(case: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Return the case's dataset: float64 features (n, d) and labels (n, 1), from its seed."""
    from linreg.data import synthetic_data

    g = torch.Generator().manual_seed(case["seed"])
    true_w = torch.randn(case["d"], generator=g, dtype=torch.float64)
    return synthetic_data(true_w, 1.5, case["n"], generator=g)


def _linear(case: dict[str, Any]) -> torch.nn.Linear:
    net = torch.nn.Linear(case["d"], 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(case["seed"] + 1)
    with torch.no_grad():
        net.weight.copy_(0.01 * torch.randn(1, case["d"], generator=g, dtype=torch.float64))
        net.bias.zero_()
    return net


def rank_batches(case: dict[str, Any], rank: int, world_size: int, epoch: int) -> list[list[int]]:
    """Return this rank's batches of indices for the epoch, from a DistributedSampler."""
    sampler = index_sampler(
        case["n"],
        world_size=world_size,
        rank=rank,
        seed=case["seed"],
        drop_last=case.get("drop_last", False),
    )
    sampler.set_epoch(epoch)
    idx = list(sampler)
    b = case["batch_size"]
    return [idx[i : i + b] for i in range(0, len(idx), b)]


def ddp_trajectory(
    rank: int, world_size: int, case: dict[str, Any], *, scale_sum_lr: bool = True
) -> Params:
    """Train nn.Linear under DDP with MSELoss(case reduction); return the params after each step.

    DDP AVERAGES the gradients over the ranks, so with reduction="sum" each rank's summed
    gradient is divided by world_size: the lr is multiplied by world_size to make up for it.
    """
    from torch.nn.parallel import DistributedDataParallel

    X, y = case_data(case)
    net = _linear(case)
    model = DistributedDataParallel(net)
    criterion = torch.nn.MSELoss(reduction=case["reduction"])
    lr = case["lr"] * (world_size if case["reduction"] == "sum" and scale_sum_lr else 1)
    trainer = torch.optim.SGD(model.parameters(), lr=lr)
    steps: Params = []
    for epoch in range(case["num_epochs"]):
        for j in rank_batches(case, rank, world_size, epoch):
            trainer.zero_grad()
            criterion(model(X[j]), y[j]).backward()  # DDP averages the grads over the ranks
            trainer.step()
            steps.append((net.weight.detach().reshape(-1).clone(), net.bias.detach().clone()))
    return steps


def ddp_full_shard_gradient(rank: int, world_size: int, case: dict[str, Any]) -> list[Tensor]:
    """Return the DDP gradient of MSELoss(mean) when each rank takes its whole shard at once."""
    from torch.nn.parallel import DistributedDataParallel

    X, y = case_data(case)
    net = _linear(case)
    model = DistributedDataParallel(net)
    j = list(index_sampler(case["n"], world_size=world_size, rank=rank, seed=case["seed"]))
    torch.nn.functional.mse_loss(model(X[j]), y[j]).backward()  # type: ignore[no-untyped-call]
    return [p.grad.detach().clone() for p in (net.weight, net.bias)]  # type: ignore[union-attr]


def ddp_cases(
    rank: int, world_size: int, worker: Callable[..., Any] | None, cases: list[dict[str, Any]]
) -> list[Any]:
    """Run worker(rank, world_size, case) on each case in turn, in one process group.

    A case may name its own worker under "worker": a rank function, or "module:function".
    """
    results = []
    for case in cases:
        fn = case.get("worker", worker)
        if isinstance(fn, str):
            module, _, name = fn.partition(":")
            fn = getattr(importlib.import_module(module), name)
        if fn is None:
            raise ValueError("no worker for this case: pass one, or set case['worker']")
        results.append(fn(rank, world_size, case))
    return results


def ddp_dies(rank: int, world_size: int, dying_rank: int) -> None:
    """Let `dying_rank` kill itself with SIGKILL while the others wait in an all-reduce."""
    if rank == dying_rank:
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.all_reduce(torch.ones(1))


def ddp_hangs(rank: int, world_size: int, seconds: float) -> None:
    """Sleep past any reasonable timeout: a stand-in for a rank that never finishes."""
    time.sleep(seconds)


# --- the single-process references -------------------------------------------------------------


def single_process_trajectory(case: dict[str, Any], world_size: int) -> Params:
    """Train one nn.Linear on the union of the ranks' batches, step by step: the reference."""
    X, y = case_data(case)
    net = _linear(case)
    criterion = torch.nn.MSELoss(reduction=case["reduction"])
    trainer = torch.optim.SGD(net.parameters(), lr=case["lr"])
    steps: Params = []
    for epoch in range(case["num_epochs"]):
        per_rank = [rank_batches(case, r, world_size, epoch) for r in range(world_size)]
        for batches in zip(*per_rank, strict=True):
            j = [i for batch in batches for i in batch]
            trainer.zero_grad()
            criterion(net(X[j]), y[j]).backward()
            trainer.step()
            steps.append((net.weight.detach().reshape(-1).clone(), net.bias.detach().clone()))
    return steps


def padded_gradient_identity(case: dict[str, Any], world_size: int) -> tuple[Tensor, Tensor]:
    """Return (total * g_DDP - n * g_full) predicted by the padding: the duplicates' gradients.

    With padding, DDP averages R equal shards of total = R * ceil(n / R) samples, so
    total * g_DDP = n * g_full + sum of the per-sample gradients of the repeated samples.
    """
    X, y = case_data(case)
    net = _linear(case)
    n = case["n"]
    every = [
        i
        for r in range(world_size)
        for i in index_sampler(n, world_size=world_size, rank=r, seed=case["seed"])
    ]
    seen: set[int] = set()
    repeated: list[int] = []
    for i in every:
        if i in seen:
            repeated.append(i)
        else:
            seen.add(i)
    per_sample = torch.nn.functional.mse_loss(net(X[repeated]), y[repeated], reduction="sum")
    return torch.autograd.grad(per_sample, (net.weight, net.bias))  # type: ignore[return-value]
