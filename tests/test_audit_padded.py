"""A short batch padded to a full one's rows, the padding masked out of the loss: fixed-shape
code does it (XLA's, a compiled model's, where a new shape recompiles). The rows the loop makes
are none of the data's and weigh nothing, so the step applies the mean of the rows it drew. Read
as rows of the data, the correct loop failed short-last-batch and grad-zeroing (stop 53's
reproduction, left open until now)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit


def _padded_to(X: torch.Tensor, y: torch.Tensor, rows: int) -> tuple[Any, ...]:
    """Return the batch padded with zeros up to `rows`, and the mask of its own rows."""
    n = X.shape[0]
    mask = torch.zeros(rows)
    mask[:n] = 1.0
    pad = rows - n
    return (
        torch.cat([X, X.new_zeros(pad, *X.shape[1:])]),
        torch.cat([y, y.new_zeros(pad, *y.shape[1:])]),
        mask,
    )


def _masked_mean(model: nn.Module, X: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> Any:
    per_row = F.mse_loss(model(X), y, reduction="none").mean(1)
    return (per_row * m).sum() / m.sum()


def train_padded(model: nn.Module, loader: Any, num_epochs: int, optimizer: Any, batch_size: int):  # type: ignore[no-untyped-def]
    for _ in range(num_epochs):
        for X, y in loader:
            loss = _masked_mean(model, *_padded_to(X, y, batch_size))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def train_padded_nominal(  # type: ignore[no-untyped-def]
    model: nn.Module, loader: Any, num_epochs: int, optimizer: Any, batch_size: int
):
    """The bug: the masked sum divided by the batch size, the short batch's too."""
    for _ in range(num_epochs):
        for X, y in loader:
            X, y, mask = _padded_to(X, y, batch_size)
            per_row = F.mse_loss(model(X), y, reduction="none").mean(1)
            loss = (per_row * mask).sum() / batch_size
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def train_padded_unmasked(  # type: ignore[no-untyped-def]
    model: nn.Module, loader: Any, num_epochs: int, optimizer: Any, batch_size: int
):
    """The bug: the padding trained on, as if it were data."""
    for _ in range(num_epochs):
        for X, y in loader:
            X, y, _ = _padded_to(X, y, batch_size)
            loss = F.mse_loss(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def _sample() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0])


@pytest.mark.parametrize(
    ("loop", "named", "said"),
    [
        (train_padded, [], ""),
        (train_padded_nominal, ["short-last-batch"], "by the nominal"),
        (train_padded_unmasked, ["short-last-batch"], ""),
    ],
    ids=["masked", "nominal", "unmasked"],
)
def test_a_short_batch_padded_to_a_full_ones_rows_is_judged_on_the_rows_it_drew(
    loop: Any, named: list[str], said: str
) -> None:
    report = audit.training_loop(loop, model=lambda: nn.Linear(3, 1), example=_sample)
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == named, str(report)
    assert all(said in r.message for r in report.failures), str(report)


def test_the_masked_padded_step_is_measured_directly_to_apply_the_mean_of_its_own_rows() -> None:
    """Without the audit: the padded batch's gradient is nn.MSELoss's on the rows drawn."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=gen), torch.randn(10, 1, generator=gen)
    model = nn.Linear(3, 1)
    for X, Y in DataLoader(TensorDataset(x, y), batch_size=4):  # 4, 4, then 2
        padded = torch.autograd.grad(
            _masked_mean(model, *_padded_to(X, Y, 4)), [*model.parameters()]
        )
        drawn = torch.autograd.grad(nn.MSELoss()(model(X), Y), [*model.parameters()])
        for a, b in zip(padded, drawn, strict=True):
            torch.testing.assert_close(a, b)
