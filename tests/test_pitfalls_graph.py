"""Pitfalls 7, 8 and 10: backward twice, the seed's once-per-epoch update, evaluation under
no_grad. The oracles are autograd itself and torch.linalg.lstsq."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from linreg import accumulate, checks, data, loss, model, pitfalls, train
from tests import strategies as sts
from tests.refute import refutes
from tests.test_pitfalls_update import runs

SECOND_TIME = "Trying to backward through the graph a second time"

# --- 7. backward twice -------------------------------------------------------------------------


@given(runs())
def test_pitfalls_second_backward_through_the_squared_loss_raises(run: dict[str, Any]) -> None:
    w, b = run["params"]
    l = loss.squared_loss(model.linreg(run["features"], w, b), run["labels"]).sum()
    l.backward()
    with pytest.raises(RuntimeError, match=SECOND_TIME):
        l.backward()


@given(runs())
def test_pitfalls_retain_graph_lets_backward_run_twice_and_doubles_grads(
    run: dict[str, Any],
) -> None:
    w, b = run["params"]
    l = loss.squared_loss(model.linreg(run["features"], w, b), run["labels"]).sum()
    want = torch.autograd.grad(l, (w, b), retain_graph=True)
    l.backward(retain_graph=True)
    l.backward()
    checks.check_grads_close([w.grad, b.grad], [2 * g for g in want])


@given(st.integers(1, 6), st.integers(2, 5))
def test_pitfalls_graph_saving_nothing_backpropagates_twice_and_accumulates(
    d: int, times: int
) -> None:
    # The error needs a freed SAVED tensor: (w + 1).sum() saves none, so nothing is freed.
    w = torch.zeros(d, 1, dtype=torch.float64, requires_grad=True)
    l = (w + 1).sum()
    for _ in range(times):
        l.backward()
    assert torch.equal(w.grad, torch.full((d, 1), float(times), dtype=torch.float64))


def one_epoch_completes(args: Any, fn: Any = None) -> None:
    """One epoch of the loop runs without error and takes ceil(n / b) steps."""
    fn = fn or train.train
    (n, b), seed = args
    X, y = data.book_data(n, seed=seed, dtype=torch.float64)
    try:
        result = fn(X, y, batch_size=b, num_epochs=1, generator=torch.Generator().manual_seed(0))
    except RuntimeError as e:
        raise checks.CheckFailed(f"the loop raised after {n} samples: {e}") from e
    assert result.num_steps == math.ceil(n / b)


@given(st.tuples(sts.sizes(), sts.seeds))
def test_pitfalls_one_epoch_of_train_completes(args: Any) -> None:
    one_epoch_completes(args)


def test_pitfalls_seeds_backward_every_batch_raises_at_the_second_batch() -> None:
    (n, b), _ = refutes(
        st.tuples(sts.sizes(), sts.seeds),
        lambda a: one_epoch_completes(a, pitfalls.train_concat_backward_every_batch),
    )
    assert n > b  # a second batch exists
    X, y = data.book_data(n, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=SECOND_TIME):
        pitfalls.train_concat_backward_every_batch(X, y, batch_size=b)
    single = pitfalls.train_concat_backward_every_batch(X[:b], y[:b], batch_size=b)
    assert single.num_steps == 1  # one batch: the first backward alone does not raise


# --- 8. the seed's once-per-epoch update -------------------------------------------------------


def accumulates_every_batch(run: dict[str, Any], fn: Any = None) -> None:
    """The accumulated loss holds every example's loss, in batch order."""
    fn = fn or accumulate.accumulate_losses
    w, b = run["params"]
    X, y, B = run["features"], run["labels"], run["batch_size"]
    batches = list(zip(X.split(B), y.split(B), strict=True))
    l, count = fn(batches, w, b)
    if l.shape != (len(X), 1):
        raise checks.CheckFailed(f"accumulated {tuple(l.shape)} losses for {len(X)} examples")
    checks.check_grads_close([l], [loss.squared_loss(X @ w + b, y)])
    if count != len(batches):
        raise checks.CheckFailed(f"counted {count} batches, there are {len(batches)}")


@given(runs())
def test_pitfalls_accumulated_losses_hold_every_batch(run: dict[str, Any]) -> None:
    accumulates_every_batch(run)


def test_pitfalls_seeds_accumulation_keeps_only_the_first_batch() -> None:
    refutes(runs(), lambda r: accumulates_every_batch(r, pitfalls.accumulate_losses_seed))
    X, y = data.book_data(1000)
    w, b = model.init_params(2)
    l, count = pitfalls.accumulate_losses_seed(data.data_iter(10, X, y), w, b)
    assert l.shape == (10, 1) and count == 101  # the book's 100 batches: only the first is kept


@st.composite
def full_batch_runs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(20, 100), label="n")
    X, y = draw(sts.datasets(n, max_d=3))
    seed = draw(sts.seeds, label="seed")
    return {
        "features": X,
        "labels": y,
        "batch_size": draw(st.integers(5, 40), label="b"),
        "seed": seed,
        "params": sts.params_like(X, seed),
    }


def converges_at_the_gd_rate(
    run: dict[str, Any], fn: Any = None, epochs: int = 300, lr: float = 0.03
) -> None:
    """After k epochs, |theta_k - theta*| <= rho^k |theta_0 - theta*|, theta* from lstsq.

    Full-batch gradient descent on mean(r^2)/2 maps the error e to (I - lr H) e, H = A^T A / n
    with A = [X, 1]; rho is the spectral radius of I - lr H.
    """
    fn = fn or accumulate.train_full_batch
    X, y = run["features"], run["labels"]
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    theta = torch.linalg.lstsq(A, y).solution.reshape(-1)  # the oracle
    target = (theta[:-1].reshape(-1, 1), theta[-1:])
    rho = float((1 - lr * torch.linalg.eigvalsh(A.T @ A / len(X))).abs().max())
    w0, b0 = run["params"]
    dist0 = float(
        torch.cat([(w0.detach() - target[0]).reshape(-1), b0.detach() - target[1]]).norm()
    )
    result = fn(
        X,
        y,
        lr=lr,
        batch_size=run["batch_size"],
        num_epochs=epochs,
        generator=torch.Generator().manual_seed(run["seed"]),
        params=sts.copy_params(run["params"]),
    )
    checks.check_converges([result.w, result.b], target, bound=rho**epochs * dist0 + 1e-9)


@pytest.mark.slow
@given(full_batch_runs())
def test_pitfalls_full_batch_gd_converges_to_lstsq_at_its_rate(run: dict[str, Any]) -> None:
    converges_at_the_gd_rate(run)


@pytest.mark.slow
def test_pitfalls_seeds_once_per_epoch_update_does_not_converge() -> None:
    refutes(
        full_batch_runs(),
        lambda r: converges_at_the_gd_rate(r, pitfalls.train_once_per_epoch_seed),
        max_examples=20,
    )


# --- 10. evaluation under no_grad --------------------------------------------------------------


def evaluation_builds_no_graph(run: dict[str, Any], fn: Any = None) -> None:
    X, y = run["features"], run["labels"]
    w, b = run["params"]
    fn = fn or train.full_loss
    checks.check_no_graph(lambda: fn(X, y, w, b), [X, y, w, b])


@given(runs(), st.sampled_from([torch.float32, torch.float64]))
def test_pitfalls_evaluation_under_no_grad_saves_nothing(
    run: dict[str, Any], dtype: torch.dtype
) -> None:
    evaluation_builds_no_graph(
        {
            **run,
            "features": run["features"].to(dtype),
            "labels": run["labels"].to(dtype),
            "params": [p.detach().to(dtype).requires_grad_() for p in run["params"]],
        }
    )


def test_pitfalls_evaluation_in_grad_mode_is_refuted() -> None:
    refutes(runs(), lambda r: evaluation_builds_no_graph(r, pitfalls.full_loss_with_grad))


@given(st.integers(1, 5000), st.sampled_from([torch.float32, torch.float64]), sts.seeds)
@example(1000, torch.float32, 0)
def test_pitfalls_grad_mode_evaluation_holds_x_and_the_residual(
    n: int, dtype: torch.dtype, seed: int
) -> None:
    X, y = data.book_data(n, seed=seed, dtype=dtype)
    w, b = sts.params_like(X, seed)
    out, saved = checks.saved_for_backward(
        lambda: pitfalls.full_loss_with_grad(X, y, w, b), [X, y, w, b]
    )
    assert out.grad_fn is not None
    assert saved.count == 2  # mm saves X (for w's grad); pow saves the (n, 1) residual
    assert saved.new_nbytes == n * X.element_size()  # 4n bytes in float32: the residual alone
