"""What watching costs: the same training steps timed plain and under `linreg.kinds.watched`.

    python -m benchmarks.watch_overhead [--rounds R]

An MLP of three widths (about 3k, 85k and 1.1M parameters) takes 50 AdamW steps on batches of
32, plain and watched (every loss repeated per element and differentiated, every update read),
alternating in each round on one torch thread; prints the median per-round ratio of watched to
plain time, and the two medians. The script's start-up (imports, the first optimizer) is not in
it: it is paid once, watched or not. A measurement, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from linreg.kinds.watched import watching


def steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: list[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    for x, y in data:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for width in (16, 256, 1024):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        data = [(torch.randn(32, 64), torch.randint(0, 10, (32,))) for _ in range(50)]
        steps(model, optimizer, data)  # warm up
        plain, watched, ratios = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            steps(model, optimizer, data)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            with watching(steps=10**9):
                steps(model, optimizer, data)
            watched.append(time.perf_counter() - start)
            ratios.append(watched[-1] / plain[-1])
        params = sum(p.numel() for p in model.parameters())
        ratio = statistics.median(ratios)
        print(
            f"width {width:5d} ({params:>9,} params): watched / plain {ratio:.2f}x "
            f"(plain {statistics.median(plain) * 1000:.1f} ms, watched "
            f"{statistics.median(watched) * 1000:.1f} ms for 50 steps)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
