"""Mixup as its reference code writes it: inputs mixed, then `lam * ce(out, y_a) + (1 - lam) *
ce(out, y_b)`, two losses of one function on one prediction, each on a target of its own (the
batch's labels, and them permuted). Their gradient is the prediction's rows' mean under the
mixed target (a soft target, `ce(out, lam * onehot_a + (1 - lam) * onehot_b)`, gives the same
one), and the watch reads the two calls as that one loss (mixed.py). Read as one term of two
calls, every update applied what no count explains, and no update could be judged (exit 1):
found by stop 63's hunt."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg import audit
from linreg.audit.watcher import watch


def _mixup(form: str, classes: int = 4, k: int = 1) -> audit.Report:
    """A classifier over 36 rows in batches of 8 (the last of 4), SGD, each batch mixed with
    itself permuted at a drawn lam. form: "hard" (the two calls, criterion a mean), "soft" (one
    call on the mixed one-hot targets), "summed" (a bug: the criterion's reduction='sum',
    never divided), or "undivided" (a bug: k batches a step, each loss undivided). classes:
    the outputs (many: the watch takes the losses' gradients as they are computed, not as the
    backward() begins: loss_gradients.deferred)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(36, 10, generator=gen)
    y = torch.randint(0, classes, (36,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, classes))
    criterion = nn.CrossEntropyLoss(reduction="sum" if form == "summed" else "mean")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    beta = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    with watch() as reports:
        for _ in range(2):
            for i, (inputs, targets) in enumerate(loader, 1):
                lam = float(beta.sample())
                index = torch.randperm(len(inputs), generator=gen)
                outputs = model(lam * inputs + (1 - lam) * inputs[index])
                if form == "soft":
                    onehot = F.one_hot(targets, classes).float()
                    loss = criterion(outputs, lam * onehot + (1 - lam) * onehot[index])
                else:
                    loss = lam * criterion(outputs, targets)
                    loss = loss + (1 - lam) * criterion(outputs, targets[index])
                loss.backward()
                if i % k == 0 or i == len(loader):
                    optimizer.step()
                    optimizer.zero_grad()
    return reports[0]


@pytest.mark.parametrize("classes", [4, 40])
def test_mixups_two_losses_on_one_prediction_pass_as_its_soft_target_does(classes: int) -> None:
    hard, soft = _mixup("hard", classes), _mixup("soft", classes)
    assert hard.ok and not hard.error, str(hard)
    verdicts = [(r.pitfall, r.verdict) for r in hard.results]
    assert verdicts == [(r.pitfall, r.verdict) for r in soft.results], (str(hard), str(soft))
    assert ("mean-vs-sum", "pass") in verdicts, str(hard)


def _measured(form: str) -> float:
    """Return the ratio of one mixed batch's update (the two losses' gradient, as the loop
    computes it) to the mean of its rows' own gradients under the mixed target: 1 for the
    mean, the rows' count for the sum."""
    torch.manual_seed(1)
    model = nn.Linear(5, 3)
    x, y, lam = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]), 0.3
    index = torch.tensor([3, 4, 5, 0, 1, 2])
    reduction = "sum" if form == "summed" else "mean"
    out = model(x)
    loss = lam * F.cross_entropy(out, y, reduction=reduction)
    (loss + (1 - lam) * F.cross_entropy(out, y[index], reduction=reduction)).backward()
    assert model.weight.grad is not None
    applied = model.weight.grad.clone()
    rows = []
    for r in range(6):
        model.zero_grad()
        mix = lam * F.one_hot(y[r], 3).float() + (1 - lam) * F.one_hot(y[index[r]], 3).float()
        F.cross_entropy(model(x[r : r + 1]), mix[None]).backward()
        assert model.weight.grad is not None
        rows.append(model.weight.grad.clone())
    mean = torch.stack(rows).mean(0)
    return float(applied.norm() / mean.norm())


@pytest.mark.parametrize(
    ("form", "k", "names"),
    [
        ("summed", 1, "it sums the loss over the update's rows or targets"),
        ("undivided", 2, "it adds up its 2 micro-batches' mean losses without dividing"),
    ],
)
def test_a_mixups_sum_or_undivided_window_fails_mean_vs_sum(form: str, k: int, names: str) -> None:
    if form == "summed":  # measured directly: the two summed losses apply the rows' sum
        assert _measured(form) == pytest.approx(6, rel=1e-5)
        assert _measured("hard") == pytest.approx(1.0, rel=1e-5)
    report = _mixup(form, k=k)
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert names in report.failures[0].message, str(report)
