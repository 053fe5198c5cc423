"""accelerate's documented accumulation loop, measured directly and then audited as the loop
it is (audit.training_loop): accelerate 1.15.0, gradient_accumulation_steps=2, batches of one
row. Accelerator.backward divides every loss by 2 and accumulate() forces a step at the end of
the prepared dataloader, so 3 batches apply [1.0, 0.5] times the correct gradient."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit
from tests.frameworks.measure import applied_gradients, correct_gradient, ratio

accelerate = pytest.importorskip("accelerate")


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))


def sample() -> tuple[Tensor, Tensor]:
    return torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5]), torch.tensor(1)


def train(
    model: nn.Module,
    train_dataloader: Any,
    optimizer: Any,
    num_epochs: int,
    gradient_accumulation_steps: int,
    inside: bool = True,
) -> None:
    """As accelerate's docs write it: accumulate(), backward(), step, zero_grad (inside=False:
    accumulate() left out, each batch stepped; backward() still divides by the count)."""
    accelerator = accelerate.Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps, cpu=True
    )
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    for _ in range(num_epochs):
        for inputs, targets in train_dataloader:
            with accelerator.accumulate(model) if inside else contextlib.nullcontext():
                loss = F.cross_entropy(model(inputs), targets)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()


train_outside_accumulate = functools.partial(train, inside=False)


def test_accelerate_accumulation_measured_short_last_window_half() -> None:
    torch.manual_seed(0)
    X, y = torch.randn(3, 5), torch.randint(0, 4, (3,))
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with applied_gradients(model) as seen:
        train(model, DataLoader(TensorDataset(X, y), batch_size=1), optimizer, 1, 2)
    windows = [slice(0, 2), slice(2, 3)]
    correct = [
        correct_gradient(model, lambda m, w=w: F.cross_entropy(m(X[w]), y[w])) for w in windows
    ]
    assert [round(ratio(a, c), 6) for a, c in zip(seen, correct, strict=True)] == [1.0, 0.5]


def test_accelerate_accumulation_fails_short_last_batch_in_the_audit() -> None:
    report = audit.training_loop(
        train, model=net, example=sample, accumulation_steps=2, max_examples=15
    )
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "0.5 times the gradient" in report.failures[0].message


def test_accelerate_without_accumulation_passes() -> None:
    report = audit.training_loop(
        train, model=net, example=sample, accumulation_steps=1, max_examples=15
    )
    assert report.ok, str(report)


def test_accelerate_given_no_count_is_run_at_drawn_counts_and_its_short_window_found() -> None:
    # the loop takes gradient_accumulation_steps: undeclared, the audit draws it (1 to 4), and
    # a count above 1 shows the half-weighted short last window measured above
    report = audit.training_loop(train, model=net, example=sample, max_examples=15)
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert report.failures[0].counterexample["accumulation_steps"] >= 2


def test_accelerate_stepping_outside_accumulate_measured_at_one_over_the_count() -> None:
    # every batch is stepped, each at 1 / gradient_accumulation_steps of its own mean (the
    # watch's twin in test_watch_frameworks.py leaves accumulate() out the same way)
    torch.manual_seed(0)
    X, y = torch.randn(4, 5), torch.randint(0, 4, (4,))
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with applied_gradients(model) as seen:
        loader = DataLoader(TensorDataset(X, y), batch_size=2)
        train_outside_accumulate(model, loader, optimizer, 1, 3)
    correct = [
        correct_gradient(model, lambda m, w=w: F.cross_entropy(m(X[w]), y[w]))
        for w in (slice(0, 2), slice(2, 4))
    ]
    assert [ratio(a, c) for a, c in zip(seen, correct, strict=True)] == pytest.approx([1 / 3] * 2)


def test_accelerate_stepping_outside_accumulate_fails_mean_vs_sum_in_the_audit() -> None:
    report = audit.training_loop(
        train_outside_accumulate, model=net, example=sample, accumulation_steps=3, max_examples=15
    )
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "0.3333 times the gradient" in report.failures[0].message
