"""Pitfalls 2, 3, 4 and 6: the step size of a short batch, in place vs rebinding, no_grad,
and zeroing the grads. The oracle is nn.Linear + nn.MSELoss() + optim.SGD at lr / 2 (the 1/2 of
squared_loss), fed the very same batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from linreg import checks, concise, data, loss, model, optim, pitfalls, train
from tests import strategies as sts
from tests.refute import refutes


@st.composite
def runs(draw: st.DrawFn, *, uneven: bool | None = None, max_n: int = 120) -> dict[str, Any]:
    """Draw one training run: data, batch size, lr, epochs, seed and initial params."""
    n, b = draw(sts.sizes(max_n=max_n, uneven=uneven))
    X, y = draw(sts.datasets(n))
    seed = draw(sts.seeds, label="seed")
    return {
        "features": X,
        "labels": y,
        "batch_size": b,
        "lr": draw(sts.learning_rates),
        "num_epochs": draw(sts.num_epochs),
        "seed": seed,
        "params": sts.params_like(X, seed),
    }


def book_run(n: int, b: int) -> dict[str, Any]:
    X, y = data.book_data(n, dtype=torch.float64)
    return {
        "features": X,
        "labels": y,
        "batch_size": b,
        "lr": 0.03,
        "num_epochs": 1,
        "seed": 0,
        "params": sts.params_like(X, 0),
    }


def follows_the_oracle(run: dict[str, Any], train_fn: Callable[..., Any] | None = None) -> None:
    """One run of train_fn (default: linreg's train) equals the torch oracle step for step."""
    train_fn = train_fn or train.train
    ours, theirs = checks.Trajectory(), checks.Trajectory()
    train_fn(run["features"], run["labels"], **sts.run_kwargs(run, on_step=ours))
    concise.train_concise(
        run["features"], run["labels"], **sts.run_kwargs(run, lr=run["lr"] / 2, on_step=theirs)
    )
    checks.check_same_trajectory(ours.steps, theirs.steps)


# --- 2. the short last batch's step ------------------------------------------------------------


@given(runs())
@example(book_run(1000, 10))
@example(book_run(1003, 10))
def test_pitfalls_train_follows_mse_mean_sgd_at_half_lr_step_for_step(run: dict[str, Any]) -> None:
    follows_the_oracle(run)


@given(runs(uneven=False))
@example(book_run(1000, 10))
def test_pitfalls_nominal_batch_size_is_harmless_when_batches_are_even(
    run: dict[str, Any],
) -> None:
    follows_the_oracle(run, pitfalls.train_nominal_batch_size)


def test_pitfalls_nominal_batch_size_is_refuted_when_the_last_batch_is_short() -> None:
    run = refutes(
        runs(uneven=True), lambda r: follows_the_oracle(r, pitfalls.train_nominal_batch_size)
    )
    assert len(run["features"]) % run["batch_size"] != 0


# --- 3. in place vs rebinding, 4. no_grad ---------------------------------------------------


@st.composite
def updates(draw: st.DrawFn) -> tuple[list[torch.Tensor], float, int]:
    """Draw leaf params with grads set, an lr and a batch size."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    width = 32 if dtype == torch.float32 else 64
    values = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=width)
    params = []
    for shape in ((draw(st.integers(1, 4), label="d"), 1), (1,)):
        numel = shape[0]
        p = torch.tensor(draw(st.lists(values, min_size=numel, max_size=numel)), dtype=dtype)
        p = p.reshape(shape).requires_grad_()
        p.grad = torch.tensor(
            draw(st.lists(values, min_size=numel, max_size=numel)), dtype=dtype
        ).reshape(shape)
        params.append(p)
    return params, draw(sts.learning_rates), draw(st.integers(1, 1000), label="batch_size")


def updates_in_place(step: checks.UpdateStep) -> Callable[[Any], None]:
    return lambda u: checks.check_update_in_place(step, *u)


def sgd_via_optim_sgd(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
    trainer = torch.optim.SGD(params, lr=lr / batch_size)
    trainer.step()
    trainer.zero_grad(set_to_none=False)


@given(updates())
def test_pitfalls_sgd_updates_the_callers_tensors_in_place(u: Any) -> None:
    # through the module attribute, so that LINREG_SWAP reaches it
    checks.check_update_in_place(lambda *a: optim.sgd(*a), *u)


@given(updates())
def test_pitfalls_optim_sgd_satisfies_the_same_in_place_property(u: Any) -> None:
    # optim.SGD computes p - (lr / B) * g: equal up to rounding, not bit for bit
    checks.check_update_in_place(sgd_via_optim_sgd, *u, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    "variant",
    [
        pitfalls.sgd_rebinding,
        pitfalls.sgd_without_no_grad,
        pitfalls.sgd_out_of_place_in_grad_mode,
        pitfalls.sgd_without_zero_grad,
    ],
    ids=lambda v: v.__name__,
)
def test_pitfalls_wrong_updates_are_refuted_by_the_in_place_property(variant: Any) -> None:
    refutes(updates(), updates_in_place(variant))


@given(updates())
def test_pitfalls_rebinding_leaves_the_callers_tensors_bit_identical(u: Any) -> None:
    params, lr, batch_size = u
    before = [p.detach().clone() for p in params]
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'zero_'"):
        pitfalls.sgd_rebinding(params, lr, batch_size)
    for p, old in zip(params, before, strict=True):
        assert torch.equal(p.detach(), old)


@given(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=5),
    st.integers(-1000, 1000).filter(bool),
)
def test_pitfalls_isub_rebinds_ints_but_mutates_tensors(values: list[int], k: int) -> None:
    ints = list(values)
    for p in ints:
        p -= k  # rebinds the loop's name: an int is immutable
    assert ints == values
    tensors = [torch.tensor(v) for v in values]
    ids = [id(t) for t in tensors]
    for t in tensors:
        t -= k  # Tensor.__isub__: the list's own tensors change
    assert [int(t) for t in tensors] == [v - k for v in values]
    assert [id(t) for t in tensors] == ids


@given(updates())
def test_pitfalls_update_without_no_grad_raises_the_leaf_error(u: Any) -> None:
    with pytest.raises(
        RuntimeError,
        match="a leaf Variable that requires grad is being used in an in-place operation",
    ):
        pitfalls.sgd_without_no_grad(*u)


def stay_leaves(step: checks.UpdateStep, run: dict[str, Any], steps: int) -> None:
    """After each of `steps` steps of a training loop using step, the params are leaves."""
    X, y = run["features"], run["labels"]
    params = list(sts.copy_params(run["params"]))
    for _ in range(steps):
        l = ((X @ params[0] + params[1] - y) ** 2 / 2).sum()
        l.backward()
        step(params, run["lr"], len(X))
        checks.check_params_are_leaves(params)


@given(runs(max_n=30), st.integers(1, 20))
def test_pitfalls_params_stay_leaves_after_any_number_of_sgd_steps(
    run: dict[str, Any], steps: int
) -> None:
    stay_leaves(lambda *a: optim.sgd(*a), run, steps)


def test_pitfalls_out_of_place_update_in_grad_mode_stops_params_being_leaves() -> None:
    refutes(
        st.tuples(runs(max_n=30), st.integers(1, 20)),
        lambda a: stay_leaves(pitfalls.sgd_out_of_place_in_grad_mode, *a),
    )


# --- 6. zeroing the grads ----------------------------------------------------------------------


def batch_grads(run: dict[str, Any], k: int) -> list[list[torch.Tensor]]:
    """The gradients of the first k batches' summed squared loss, each on its own."""
    w, b = run["params"]
    X, y, B = run["features"], run["labels"], run["batch_size"]
    out = []
    for i in range(k):
        l = loss.squared_loss(
            model.linreg(X[i * B : (i + 1) * B], w, b), y[i * B : (i + 1) * B]
        ).sum()
        out.append(list(torch.autograd.grad(l, (w, b))))
    return out


@given(runs(), st.integers(1, 5))
def test_pitfalls_backward_without_zeroing_adds_up_the_batch_gradients(
    run: dict[str, Any], k: int
) -> None:
    w, b = run["params"]
    X, y, B = run["features"], run["labels"], run["batch_size"]
    grads = batch_grads(run, k)
    for i in range(k):  # params fixed, grads never zeroed
        loss.squared_loss(
            model.linreg(X[i * B : (i + 1) * B], w, b), y[i * B : (i + 1) * B]
        ).sum().backward()
    checks.check_grads_close([w.grad, b.grad], [sum(g[j] for g in grads) for j in (0, 1)])


@given(runs(), st.integers(2, 5))
def test_pitfalls_with_sgd_each_grad_is_its_own_batchs_alone(run: dict[str, Any], k: int) -> None:
    w, b = run["params"]
    X, y, B = run["features"], run["labels"], run["batch_size"]
    for i in range(k):
        Xi, yi = X[i * B : (i + 1) * B], y[i * B : (i + 1) * B]
        if len(Xi) == 0:
            break
        l = loss.squared_loss(model.linreg(Xi, w, b), yi).sum()
        want = torch.autograd.grad(l, (w, b), retain_graph=True)
        l.backward()
        checks.check_grads_close([w.grad, b.grad], want)
        optim.sgd([w, b], run["lr"], len(Xi))


def test_pitfalls_optimizer_zero_grad_sets_grads_to_none() -> None:
    w = torch.ones(2, 1, requires_grad=True)
    (w.sum() * 2).backward()
    trainer = torch.optim.SGD([w], lr=0.1)
    trainer.zero_grad()
    assert w.grad is None


def test_pitfalls_training_without_zeroing_is_refuted_against_the_oracle() -> None:
    def prop(run: dict[str, Any]) -> None:
        with pitfalls.swap("optim.sgd", pitfalls.sgd_without_zero_grad):
            follows_the_oracle(run)

    refutes(runs(), prop)
