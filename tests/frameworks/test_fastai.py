"""fastai (2.8) with its GradientAccumulation callback, measured directly and then watched as a
script: the callback divides each batch's mean loss by n_acc / batch size (its summed loss by
n_acc, the samples a step should hold) and steps once it has counted n_acc samples or more,
counting over the whole fit. A window that overshoots n_acc (an epoch's third batch, its short
last batch and the next epoch's first) holds more rows than it divides by: 22 rows over 16,
1.375 times the mean of its rows. Windows that hold n_acc exactly are right. fastai's Learner
steps a torch optimizer through OptimWrapper; its own optimizers are not torch's, and cannot be
watched."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit import watch_script
from tests.frameworks.measure import applied_gradients, correct_gradient, ratio
from tests.test_watch import twin_of

with warnings.catch_warnings():  # fastai's own, at import (torch.jit.script's deprecation)
    warnings.simplefilter("ignore")
    pytest.importorskip("fastai")
    from fastai.basics import DataLoaders, Learner, OptimWrapper
    from fastai.callback.training import GradientAccumulation

SCRIPT = Path(__file__).parent.parent / "watch_scripts" / "fastai_accum.py"


def test_fastai_accumulation_overshooting_n_acc_applies_more_than_the_mean_measured() -> None:
    """30 rows in order, batches of 8 (8, 8, 8, 6), n_acc = 16, 2 epochs: the first window is
    rows 0-15, the second rows 16-29 and the next epoch's 0-7, 22 rows divided by 16."""
    torch.manual_seed(0)
    x, y = torch.randn(30, 3), torch.randn(30, 1)
    train = DataLoader(TensorDataset(x, y), batch_size=8)
    learn = Learner(
        DataLoaders(train, DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8), device="cpu"),
        nn.Linear(3, 1),
        loss_func=nn.MSELoss(),
        opt_func=partial(OptimWrapper, opt=torch.optim.SGD),
    )
    with applied_gradients(learn.model) as seen, learn.no_bar(), learn.no_logging():
        learn.fit(2, lr=0.1, cbs=[GradientAccumulation(n_acc=16)])

    def mean_over(rows: torch.Tensor) -> torch.Tensor:
        return correct_gradient(learn.model, lambda m: F.mse_loss(m(x[rows]), y[rows]))

    first, second = seen[:2]
    assert ratio(first, mean_over(torch.arange(16))) == pytest.approx(1.0, rel=1e-5)
    window = torch.cat([torch.arange(16, 30), torch.arange(8)])
    assert torch.allclose(second, mean_over(window) * 22 / 16, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "args, pitfall",
    [([], None), (["--rows", "32", "--n-acc", "16"], None), (["--n-acc", "16"], "mean-vs-sum")],
)
def test_watching_a_fastai_script_judges_each_window_by_its_rows(
    args: list[str], pitfall: str | None
) -> None:
    """Without accumulation, and with windows of exactly 16 rows (32 rows, batches of 8), the
    script passes; on 30 rows a window of 22 rows divided by 16 applies 1.375 times its mean,
    and a window of 16 rows its mean: a factor that grows with the rows."""
    report = watch_script(str(SCRIPT), args)
    assert [r.pitfall for r in report.failures] == ([pitfall] if pitfall else []), str(report)
    assert not report.error, str(report)
    if pitfall:
        assert "applies 1.375 times the mean of its 22 counted" in str(report), str(report)


def test_fastais_own_optimizer_is_no_torch_one_and_is_one_error(tmp_path: Path) -> None:
    """fastai's default optimizer (its own Adam) is not a torch.optim.Optimizer: the params
    move with no torch optimizer's step, which the watch cannot read, and says so once."""
    own = twin_of(
        tmp_path, SCRIPT, "        opt_func=partial(OptimWrapper, opt=torch.optim.SGD),\n", ""
    )
    report = watch_script(str(own))
    assert report.error.startswith("the params moved, yet no torch optimizer stepped"), str(report)
    assert not report.failures and not report.ok, str(report)
