"""One mistake, one name: a loop with one bug fails the property that names it, and the
others, whose evidence the same bug bends, stay quiet (review 22's held-out twins: a term
summed beside a mean, a loss broadcast against labels of another shape, a nominal divisor).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from linreg import audit


class Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.teacher = nn.Linear(3, 3).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def labelled() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([0.5, -1.0, 2.0]), torch.tensor(1)


def _distil(summed: bool) -> Any:
    def train(model: Student, loader: Any, optimizer: Any, num_epochs: int) -> None:
        """Distillation: KL to a frozen teacher's softened outputs beside cross-entropy."""
        t = 2.0
        for _ in range(num_epochs):
            for x, y in loader:
                logits = model(x)
                soft = F.kl_div(
                    F.log_softmax(logits / t, -1),
                    F.softmax(model.teacher(x) / t, -1),
                    reduction="sum" if summed else "batchmean",
                )
                loss = 0.5 * soft * t * t + 0.5 * F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    train.__name__ = "distil_summed_kl" if summed else "distil"
    return train


def test_a_term_summed_beside_a_mean_is_mean_vs_sum_alone() -> None:
    """The KL term summed over the rows (reduction="sum" where batchmean was meant) grows with
    the rows and the labels' term does not: mean-vs-sum names it on identical rows. Before,
    short-last-batch failed too ("matches no known mistake": a short step's rows scale only
    the summed part), and, once that was quiet, micro-batch-accumulation did (two kinds of
    rows weighed by no combination of their gradients)."""
    options = {"model": Student, "example": labelled, "max_examples": 20}
    assert audit.training_loop(_distil(False), **options).ok
    report = audit.training_loop(_distil(True), **options)
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    verdicts = {r.pitfall: r.verdict for r in report.results}  # not judged, never passed
    assert verdicts["short-last-batch"] == verdicts["micro-batch-accumulation"] == "skip"


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def value() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([0.5, -1.0, 2.0]), torch.tensor(0.7)


@pytest.mark.parametrize("reshaped", [True, False], ids=["reshaped", "broadcast"])
def test_a_weighted_loss_broadcast_against_flat_labels_is_label_shape_alone(
    reshaped: bool,
) -> None:
    """Per-row weights times mse_loss(reduction="none") of (n, 1) predictions against (n,)
    labels: an (n, n) loss whose rows hold each other's labels, each column weighed by a
    row's weight, which on two kinds of rows reads as rows weighed unequally. Before,
    micro-batch-accumulation failed beside label-shape."""

    def weighted(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for x, y in loader:
                weight = 1.0 + 0.5 * torch.tanh(x[:, 0])
                predicted = model(x).squeeze(-1) if reshaped else model(x)
                loss = (weight * F.mse_loss(predicted, y, reduction="none")).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    report = audit.training_loop(weighted, model=Regressor, example=value, max_examples=20)
    assert [r.pitfall for r in report.failures] == ([] if reshaped else ["label-shape"])


def _adversarial(summed: bool) -> Any:
    def train(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        """FGSM adversarial training: the input's gradient sign from a first pass, zeroed,
        then the step on the perturbed rows alone."""
        for _ in range(num_epochs):
            for x, y in loader:
                x = x.clone().requires_grad_(True)
                F.cross_entropy(model(x), y).backward()
                attacked = (x + 0.1 * x.grad.sign()).detach()
                optimizer.zero_grad()
                reduction = "sum" if summed else "mean"
                F.cross_entropy(model(attacked), y, reduction=reduction).backward()
                optimizer.step()
                optimizer.zero_grad()

    train.__name__ = "fgsm_summed" if summed else "fgsm"
    return train


fgsm = _adversarial(summed=False)  # (the pytest plugin's test audits it by name too)


@pytest.mark.parametrize("summed", [False, True], ids=["mean", "summed"])
def test_steps_on_rows_the_loop_made_with_no_reference_are_an_error_never_a_pass(
    summed: bool,
) -> None:
    """Every step trains on perturbed rows, and each row's reference is the loop's own
    gradient on a row it was handed: no step had one, so the four step-judging properties
    held on nothing, and the audit passed, its summed twin too. Now they are not judged and
    the audit is an error (exit 1)."""
    options = {"model": Student, "example": labelled, "max_examples": 10}
    report = audit.training_loop(_adversarial(summed), **options)
    assert not report.ok and report.error.startswith("no step of any run could be judged")
    skipped = {r.pitfall for r in report.results if r.verdict == "skip"}
    assert {"short-last-batch", "mean-vs-sum", "grad-zeroing"} <= skipped, str(report)


def broadcast_mean_of_means(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
) -> None:
    """Two mistakes: (n, 1) predictions against (n,) labels, and each micro-batch's mean
    divided by its window's count of batches (a mean of means on an uneven last window)."""
    for _ in range(num_epochs):
        n = len(loader)
        for i, (x, y) in enumerate(loader):
            window = min(accumulation_steps, n - (i - i % accumulation_steps))
            (F.mse_loss(model(x), y) / window).backward()
            if (i + 1) % accumulation_steps == 0 or i + 1 == n:
                optimizer.step()
                optimizer.zero_grad()


def test_a_broadcast_beside_a_mean_of_means_keeps_both_names() -> None:
    """A broadcast excuses micro-batch-accumulation on a step of one micro-batch alone (its
    rows' labels mixed read as unequal weights); a window's mean of means is still named (the
    code review's: excused run-wide, it passed)."""
    report = audit.training_loop(
        broadcast_mean_of_means,
        model=Regressor,
        example=value,
        accumulation_steps=2,
        max_examples=20,
    )
    assert [r.pitfall for r in report.failures] == ["label-shape", "micro-batch-accumulation"]


def _doubling(divide: str) -> Any:
    def train(
        model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
    ) -> None:
        """A batch-size curriculum: a DataLoader of its own each epoch, the batch doubled;
        each batch's loss its mean, its sum, or its sum over the first epoch's batch size."""
        for epoch in range(num_epochs):
            size = batch_size * 2 ** min(epoch, 2)
            for x, y in torch.utils.data.DataLoader(dataset, batch_size=size):
                optimizer.zero_grad()
                loss = F.mse_loss(model(x).squeeze(-1), y, reduction="sum")
                (loss / {"mean": len(y), "sum": 1, "nominal": batch_size}[divide]).backward()
                optimizer.step()

    return train


@pytest.mark.parametrize(
    "divide, pitfalls",
    [("mean", []), ("sum", ["mean-vs-sum"]), ("nominal", ["short-last-batch"])],
)
def test_a_summed_loss_on_a_doubling_batch_is_mean_vs_sum_alone(
    divide: str, pitfalls: list[str]
) -> None:
    """Where the full steps hold one row, a step of two that applies twice the mean is a sum's
    as much as a divisor's of one row: short-last-batch named it beside mean-vs-sum for one
    summed loss (review 24's A4b). A divisor fixed at the first epoch's batch size, right on
    it, still fails short-last-batch on the wider batches."""
    report = audit.training_loop(_doubling(divide), model=Regressor, example=value)
    assert [r.pitfall for r in report.failures] == pitfalls, str(report)
