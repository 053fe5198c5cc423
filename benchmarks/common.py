"""Helpers shared by the benchmark modules."""

from __future__ import annotations

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work, so a timing covers it."""
    if device == "cuda":
        torch.cuda.synchronize()
