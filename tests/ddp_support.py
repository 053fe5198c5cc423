"""Rank functions that fail on purpose, for the process harness's tests (importable by spawn)."""

from __future__ import annotations

import os
import signal
import time

import torch


def dies(rank: int, world_size: int, dying_rank: int) -> None:
    """Let `dying_rank` kill itself with SIGKILL while the others wait in an all-reduce."""
    if rank == dying_rank:
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.all_reduce(torch.ones(1))


def raises(rank: int, world_size: int, failing_rank: int) -> None:
    """Let `failing_rank` raise while the others wait in an all-reduce."""
    if rank == failing_rank:
        raise ValueError(f"rank {rank} refuses")
    torch.distributed.all_reduce(torch.ones(1))


def hangs(rank: int, world_size: int, seconds: float) -> None:
    """Sleep past any reasonable timeout: a stand-in for a rank that never finishes."""
    time.sleep(seconds)
