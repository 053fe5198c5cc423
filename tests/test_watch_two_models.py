"""The watch on two models trained side by side, each with its own loss and optimizer, both
backward() calls before both steps (an ensemble's members, a co-trained pair): the two steps
are one update, and its two losses are two objectives, each the mean of its own rows. Read as
one objective over both losses' rows, the correct loop failed mean-vs-sum ("2 times the mean");
and a second model's forgotten zero_grad passed grad-zeroing, its .grad read only where the
first model's backward() began (the note of stop 53)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch


def _members(
    bug: str = "", rows: int = 40, seen: Callable[[nn.Module, int], None] | None = None
) -> None:
    """Two regressors fit to the same batches, as an ensemble trains its members: each its own
    optimizer, both zeroed, both losses' backward(), both stepped. bug: "together" (one
    backward() of the two losses added: correct too), "summed" (the second member's loss a sum),
    "unzeroed" (its zero_grad forgotten), "nominal" (the first's summed loss divided by the
    batch size, the short last batch too)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(rows, generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        members = [nn.Linear(3, 1), nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))]
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=0.05 if seen is None else 0.0) for m in members
    ]
    for _ in range(2):
        for i, (xb, yb) in enumerate(loader):
            for j, optimizer in enumerate(optimizers):
                if not (bug == "unzeroed" and j == 1):
                    optimizer.zero_grad()
            first, second = (m(xb).squeeze(1) for m in members)
            losses = [
                F.mse_loss(first, yb, reduction="sum") / 8
                if bug == "nominal"
                else F.mse_loss(first, yb),
                F.mse_loss(second, yb, reduction="sum" if bug == "summed" else "mean"),
            ]
            if bug == "together":
                (losses[0] + losses[1]).backward()
            else:
                for loss in losses:
                    loss.backward()
            if seen is not None:
                seen(members[1], i)
            for optimizer in optimizers:
                optimizer.step()


@pytest.mark.parametrize(
    ("bug", "rows", "named"),
    [
        ("", 40, []),
        ("", 42, []),
        ("together", 42, []),
        ("summed", 40, ["mean-vs-sum"]),
        ("unzeroed", 40, ["grad-zeroing"]),
        ("nominal", 42, ["short-last-batch"]),
    ],
)
def test_two_models_stepped_together_are_each_judged_on_their_own_rows(
    bug: str, rows: int, named: list[str]
) -> None:
    with watch(steps=12) as reports:
        _members(bug, rows)
    report = reports[0]
    assert not report.error, str(report)
    assert [r.pitfall for r in report.failures] == named, str(report)
    if bug == "summed":  # the second member's 8 rows, summed: 8 times its mean
        assert "applied 8 times the mean" in str(report), str(report)


def test_the_second_members_forgotten_zero_grad_is_measured_directly() -> None:
    """Unzeroed, the second member's .grad at each step holds the batches before it too."""
    held: dict[str, list[torch.Tensor]] = {"": [], "unzeroed": []}
    for bug, grads in held.items():
        _members(bug, seen=lambda m, i, g=grads: g.append(m[0].weight.grad.clone()))
    right, unzeroed = held[""], held["unzeroed"]
    torch.testing.assert_close(unzeroed[0], right[0])
    torch.testing.assert_close(unzeroed[1], right[0] + right[1])  # (lr 0: the same batches)


def test_heads_on_a_frozen_trunk_averaged_into_one_loss_pass() -> None:
    """Two heads over a frozen trunk share no param stepped: each head's objective is its own
    cross-entropy, weighed by the code's 1/2 on every update alike (the loss's own constant)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(42, 5, generator=gen)
    data = TensorDataset(x, (x[:, 0] > 0).long(), (x[:, 1] > 0).long())
    trunk = nn.Sequential(nn.Linear(5, 6), nn.ReLU()).requires_grad_(False)
    heads = nn.ModuleList([nn.Linear(6, 2), nn.Linear(6, 2)])
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.1)
    with watch(steps=12) as reports:
        for _ in range(2):
            for xb, a, b in DataLoader(data, batch_size=8, shuffle=True, generator=gen):
                optimizer.zero_grad()
                h = trunk(xb)
                ((F.cross_entropy(heads[0](h), a) + F.cross_entropy(heads[1](h), b)) / 2).backward()
                optimizer.step()
    assert reports[0].ok and not reports[0].error, str(reports[0])
