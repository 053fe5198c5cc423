"""An optimizer of the code's own whose param groups hold no lr (its step size named `eta`, as
a sign-SGD or a paper's optimizer names it) or hold lr=None (Adafactor's relative step). The
watch and the audit hold a step still by setting each group's lr to 0; there was none to set,
and `group["lr"]` raised KeyError inside the code's own `opt.step()`: the watch blamed the
script (review fa68: "the script raised KeyError: 'lr'"), the audit refused the loop. Now such
a group's params are put back as they were when its step returns, the group left as the code
made it, and the run is judged."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit
from linreg.audit.report import Report
from linreg.audit.watcher import watch


class SignSGD(torch.optim.Optimizer):
    """Steps each param by -eta * sign(grad); eta, not lr, in its param groups."""

    def __init__(self, params: Iterable[nn.Parameter], eta: float = 0.01) -> None:
        super().__init__(params, {"eta": eta})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["eta"])


class RelativeStep(torch.optim.Optimizer):
    """Adafactor-like: lr=None in its groups, the step size its own (1 / sqrt(step))."""

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        super().__init__(params, {"lr": None})
        self.count = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        self.count += 1
        for group in self.param_groups:
            assert group["lr"] is None  # (as the code set it: the watch left it so)
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-0.1 / self.count**0.5)


def _mlp() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _batches(gen: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
    x, y = torch.randn(50, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    return iter(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen))


@pytest.mark.parametrize("make", [SignSGD, RelativeStep], ids=["eta", "lr-none"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_watch_judges_an_optimizer_without_an_lr_and_leaves_its_params(
    make: type[torch.optim.Optimizer], reduction: str
) -> None:
    """The mean passes, the sum fails mean-vs-sum (judged, not skipped), no error is raised
    into the code, and the params are as the watch found them, the groups as the code made
    them (no lr added)."""
    model = _mlp()
    found = [p.detach().clone() for p in model.parameters()]
    optimizer = make(model.parameters())
    gen = torch.Generator().manual_seed(0)
    with watch() as reports:
        for _ in range(2):
            for xb, yb in _batches(gen):
                optimizer.zero_grad()
                F.cross_entropy(model(xb), yb, reduction=reduction).backward()
                optimizer.step()
    report: Report = reports[0]
    assert not report.error, str(report)
    assert [f.pitfall for f in report.failures] == ([] if reduction == "mean" else ["mean-vs-sum"])
    verdicts = {r.pitfall: r.verdict for r in report.results}
    assert verdicts["mean-vs-sum"] == ("pass" if reduction == "mean" else "fail"), str(report)
    for p, value in zip(model.parameters(), found, strict=True):
        assert torch.equal(p, value)
    assert all(("lr" in g) == (make is RelativeStep) for g in optimizer.param_groups)


def _own_sign_sgd(
    model: nn.Module, loader: Iterable[Any], optimizer: Any, *, num_epochs: int, reduction: str
) -> None:
    """A loop that builds its own SignSGD (the audit's optimizer unused)."""
    opt = SignSGD(model.parameters())
    for _ in range(num_epochs):
        for X, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(X), y, reduction=reduction).backward()
            opt.step()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_audit_judges_a_loop_whose_optimizer_has_no_lr(reduction: str) -> None:
    """Before, the audit refused the loop (TargetError: KeyError 'lr' in every probe); now the
    mean passes and the sum fails mean-vs-sum alone."""
    report = audit.training_loop(
        partial(_own_sign_sgd, reduction=reduction),
        model=_mlp,
        example=(torch.tensor([1.0, 0.0, -2.0, 0.5]), 1),
    )
    assert [f.pitfall for f in report.failures] == ([] if reduction == "mean" else ["mean-vs-sum"])
    assert not any(r.verdict == "skip" for r in report.results), str(report)
