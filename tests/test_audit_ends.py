"""The training-loop audit ends, names what happened, and leaves nothing behind.

A loop that never returns is stopped at its time limit; non-finite gradients are named as such;
Ctrl-C ends the audit with the results so far. After every way an audit can end (pass, fail,
the loop raising, timing out, interrupted) no hook of the audit's is left, torch's, Python's and
numpy's RNGs and grad mode are as before, and a model the factory hands out is as the user left
it (Dropout's p, BatchNorm's mode, each .grad).
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import clip_grad
from torch.optim import optimizer as optim_module
from torch.utils.data.dataloader import _BaseDataLoaderIter

from linreg import audit
from linreg._plain import plain
from linreg.kinds.training_loop import WIDE
from linreg.kinds.training_loop.labels import BROADCASTING

Loop = Callable[..., None]


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.3), nn.BatchNorm1d(4), nn.Linear(4, 2))


SAMPLE = (torch.tensor([0.5, -1.0, 2.0]), torch.tensor(1))


def fit(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(X), y).backward()
            optimizer.step()


def summed(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(X), y, reduction="sum").backward()
            optimizer.step()


def hangs_on_one_batch(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """A step budget that one batch never reaches: it spins."""
    fit(model, loader, optimizer, num_epochs)
    while len(loader) == 1:
        time.sleep(0.01)


def raises_on_one_batch(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    fit(model, loader, optimizer, num_epochs)
    if len(loader) == 1:
        raise ValueError("one batch")


def interrupted_on_one_batch(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    fit(model, loader, optimizer, num_epochs)
    if len(loader) == 1:
        raise KeyboardInterrupt  # as Ctrl-C would, inside the user's loop


def nan_on_one_batch(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Weighs each batch by (batches - 1) / (batches - 1): 0 / 0 when the loader has one."""
    weight = torch.tensor(float(len(loader) - 1))
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            (F.cross_entropy(model(X), y) * weight / weight).backward()
            optimizer.step()


def state() -> dict[str, Any]:
    """What an audit must leave as it found it."""
    return {
        "torch rng": torch.get_rng_state(),
        "python rng": random.getstate(),
        "numpy rng": np.random.get_state()[1].copy(),
        "grad mode": torch.is_grad_enabled(),
        "pre hooks": len(optim_module._global_optimizer_pre_hooks),
        "post hooks": len(optim_module._global_optimizer_post_hooks),
        "unscale_": torch.amp.GradScaler.unscale_,
        "a DataLoader pass's __next__": _BaseDataLoaderIter.__next__,
        "what torch's clipping groups grads with": clip_grad._group_tensors_by_device_and_dtype,
        "the losses of values": [getattr(F, name) for name in BROADCASTING],
        "torch threads": torch.get_num_threads(),
    }


@pytest.fixture
def three_threads() -> Any:
    """The user's torch runs on 3 threads (not the test worker's 1): the audit must use 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    def equal(x: Any, y: Any) -> bool:
        if isinstance(x, (torch.Tensor, np.ndarray)):
            return bool((x == y).all())
        return bool(x == y) if not callable(x) else x is y

    return [k for k in a if not equal(a[k], b[k])]


def test_a_loop_that_never_returns_is_refused_at_its_time_limit() -> None:
    def spins(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        while True:
            time.sleep(0.01)

    with pytest.raises(audit.TargetError, match=r"did not return within 0\.5 s and made no update"):
        audit.training_loop(spins, model=net, example=SAMPLE, timeout=0.5)


def test_a_loop_that_hangs_on_some_data_is_reported_at_its_time_limit() -> None:
    report = audit.training_loop(
        hangs_on_one_batch, model=net, example=SAMPLE, timeout=0.5, max_examples=10
    )
    assert report.error.startswith("the loop did not return within 0.5 s"), str(report)
    assert report.failures == ()
    assert len(report.error_example["rows"]) <= report.error_example["batch_size"]


def test_non_finite_gradients_are_named_not_taken_for_another_mistake() -> None:
    def always_nan(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for X, y in loader:
                optimizer.zero_grad()
                (F.cross_entropy(model(X), y) * float("nan")).backward()
                optimizer.step()

    with pytest.raises(audit.TargetError, match=r"not finite \(nan\)") as refused:
        audit.training_loop(always_nan, model=net, example=SAMPLE)
    assert "outside optimizer.step" not in str(refused.value)
    report = audit.training_loop(nan_on_one_batch, model=net, example=SAMPLE, max_examples=20)
    assert "not finite (nan)" in report.error, str(report)
    assert report.failures == ()


ENDINGS: list[tuple[str, Loop, dict[str, Any]]] = [
    ("pass", fit, {}),
    ("fail", summed, {}),
    ("raised", raises_on_one_batch, {}),
    ("timed out", hangs_on_one_batch, {"timeout": 0.5}),
    ("interrupted", interrupted_on_one_batch, {}),
    ("not finite", nan_on_one_batch, {}),
]


@pytest.mark.parametrize("ending, loop, options", ENDINGS, ids=[e[0] for e in ENDINGS])
@pytest.mark.usefixtures("three_threads")
def test_every_way_an_audit_ends_leaves_the_users_state_as_it_was(
    ending: str, loop: Loop, options: dict[str, Any]
) -> None:
    mine = net()  # the user's own model, handed out by the factory
    mine[2].train()
    for p in mine.parameters():
        p.grad = torch.full_like(p, 7.0)
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = state()
    report = audit.training_loop(
        loop, model=lambda: mine, example=SAMPLE, max_examples=10, **options
    )
    assert same(before, state()) == []
    assert mine[1].p == 0.3 and mine[2].training and "train" not in mine[2].__dict__
    assert all(bool((p.grad == 7.0).all()) for p in mine.parameters())
    assert report.ok == (ending == "pass"), str(report)
    if ending == "interrupted":
        assert report.error.startswith("interrupted (Ctrl-C)"), str(report)


def test_a_loss_that_returns_no_tensor_is_refused_once_in_one_line() -> None:
    def as_text(y_hat: torch.Tensor, y: torch.Tensor) -> str:
        return f"{float(((y_hat - y) ** 2).mean()):.3f}"

    with pytest.raises(audit.TargetError, match=r"as_text returned str on y_hat and y"):
        audit.loss(as_text)


def test_the_audited_code_runs_on_one_torch_thread_and_the_users_count_comes_back(
    three_threads: None,
) -> None:
    seen: set[int] = set()

    def counting_fit(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        seen.add(torch.get_num_threads())
        fit(model, loader, optimizer, num_epochs)

    def counting_squared_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.add(torch.get_num_threads())
        return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2

    assert audit.training_loop(counting_fit, model=net, example=SAMPLE, max_examples=5).ok
    assert audit.loss(counting_squared_loss, max_examples=5).ok
    assert seen == {1}
    assert torch.get_num_threads() == 3


def test_the_time_limit_of_a_users_loop_is_derived_from_its_first_run() -> None:
    from linreg.kinds import training_loop

    def slow_fit(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        time.sleep(0.25)  # a first small run of a quarter second: a limit of 12.5 s or more
        fit(model, loader, optimizer, num_epochs)

    target = audit.target_for("training-loop", slow_fit, model=net, example=SAMPLE)
    assert training_loop.limit_of(target) >= 50 * 0.25 > training_loop.FLOOR


def evaluates_after_every_step(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    """Trains, and after every step spends a while on an evaluation (a forecast, a sample)."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(X), y).backward()
            optimizer.step()
            time.sleep(0.03)  # the evaluation: longer, over a run, than the limit allows


def test_the_time_limit_counts_from_the_last_update_so_a_loop_making_progress_ends_well() -> None:
    report = audit.training_loop(
        evaluates_after_every_step, model=net, example=SAMPLE, timeout=0.1, max_examples=2
    )
    assert report.ok, str(report)


def evaluates_briefly(
    model: nn.Module,
    loader: Any,
    optimizer: Any,
    num_epochs: int,
    nominal: bool = False,
    pause: float = 0.001,
) -> None:
    """Evaluates for a moment (pause s) after every step; nominal=True: the twin, each batch's
    summed loss over the nominal batch_size."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            if nominal:
                loss = F.cross_entropy(model(X), y, reduction="sum") / loader.batch_size
            else:
                loss = F.cross_entropy(model(X), y)
            loss.backward()
            optimizer.step()
            time.sleep(pause)


def evaluates_briefly_nominal(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    evaluates_briefly(model, loader, optimizer, num_epochs, nominal=True)


def test_a_slow_loop_at_default_examples_runs_fewer_says_so_and_still_finds_its_mistake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no time in the budget, every property runs the fewest examples and passes over the
    rest; the report says how many, why, and that the aim was missed; the twin's mistake is
    still found."""
    from linreg.audit import budget

    monkeypatch.setattr(budget, "BUDGET", 0.0)
    report = audit.training_loop(evaluates_briefly, model=net, example=SAMPLE)
    assert report.ok, str(report)
    assert {r.examples for r in report.results} == {budget.FEWEST}
    ran = f"properties ran {budget.FEWEST}-{budget.FEWEST} examples, the fewest each runs"
    assert ran in report.note and "past the 0 s aimed at" in report.note, report.note
    assert report.to_dict()["note"] == report.note and report.note in str(report)

    twin = audit.training_loop(evaluates_briefly_nominal, model=net, example=SAMPLE)
    assert [r.pitfall for r in twin.failures] == ["short-last-batch"], str(twin)

    # asked for, the examples are run whatever the time
    # (micro-batch-accumulation's wide run, made last, counts too)
    asked = audit.training_loop(evaluates_briefly, model=net, example=SAMPLE, max_examples=5)
    counts = {r.pitfall: r.examples for r in asked.results}
    assert not asked.note and counts.pop("micro-batch-accumulation") == 6, str(asked)
    assert set(counts.values()) == {5}, str(asked)


def evaluates_at_length(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Evaluates for 5 ms after every step (over the test's SLOW): its examples hold fewer."""
    evaluates_briefly(model, loader, optimizer, num_epochs, pause=0.005)


def evaluates_at_length_nominal(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    evaluates_briefly(model, loader, optimizer, num_epochs, nominal=True, pause=0.005)


def test_a_loop_slow_in_each_update_is_run_on_small_runs_and_its_twin_still_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from linreg.audit import budget
    from linreg.kinds.training_loop import probe

    fast = audit.training_loop(evaluates_briefly, model=net, example=SAMPLE, max_examples=3)
    assert "slow" not in fast.options, str(fast)  # about 2 ms an update: not slow at 50 ms
    monkeypatch.setattr(budget, "BUDGET", 0.0)  # the fewest examples: the test stays short
    monkeypatch.setattr(probe, "SLOW", 0.004)  # slow at 5 ms an update, not 50
    report = audit.training_loop(evaluates_at_length, model=net, example=SAMPLE, max_examples=2)
    assert report.ok, str(report)
    assert report.options["slow"] is True  # read from the probe's run, and shown
    twin = audit.training_loop(evaluates_at_length_nominal, model=net, example=SAMPLE, shrink=False)
    assert [r.pitfall for r in twin.failures] == ["short-last-batch"], str(twin)
    example = twin.failures[0].counterexample
    assert example["batch_size"] <= 3 and example["seed"] <= 1, example  # small runs


def _counted(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Return fn()'s result and the optimizer updates made while it ran."""
    updates = 0

    def count(*_: Any) -> None:
        nonlocal updates
        updates += 1

    hook = optim_module.register_optimizer_step_post_hook(count)
    try:
        return fn(), updates
    finally:
        hook.remove()


def test_a_slow_loops_audit_makes_a_few_updates_in_all_and_its_twins_first_run_fails_unshrunk(
    slow_at_5_ms: None,
) -> None:
    """However long a slow loop works after each update, its audit makes a fixed handful of
    updates, and waits for fewer pauses after them: the probe ends at its third; the first run
    holds two epochs of a full step and a short one; the second, its one epoch, is what
    exhausted-generator reads again; the references end at their one update. The twin fails
    on the first run, reported as found."""
    from linreg.kinds.training_loop import first_runs

    paused = 0

    def evaluates(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        nonlocal paused
        for _ in range(num_epochs):
            for X, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(X), y).backward()
                optimizer.step()
                paused += 1
                time.sleep(0.005)

    report, made = _counted(lambda: audit.training_loop(evaluates, model=net, example=SAMPLE))
    assert report.ok and report.options["slow"] is True, str(report)
    assert {r.examples for r in report.results} == {2}, str(report)  # the first runs alone
    # updates: the probe's 3, the first run's 4, the second's 2, a row's reference 1 each; the
    # pauses after them: 2 of the probe's (it ends at its third), the runs' 4 and 2
    assert (made, paused) == (11, 8), (made, paused)
    twin = audit.training_loop(evaluates_at_length_nominal, model=net, example=SAMPLE)
    assert [r.pitfall for r in twin.failures] == ["short-last-batch"], str(twin)
    options = audit.target_for(
        "training-loop", evaluates_at_length_nominal, model=net, example=SAMPLE
    ).options
    assert twin.failures[0].counterexample == plain(first_runs(options)[0]), str(twin)


@pytest.mark.parametrize("count", [None, 3], ids=["steps-each-batch", "windows-of-3"])
def test_one_long_gap_ends_the_probe_at_its_second_update_and_its_window_still_shows(
    slow_at_5_ms: None, monkeypatch: pytest.MonkeyPatch, count: int | None
) -> None:
    """A gap over LONG after the first update shows a slow loop at once: the probe ends at its
    second update (1 pause, not 2), and the window read from those two updates is the loop's
    (windows of 3 on the probe's epochs of 5 batches: a full one, then the epoch's 2)."""
    from linreg.kinds.training_loop import probe

    monkeypatch.setattr(probe, "LONG", 0.004)
    pauses: list[float] = []

    def evaluates(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        _windows_paused(model, loader, optimizer, num_epochs, count or 1, pauses)

    report, made = _counted(lambda: audit.training_loop(evaluates, model=net, example=SAMPLE))
    paused = len(pauses)
    assert report.ok and report.options["slow"] is True, str(report)
    assert report.options["accumulation_steps"] == (count or 1), str(report)
    # paused after: the probe's first update (it ends at its second), the first runs' 4 and
    # 2; not: the probe's second, a reference's one update for each kind of row, and with
    # windows the smallest epoch's probe (one update)
    assert (made - paused, paused) == (3 if count is None else 4, 7), (made, paused)
    twin = audit.training_loop(evaluates_at_length_nominal, model=net, example=SAMPLE)
    assert [r.pitfall for r in twin.failures] == ["short-last-batch"], str(twin)


def test_a_slow_loop_that_takes_a_count_waits_for_few_pauses_too(slow_at_5_ms: None) -> None:
    """A loop that takes an accumulation count: the probe's 3 updates (2 pauses); its smallest
    epoch, probed to its first update (no pause); the first run, at a drawn count of 3 a full
    window and a partial one of unequal micro-batches for two epochs (4 updates); its one
    epoch, the second run, which ends on a partial window however the loop counts them (2);
    a row's reference, one update each (no pause)."""
    pauses: list[float] = []

    def accumulates(
        model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
    ) -> None:
        _windows_paused(model, loader, optimizer, num_epochs, accumulation_steps, pauses)

    report, made = _counted(lambda: audit.training_loop(accumulates, model=net, example=SAMPLE))
    assert report.ok and report.options["slow"] is True, str(report)
    assert (made, len(pauses)) == (12, 8), (made, pauses)


def _windows_paused(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, k: int, pauses: list[float]
) -> None:
    """Correct: windows of k batches, each window's summed loss divided by its rows, and a
    pause of 5 ms after each update (noted in pauses)."""
    total = nn.CrossEntropyLoss(reduction="sum")
    for _ in range(num_epochs):
        batches = list(loader)
        for start in range(0, len(batches), k):
            window = batches[start : start + k]
            rows = sum(len(x) for x, _ in window)
            optimizer.zero_grad()
            for x, y in window:
                (total(model(x), y) / rows).backward()
            optimizer.step()
            pauses.append(0.005)
            time.sleep(0.005)


def zeroes_once_an_epoch(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: zero_grad once an epoch, not once a step (and a pause: slow)."""
    for _ in range(num_epochs):
        optimizer.zero_grad()
        for X, y in loader:
            F.cross_entropy(model(X), y).backward()
            optimizer.step()
            time.sleep(0.005)


def drops_the_left_over_window(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
) -> None:
    """Twin: steps on full windows alone; an epoch's left-over micro-batches go through
    backward() and the next zero_grad throws them away (and a pause: slow)."""
    total = nn.CrossEntropyLoss(reduction="sum")
    for _ in range(num_epochs):
        optimizer.zero_grad()
        batches = list(loader)
        for s in range(0, len(batches), accumulation_steps):
            window = batches[s : s + accumulation_steps]
            rows = sum(len(x) for x, _ in window)
            for x, y in window:
                (total(model(x), y) / rows).backward()
            if len(window) == accumulation_steps:
                optimizer.step()
                optimizer.zero_grad()
                time.sleep(0.005)


def counts_a_global_step(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
) -> None:
    """Twin: windows counted by a global step, across epochs (allowed), each divided by its
    rows; the run's last, partial window is never stepped (and a pause: slow)."""
    total = nn.CrossEntropyLoss(reduction="sum")
    global_step, rows = 0, 0
    optimizer.zero_grad()
    for _ in range(num_epochs):
        for x, y in loader:
            total(model(x), y).backward()
            global_step, rows = global_step + 1, rows + len(x)
            if global_step % accumulation_steps == 0:
                for p in model.parameters():
                    p.grad /= rows
                optimizer.step()
                optimizer.zero_grad()
                rows = 0
                time.sleep(0.005)


def divides_means(
    model: nn.Module,
    loader: Any,
    optimizer: Any,
    num_epochs: int,
    accumulation_steps: int,
    nominal: bool = False,
) -> None:
    """Twin: each micro-batch's mean loss over the window's batches (a mean of means), or with
    nominal=True over accumulation_steps (a nominal divisor on the epoch's short window too)
    (and a pause: slow)."""
    for _ in range(num_epochs):
        batches = list(loader)
        for s in range(0, len(batches), accumulation_steps):
            window = batches[s : s + accumulation_steps]
            optimizer.zero_grad()
            for x, y in window:
                parts = accumulation_steps if nominal else len(window)
                (F.cross_entropy(model(x), y) / parts).backward()
            optimizer.step()
            time.sleep(0.005)


def layered() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def unfreezes_late_never_zeroed(model: nn.Module, loader: Any, num_epochs: int) -> None:
    """Twin: the first layer's optimizer made at the second epoch (a late unfreezing), its
    grads never zeroed: zero_grad() on the head's optimizer alone (and a pause: slow)."""
    head = torch.optim.SGD(model[2].parameters(), lr=0.1)
    body = None
    for epoch in range(num_epochs):
        if epoch == 1:
            body = torch.optim.SGD(model[0].parameters(), lr=0.1)
        for x, y in loader:
            head.zero_grad()
            F.cross_entropy(model(x), y).backward()
            head.step()
            if body is not None:
                body.step()
            time.sleep(0.005)


def adds_means(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, accumulation_steps: int
) -> None:
    """Twin: each micro-batch's mean loss added up, undivided: every window k times (a short
    one fewer times) the mean (and a pause: slow)."""
    for _ in range(num_epochs):
        batches = list(loader)
        for s in range(0, len(batches), accumulation_steps):
            optimizer.zero_grad()
            for x, y in batches[s : s + accumulation_steps]:
                F.cross_entropy(model(x), y).backward()
            optimizer.step()
            time.sleep(0.005)


def a_budget_of_six(model: nn.Module, loader: Any, optimizer: Any, max_steps: int) -> None:
    """Twin: a step budget of its own, 6, whatever it is handed (and a pause: slow)."""
    batches = itertools.cycle(loader)
    for _ in range(6):
        x, y = next(batches)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        time.sleep(0.005)


@pytest.mark.parametrize(
    "twin, options, pitfall",
    [
        (zeroes_once_an_epoch, {}, "grad-zeroing"),
        (zeroes_once_an_epoch, {"drop_last": True}, "grad-zeroing"),
        (drops_the_left_over_window, {}, "short-last-batch"),
        (drops_the_left_over_window, {"accumulation_steps": 3}, "short-last-batch"),
        (drops_the_left_over_window, {"accumulation_steps": 2}, "short-last-batch"),
        (counts_a_global_step, {}, "short-last-batch"),
        (counts_a_global_step, {"accumulation_steps": 2}, "short-last-batch"),
        (counts_a_global_step, {"accumulation_steps": 2, "drop_last": True}, "short-last-batch"),
        (a_budget_of_six, {}, "exhausted-generator"),
        (divides_means, {}, "micro-batch-accumulation"),
        (functools.partial(divides_means, nominal=True), {}, "short-last-batch"),
        (unfreezes_late_never_zeroed, {"model": layered}, "grad-zeroing"),
    ],
    ids=[
        "zeroed-once",
        "zeroed-once-drop-last",
        "left-over-dropped",
        "left-over-dropped-k3",
        "left-over-dropped-k2",
        "global-step-last-window",
        "global-step-last-window-k2",
        "global-step-last-window-drop-last",
        "budget-of-its-own",
        "mean-of-means",
        "means-over-the-nominal-count",
        "unfrozen-late-never-zeroed",
    ],
)
def test_a_slow_loops_first_runs_alone_show_each_mistake(
    slow_at_5_ms: None, twin: Any, options: dict[str, Any], pitfall: str
) -> None:
    """Only the first runs judged (no time for more): a full step after a full step in every
    epoch, and for a count a partial last window."""
    report = audit.training_loop(twin, **{"model": net, "example": SAMPLE, **options})
    assert report.options["slow"] is True, str(report)
    assert pitfall in [r.pitfall for r in report.failures], str(report)


@pytest.mark.parametrize("options", [{}, {"accumulation_steps": 3}], ids=["drawn", "k3"])
def test_micro_batch_means_added_up_are_named_once_slow_or_not(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    """A scale of every window (its short one's too) is mean-vs-sum's alone."""
    fast = audit.training_loop(adds_means, model=net, example=SAMPLE, max_examples=10, **options)
    assert [r.pitfall for r in fast.failures] == ["mean-vs-sum"], str(fast)
    from linreg.audit import budget
    from linreg.kinds.training_loop import probe

    monkeypatch.setattr(budget, "BUDGET", 0.0)
    monkeypatch.setattr(probe, "SLOW", 0.004)
    slow = audit.training_loop(adds_means, model=net, example=SAMPLE, **options)
    assert slow.options["slow"] is True, str(slow)
    assert [r.pitfall for r in slow.failures] == ["mean-vs-sum"], str(slow)


def _slow_epoch(model: nn.Module, loader: Any, optimizer: Any) -> None:
    """One epoch of a plain loop, with a pause after each step (slow)."""
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        time.sleep(0.005)


def runs_one_epoch_more(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: range(num_epochs + 1)."""
    for _ in range(num_epochs + 1):
        _slow_epoch(model, loader, optimizer)


def steps_again_at_its_end(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: one more optimizer.step() once training is done, on the last batch's gradient."""
    for _ in range(num_epochs):
        _slow_epoch(model, loader, optimizer)
    optimizer.step()


def steps_again_after_each_epoch_past_the_first(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    """Twin: optimizer.step() at each epoch's end from the second on, where scheduler.step()
    was meant: the last gradient applied again."""
    for epoch in range(num_epochs):
        _slow_epoch(model, loader, optimizer)
        if epoch >= 1:
            optimizer.step()


def two_optimizers(model: nn.Module, loader: Any, num_epochs: int) -> None:
    """Correct: one optimizer for the first layer, another for the last, under one loss
    scaler, each stepped once an update: each unscales its own params (and a pause: slow)."""
    first = torch.optim.SGD(model[0].parameters(), lr=0.1)
    last = torch.optim.Adam(model[2].parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(num_epochs):
        for x, y in loader:
            first.zero_grad()
            last.zero_grad()
            scaler.scale(F.cross_entropy(model(x), y)).backward()
            scaler.step(first)
            scaler.step(last)
            scaler.update()
            time.sleep(0.005)


@pytest.mark.parametrize(
    "loop, pitfalls",
    [
        (runs_one_epoch_more, ["exhausted-generator"]),
        (steps_again_at_its_end, ["grad-zeroing"]),
        (steps_again_after_each_epoch_past_the_first, ["grad-zeroing"]),
        (two_optimizers, []),
    ],
    ids=["one-epoch-more", "steps-again-at-its-end", "steps-again-past-epoch-1", "two-optimizers"],
)
def test_a_slow_loops_first_runs_see_what_it_does_at_an_epochs_end_and_the_runs(
    slow_at_5_ms: None, loop: Any, pitfalls: list[str]
) -> None:
    """A slow loop's first runs run to the loop's end: one more epoch, or a step at the end of
    the run or of each epoch past the first, shows; a run that reads its first update alone is
    ended there only once no other optimizer's step may join it."""
    report = audit.training_loop(loop, model=layered, example=SAMPLE)
    assert report.options["slow"] is True, str(report)
    assert [r.pitfall for r in report.failures] == pitfalls, str(report)


def test_a_slow_loops_first_runs_run_whatever_the_profiles_phases(slow_at_5_ms: None) -> None:
    """A profile without Hypothesis's explicit phase (a user's own) still runs them first."""
    from hypothesis import Phase, settings

    before = settings.get_current_profile_name()
    settings.register_profile("linreg-no-explicit", phases=[Phase.generate, Phase.shrink])
    settings.load_profile("linreg-no-explicit")
    try:
        report = audit.training_loop(zeroes_once_an_epoch, model=net, example=SAMPLE)
    finally:
        settings.load_profile(before)
    assert "grad-zeroing" in [r.pitfall for r in report.failures], str(report)


def test_one_long_pause_does_not_make_a_loop_slow() -> None:
    """A pause after the first update alone (a logger made once) is not the loop's pace: 0.6 s,
    12 times SLOW and under LONG, so a busy machine's slower updates (a few ms, far under SLOW)
    cannot make the loop slow, and a pace read as the mean of the probe's 9 gaps (67 ms) would."""
    paused = []

    def fit_once_paused(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for X, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(X), y).backward()
                optimizer.step()
                if not paused:
                    paused.append(time.sleep(0.6))

    report = audit.training_loop(fit_once_paused, model=net, example=SAMPLE, max_examples=2)
    assert report.ok and "slow" not in report.options, str(report)


def test_a_loop_on_a_budget_of_its_own_is_ended_past_four_updates_a_row_and_named() -> None:
    """A budget loop that ignores the budget it is handed (its own 3000 steps) is ended once it
    took more than four updates for each row it was handed: it never runs its 3000, and
    exhausted-generator names what it did."""
    longest: list[int] = []

    def train(model: nn.Module, loader: Any, optimizer: Any, max_steps: int) -> None:
        batches = itertools.cycle(loader)
        longest.append(0)
        for taken in range(1, 3001):
            x, y = next(batches)
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            longest[-1] = taken

    report = audit.training_loop(train, model=net, example=SAMPLE, max_examples=5)
    assert [r.pitfall for r in report.failures] == ["exhausted-generator"], str(report)
    assert "and went on (the audit ended it there)" in report.failures[0].message, str(report)
    # ended, every run, far before its own budget: the widest run (the wide run's 37 rows, a
    # batch) past four updates a row
    assert 0 < max(longest) <= 4 * WIDE + 8 and sorted(longest)[-2] < 100, longest


def test_a_loop_of_batches_of_one_on_its_own_loader_is_never_ended_early() -> None:
    """A loop that takes the dataset and builds its own DataLoader (batches of one, the default)
    takes an update per row, more than the audit's batches: it is run to its end and passes."""

    def train(model: nn.Module, dataset: Any, optimizer: Any, num_epochs: int) -> None:
        for _ in range(num_epochs):
            for x, y in torch.utils.data.DataLoader(dataset, shuffle=True):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()

    report = audit.training_loop(train, model=net, example=SAMPLE)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    "epochs, says",
    [
        (2, "it runs epochs of its own, not num_epochs"),  # its own 2 fed when 1 was asked
        (1000, "it does not stop when its 1 epoch(s) are done"),  # ended by the audit
    ],
)
def test_a_loop_on_epochs_of_its_own_fails_exhausted_generator(epochs: int, says: str) -> None:
    def train(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        for _ in range(epochs):  # its own epochs, not num_epochs
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()

    report = audit.training_loop(train, model=net, example=SAMPLE, max_examples=10)
    assert [r.pitfall for r in report.failures] == ["exhausted-generator"], str(report)
    assert says in str(report), str(report)


COMPILED: list[int] = []  # one entry each time torch.compile compiles a graph


def counted_backend(gm: Any, example_inputs: Any) -> Any:
    """A torch.compile backend that runs the graph as it is, counting each compile."""
    COMPILED.append(1)
    return gm.forward


def compiled_fit(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int, summed: bool = False
) -> None:
    """nanoGPT's way: the model compiled once, before training."""
    model = torch.compile(model, backend=counted_backend)  # type: ignore[assignment]
    for _ in range(num_epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y, reduction="sum" if summed else "mean").backward()
            optimizer.step()


def compiled_fit_summed(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: the loss summed over the batch."""
    compiled_fit(model, loader, optimizer, num_epochs, summed=True)


def test_a_compiled_loop_is_audited_eagerly_and_compiling_is_as_it_was_after() -> None:
    """torch.compile'd code runs eagerly while audited: nothing is compiled (compiling can take
    longer than a run's time limit: "an endless loop?"); after, compiling is as it was."""
    import torch._dynamo.config as dynamo_config

    before = (os.environ.get("TORCH_COMPILE_DISABLE"), dynamo_config.disable)
    COMPILED.clear()
    report = audit.training_loop(compiled_fit, model=net, example=SAMPLE, max_examples=5)
    assert report.ok, str(report)
    twin = audit.training_loop(compiled_fit_summed, model=net, example=SAMPLE, max_examples=5)
    assert [r.pitfall for r in twin.failures] == ["mean-vs-sum"], str(twin)
    assert COMPILED == [], "the audited loop was compiled"
    assert (os.environ.get("TORCH_COMPILE_DISABLE"), dynamo_config.disable) == before
    compiled = torch.compile(lambda t: t * 2 + 1, backend=counted_backend)
    assert torch.equal(compiled(torch.ones(2)), torch.full((2,), 3.0))
    assert COMPILED == [1], "compiling was left off after the audit"
