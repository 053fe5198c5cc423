"""Ignite's `create_supervised_trainer(..., gradient_accumulation_steps=k)` measured directly
(pytorch-ignite 0.5.5): it zeroes and steps on `engine.state.iteration`, which runs on across
epochs, and divides each batch's mean loss by k. So a window may cross an epoch's end (right
while its batches hold the same rows), a window of unequal batches applies the mean of their
means, and a last partial window is never applied. Then the same seen through `watch`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit import watch_script
from tests.frameworks.measure import applied_gradients, correct_gradient
from tests.test_watch import assert_windows_judged, twin_of

engine = pytest.importorskip("ignite.engine")

SCRIPT = Path(__file__).parent.parent / "watch_scripts" / "ignite_accum.py"


def _run(rows: int, epochs: int) -> tuple[list[Tensor], nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    X, y = torch.randn(rows, 5), torch.randint(0, 3, (rows,))
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = engine.create_supervised_trainer(
        model, optimizer, nn.CrossEntropyLoss(), gradient_accumulation_steps=2
    )
    with applied_gradients(model) as seen:
        trainer.run(DataLoader(TensorDataset(X, y), batch_size=4), max_epochs=epochs)
    return seen, model, X, y


def test_ignite_windows_cross_epochs_and_weigh_unequal_batches_as_a_mean_of_means() -> None:
    seen, model, X, y = _run(rows=10, epochs=2)  # batches of 4, 4, 2 rows; windows of 2

    def grad(*parts: slice) -> Tensor:
        xs, ys = torch.cat([X[p] for p in parts]), torch.cat([y[p] for p in parts])
        return correct_gradient(model, lambda m: F.cross_entropy(m(xs), ys))

    first, last = slice(0, 4), slice(8, 10)
    assert len(seen) == 3  # 6 batches in 2 epochs: 3 windows, the second across the epoch end
    assert torch.allclose(seen[0], grad(first, slice(4, 8)), atol=1e-6)  # equal batches: right
    across = (grad(last) + grad(first)) / 2  # the epoch's 2 rows and the next epoch's first 4
    assert torch.allclose(seen[1], across, atol=1e-6)
    assert not torch.allclose(seen[1], grad(last, first), atol=1e-3)  # not the mean of its 6 rows


def test_ignite_never_applies_the_last_partial_window() -> None:
    seen, *_ = _run(rows=12, epochs=1)  # 3 batches, windows of 2: the third batch never stepped
    assert len(seen) == 1


@pytest.mark.parametrize(
    "rows, pitfall", [(24, None), (20, None), (22, "micro-batch-accumulation")]
)
def test_watching_an_ignite_script_judges_each_window_by_its_weights(
    rows: int, pitfall: str | None
) -> None:
    # batches of 4: 6 per epoch (windows end with the epoch); 5 (a window crosses it, batches
    # equal); 6, the last of 2 rows (a window of 4 and 2 rows weighed as a mean of means)
    assert_windows_judged(SCRIPT, rows, pitfall, crosses=rows == 20)


def test_watching_an_ignite_twin_that_sums_its_loss_names_mean_vs_sum(tmp_path: Path) -> None:
    line = "criterion = nn.CrossEntropyLoss()"
    twin = twin_of(tmp_path, SCRIPT, line, 'criterion = nn.CrossEntropyLoss(reduction="sum")')
    # Ignite divides each micro-batch's loss by the count: on windows of 2 batches of 4 rows
    # the summed loss applies 4 times the mean, a micro-batch's rows, which names the sum on
    # the full windows (22 rows: a shorter one follows, and is not needed)
    report = watch_script(str(twin), ["--rows", "22"])
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    message = report.failures[0].message
    assert "applied 4 times the mean: it sums each micro-batch's loss" in message, str(report)
