"""The whole default experiment (n = 1000, batch 10, lr 0.03, 3 epochs: 300 steps), four loops,
timed interleaved, round by round.

linreg.train with autograd and with analytic gradients, the book's loop exactly as written
(Python-list shuffling, `torch.tensor` indices per batch, the nominal batch size), and the
book's concise loop (DataLoader + nn.Linear + nn.MSELoss + optim.SGD). Same data for all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from benchmarks import book
from benchmarks.common import interleave, sync
from linreg import data, train
from linreg._book import TRUE_B, TRUE_W

TRUE = torch.tensor([*TRUE_W, TRUE_B], dtype=torch.float64)


Result = tuple[torch.Tensor, torch.Tensor, float]


def ours(grad: Literal["autograd", "analytic"]) -> Callable[..., Result]:
    def run(features: torch.Tensor, labels: torch.Tensor) -> Result:
        gen = torch.Generator().manual_seed(0)
        result = train.train(features, labels, generator=gen, grad=grad)
        return result.w, result.b, result.losses[-1]

    return run


LOOPS: dict[str, Callable[..., Result]] = {
    "linreg.train(autograd)": ours("autograd"),
    "linreg.train(analytic)": ours("analytic"),
    "book loop": book.train_book,
    "DataLoader + optim.SGD": book.train_concise,
}


def test_train_default_experiment(benchmark: Any, device: str) -> None:
    features, labels = (t.to(device) for t in data.book_data(1000))
    results: dict[str, Result] = {}

    def case(loop: str) -> Any:
        def run() -> None:
            results[loop] = LOOPS[loop](features, labels)
            sync(device)

        return run

    benchmark.group = f"train default {device}"
    benchmark.extra_info.update(device=device, steps=300, base="book loop")
    interleave(benchmark, {loop: case(loop) for loop in LOOPS}, rounds=12, min_seconds=0)
    for loop, (w, b, final_loss) in results.items():
        # fast but wrong must fail: every loop must have learned the book's parameters
        got = torch.cat([w.detach().reshape(-1), b.detach().reshape(-1)]).double().cpu()
        assert float((got - TRUE).abs().max()) < 5e-3, (loop, got)
        assert final_loss < 1e-3, loop
