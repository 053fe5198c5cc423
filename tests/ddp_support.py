"""Rank functions that fail on purpose, for the process harness's tests (importable by spawn)."""

from __future__ import annotations

import os
import signal
import time

import torch


def fails_both_ways(rank: int, world_size: int) -> None:
    """Let rank 0 raise and rank 1 kill itself with SIGKILL; any others wait in an all-reduce.

    A barrier first: under load rank 0 could otherwise raise and leave while rank 1 is still
    joining the group, and rank 1 would then fail on the lost peer, never reaching its SIGKILL
    (seen once in the thorough run).
    """
    torch.distributed.barrier()
    if rank == 0:
        raise ValueError("rank 0 refuses")
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.all_reduce(torch.ones(1))


def sums_ranks(rank: int, world_size: int) -> tuple[int, int, int]:
    """Return this rank, the sum of all ranks, which an all-reduce brought here, and the pid
    of the process that started this one (its parent)."""
    total = torch.tensor([rank])
    torch.distributed.all_reduce(total)
    return rank, int(total), os.getppid()


def hangs(rank: int, world_size: int, seconds: float) -> None:
    """Sleep past any reasonable timeout: a stand-in for a rank that never finishes."""
    time.sleep(seconds)


def interrupted(rank: int, world_size: int) -> None:
    """Let rank 0 get a Ctrl-C (SIGINT, as a terminal sends to the whole group) while the
    others wait for it in an all-reduce."""
    torch.distributed.barrier()
    if rank == 0:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(600)  # a rank that took Ctrl-C as an exception to catch would still be here
    torch.distributed.all_reduce(torch.ones(1))
