"""A batch wider than any drawn: every audit's last run is one window of batches of 37 rows.

The drawn runs' batches hold 5 rows at most, so a loop that runs each batch in chunks of its
own (fairseq's and Hugging Face's "micro-batches" of 8, or torch.chunk into halves) splits
them evenly or not at all, and a mean of its chunks' means weighs every row alike there. 37 is
prime: every chunk size and count splits it unevenly, and the mean of means shows.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit
from linreg.kinds.training_loop import WIDE


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def labelled() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([0.5, -1.0, 2.0]), torch.tensor(1)


def _pieces(x: torch.Tensor, y: torch.Tensor, split: str) -> list[tuple[Any, Any]]:
    """A batch in chunks of 8 rows, of 16, or in two halves by torch.chunk."""
    if split == "halves":
        return list(zip(x.chunk(2), y.chunk(2), strict=True))
    size = int(split)
    return list(zip(x.split(size), y.split(size), strict=True))


def chunked(split: str, mean_of_means: bool) -> Any:
    def train(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        """Each batch through the model a chunk at a time, the gradients added up by
        backward(), one step a batch: each chunk's summed loss over the batch's rows (right),
        or each chunk's mean over the number of chunks (the mean of means)."""
        for _ in range(num_epochs):
            for x, y in loader:
                optimizer.zero_grad()
                pieces = _pieces(x, y, split)
                for xc, yc in pieces:
                    if mean_of_means:
                        loss = F.cross_entropy(model(xc), yc) / len(pieces)
                    else:
                        loss = F.cross_entropy(model(xc), yc, reduction="sum") / len(y)
                    loss.backward()
                optimizer.step()

    train.__name__ = f"chunks_{split}" + ("_mean_of_means" if mean_of_means else "")
    return train


def _applied(train: Any, rows: int) -> torch.Tensor:
    """The params' change of one step of train on one batch: 19 rows of one kind, then the
    rest of another, lr 1 (so the change is minus the applied gradient)."""
    torch.manual_seed(0)
    model = Classifier()
    first = rows // 2 + 1
    x = torch.cat([torch.full((first, 3), 0.5), torch.full((rows - first, 3), -1.5)])
    y = torch.tensor([1] * first + [2] * (rows - first))
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    train(model, DataLoader(TensorDataset(x, y), batch_size=rows), torch.optim.SGD(
        model.parameters(), lr=1.0), 1)  # fmt: skip
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


@pytest.mark.parametrize("split", ["8", "16", "halves"])
def test_a_mean_of_chunk_means_moves_the_params_apart_only_on_a_wide_batch(split: str) -> None:
    """Measured directly: on 5 rows (the drawn runs' widest batch) the mean of chunk means
    applies what weighing the chunks by rows applies, and on 37 it does not."""
    for rows, apart in ((5, False), (WIDE, True)):
        right = _applied(chunked(split, False), rows)
        wrong = _applied(chunked(split, True), rows)
        if split == "halves" and rows == 5:  # 3 rows and 2: unequal at 5 rows already
            continue
        assert (not torch.allclose(right, wrong, rtol=1e-4, atol=1e-6)) is apart, rows


@pytest.mark.parametrize("split", ["8", "16", "halves"])
def test_a_loop_that_weighs_its_chunks_by_rows_passes(split: str) -> None:
    report = audit.training_loop(chunked(split, False), model=Classifier, example=labelled)
    assert report.ok, str(report)


@pytest.mark.parametrize("split", ["8", "16"])
def test_a_mean_of_chunk_means_fails_micro_batch_accumulation_on_the_wide_run(
    split: str,
) -> None:
    report = audit.training_loop(chunked(split, True), model=Classifier, example=labelled)
    assert [r.pitfall for r in report.failures] == ["micro-batch-accumulation"], str(report)
    (failure,) = report.failures
    assert failure.counterexample["batch_size"] == WIDE
    assert "micro-batches of [" in failure.message and "mean of its" in failure.message


def accumulated_chunks(mean_of_means: bool) -> Any:
    def train(
        model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
    ) -> None:
        """Two levels: windows of accumulation_steps batches, each batch in chunks of 8, each
        batch weighed by its share of the window's rows; within a batch, each chunk's summed
        loss over the batch's rows (right), or its mean over the batch's chunks (a mean of
        means no batch of 5 rows shows)."""
        for _ in range(num_epochs):
            window: list[tuple[torch.Tensor, torch.Tensor]] = []
            for i, batch in enumerate(loader):
                window.append(batch)
                if len(window) < accumulation_steps and i + 1 < len(loader):
                    continue
                rows = sum(len(y) for _, y in window)
                for x, y in window:
                    pieces = _pieces(x, y, "8")
                    for xc, yc in pieces:
                        if mean_of_means:
                            loss = F.cross_entropy(model(xc), yc) / len(pieces)
                        else:
                            loss = F.cross_entropy(model(xc), yc, reduction="sum") / len(y)
                        (loss * len(y) / rows).backward()
                optimizer.step()
                optimizer.zero_grad()
                window = []

    return train


def test_a_given_count_makes_the_wide_run_one_full_window() -> None:
    """With accumulation_steps=2 given, the wide run is a window of two batches of 37: the
    right loop passes on it, the mean of chunk means fails there."""
    options: dict[str, Any] = {"model": Classifier, "example": labelled}
    options["accumulation_steps"] = 2
    assert audit.training_loop(accumulated_chunks(False), **options).ok
    report = audit.training_loop(accumulated_chunks(True), **options)
    assert [r.pitfall for r in report.failures] == ["micro-batch-accumulation"], str(report)
    example = report.failures[0].counterexample
    assert (example["batch_size"], len(example["rows"])) == (WIDE, 2 * WIDE)


def test_a_loop_that_refuses_wide_batches_is_judged_on_the_drawn_runs() -> None:
    """A loop that raises on a batch of more than 8 rows (a fixed buffer, say) is not an error
    for the run the audit adds: that run is passed over and not counted."""

    def bounded(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for x, y in loader:
                if len(x) > 8:
                    raise ValueError("batches of 8 rows at most")
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()

    report = audit.training_loop(bounded, model=Classifier, example=labelled, max_examples=10)
    assert report.ok, str(report)
    assert {r.examples for r in report.results if r.verdict == "pass"} == {10}
