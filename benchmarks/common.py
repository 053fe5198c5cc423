"""Helpers shared by the benchmark modules: device sync, and interleaved, paired timing."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work, so a timing covers it."""
    if device == "cuda":
        torch.cuda.synchronize()


def interleave(
    benchmark: Any,
    cases: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    setup: Callable[[str], None] | None = None,
    min_seconds: float = 2e-3,
) -> dict[str, list[float]]:
    """Time every case once per round, in a new random order each round; return the times.

    What is compared runs in the same round, so a drift of the machine (a neighbour, the
    clock) moves every case alike and a per-round ratio cancels it. Each case's time in a
    round covers `calls` calls (as many as take min_seconds, measured once), each after its own
    setup (not timed); it is reported per call. pytest-benchmark times the whole rounds; the
    per-round times go to extra_info["times"] for the report's paired ratios.
    """
    first = {}
    for name, fn in cases.items():  # warm up, and size each case's calls
        if setup is not None:
            setup(name)
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    calls = {name: max(1, math.ceil(min_seconds / max(t, 1e-9))) for name, t in first.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = random.Random(0)

    def one_round() -> None:
        names = list(cases)
        order.shuffle(names)
        for name in names:
            total = 0.0
            for _ in range(calls[name]):
                if setup is not None:
                    setup(name)
                start = time.perf_counter()
                cases[name]()
                total += time.perf_counter() - start
            times[name].append(total / calls[name])

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    benchmark.extra_info["times"] = times
    benchmark.extra_info["calls_per_round"] = calls
    return times
