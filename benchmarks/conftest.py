"""Benchmark setup: a fixed thread count, the devices to run on, and what the report needs.

Threads: torch uses LINREG_BENCH_THREADS intra-op threads (default 1), fixed for the whole run,
so that tiny operations are not timed against a thread pool's wake-ups and runs compare.
Devices: "cpu" always, "cuda" too when torch sees a GPU (timed functions synchronize).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import pytest
import torch

THREADS = int(os.environ.get("LINREG_BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """The device a benchmark runs on."""
    return str(request.param)


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["platform"] = platform.platform()
    if torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()
        machine_info["cuda_version"] = torch.version.cuda
