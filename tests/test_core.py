"""The linreg package itself: convergence, analytic vs autograd, determinism, bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from linreg import checks, concise, data, model, train
from linreg.testing import strategies as sts

runs = sts.runs

# The SGD noise floor at lr 0.03: over 200 seeds the largest error was 2.1e-3 (truth) and
# 1.6e-3 (lstsq); see the README.
NOISE_FLOOR = 3e-3


# 300 steps each; at most the 200 seeds the noise floor above was measured over
@settings(max_examples=min(200, max(5, settings.default.max_examples // 3)))
@given(sts.seeds)
@example(0)
def test_default_experiment_converges_to_the_lstsq_solution(seed: int) -> None:
    X, y = data.book_data(1000, seed=seed)
    result = train.train(X, y, generator=torch.Generator().manual_seed(seed))
    A = torch.cat([X, torch.ones(len(X), 1)], dim=1).double()
    theta = torch.linalg.lstsq(A, y.double()).solution.reshape(-1)
    got = torch.cat([result.w.detach().reshape(-1), result.b.detach()]).double()
    assert float((got - theta).abs().max()) < NOISE_FLOOR
    truth = torch.tensor([*data.TRUE_W, data.TRUE_B], dtype=torch.float64)
    assert float((got - truth).abs().max()) < NOISE_FLOOR
    assert result.num_steps == 300 and len(result.losses) == 3
    assert result.losses[-1] < 1e-3


def trajectory(run: dict[str, Any], **kwargs: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    t = checks.Trajectory()
    train.train(run["features"], run["labels"], **sts.run_kwargs(run, on_step=t, **kwargs))
    return t.steps


@given(runs(), st.booleans())
def test_analytic_gradients_follow_the_autograd_trajectory(run: dict[str, Any], drop: bool) -> None:
    checks.check_same_trajectory(
        trajectory(run, drop_last=drop), trajectory(run, drop_last=drop, grad="analytic")
    )


@given(runs(), st.sampled_from(["autograd", "analytic"]))
def test_a_fixed_generator_gives_identical_runs(run: dict[str, Any], grad: str) -> None:
    checks.check_same_trajectory(
        trajectory(run, grad=grad), trajectory(run, grad=grad), rtol=0, atol=0
    )


def test_default_params_come_from_the_generator() -> None:
    X, y = data.book_data(100)
    runs_ = [train.train(X, y, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs_[0].w, runs_[1].w) and runs_[0].losses == runs_[1].losses


def test_train_updates_given_params_in_place_and_counts_steps() -> None:
    X, y = data.book_data(1003)
    w, b = model.init_params(2, generator=torch.Generator().manual_seed(0))
    result = train.train(X, y, params=(w, b), num_epochs=2, drop_last=True)
    assert result.w is w and result.b is b
    assert result.num_steps == 2 * 100
    assert train.train(X, y, num_epochs=0).num_steps == 0


def test_synthetic_data_shapes_and_dtypes() -> None:
    X, y = data.synthetic_data([2, -3.4], 4.2, 5)
    assert X.shape == (5, 2) and y.shape == (5, 1) and X.dtype == torch.float32
    X, y = data.synthetic_data(torch.tensor([[1.0], [2.0]], dtype=torch.float64), 0.0, 3)
    assert X.dtype == y.dtype == torch.float64 and y.shape == (3, 1)
    X, y = data.synthetic_data([1.0], 0.5, 4, noise=0.0)
    assert torch.equal(y, X + 0.5)


def test_init_params_are_the_books() -> None:
    w, b = model.init_params(3, dtype=torch.float64)
    assert w.shape == (3, 1) and b.shape == (1,)
    assert w.dtype == b.dtype == torch.float64
    assert w.is_leaf and w.requires_grad and b.is_leaf and b.requires_grad
    assert float(b.detach()) == 0.0 and float(w.detach().abs().max()) < 0.1
    w, _ = model.init_params(20000, generator=torch.Generator().manual_seed(0))
    assert abs(float(w.detach().std()) - 0.01) < 5e-4  # N(0, 0.01^2): the book's scale
    assert abs(float(w.detach().mean())) < 5e-4


def test_analytic_mode_needs_no_autograd_and_counts_steps_from_one() -> None:
    X, y = data.book_data(103)
    w, b = torch.zeros(2, 1), torch.zeros(1)  # plain tensors: no grad anywhere
    seen: list[int] = []
    gen = torch.Generator().manual_seed(0)
    result = train.train(
        X, y, grad="analytic", params=(w, b), generator=gen, on_step=lambda k, *_: seen.append(k)
    )
    assert result.w is w
    assert seen == list(range(1, 3 * 11 + 1))  # ceil(103 / 10) = 11 steps per epoch
    leaves = (torch.zeros(2, 1, requires_grad=True), torch.zeros(1, requires_grad=True))
    same = train.train(X, y, params=leaves, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.losses, same.losses, rtol=1e-5, atol=0)


def test_concise_data_loader_converges_too() -> None:
    X, y = data.book_data(1000)
    result = concise.train_concise(
        X, y, loader="DataLoader", generator=torch.Generator().manual_seed(0)
    )
    assert result.losses[-1] < 1e-3 and result.num_steps == 300


# --- train_epoch and stable_bound: arguments, and the epoch equals train's (mutation gaps) ----


def test_train_epoch_is_one_epoch_of_train_on_the_callers_params() -> None:
    X, y = data.book_data(23, dtype=torch.float64)  # uneven: a short last batch of 3
    w0 = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    b0 = torch.tensor([0.25], dtype=torch.float64)
    start = (w0.clone().requires_grad_(), b0.clone().requires_grad_())
    want = train.train(X, y, params=start, lr=0.5, batch_size=10, num_epochs=1,
                       generator=torch.Generator().manual_seed(3))  # fmt: skip
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    torch.manual_seed(99)  # the global RNG must not matter: the generator shuffles
    reported = train.train_epoch(
        X, y, [w, b], lr=0.5, batch_size=10, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(w.detach(), want.w.detach()) and torch.equal(b.detach(), want.b.detach())
    assert reported > 0 and w.grad is not None and not bool(w.grad.any())


def test_train_epoch_names_its_bad_arguments() -> None:
    X, y = data.book_data(4, dtype=torch.float64)
    params = [torch.zeros(2, 1, dtype=torch.float64, requires_grad=True),
              torch.zeros(1, dtype=torch.float64, requires_grad=True)]  # fmt: skip
    with pytest.raises(ValueError, match=r"^lr must be a finite number >= 0, got -1$"):
        train.train_epoch(X, y, params, lr=-1, batch_size=2)
    with pytest.raises(ValueError, match=r"^batch_size must be a positive int, got 0$"):
        train.train_epoch(X, y, params, lr=0.1, batch_size=0)
    with pytest.raises(TypeError, match=r"^generator must be a torch\.Generator or None, got int"):
        train.train_epoch(X, y, params, lr=0.1, batch_size=2, generator=0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r'^params must be leaves that require grad for grad="autog'
    ):
        train.train_epoch(X, y, [params[0] * 1, params[1]], lr=0.1, batch_size=2)


def test_stable_bound_names_its_argument_and_keeps_float64() -> None:
    with pytest.raises(TypeError, match=r"^features must be a torch\.Tensor, got list$"):
        train.stable_bound([[1.0]])  # type: ignore[arg-type]
    X = torch.tensor([[1.0], [3.0]], dtype=torch.float32)
    # A = [[1, 1], [3, 1]]: A^T A / 2 = [[5, 2], [2, 1]], lambda_max = 3 + sqrt(8)
    assert train.stable_bound(X) == pytest.approx(2 / (3 + 8**0.5), rel=1e-15)
    assert train.stable_bound(X, objective="mse") == pytest.approx(1 / (3 + 8**0.5), rel=1e-15)
    with pytest.raises(ValueError, match=r"^objective must be 'book' or 'mse', got 'sum'$"):
        train.stable_bound(X, objective="sum")  # type: ignore[arg-type]


def test_train_takes_autograds_step_or_the_analytic_one_as_asked() -> None:
    X, y = data.book_data(20, dtype=torch.float64)
    # autograd's step leaves zeroed grads behind (sgd zeroes them); the analytic one none
    by_autograd = train.train(X, y, num_epochs=1, grad="autograd")
    by_hand = train.train(X, y, num_epochs=1, grad="analytic")
    assert by_autograd.w.grad is not None and not bool(by_autograd.w.grad.any())
    assert by_hand.w.grad is None


def test_the_tolerance_of_a_low_precision_dtype_is_1e_2() -> None:
    from linreg import checks

    assert checks.tolerance(torch.float16) == checks.tolerance(torch.bfloat16) == 1e-2


def test_a_variant_built_on_fit_refuses_params_that_are_not_leaves() -> None:
    from linreg import pitfalls

    X, y = data.book_data(20, dtype=torch.float64)
    w = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r'^params must be leaves that require grad for grad="'):
        pitfalls.train_nominal_batch_size(X, y, params=(w * 1, b))
