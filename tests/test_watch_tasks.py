"""The watch on multi-task training: a shared trunk, a head per task, each task's batches from a
DataLoader of its own and each task's loss its own backward(), then one optimizer step. The
update applies the sum of the tasks' means, as `(loss_a + loss_b).backward()` would. Read as one
objective over both tasks' rows, the correct loop failed mean-vs-sum at 2 times the mean (code
review cr29's P3); each task is now a term of its own, the mean of its own rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit.watcher import watch


def _multitask(
    bug: str = "", classify: bool = True, rows: int = 50, seen: list[torch.Tensor] | None = None
) -> None:
    """Two tasks of `rows` rows each, batches of 8 (the last of each epoch short), zipped; task
    a classifies (cross_entropy) or regresses (mse_loss, as task b does). bug: "nominal" (task
    b's summed loss divided by the batch size, the short batch too), "summed" (task b's loss a
    sum). seen: the trunk's .grad at each step (lr 0)."""
    gen = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(rows, 6, generator=gen), torch.randn(rows, 6, generator=gen)
    ya = (xa[:, 0] > 0).long() if classify else xa[:, :1] * 2
    loaders = [
        DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
        for x, y in ((xa, ya), (xb, xb[:, 1:2] * 3))
    ]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk = nn.Sequential(nn.Linear(6, 12), nn.Tanh())
        head_a, head_b = nn.Linear(12, 2 if classify else 1), nn.Linear(12, 1)
    params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05 if seen is None else 0.0)
    loss_a = F.cross_entropy if classify else F.mse_loss
    for _ in range(2):
        for (a, target_a), (b, target_b) in zip(*loaders, strict=True):
            optimizer.zero_grad()
            loss_a(head_a(trunk(a)), target_a).backward()
            out = head_b(trunk(b))
            if bug == "nominal":
                loss_b = F.mse_loss(out, target_b, reduction="sum") / 8
            else:
                loss_b = F.mse_loss(out, target_b, reduction="sum" if bug else "mean")
            loss_b.backward()
            if seen is not None:
                seen.append(trunk[0].weight.grad.clone())
                seen.append(
                    torch.autograd.grad(
                        loss_a(head_a(trunk(a)), target_a) + F.mse_loss(head_b(trunk(b)), target_b),
                        trunk[0].weight,
                    )[0]
                )
            optimizer.step()


@pytest.mark.parametrize("classify", [True, False], ids=["ce-and-mse", "mse-twice"])
def test_tasks_each_its_own_backward_on_a_shared_trunk_are_each_the_mean_of_their_rows(
    classify: bool,
) -> None:
    """The correct loop passes, with its tasks of two functions or of one (then told apart by
    their datasets, whose losses reach different heads); task b's nominal divisor on the
    epoch's short batch fails short-last-batch, and its sum mean-vs-sum, each naming the term."""
    with watch(steps=14) as reports:
        _multitask(classify=classify)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    term = "mse_loss term" if classify else "mse_loss (dataset 2 of 2) term"
    for bug, pitfall in (("nominal", "short-last-batch"), ("summed", "mean-vs-sum")):
        with watch(steps=14) as reports:
            _multitask(bug, classify=classify)
        report = reports[0]
        assert [r.pitfall for r in report.failures] == [pitfall], str(report)
        assert f"its {term}" in report.failures[0].message, str(report)


def test_the_trunk_of_tasks_each_its_own_backward_applies_the_sum_of_their_means() -> None:
    """Measured directly: what the two backward() calls leave in the trunk's .grad is the
    gradient of the tasks' losses added, each the mean of its own rows (the watch's reading)."""
    seen: list[torch.Tensor] = []
    _multitask(seen=seen, rows=16)
    assert len(seen) == 8
    for left, added in zip(seen[::2], seen[1::2], strict=True):
        torch.testing.assert_close(left, added)
