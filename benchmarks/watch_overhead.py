"""What watching costs: the same training steps timed plain and under `linreg.kinds.watched`.

    python -m benchmarks.watch_overhead [--rounds R]

An MLP of three widths (about 3k, 85k and 1.1M parameters) takes 50 AdamW steps on batches of
32, plain and watched (every loss repeated per element and differentiated, every update read),
alternating in each round on one torch thread; prints the median per-round ratio of watched to
plain time, and the two medians. Then a GRU cell's loss taken at every time step of sequences
of 50 and 200 (10 steps, 4 sequences a batch): a loss each step, each on the steps before it.
The script's start-up (imports, the first optimizer) is not in it: it is paid once, watched or
not. A measurement, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

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


def sequence_steps(
    cells: tuple[nn.Embedding, nn.GRUCell, nn.Linear],
    optimizer: torch.optim.Optimizer,
    data: list[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    embed, cell, logits = cells
    for x, y in data:
        h = torch.zeros(len(x), cell.hidden_size)
        loss = torch.zeros(())
        for t in range(x.shape[1]):
            h = cell(embed(x[:, t]), h)
            loss = loss + F.cross_entropy(logits(h), y[:, t]) / x.shape[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _timed(run: Callable[[], None], rounds: int) -> tuple[float, float, float]:
    """Return the median ratio of watched to plain time, and the two medians."""
    run()  # warm up
    plain, watched, ratios = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        with watching(steps=10**9):
            run()
        watched.append(time.perf_counter() - start)
        ratios.append(watched[-1] / plain[-1])
    return statistics.median(ratios), statistics.median(plain), statistics.median(watched)


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
        ratio, plain, watched = _timed(
            functools.partial(steps, model, optimizer, data), args.rounds
        )
        params = sum(p.numel() for p in model.parameters())
        print(
            f"width {width:5d} ({params:>9,} params): watched / plain {ratio:.2f}x "
            f"(plain {plain * 1000:.1f} ms, watched {watched * 1000:.1f} ms for 50 steps)"
        )
    for length in (50, 200):
        torch.manual_seed(0)
        cells = (nn.Embedding(20, 16), nn.GRUCell(16, 64), nn.Linear(64, 20))
        optimizer = torch.optim.AdamW([p for m in cells for p in m.parameters()], lr=1e-3)
        tokens = [torch.randint(0, 20, (4, length + 1)) for _ in range(10)]
        data = [(t[:, :-1], t[:, 1:]) for t in tokens]
        ratio, plain, watched = _timed(
            functools.partial(sequence_steps, cells, optimizer, data), args.rounds
        )
        print(
            f"a loss each of {length:3d} time steps: watched / plain {ratio:.2f}x "
            f"(plain {plain * 1000:.1f} ms, watched {watched * 1000:.1f} ms for 10 steps)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
