"""A batch of a pass that trained nothing, made and fed with no event of the passes that train
between, within the life of one or after its end, or fed after an update's last backward()
and before its step from another loader, is the loop's own: an evaluation on a few batches
after each step, at the top of the body, after an epoch or before the step, a fixed batch, a
validation iterator kept across steps, `next(iter(loader))` for an accuracy line, beside one
loader that trains or two. Its forwards, grad on and in train mode, were micro-batches thrown
away (false alarms that predate the ledger). What still fails: a batch thrown away in the
pass that trains, a memory's batch fetched after the batch's forward, a pass per micro-batch
(its last forgotten after the window's last backward() or not), a loader zipped with the one
that trains whose batch is fed after the first's."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from linreg import audit


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def sample() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([0.5, -1.0, 2.0]), torch.tensor(1)


LOOP = {"model": model, "example": sample, "max_examples": 15}


def estimates_the_loss_on_two_batches_after_each_step(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int, every: int = 1
) -> None:
    """Correct (every=1): after each step, the loss on the first two batches of a shuffled
    evaluation loader over the training set (a `break`), inline, grad on, train mode. Twin
    (every=2): every other training batch forwarded and thrown away."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    estimate = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for i, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y)
            if i % every:
                continue
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses = []
            for j, (xe, ye) in enumerate(estimate):
                if j == 2:
                    break
                losses.append(F.cross_entropy(model(xe), ye).item())
            print(f"step {i}: {sum(losses) / len(losses):.3f}", end="\r")


def prints_the_accuracy_on_a_first_batch(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    """Correct: after each step, the accuracy on `next(iter(loader))` of the loader it
    trains on (a second pass, cut short at its first batch), grad on, train mode."""
    for epoch in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            xs, ys = next(iter(loader))
            accuracy = (model(xs).argmax(-1) == ys).float().mean()
            print(f"epoch {epoch}: accuracy {accuracy.item():.2f}", end="\r")


def logs_a_few_batches_loss_first(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Correct: at the top of each step's body, between the batch's draw and its forward,
    the summed loss on two batches of an evaluation loader (itertools.islice)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    estimate = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for x, y in loader:
            before = sum(
                F.cross_entropy(model(xe), ye, reduction="sum").item()
                for xe, ye in itertools.islice(estimate, 2)
            )
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            print(before, end="\r")


def recalls_a_memory_batch_and_drops_its_loss(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Twin: after each batch's forward, a rehearsal batch from a fresh pass over a memory
    of the first two rows, whose loss is printed and never added to the batch's."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    memory = DataLoader(Subset(dataset, range(min(2, len(dataset)))), batch_size=2, shuffle=True)
    for _ in range(num_epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            mx, my = next(iter(memory))
            print(F.cross_entropy(model(mx), my).item(), end="\r")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def checks_a_validation_batch_after_each_step(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Correct: after each step, the loss on the next batch of a validation iterator kept
    across steps (begun again when used up), grad on, train mode: its pass's draws come
    between the training pass's, each after a step."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    validation = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    batches = iter(validation)
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            try:
                xv, yv = next(batches)
            except StopIteration:
                batches = iter(validation)
                xv, yv = next(batches)
            print(F.cross_entropy(model(xv), yv).item(), end="\r")


def zips_two_loaders_and_drops_the_second_loss(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Twin: two shuffled loaders over the data, zipped; the second batch's loss is printed
    and never added to the first's."""
    first = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    second = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for (x, y), (x2, y2) in zip(first, second, strict=True):
            loss = F.cross_entropy(model(x), y)
            dropped = F.cross_entropy(model(x2), y2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            print(loss.item(), dropped.item(), end="\r")


def checks_the_validation_loss_before_stepping(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Correct: on every other step, after backward() and before optimizer.step(), the loss
    on the first batch of a validation loader (for a plateau check), grad on, train mode."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    validation = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if i % 2 == 0:
                xv, yv = next(iter(validation))
                print(F.cross_entropy(model(xv), yv).item(), end="\r")
            optimizer.step()


def scores_a_fixed_batch_before_stepping(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Correct: one evaluation batch drawn before training, scored at every step after
    backward() and the clipping, before optimizer.step(), grad on, train mode."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    xe, ye = next(iter(DataLoader(dataset, batch_size=batch_size, shuffle=True)))
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
            print(F.cross_entropy(model(xe), ye).item(), end="\r")
            optimizer.step()


def trains_on_two_zipped_loaders_and_evaluates(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Correct: two shuffled loaders zipped, both batches' rows in one mean; after each step,
    the loss on the first batch of a third loader (a `break`), grad on, train mode."""
    first = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    second = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    estimate = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for (x, y), (x2, y2) in zip(first, second, strict=True):
            total = F.cross_entropy(model(x), y, reduction="sum")
            total = total + F.cross_entropy(model(x2), y2, reduction="sum")
            optimizer.zero_grad()
            (total / (len(y) + len(y2))).backward()
            optimizer.step()
            for xe, ye in estimate:
                print(F.cross_entropy(model(xe), ye).item(), end="\r")
                break


def rehearses_each_step_and_evaluates(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Correct: after each batch's forward, a rehearsal batch from a fresh pass over a memory
    of the first rows, both batches' rows in one mean; after each step, the loss on the first
    batch of an evaluation loader, grad on, train mode."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    memory = DataLoader(Subset(dataset, range(min(4, len(dataset)))), batch_size=2, shuffle=True)
    estimate = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for x, y in loader:
            total = F.cross_entropy(model(x), y, reduction="sum")
            mx, my = next(iter(memory))
            total = total + F.cross_entropy(model(mx), my, reduction="sum")
            optimizer.zero_grad()
            (total / (len(y) + len(my))).backward()
            optimizer.step()
            xe, ye = next(iter(estimate))
            print(F.cross_entropy(model(xe), ye).item(), end="\r")


def forgets_the_last_micro_batchs_backward(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Twin: three micro-batches a step, each next(iter(loader)) of a shuffled loader (a new
    pass), backward() on all but the last, which is forwarded after the window's last
    backward() and thrown away."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs * len(loader)):
        optimizer.zero_grad()
        for micro in range(3):
            x, y = next(iter(loader))
            loss = F.cross_entropy(model(x), y) / 3
            if micro < 2:
                loss.backward()
        optimizer.step()


def rehearses_a_memory_and_logs_its_loss(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Twin: a memory of the first two rows, its iterator kept across steps (begun again when
    used up) and drawn at the top of the body; its batch's loss, computed after the batch's,
    is printed and never added to it."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    memory = DataLoader(Subset(dataset, range(min(2, len(dataset)))), batch_size=2, shuffle=True)
    recalled = iter(memory)
    for _ in range(num_epochs):
        for x, y in loader:
            try:
                mx, my = next(recalled)
            except StopIteration:
                recalled = iter(memory)
                mx, my = next(recalled)
            loss = F.cross_entropy(model(x), y)
            print(F.cross_entropy(model(mx), my).item(), end="\r")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def zips_with_a_listed_second_loader_and_drops_it(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    """Twin: a second shuffled loader listed up front each epoch (a whole pass before any
    step), zipped with the first; its batch's loss is left out of backward()."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        second = list(DataLoader(dataset, batch_size=batch_size, shuffle=True))
        for (x, y), (x2, y2) in zip(loader, second, strict=True):
            loss = F.cross_entropy(model(x), y)
            dropped = F.cross_entropy(model(x2), y2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            print(dropped.item(), end="\r")


@pytest.mark.parametrize(
    "loop",
    [
        checks_a_validation_batch_after_each_step,
        checks_the_validation_loss_before_stepping,
        scores_a_fixed_batch_before_stepping,
        trains_on_two_zipped_loaders_and_evaluates,
        rehearses_each_step_and_evaluates,
        estimates_the_loss_on_two_batches_after_each_step,
        prints_the_accuracy_on_a_first_batch,
        logs_a_few_batches_loss_first,
    ],
)
def test_a_pass_cut_short_between_the_training_passs_events_feeds_no_update(
    loop: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    report = audit.training_loop(loop, **LOOP)
    assert report.ok and not report.error, str(report)


@pytest.mark.parametrize(
    "loop",
    [
        functools.partial(estimates_the_loss_on_two_batches_after_each_step, every=2),
        recalls_a_memory_batch_and_drops_its_loss,
        zips_two_loaders_and_drops_the_second_loss,
        rehearses_a_memory_and_logs_its_loss,
        zips_with_a_listed_second_loader_and_drops_it,
        forgets_the_last_micro_batchs_backward,
    ],
)
def test_a_batch_thrown_away_beside_a_pass_cut_short_still_fails(
    loop: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The training pass's own batch thrown away, a memory's batch drawn after the batch's
    forward or fed after it, a zipped loader's batch fed after the batch's (inside the update
    the training batch opened; the second loader listed up front or not), and a micro-batch of
    the loader that trains fed after the window's last backward(), weigh 0 in their update."""
    report = audit.training_loop(loop, **LOOP)
    assert [f.pitfall for f in report.failures] == ["micro-batch-accumulation"], str(report)
    assert "no backward() reached" in report.failures[0].message, str(report)


def updates_of(loop: Any, num_epochs: int) -> list[list[int]]:
    """Return the rows of the forwards each update of loop(model, dataset, optimizer,
    num_epochs, batch_size=2) consumed, watched directly (6 distinct rows, lr 0.1)."""
    from linreg.kinds.training_loop.hooks import watching

    torch.manual_seed(0)
    net = model()
    data = torch.utils.data.TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3))
    with watching(net) as seen:
        seen.handed = len(data)  # as the audit counts the rows it hands a loop
        loop(net, data, torch.optim.SGD(net.parameters(), lr=0.1), num_epochs, 2)
    return [step.sizes for step in seen.steps]


def evaluates_after_each_epoch(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        x, y = next(iter(loader))
        print(F.cross_entropy(model(x), y).item(), end="\r")


def evaluates_after_each_epochs_last_step(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(num_epochs):
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if i == len(loader) - 1:
                xe, ye = next(iter(loader))
                print(F.cross_entropy(model(xe), ye).item(), end="\r")


def takes_each_micro_batch_from_a_new_pass(
    model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int, batch_size: int
) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for _ in range(3 * num_epochs):
        optimizer.zero_grad()
        for micro in range(2):
            x, y = next(iter(loader))
            loss = F.cross_entropy(model(x), y)
            if micro:
                loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "loop", [evaluates_after_each_epoch, evaluates_after_each_epochs_last_step]
)
def test_an_evaluation_cut_short_after_an_epoch_feeds_the_next_update_nothing(
    loop: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """An evaluation on a pass cut short after an epoch (its pass ended) or at its last step
    (before it ended) feeds the next epoch's first update nothing: each update consumed its
    batch alone."""
    assert updates_of(loop, 2) == [[2]] * 6


def test_a_pass_per_micro_batch_and_a_zipped_pass_still_feed_their_updates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pass per micro-batch (none ended) feeds each update both micro-batches; so does a
    second pass zipped with the first, whose batch is fed after the first's (a window open),
    its last batch too (its pass is whole, but its draws interleave the first's), and a
    memory's batch drawn after the batch's forward, before this update's backward() (the
    last update's came before it): the rows of a batch thrown away weigh 0 there."""
    assert updates_of(takes_each_micro_batch_from_a_new_pass, 1) == [[2, 2]] * 3
    assert updates_of(zips_two_loaders_and_drops_the_second_loss, 1) == [[2, 2]] * 3
    assert updates_of(recalls_a_memory_batch_and_drops_its_loss, 1) == [[2, 2]] * 3
