"""The wrong variants at scale, under torch.distributed."""

from __future__ import annotations

from typing import Any


def sampler_epochs_without_set_epoch(sampler: Any, epochs: int) -> list[list[int]]:
    """Mistake: no `sampler.set_epoch(epoch)`: DistributedSampler repeats epoch 0's order."""
    return [list(sampler) for _ in range(epochs)]


def ddp_trajectory_sum_unscaled(rank: int, world_size: int, case: dict[str, Any]) -> Any:
    """Mistake: MSELoss(reduction='sum') under DDP at the single-process lr: steps shrink by R."""
    from linreg.distributed import ddp_trajectory

    return ddp_trajectory(rank, world_size, case, scale_sum_lr=False)
