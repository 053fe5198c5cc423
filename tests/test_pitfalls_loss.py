"""Pitfalls 5, 9 and 11: mean vs sum, the label shape, uneven micro-batches."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.nn import functional as F

from linreg import accumulate, checks, concise, data, loss, pitfalls, train
from tests import strategies as sts
from tests.refute import refutes
from tests.test_pitfalls_update import book_run, runs

# --- 5. mean vs sum ----------------------------------------------------------------------------


def sum_follows_mean(run: dict[str, Any], sum_fn: Any = None) -> None:
    """MSELoss(sum) at lr / B_actual follows MSELoss(mean) at lr, step for step."""
    sum_fn = sum_fn or concise.train_concise
    trajectories = []
    for fn, reduction in ((sum_fn, "sum"), (concise.train_concise, "mean")):
        t = checks.Trajectory()
        fn(run["features"], run["labels"], **sts.run_kwargs(run, reduction=reduction, on_step=t))
        trajectories.append(t.steps)
    checks.check_same_trajectory(*trajectories)


@given(runs())
@example(book_run(1000, 10))
@example(book_run(1003, 10))
def test_pitfalls_sum_at_lr_over_actual_batch_size_follows_mean_at_lr(run: dict[str, Any]) -> None:
    sum_follows_mean(run)


def test_pitfalls_sum_at_lr_over_nominal_batch_size_is_refuted() -> None:
    run = refutes(
        runs(uneven=True), lambda r: sum_follows_mean(r, pitfalls.train_concise_sum_nominal_lr)
    )
    assert len(run["features"]) % run["batch_size"] != 0


@given(st.integers(1, 2000).flatmap(sts.datasets))
@example(data.book_data(1000, dtype=torch.float64))
def test_pitfalls_full_data_sum_loss_is_n_times_the_mean(dataset: Any) -> None:
    X, y = dataset
    y_hat = X @ torch.ones(X.shape[1], 1, dtype=X.dtype)
    total, mean = F.mse_loss(y_hat, y, reduction="sum"), F.mse_loss(y_hat, y)
    torch.testing.assert_close(total, len(X) * mean, rtol=1e-12, atol=0)


# --- 9. label shape ----------------------------------------------------------------------------


@given(st.integers(1, 50).flatmap(lambda n: st.tuples(sts.datasets(n), sts.seeds)))
def test_pitfalls_squared_loss_of_flat_labels_is_per_example(args: Any) -> None:
    (X, y), seed = args
    w, b = sts.params_like(X, seed)
    checks.check_loss_per_example(lambda a, c: loss.squared_loss(a, c), X @ w + b, y.reshape(-1))


def test_pitfalls_loss_without_reshape_broadcasts_to_n_by_n() -> None:
    def prop(args: Any) -> None:
        (X, y), seed = args
        w, b = sts.params_like(X, seed)
        checks.check_loss_per_example(pitfalls.squared_loss_no_reshape, X @ w + b, y.reshape(-1))

    (X, _), _ = refutes(
        st.integers(1, 50).flatmap(lambda n: st.tuples(sts.datasets(n), sts.seeds)), prop
    )
    assert len(X) >= 2


def flat_labels_train_alike(run: dict[str, Any]) -> None:
    """Training on labels (n,) follows the same trajectory as on labels (n, 1)."""
    trajectories = []
    for labels in (run["labels"], run["labels"].reshape(-1)):
        t = checks.Trajectory()
        train.train(run["features"], labels, **sts.run_kwargs(run, on_step=t))
        trajectories.append(t.steps)
    checks.check_same_trajectory(*trajectories, rtol=0, atol=0)


@given(runs())
@example(book_run(1000, 10))
def test_pitfalls_training_on_flat_labels_follows_the_same_trajectory(run: dict[str, Any]) -> None:
    flat_labels_train_alike(run)


def test_pitfalls_training_without_reshape_is_refuted() -> None:
    def prop(run: dict[str, Any]) -> None:
        with pitfalls.swap("loss.squared_loss", pitfalls.squared_loss_no_reshape):
            flat_labels_train_alike(run)

    run = refutes(runs(), prop)
    assert run["batch_size"] >= 2


# --- 11. uneven micro-batches ------------------------------------------------------------------


@st.composite
def micro_batches(draw: st.DrawFn, *, uneven: bool | None = None) -> dict[str, Any]:
    """Draw a dataset split into micro-batches; uneven=True forces two different sizes."""
    sizes = draw(st.lists(st.integers(1, 20), min_size=1, max_size=5), label="micro sizes")
    if uneven is False:
        sizes = [sizes[0]] * len(sizes)
    elif uneven:
        sizes = [*sizes, sizes[0] + draw(st.integers(1, 5), label="longer")]
    X, y = draw(sts.datasets(sum(sizes)))
    w, b = sts.params_like(X, draw(sts.seeds, label="seed"))
    return {"features": X, "labels": y, "sizes": sizes, "params": (w, b)}


def accumulates_the_full_batch_gradient(case: dict[str, Any], fn: Any = None) -> None:
    fn = fn or accumulate.accumulate_grad
    X, y = case["features"], case["labels"]
    w, b = sts.copy_params(case["params"])
    want = torch.autograd.grad(F.mse_loss(X @ w + b, y) / 2, (w, b))  # squared_loss has a 1/2
    fn(list(zip(X.split(case["sizes"]), y.split(case["sizes"]), strict=True)), w, b)
    checks.check_grads_close([w.grad, b.grad], want)


@given(micro_batches())
def test_pitfalls_sum_over_total_count_gives_the_full_batch_gradient(case: dict[str, Any]) -> None:
    accumulates_the_full_batch_gradient(case)


@given(micro_batches(uneven=False))
def test_pitfalls_mean_of_means_is_right_when_micro_batches_are_even(case: dict[str, Any]) -> None:
    accumulates_the_full_batch_gradient(case, pitfalls.accumulate_grad_mean_of_means)


def test_pitfalls_mean_of_means_is_refuted_for_uneven_micro_batches() -> None:
    case = refutes(
        micro_batches(uneven=True),
        lambda c: accumulates_the_full_batch_gradient(c, pitfalls.accumulate_grad_mean_of_means),
    )
    assert len(set(case["sizes"])) > 1
