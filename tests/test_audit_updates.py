"""What one update is: the audit reads it from the run, not from a structure it was told.

Several optimizers stepped with nothing fed between them are one update; an
`optimizer.step()` fed nothing that applies nothing (a flush after an epoch that ended on a
full window) is no update; a step fed nothing that applies a gradient again (a second
`optimizer.step()` after `scaler.step(optimizer)`) moves the params twice with the same rows;
a step budget that counts inclusively takes one step more, each of them right.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from linreg import audit


class TwoPart(nn.Module):
    """An embedding-like first layer and a head, as models trained by two optimizers have."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(x)))


def sample() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([0.5, -1.0, 2.0]), torch.tensor(1)


LOOP = {"model": TwoPart, "example": sample, "max_examples": 15}


def train_two_optimizers(model: TwoPart, loader: Any, num_epochs: int) -> None:
    """Sparse-style SGD for the first layer, AdamW for the head: both step every batch."""
    optimizers = [
        torch.optim.SGD(model.embed.parameters(), lr=0.1),
        torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=0.0),
    ]
    for _ in range(num_epochs):
        for inputs, targets in loader:
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)


def train_with_flush(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
) -> None:
    """Accumulates k batches, each window's summed loss divided by the rows it holds; after
    every epoch an unconditional step and zero_grad flush what is left (nothing, on a full last
    window)."""
    k = accumulation_steps
    n, b = len(loader.dataset), loader.batch_size
    sizes = [min(b, n - i * b) for i in range(len(loader))]  # the last batch may be short
    for _ in range(num_epochs):
        for i, (x, y) in enumerate(loader):
            start = i - i % k
            rows = sum(sizes[start : start + k])  # the window's rows, its last one's too
            (F.cross_entropy(model(x), y, reduction="sum") / rows).backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        optimizer.step()
        optimizer.zero_grad()


def train_with_flush_nominal(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    """The same flush, but every batch divided by k: a short last window is stepped too small."""
    k = 2
    for _ in range(num_epochs):
        for i, (x, y) in enumerate(loader):
            (F.cross_entropy(model(x), y) / k).backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        optimizer.step()
        optimizer.zero_grad()


def train_inclusive_budget(
    model: nn.Module, dataset: Any, optimizer: Any, max_iters: int, batch_size: int
) -> None:
    """nanoGPT-style: it breaks after iter_num passes max_iters, so it takes max_iters + 1."""
    batches = itertools.cycle(DataLoader(dataset, batch_size=batch_size, shuffle=True))
    iter_num = 0
    while True:
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        iter_num += 1
        if iter_num > max_iters:
            break


def train_amp_then_step(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """A scaler's step, then a plain step left over from before AMP: each batch moves twice."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            scaler.scale(F.cross_entropy(model(x), y)).backward()
            scaler.step(optimizer)
            optimizer.step()
            scaler.update()


def train_amp(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            scaler.scale(F.cross_entropy(model(x), y)).backward()
            scaler.step(optimizer)
            scaler.update()


def test_two_optimizers_stepped_once_each_per_batch_are_one_update() -> None:
    report = audit.training_loop(train_two_optimizers, **LOOP)
    assert report.ok, str(report)


def test_a_flush_step_that_applies_nothing_is_no_update() -> None:
    report = audit.training_loop(train_with_flush, **LOOP, accumulation_steps=2)
    assert report.ok, str(report)


def test_a_flush_that_steps_a_short_window_too_small_fails_short_last_batch() -> None:
    report = audit.training_loop(train_with_flush_nominal, **LOOP, accumulation_steps=2)
    assert "short-last-batch" in {r.pitfall for r in report.failures}, str(report)


def test_an_inclusive_step_budget_passes() -> None:
    report = audit.training_loop(train_inclusive_budget, **LOOP)
    assert report.ok, str(report)


def test_a_second_step_after_the_scalers_fails_naming_the_rows_applied_twice() -> None:
    assert audit.training_loop(train_amp, **LOOP).ok
    report = audit.training_loop(train_amp_then_step, **LOOP)
    (failure,) = report.failures
    assert failure.pitfall == "grad-zeroing", str(report)
    assert "the same micro-batches moved the params twice" in failure.message


def test_the_double_step_is_measured_directly_at_twice_the_params_move() -> None:
    """Without the audit: at lr 0.1, plain SGD, one batch moves the params twice as far."""

    def moved(loop: Any) -> torch.Tensor:
        torch.manual_seed(0)
        model = TwoPart()
        start = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
        x, y = sample()
        loader = [(x.unsqueeze(0), y.unsqueeze(0))]
        loop(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 1)
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - start

    ratio = moved(train_amp_then_step).norm() / moved(train_amp).norm()
    assert float(ratio) == pytest.approx(2.0, rel=1e-5)


class Lookahead(torch.optim.Optimizer):
    """A wrapper optimizer, as Lookahead is written: its step() calls its inner one's."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        super().__init__(inner.param_groups, inner.defaults)
        self.inner = inner

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        return self.inner.step(closure)


def train_wrapped_optimizer(model: nn.Module, loader: Any, num_epochs: int) -> None:
    optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1))
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def train_max_steps_epochs(model: nn.Module, loader: Any, optimizer: Any, max_steps: int) -> None:
    """A budget misread as epochs: max_steps passes over the data, not max_steps steps."""
    for _ in range(max_steps):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def test_a_wrapper_optimizers_step_is_one_update() -> None:
    report = audit.training_loop(train_wrapped_optimizer, **LOOP)
    assert report.ok, str(report)


def test_a_budget_overshot_by_more_than_one_step_still_fails() -> None:
    report = audit.training_loop(train_max_steps_epochs, **LOOP)
    assert "exhausted-generator" in {r.pitfall for r in report.failures}, str(report)
