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
    bug: str = "", rows: int = 50, k: int = 1, seen: list[torch.Tensor] | None = None
) -> None:
    """Two tasks of `rows` rows each, batches of 8 (the last of each epoch short), zipped: task
    a classifies (cross_entropy), task b regresses (mse_loss); a step every k batches and at
    the epoch's end, each loss divided by its window's batches. bug: "nominal" (task b's
    summed loss divided by the batch size, the short batch too), "summed" (task b's loss a
    sum), "undivided" (neither divided by its window's batches), "nominal-window" (both
    divided by k, the epoch's short window too).
    seen: the trunk's .grad at each step, beside the gradient of the two losses added (lr 0)."""
    gen = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(rows, 6, generator=gen), torch.randn(rows, 6, generator=gen)
    loaders = [
        DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
        for x, y in ((xa, (xa[:, 0] > 0).long()), (xb, xb[:, 1:2] * 3))
    ]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk = nn.Sequential(nn.Linear(6, 12), nn.Tanh())
        head_a, head_b = nn.Linear(12, 2), nn.Linear(12, 1)
    params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05 if seen is None else 0.0)
    batches = len(loaders[0])
    for _ in range(2):
        for i, ((a, target_a), (b, target_b)) in enumerate(zip(*loaders, strict=True)):
            window = min(k, batches - (i - i % k))
            div = 1 if bug == "undivided" else k if bug == "nominal-window" else window
            (F.cross_entropy(head_a(trunk(a)), target_a) / div).backward()
            out = head_b(trunk(b))
            if bug == "nominal":
                loss_b = F.mse_loss(out, target_b, reduction="sum") / 8
            else:
                loss_b = F.mse_loss(out, target_b, reduction="sum" if bug == "summed" else "mean")
            (loss_b / div).backward()
            if (i + 1) % k and i + 1 < batches:
                continue
            if seen is not None:
                seen.append(trunk[0].weight.grad.clone())
                both = F.cross_entropy(head_a(trunk(a)), target_a) + F.mse_loss(
                    head_b(trunk(b)), target_b
                )
                seen.append(torch.autograd.grad(both, trunk[0].weight)[0])
            optimizer.step()
            optimizer.zero_grad()


def test_tasks_each_its_own_backward_on_a_shared_trunk_are_each_the_mean_of_their_rows() -> None:
    """The correct loop passes; task b's nominal divisor on the epoch's short batch fails
    short-last-batch, and its sum mean-vs-sum, each naming the term."""
    with watch(steps=14) as reports:
        _multitask()
    assert reports[0].ok and not reports[0].error, str(reports[0])
    for bug, pitfall in (("nominal", "short-last-batch"), ("summed", "mean-vs-sum")):
        with watch(steps=14) as reports:
            _multitask(bug)
        report = reports[0]
        assert [r.pitfall for r in report.failures] == [pitfall], str(report)
        assert "its mse_loss term" in report.failures[0].message, str(report)


def test_tasks_accumulated_undivided_each_apply_their_windows_count_and_fail() -> None:
    """Each task's term on its own is a coefficient of the code's (a task's weight); every
    task at k times its mean over its k micro-batches, and at 1 on the epoch's window of one
    batch, is an accumulation window never divided by its count (code review cr30: the old
    whole-update reading named it, the terms' did not). Where every window holds k, a weight
    of k on each task reads the same (code review cr31): not named. Divided by its window's
    batches, the same loop passes."""
    for rows in (56, 64):  # 7 batches an epoch: windows of 2, 2, 2, 1; 8: of 2 alone
        with watch(steps=8) as reports:
            _multitask(rows=rows, k=2)
        assert reports[0].ok and not reports[0].error, str(reports[0])
        with watch(steps=8) as reports:
            _multitask("undivided", rows=rows, k=2)
        report = reports[0]
        assert [r.pitfall for r in report.failures] == (["mean-vs-sum"] if rows == 56 else [])
        if rows == 56:
            assert "applies 2 times the mean of its rows over its 2" in str(report), str(report)
    # divided by k on the short window too: each task's term there applies half its full
    # windows' coefficient (held-out review 34: not judged, the task's term on half of each
    # update's micro-batches alone)
    with watch(steps=8) as reports:
        _multitask("nominal-window", rows=56, k=2)
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "divides by a full update's 2 micro-batches where it took 1" in str(report)


def test_the_trunk_of_tasks_each_its_own_backward_applies_the_sum_of_their_means() -> None:
    """Measured directly: what the two backward() calls leave in the trunk's .grad is the
    gradient of the tasks' losses added, each the mean of its own rows (the watch's reading)."""
    seen: list[torch.Tensor] = []
    _multitask(seen=seen, rows=16)
    assert len(seen) == 8
    for left, added in zip(seen[::2], seen[1::2], strict=True):
        torch.testing.assert_close(left, added)


def _distilled(summed: bool, retained: bool = False) -> None:
    """A student distilled from a fixed teacher, its cross-entropy on the labels and its KL
    term on the teacher's softened outputs each its own backward() (two forwards; retained:
    one, its graph kept for the second), one step; 50 rows in batches of 8 (the last of 2).
    summed: its cross-entropy a sum (a bug)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 10, generator=gen)
    data = TensorDataset(x, (x[:, :3].sum(1) > 0).long())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
        student = nn.Linear(10, 2)
    teacher.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        for xb, yb in DataLoader(data, batch_size=8, shuffle=True, generator=gen):
            optimizer.zero_grad()
            soft = F.softmax(teacher(xb) / 2, 1)
            logits = student(xb)
            ce = F.cross_entropy(logits, yb, reduction="sum" if summed else "mean")
            (0.5 * ce).backward(retain_graph=retained)
            again = logits if retained else student(xb)
            kl = F.kl_div(F.log_softmax(again / 2, 1), soft, reduction="batchmean")
            (0.5 * 4 * kl).backward()
            optimizer.step()


@pytest.mark.parametrize("retained", [False, True], ids=["two-forwards", "retained-graph"])
def test_a_distillations_two_backward_calls_are_two_terms_and_its_labels_term_is_judged(
    retained: bool,
) -> None:
    """Two backward() calls after one fetched batch, the second on a target the code made
    (the teacher's): the whole update was read as terms of one objective, its weights never
    judged, so a summed cross-entropy exited 0 (code review cr28), and on one forward's
    retained graph too (held-out review 34). Losses of two functions are two terms: the KL
    term's weight is the code's, the cross-entropy's is judged."""
    with watch(steps=14) as reports:
        _distilled(summed=False, retained=retained)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    with watch(steps=14) as reports:
        _distilled(summed=True, retained=retained)
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "its cross_entropy term" in report.failures[0].message, str(report)
