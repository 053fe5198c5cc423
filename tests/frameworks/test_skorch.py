"""skorch (1.4) with gradient accumulation written as its FAQ does (the loss divided by the
count, a step every acc_steps batches counted over the whole fit), measured directly and then
watched as a script: a window holding the epoch's short last batch applies the mean of its two
batches' means, not the mean of its rows; full windows, and a window that crosses an epoch's
end over equal batches, are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.frameworks.measure import applied_gradients, correct_gradient
from tests.test_watch import assert_windows_judged

pytest.importorskip("skorch")

from tests.watch_scripts.skorch_accum import GradAccNet, Module

SCRIPT = Path(__file__).parent.parent / "watch_scripts" / "skorch_accum.py"


def test_skorch_accumulation_weighs_a_short_last_batch_as_a_whole_one_measured() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 6)).astype(np.float32)  # batches of 8 and 4: one window an epoch
    y = rng.integers(0, 3, size=12).astype(np.int64)
    torch.manual_seed(0)
    net = GradAccNet(
        Module, criterion=torch.nn.CrossEntropyLoss, max_epochs=1, lr=0.1, batch_size=8,
        train_split=None, acc_steps=2, verbose=0,
    )  # fmt: skip
    net.initialize()
    with applied_gradients(net.module_) as seen:
        net.partial_fit(X, y)
    xs, ys = torch.from_numpy(X), torch.from_numpy(y)

    def grad(rows: slice) -> torch.Tensor:
        return correct_gradient(net.module_, lambda m: F.cross_entropy(m(xs[rows]), ys[rows]))

    (applied,) = seen
    assert torch.allclose(applied, (grad(slice(0, 8)) + grad(slice(8, 12))) / 2, atol=1e-6)
    assert not torch.allclose(applied, grad(slice(0, 12)), atol=1e-3)


@pytest.mark.parametrize(
    "rows, pitfall", [(48, None), (40, None), (44, "micro-batch-accumulation")]
)
def test_watching_a_skorch_script_judges_each_window_by_its_weights(
    rows: int, pitfall: str | None
) -> None:
    # batches of 8: 6 an epoch; 5 (a window crosses the epoch's end, batches equal); 6, the
    # last of 4 rows (a window of 8 and 4 rows weighed as a mean of means)
    assert_windows_judged(SCRIPT, rows, pitfall, crosses=rows == 40)
