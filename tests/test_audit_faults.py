"""Audited code that exits, turns grad mode off or runs under the caller's no_grad: never a
pass it did not earn, never a false pitfall, and the caller's grad mode is left as it was.

Each kind is audited from Python, and the exits also from the command line (exit 1, the
report saying what happened).
"""

from __future__ import annotations

import functools
import json
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

# the first torch.optim optimizer a process builds imports torch._dynamo, which installs a
# warnings filter of sympy's: imported here, so that no audit's state check sees it come
import torch._dynamo
from torch import nn
from torch.nn.utils import clip_grad
from torch.utils.data.dataloader import _BaseDataLoaderIter

from linreg import audit
from linreg.cli import main
from linreg.kinds.options import name_of
from tests import realworld as rw
from tests.test_audit_ends import fit, summed

FAST = {"max_examples": 5}


def net() -> nn.Module:
    return nn.Linear(3, 2)


SAMPLE = (torch.tensor([0.5, -1.0, 2.0]), torch.tensor(1))


# (kind, a correct target, its options): one of each kind, as people write them
CORRECT: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
    ("iterator", rw.d2l_data_iter, {}),
    ("update-step", rw.d2l_sgd, {}),
    ("loss", rw.d2l_squared_loss, {}),
    ("loop", rw.d2l_loop, {}),
    ("epoch-loss", rw.d2l_epoch, {}),
    ("training-loop", fit, {"model": net, "example": SAMPLE}),
]
IDS = [kind for kind, _, _ in CORRECT]


def after(fn: Callable[..., Any], calls: int, then: Callable[[], Any]) -> Callable[..., Any]:
    """Return fn that does `then()` instead once it has been called `calls` times."""
    seen = [0]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        return then() if seen[0] > calls else fn(*args, **kwargs)

    return wrapper


def exits_after(fn: Callable[..., Any], calls: int, code: Any) -> Callable[..., Any]:
    """Return fn that calls sys.exit(code) once it has been called `calls` times."""
    return after(fn, calls, lambda: sys.exit(code))


def _own_bug() -> None:
    raise ValueError("the code's own bug")


def raises_after(fn: Callable[..., Any], calls: int) -> Callable[..., Any]:
    """Return fn that raises its own ValueError once it has been called `calls` times."""
    return after(fn, calls, _own_bug)


def _forever() -> None:
    while True:
        time.sleep(0.01)


def endless_after(fn: Callable[..., Any], calls: int) -> Callable[..., Any]:
    """Return fn that never returns once it has been called `calls` times."""
    return after(fn, calls, _forever)


def _ctrl_c() -> None:
    raise KeyboardInterrupt  # as Ctrl-C would


def interrupted_after(fn: Callable[..., Any], calls: int) -> Callable[..., Any]:
    """Return fn that raises KeyboardInterrupt, as Ctrl-C would, once called `calls` times."""
    return after(fn, calls, _ctrl_c)


def grad_off_after(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return fn that turns grad mode off for the whole process after each call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_grad_enabled(False)

    return wrapper


@pytest.mark.parametrize("calls", [0, 3], ids=["at once", "later"])
@pytest.mark.parametrize("code", [0, 3, None])
@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_audited_code_that_exits_is_never_a_pass(
    kind: str, fn: Callable[..., Any], options: dict[str, Any], code: Any, calls: int
) -> None:
    exiting = exits_after(fn, calls, code)
    try:
        report = audit.audit(kind, exiting, **options, **FAST)
    except audit.TargetError as e:  # it exited when called once to check it
        assert f"raised SystemExit({code!r})" in str(e)
        # named as every other error names it, not by its repr (a memory address)
        assert str(e).startswith(f"{name_of(exiting)} raised"), str(e)
        return
    assert not report.ok
    assert f"raised SystemExit({code!r})" in report.error, str(report)
    assert report.failures == (), str(report)  # what it did is said once, as the error


def test_a_wrong_loss_that_exits_0_fails_the_command_line_audit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["audit", "loss", "tests.test_audit_faults:triple_loss_exits", "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["ok"] is False
    assert "raised SystemExit(0)" in out["error"]


def triple_loss_exits(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Three times the book's loss, and the process ends on a batch of more than two rows."""
    if y_hat.shape[0] > 2:
        sys.exit(0)
    return 3 * (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_correct_code_audited_under_the_callers_no_grad_passes(
    kind: str, fn: Callable[..., Any], options: dict[str, Any]
) -> None:
    with torch.no_grad():
        report = audit.audit(kind, fn, **options, **FAST)
        assert not torch.is_grad_enabled()
    assert report.ok, str(report)


@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_audited_code_that_turns_grad_mode_off_leaves_the_callers_grad_mode(
    kind: str, fn: Callable[..., Any], options: dict[str, Any]
) -> None:
    report = audit.audit(kind, grad_off_after(fn), **options, **FAST)
    assert torch.is_grad_enabled()
    assert report.ok, str(report)


def sample() -> tuple[torch.Tensor, torch.Tensor]:
    return SAMPLE


def hangs(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Trains, then never returns."""
    fit(model, loader, optimizer, num_epochs)
    while True:
        time.sleep(0.01)


LOOP = ["--model", "tests.test_audit_faults:net", "--example", "tests.test_audit_faults:sample"]


def test_the_time_limit_is_a_number_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["audit", "training-loop", "tests.test_audit_faults:fit", *LOOP, "--max-examples", "5"]
    assert main([*argv, "--timeout", "30", "-q"]) == 0, capsys.readouterr()
    capsys.readouterr()
    hanging = ["audit", "training-loop", "tests.test_audit_faults:hangs", *LOOP]
    with pytest.raises(SystemExit) as refused:  # it hangs on the first probe: refused, one line
        main([*hanging, "--timeout", "0.5", "--json", "-q"])
    assert refused.value.code == 2
    assert "did not return within 0.5 s" in capsys.readouterr().err


def process_state() -> dict[str, Any]:
    return {
        "torch rng": torch.get_rng_state().tolist(),
        "python rng": random.getstate(),
        "warnings filters": list(warnings.filters),
        "SIGALRM": signal.getsignal(signal.SIGALRM),
        "grad mode": torch.is_grad_enabled(),
    }


def test_audits_in_two_threads_take_turns_and_both_judge_right() -> None:
    before = process_state()
    reports: list[Any] = []

    def audit_iterator() -> None:
        reports.append(audit.iterator(rw.d2l_data_iter, max_examples=10))

    for _ in range(3):
        threads = [threading.Thread(target=audit_iterator) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(reports) == 6 and all(r.ok for r in reports), [str(r) for r in reports]
    assert process_state() == before


def test_the_time_limit_holds_off_the_main_thread() -> None:
    reports: list[Any] = []
    worker = threading.Thread(
        target=lambda: reports.append(
            audit.training_loop(fit_then_hang_on_one_batch, model=net, example=SAMPLE, timeout=0.5)
        )
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    assert reports[0].error.startswith("the loop did not return within 0.5 s"), str(reports[0])


def fit_then_hang_on_one_batch(
    model: nn.Module, loader: Any, optimizer: Any, num_epochs: int
) -> None:
    fit(model, loader, optimizer, num_epochs)
    while len(loader) == 1:
        time.sleep(0.01)


def test_an_audit_inside_an_audited_loop_keeps_the_outer_time_limit() -> None:
    def audits_then_hangs(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        fit(model, loader, optimizer, num_epochs)
        if len(loader) == 1:
            assert audit.loss(rw.d2l_squared_loss, max_examples=3).ok
            while True:
                time.sleep(0.01)

    before = process_state()
    report = audit.training_loop(audits_then_hangs, model=net, example=SAMPLE, timeout=1.0)
    assert report.error.startswith("the loop did not return within 1 s"), str(report)
    assert process_state() == before


def test_a_huge_time_limit_is_a_long_one_not_an_error() -> None:
    before = process_state()
    report = audit.training_loop(fit, model=net, example=SAMPLE, timeout=1e10, **FAST)
    assert report.ok, str(report)
    assert process_state() == before


@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_code_that_raises_its_own_error_is_one_error_not_a_pitfall(
    kind: str, fn: Callable[..., Any], options: dict[str, Any]
) -> None:
    report = audit.audit(kind, raises_after(fn, 1), **options, **FAST)
    assert "raised ValueError: the code's own bug" in report.error, str(report)
    assert report.failures == (), str(report)


def nan_after_two_rows(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = (y_hat - y.reshape(y_hat.shape)) ** 2 / 2
    return out * float("nan") if y_hat.shape[0] > 2 else out


def text_after_two_rows(y_hat: torch.Tensor, y: torch.Tensor) -> Any:
    out = (y_hat - y.reshape(y_hat.shape)) ** 2 / 2
    return "0.5" if y_hat.shape[0] > 2 else out


@pytest.mark.parametrize(
    ("loss", "said"),
    [(nan_after_two_rows, "returned nan on y_hat of shape"), (text_after_two_rows, "returned str")],
)
def test_a_loss_that_returns_nan_or_no_tensor_later_is_one_error_not_a_pitfall(
    loss: Callable[..., Any], said: str
) -> None:
    report = audit.loss(loss, max_examples=20)
    assert said in report.error, str(report)
    assert report.failures == (), str(report)


def endless_data_iter(batch_size: int, features: torch.Tensor, labels: torch.Tensor) -> Any:
    """Yields its first batch forever: the caller's walk never ends."""
    batch = features[:batch_size], labels[:batch_size]  # one batch: the walk allocates nothing
    while True:
        yield batch


BOOK_KINDS = [c for c in CORRECT if c[0] != "training-loop"]  # it has its own limit's tests


@pytest.mark.parametrize(("kind", "fn", "options"), BOOK_KINDS, ids=IDS[:-1])
def test_code_that_never_returns_ends_the_audit_at_its_time_limit(
    kind: str, fn: Callable[..., Any], options: dict[str, Any]
) -> None:
    before = process_state()
    report = audit.audit(kind, endless_after(fn, 1), **options, timeout=0.3, **FAST)
    assert "did not return within 0.3 s" in report.error, str(report)
    assert report.failures == ()
    assert process_state() == before


def test_an_endless_iterator_ends_the_audit_at_its_time_limit() -> None:
    report = audit.iterator(endless_data_iter, timeout=0.3, **FAST)
    assert "the iterator did not end within 0.3 s" in report.error, str(report)
    assert report.failures == ()


def test_a_trial_call_that_never_returns_is_refused_in_one_line() -> None:
    with pytest.raises(audit.TargetError, match=r"did not return within 0\.3 s when called once"):
        audit.loss(endless_after(rw.d2l_squared_loss, 0), timeout=0.3)


def test_the_time_limit_of_any_kind_is_a_number_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["audit", "iterator", "tests.test_audit_faults:endless_data_iter", "--timeout", "0.3"]
    assert main([*argv, "--json", "-q"]) == 1
    assert "did not end within 0.3 s" in json.loads(capsys.readouterr().out)["error"]


def seeds_every_rng(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return fn that seeds torch's, Python's and numpy's global RNGs at each call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        torch.manual_seed(7)
        random.seed(7)
        np.random.seed(7)
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_code_that_seeds_the_global_rngs_leaves_them_as_they_were(
    kind: str, fn: Callable[..., Any], options: dict[str, Any]
) -> None:
    def rngs() -> list[Any]:
        return [
            torch.get_rng_state().tolist(),
            random.getstate(),
            np.random.get_state()[1].tolist(),
        ]

    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = rngs()
    audit.audit(kind, seeds_every_rng(fn), **options, **FAST)
    assert rngs() == before


def test_an_audit_inside_an_audited_loop_leaves_the_outer_model_held() -> None:
    modes: list[bool] = []

    def bn_net() -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))

    def audits_inside(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        assert audit.training_loop(fit, model=net, example=SAMPLE, max_examples=2).ok
        modes.append(model[1].training)  # held in eval by the outer audit, still
        fit(model, loader, optimizer, num_epochs)

    report = audit.training_loop(audits_inside, model=bn_net, example=SAMPLE, max_examples=3)
    assert report.ok, str(report)
    assert modes and not any(modes)


def nan_loop(
    features: Any, labels: Any, params: Any, *, lr: float, batch_size: int, num_epochs: int
) -> None:
    """The book's loop with a loss multiplied by nan: its params end up nan."""
    w, b = params
    for _ in range(num_epochs):
        for i in range(0, len(features), batch_size):
            X, y = features[i : i + batch_size], labels[i : i + batch_size]
            (((X @ w + b - y) ** 2 / 2).sum() * float("nan")).backward()
            rw.d2l_sgd([w, b], lr, len(X))


def nan_epoch(features: Any, labels: Any, params: Any, *, lr: float, batch_size: int) -> Any:
    rw.d2l_epoch(features, labels, params, lr=lr, batch_size=batch_size)
    return torch.tensor(float("nan"))


@pytest.mark.parametrize(
    ("kind", "fn", "said"),
    [
        ("loop", nan_loop, "the loop's params are not finite"),
        ("epoch-loss", nan_epoch, "the epoch reported a loss of nan on finite data"),
    ],
)
def test_a_loop_or_epoch_that_goes_nan_is_one_error_not_a_pitfall(
    kind: str, fn: Callable[..., Any], said: str
) -> None:
    report = audit.audit(kind, fn, **FAST)
    assert said in report.error, str(report)
    assert report.failures == (), str(report)


def test_the_loops_prints_stay_out_and_other_threads_prints_get_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def chatty_fit(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        other = threading.Thread(target=lambda: print("printed by another thread"))
        other.start()
        other.join()
        print("printed by the loop")
        fit(model, loader, optimizer, num_epochs)

    assert audit.training_loop(chatty_fit, model=net, example=SAMPLE, **FAST).ok
    out = capsys.readouterr().out
    assert "printed by another thread" in out
    assert "printed by the loop" not in out


def whole_state() -> dict[str, Any]:
    """Everything an audit must give back, however it ends."""
    from torch.optim import optimizer as optim_module

    return {
        **process_state(),
        "numpy rng": np.random.get_state()[1].tolist(),
        "torch threads": torch.get_num_threads(),
        "stdout": sys.stdout,
        "stderr": sys.stderr,
        "optimizer hooks": (
            len(optim_module._global_optimizer_pre_hooks),
            len(optim_module._global_optimizer_post_hooks),
        ),
        # what the training-loop audit patches while a loop runs
        "GradScaler.unscale_": torch.amp.GradScaler.unscale_,
        "a DataLoader pass's __next__": _BaseDataLoaderIter.__next__,
        "what torch's clipping groups grads with": clip_grad._group_tensors_by_device_and_dtype,
    }


ENDINGS: list[tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]], dict[str, Any]]] = [
    ("pass", lambda fn: fn, {}),
    ("raise", lambda fn: raises_after(fn, 1), {}),
    ("exit", lambda fn: exits_after(fn, 1, 0), {}),
    ("timeout", lambda fn: endless_after(fn, 1), {"timeout": 0.3}),
    ("ctrl-c", lambda fn: interrupted_after(fn, 1), {}),
]


# one buggy twin of each book kind (tests/realworld.py): the audit ends with a pitfall
TWIN = {
    "iterator": rw.floor_iter,
    "update-step": rw.rebinding_sgd,
    "loss": rw.no_half,
    "loop": rw.d2l_loop_nominal,
    "epoch-loss": rw.tensor_epoch,
    "training-loop": summed,
}


def in_a_thread(audit_it: Callable[[], Any]) -> Any:
    """Run an audit in a thread of its own; return its report."""
    reports: list[Any] = []
    worker = threading.Thread(target=lambda: reports.append(audit_it()))
    worker.start()
    worker.join(120)
    return reports[0]


def inside_an_audited_loop(audit_it: Callable[[], Any]) -> Any:
    """Run an audit inside a training loop that is itself being audited; return its report."""
    reports: list[Any] = []

    def outer(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        if not reports:
            reports.append(audit_it())
        fit(model, loader, optimizer, num_epochs)

    assert audit.training_loop(outer, model=net, example=SAMPLE, max_examples=2).ok
    return reports[0]


@pytest.mark.parametrize("where", ["fail", "in a thread", "nested"])
@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_an_audit_of_any_kind_that_fails_runs_in_a_thread_or_nests_leaves_the_process_as_it_was(
    kind: str, fn: Callable[..., Any], options: dict[str, Any], where: str
) -> None:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = whole_state()
    if where == "fail":
        report = audit.audit(kind, TWIN[kind], **options, **FAST)
        assert report.failures, str(report)
    else:
        run = in_a_thread if where == "in a thread" else inside_an_audited_loop
        report = run(lambda: audit.audit(kind, fn, **options, **FAST))
        assert report.ok, str(report)
    assert whole_state() == before


@pytest.mark.parametrize(("ending", "make", "extra"), ENDINGS, ids=[e[0] for e in ENDINGS])
@pytest.mark.parametrize(("kind", "fn", "options"), CORRECT, ids=IDS)
def test_every_way_an_audit_of_any_kind_ends_leaves_the_process_as_it_was(
    kind: str,
    fn: Callable[..., Any],
    options: dict[str, Any],
    ending: str,
    make: Callable[[Callable[..., Any]], Callable[..., Any]],
    extra: dict[str, Any],
) -> None:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = whole_state()
    report = audit.audit(kind, make(fn), **options, **extra, **FAST)
    assert whole_state() == before
    assert report.ok == (ending == "pass"), str(report)
    assert report.failures == (), str(report)  # however it ended, no pitfall was made up


def test_a_none_the_code_itself_trips_on_is_its_error_not_a_pitfall() -> None:
    def loop_on_missing_config(
        features: Any, labels: Any, params: Any, *, lr: float, batch_size: int, num_epochs: int
    ) -> None:
        config = None
        rw.d2l_loop(features, labels, params, lr=lr, batch_size=batch_size, num_epochs=num_epochs)
        print(config.shape)  # type: ignore[attr-defined]

    report = audit.loop(loop_on_missing_config, **FAST)
    assert "raised AttributeError: 'NoneType' object has no attribute 'shape'" in report.error
    assert report.failures == (), str(report)


def interrupts(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    fit(model, loader, optimizer, num_epochs)
    if len(loader) == 1:
        raise KeyboardInterrupt  # as Ctrl-C would


def test_ctrl_c_during_an_audit_exits_130_with_the_verdicts_so_far(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["audit", "training-loop", "tests.test_audit_faults:interrupts", *LOOP, "-q"]
    assert main([*argv, "--max-examples", "5"]) == 130
    assert "ERROR interrupted (Ctrl-C)" in capsys.readouterr().out


def test_time_limits_off_the_main_thread_end_on_time_and_never_leave_the_watchdog_stuck() -> None:
    # limits that run out while their thread is taking the watchdog's lock to move a deadline:
    # each TimeUp lands inside its own block, and the lock is never left held (a Condition's
    # own lock was, once in about 10,000 such limits here: the audit then hung at its end)
    from linreg.kinds.guards import TimeUp, time_limit, watchdog_kept

    seen = {"in time": 0, "late": 0}

    def work() -> None:
        with watchdog_kept():
            for _ in range(30_000):
                try:
                    try:
                        with time_limit(2e-4) as again:
                            for _ in range(50):
                                again()
                    except TimeUp:
                        seen["in time"] += 1
                    sum(range(20))  # outside any limit: a TimeUp here came late
                except TimeUp:
                    seen["late"] += 1

    worker = threading.Thread(target=work, daemon=True)  # stuck, it must not hold the exit
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), f"the watchdog's lock was left held: {seen}"
    assert seen["late"] == 0, seen
    assert [t.name for t in threading.enumerate() if t.name == "linreg-time-limit"] == []
