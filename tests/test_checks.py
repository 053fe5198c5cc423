"""The check functions themselves: each refuses a small but visible departure and says what."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linreg import checks, loss, optim

gaps = st.floats(min_value=1e-9, max_value=10.0, allow_nan=False, allow_infinity=False)


def trajectory(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (
            torch.full((2,), float(k), dtype=torch.float64),
            torch.full((1,), -float(k), dtype=torch.float64),
        )
        for k in range(steps)
    ]


@given(
    st.integers(1, 5).flatmap(lambda s: st.tuples(st.just(s), st.integers(0, s - 1))),
    gaps,
    st.booleans(),
)
def test_check_same_trajectory_names_the_first_step_that_departs(
    where: tuple[int, int], gap: float, in_w: bool
) -> None:
    steps, k = where
    a, b = trajectory(steps), trajectory(steps)
    checks.check_same_trajectory(a, b)
    (b[k][0] if in_w else b[k][1]).add_(gap * (1 + abs(float(b[k][0][0]))))
    with pytest.raises(checks.CheckFailed, match=f"^step {k + 1}: {'w' if in_w else 'b'} "):
        checks.check_same_trajectory(a, b)
    with pytest.raises(checks.CheckFailed, match="took"):
        checks.check_same_trajectory(a, b[:-1])


@given(gaps)
def test_check_grads_close_refuses_a_visible_gap(gap: float) -> None:
    g = [torch.ones(2, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)]
    checks.check_grads_close(g, [t.clone() for t in g])
    with pytest.raises(checks.CheckFailed, match=r"^grad 1 differs"):
        checks.check_grads_close(g, [g[0].clone(), g[1] + gap])
    with pytest.raises(checks.CheckFailed, match=r"^grad 0 is None"):
        checks.check_grads_close([None, g[1]], g)
    with pytest.raises(checks.CheckFailed, match=r"^1 gradients, expected 2"):
        checks.check_grads_close(g[:1], g)


@given(st.floats(min_value=1e-9, max_value=1e-3))
def test_check_update_in_place_refuses_a_step_off_by_a_relative_gap(rel: float) -> None:
    def almost(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad * (1 + rel) / batch_size  # type: ignore[operator]
                p.grad.zero_()  # type: ignore[union-attr]

    def params() -> list[torch.Tensor]:
        out = [
            torch.ones(2, 1, dtype=torch.float64, requires_grad=True),
            torch.ones(1, dtype=torch.float64, requires_grad=True),
        ]
        for p in out:
            p.grad = torch.full_like(p, 3.0)
        return out

    with pytest.raises(checks.CheckFailed, match=r"^params\[0\] is "):
        checks.check_update_in_place(almost, params(), 0.1, 1)


# --- what each check says when it fails: the whole message --------------------------------------


def says(message: str, check: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(checks.CheckFailed) as info:
        check(*args, **kwargs)
    assert str(info.value) == message


def f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_the_batch_checks_say_what_they_saw() -> None:
    says(
        "a batch's labels do not belong to its features: batch 0 holds the features of rows "
        "[0, 1, 2] with the labels of rows [0, -1, -2]",
        checks.epoch_indices,
        lambda b, X, y: [(X, X)],
        3,
        2,
    )
    says("a sample appears twice in one epoch: sizes [2, 1]", check_partition, [[0, 1], [1]])
    says("a batch holds an index outside range(n)", check_partition, [[0, 3], [1]])
    says("expected batch sizes [2, 1], got [1, 2]", check_partition, [[0], [1, 2]])
    says(
        "drop_last: expected 1 full batches, got sizes [1, 1]",
        check_partition,
        [[0], [1]],
        drop_last=True,
    )
    check_partition([[2, 0]], drop_last=True)  # sample 1 dropped: as drop_last allows
    says(
        "batch sizes [1, 2] differ from BatchSampler's [2, 1]",
        checks.check_sizes_match_batch_sampler,
        [[0], [1, 2]],
        3,
        2,
        False,
    )


def check_partition(batches: list[list[int]], *, drop_last: bool = False) -> None:
    checks.check_epoch_partition(batches, 3, 2, drop_last)


def test_every_sample_seen_returns_the_first_epoch_that_completes_the_set() -> None:
    def one_new_sample_per_epoch() -> Callable[[], list[list[int]]]:
        calls = iter(range(100))
        return lambda: [[next(calls)]]

    assert checks.check_every_sample_seen(one_new_sample_per_epoch(), 7, 7) == 7
    assert checks.check_every_sample_seen(one_new_sample_per_epoch(), 1, 1) == 1
    says(
        "6 of 8 samples never seen in 2 epochs, e.g. [2, 3, 4, 5, 6]",
        checks.check_every_sample_seen,
        one_new_sample_per_epoch(),
        8,
        2,
    )


def test_same_trajectory_tolerances_are_relative_and_absolute_1e_12() -> None:
    big, zero = [(f64(1e6), f64(0.0))], [(f64(0.0), f64(0.0))]
    checks.check_same_trajectory(big, [(f64(1e6 + 1e-7), f64(0.0))])  # 1e-13 relative
    says(
        "step 1: w differs by 0.001 ([1000000.0] vs [1000000.001])",
        checks.check_same_trajectory,
        big,
        [(f64(1e6 + 1e-3), f64(0.0))],
    )
    checks.check_same_trajectory(zero, [(f64(0.0), f64(1e-13))])
    says(
        "step 1: b differs by 1e-09 ([0.0] vs [-1e-09])",
        checks.check_same_trajectory,
        zero,
        [(f64(0.0), f64(-1e-9))],
    )
    says("the runs took 1 and 2 steps", checks.check_same_trajectory, zero, zero * 2)


def test_grads_close_tolerances_are_relative_and_absolute_1e_12() -> None:
    checks.check_grads_close([f64(1e6 + 1e-7)], [f64(1e6)])
    says("grad 0 differs by 0.001", checks.check_grads_close, [f64(1e6 + 1e-3)], [f64(1e6)])
    says("grad 1 differs by 1e-09", checks.check_grads_close, [f64(0), f64(-1e-9)], [f64(0)] * 2)
    says("grad 0 is None", checks.check_grads_close, [None], [f64(0)])
    says("1 gradients, expected 2", checks.check_grads_close, [f64(0)], [f64(0)] * 2)


def leaf_params() -> list[torch.Tensor]:
    params = [f64(1.0, 2.0).requires_grad_(), f64(3.0).requires_grad_()]
    for p in params:
        p.grad = torch.ones_like(p)
    return params


def test_update_in_place_says_how_the_step_went_wrong() -> None:
    def raises(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        raise ZeroDivisionError("boom")

    def zeroes_a_missing_grad(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        params[0].grad = None
        params[0].grad.zero_()  # type: ignore[union-attr]

    def replaces(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        optim.sgd([params[1]], lr, batch_size)
        params[0] = params[0].detach().clone()

    def rebinds(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        with torch.no_grad():
            for p in params:
                p = p - lr * p.grad / batch_size  # type: ignore[operator]

    def grows(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        optim.sgd(params, lr, batch_size)
        params.append(f64(0.0))

    def keeps_grads(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad / batch_size  # type: ignore[operator]

    def stops_requiring_grad(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        optim.sgd(params, lr, batch_size)
        params[0].requires_grad_(False)

    def off(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        optim.sgd(params, 2 * lr, batch_size)

    step = checks.check_update_in_place
    # the step's own error is not a pitfall: it is reported as the step raising, and where
    with pytest.raises(
        checks.LoopRaised,
        match=r"^the update step raised ZeroDivisionError: boom at .*test_checks\.py:\d+ in raises",
    ):
        step(raises, leaf_params(), 0.5, 2)
    says(
        "the update step raised AttributeError: 'NoneType' object has no attribute 'zero_'; "
        "the caller's params did not change",
        step,
        zeroes_a_missing_grad,
        leaf_params(),
        0.5,
        2,
    )
    says("params[0] was replaced by another tensor", step, replaces, leaf_params(), 0.5, 2)
    says(
        "params[0] did not change, expected p - lr*grad/B = [0.75, 1.75]: an update that "
        "rebinds a name (param = param - ...) never reaches it",
        step,
        rebinds,
        leaf_params(),
        0.5,
        2,
    )
    says("the update step changed params from 2 to 3 tensors", step, grows, leaf_params(), 0.5, 2)
    says(
        "params[0] is [0.5, 1.5], expected p - lr*grad/B = [0.75, 1.75]",
        step,
        off,
        leaf_params(),
        0.5,
        2,
    )
    says(
        "params[0].grad was not zeroed: tensor([1., 1.], dtype=torch.float64)",
        step,
        keeps_grads,
        leaf_params(),
        0.5,
        2,
    )
    says("params[0] no longer requires grad", step, stops_requiring_grad, leaf_params(), 0.5, 2)
    params = leaf_params()
    params[0].requires_grad_(False)
    params[0].grad = None
    says("params[0] no longer requires grad", checks.check_params_are_leaves, params)
    params = leaf_params()
    with pytest.raises(checks.CheckFailed, match=r"^params\[1\] is not a leaf: grad_fn <Mul"):
        checks.check_params_are_leaves([params[0], params[1] * 2])


def test_update_in_place_accepts_what_correct_code_does() -> None:
    # `.data -=` with zeroing left to the loop; optimizer.zero_grad(), which leaves None; a step
    # written for the trainer's no_grad; a mean-loss step without / B; float32 via optim.SGD.
    def data_update(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        for p in params:
            p.data -= lr * p.grad / batch_size  # type: ignore[operator]

    def to_none(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        trainer = torch.optim.SGD(params, lr=lr / batch_size)
        trainer.step()
        trainer.zero_grad()

    def bare(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        for p in params:
            p -= lr * p.grad  # type: ignore[operator]  # the caller's no_grad makes this legal
            p.grad = None

    step = checks.check_update_in_place
    step(data_update, leaf_params(), 0.5, 2, zeroes_grad=False)
    step(to_none, leaf_params(), 0.5, 2)
    step(bare, leaf_params(), 0.5, 2, under_no_grad=True, divides_by_batch_size=False)
    float32 = [p.detach().float().requires_grad_() for p in leaf_params()]
    for p in float32:
        p.grad = torch.full_like(p, 1 / 3)
    step(to_none, float32, 0.1, 3)
    with pytest.raises(checks.CheckFailed, match="leaf Variable"):
        step(bare, leaf_params(), 0.5, 2, divides_by_batch_size=False)  # in grad mode


def test_checks_refuse_misuse_with_a_clear_error() -> None:
    params = leaf_params()
    params[1].grad = None
    with pytest.raises(ValueError, match=r"^params\[1\]\.grad is None: run backward\(\)"):
        checks.check_update_in_place(optim.sgd, params, 0.1, 1)
    with pytest.raises(TypeError, match=r"^params must be a list of tensors, got float"):
        checks.check_update_in_place(optim.sgd, 0.5, 0.1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^step must be callable, got NoneType"):
        checks.check_update_in_place(None, leaf_params(), 0.1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^lr must be a finite number > 0, got str"):
        checks.check_update_in_place(optim.sgd, leaf_params(), "0.1", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^y_hat must be a torch\.Tensor, got float"):
        checks.check_loss_per_example(loss.squared_loss, 0.5, f64(1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^reduction must be 'none' or 'mean' or 'sum'"):
        checks.check_loss_per_example(
            loss.squared_loss,
            f64(1.0),
            f64(1.0),
            reduction="avg",  # type: ignore[arg-type]
        )
    with pytest.raises(TypeError, match=r"^fn must be callable, got int"):
        checks.check_no_graph(3, [])  # type: ignore[arg-type]


def test_loss_per_example_compares_to_mse_loss_to_1e_12_relative() -> None:
    y_hat, y = f64(0.5, 1.0, -2.0).reshape(3, 1), f64(1.5, 0.0, 1.0)
    checks.check_loss_per_example(lambda a, b: loss.squared_loss(a, b) * (1 + 1e-13), y_hat, y)
    says(
        "loss differs from 0.5 * (y_hat - y)^2 (reduction='none') by 4.5e-09: got [0.5, 0.5, "
        "4.5], expected [0.5, 0.5, 4.5]",
        checks.check_loss_per_example,
        lambda a, b: loss.squared_loss(a, b) * (1 + 1e-9),
        y_hat,
        y,
    )
    says(
        "loss has shape (3, 3), expected 3 (one per example) element(s) for reduction='none': "
        "labels of shape (3,) broadcast against predictions of shape (3, 1); reshape y to "
        "y_hat's shape",
        checks.check_loss_per_example,
        lambda a, b: (a - b) ** 2 / 2,
        y_hat,
        y,
    )


def test_loss_per_example_takes_a_reduction_and_a_scale_and_names_the_mismatch() -> None:
    y_hat, y = f64(0.5, 1.0, -2.0).reshape(3, 1), f64(1.5, 0.0, 1.0).reshape(3, 1)
    mse = torch.nn.MSELoss()
    checks.check_loss_per_example(mse, y_hat, y, reduction="mean", scale=1.0)
    checks.check_loss_per_example(
        torch.nn.MSELoss(reduction="sum"), y_hat, y, reduction="sum", scale=1.0
    )
    checks.check_loss_per_example(  # the book's loss, per example, flattened: fine
        lambda a, b: loss.squared_loss(a, b).reshape(-1), y_hat, y
    )
    says(
        "loss differs from 1 * (y_hat - y)^2 (reduction='mean') by 7.33: got 11, expected "
        "3.66667 (3 times the expected: it sums where a mean was declared)",
        checks.check_loss_per_example,
        torch.nn.MSELoss(reduction="sum"),
        y_hat,
        y,
        reduction="mean",
        scale=1.0,
    )
    says(
        "loss differs from 0.5 * (y_hat - y)^2 (reduction='mean') by 1.83: got 3.66667, "
        "expected 1.83333 (twice the expected: the scale is off (0.5 for the book's "
        "(y_hat - y)^2 / 2, 1 for nn.MSELoss))",
        checks.check_loss_per_example,
        mse,
        y_hat,
        y,
        reduction="mean",
    )
    says(
        "loss has shape (), expected 3 (one per example) element(s) for reduction='none'",
        checks.check_loss_per_example,
        mse,
        y_hat,
        y,
    )
    says(
        "the loss returned float, expected a tensor",
        checks.check_loss_per_example,
        lambda a, b: float(mse(a, b)),
        y_hat,
        y,
        reduction="mean",
        scale=1.0,
    )
    float32 = (y_hat.float(), y.float())
    checks.check_loss_per_example(
        lambda a, b: mse(a, b) * (1 + 1e-7), *float32, reduction="mean", scale=1.0
    )


def test_saved_for_backward_counts_what_autograd_keeps_and_leaves_backward_working() -> None:
    X = torch.arange(5.0, dtype=torch.float64).reshape(5, 1)
    w = f64(1.0).reshape(1, 1).requires_grad_()
    out, saved = checks.saved_for_backward(lambda: X @ w, [X, w])
    assert saved == checks.Saved(count=1, nbytes=40, new_nbytes=0)  # X, for w's gradient
    out.sum().backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None and w.grad.tolist() == [[10.0]]
    _, saved = checks.saved_for_backward(lambda: (X @ w - 1) ** 2, [X, w])
    assert saved == checks.Saved(count=2, nbytes=80, new_nbytes=40)  # and the residual
    with pytest.raises(
        checks.CheckFailed,
        match=r"^the evaluation built a graph \(<AddBackward0 .*\) holding 0 saved tensors, "
        r"0 bytes beyond its inputs$",
    ):
        checks.check_no_graph(lambda: w + 1, [w])  # a graph that saves nothing still counts
    checks.check_no_graph(lambda: ((X @ w - 1) ** 2).mean().detach(), [X, w])  # freed with it
    checks.check_no_graph(lambda: float(((X @ w - 1) ** 2).mean().detach()), [X, w])  # a float


def test_converges_accepts_a_distance_equal_to_the_bound() -> None:
    checks.check_converges([f64(3.0), f64(4.0)], [f64(0.0), f64(0.0)], bound=5.0)
    says(
        "distance to the target 5 exceeds the bound 4.99",
        checks.check_converges,
        [f64(3.0), f64(4.0)],
        [f64(0.0), f64(0.0)],
        bound=4.99,
    )
    says("1 tensors to compare with 2", checks.check_converges, [f64(0)], [f64(0)] * 2, bound=1)


# --- what each message says, whole (each of these was a surviving mutant) ---------------------


def _one_param(value: float, grad: float) -> list[torch.Tensor]:
    p = torch.tensor([value], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([grad], dtype=torch.float64)
    return [p]


def _sgd(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
    optim.sgd(params, lr, batch_size)


def test_update_in_place_messages_name_the_argument_the_formula_and_the_params_state() -> None:
    with pytest.raises(ValueError, match=r"^batch_size must be a positive int, got 0$"):
        checks.check_update_in_place(_sgd, _one_param(1.0, 1.0), 0.1, 0)

    def rebinds(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        for p in params:
            p = p - lr * p.grad  # type: ignore[operator]

    with pytest.raises(
        checks.CheckFailed,
        match=r"^params\[0\] did not change, expected p - lr\*grad = \[0\.5\]: an update",
    ):
        checks.check_update_in_place(
            rebinds, _one_param(1.0, 1.0), 0.5, 4, divides_by_batch_size=False
        )

    # a pitfall's symptom (here the in-place update of a leaf in grad mode) is judged, and the
    # message says whether the caller's params moved before it
    def moves_then_raises(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        with torch.no_grad():
            params[0] -= 1.0
        params[0] -= 1.0

    def raises(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        params[0] -= 1.0

    leaf = "a leaf Variable that requires grad is being used in an in-place operation."
    with pytest.raises(checks.CheckFailed, match=rf"^the update step raised RuntimeError: {leaf}$"):
        checks.check_update_in_place(moves_then_raises, _one_param(1.0, 1.0), 0.1, 1)
    with pytest.raises(
        checks.CheckFailed,
        match=rf"^the update step raised RuntimeError: {leaf}; the caller's params did not change$",
    ):
        checks.check_update_in_place(raises, _one_param(1.0, 1.0), 0.1, 1)


def test_update_in_place_tolerance_is_relative_to_p_and_to_its_step() -> None:
    def off_by(error: float) -> Callable[[list[torch.Tensor], float, int], None]:
        def step(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
            optim.sgd(params, lr, batch_size)
            with torch.no_grad():
                params[0] += error

        return step

    # p = 1e6: the tolerance is 1e-12 * (|p| + |step|), about 1e-6, so 1e-8 is within it
    checks.check_update_in_place(off_by(1e-8), _one_param(1e6, 1.0), 1.0, 1)
    # p = 1 stepping to -1: 1e-12 * (1 + 2); an error of 2e-12 is within it
    checks.check_update_in_place(off_by(2e-12), _one_param(1.0, 2.0), 1.0, 1)
    with pytest.raises(checks.CheckFailed, match=r"^params\[0\] is \["):
        checks.check_update_in_place(off_by(5e-12), _one_param(1.0, 2.0), 1.0, 1)
    # a given rtol replaces the dtype's
    checks.check_update_in_place(off_by(1e-3), _one_param(1.0, 1.0), 1.0, 1, rtol=1e-3)


def test_grads_close_uses_the_tolerances_it_is_given() -> None:
    g, e = [torch.tensor([1.001], dtype=torch.float64)], [torch.tensor([1.0], dtype=torch.float64)]
    with pytest.raises(checks.CheckFailed, match=r"^grad 0 differs by 0\.001$"):
        checks.check_grads_close(g, e)
    checks.check_grads_close(g, e, rtol=1e-2, atol=0.0)
    checks.check_grads_close(g, e, rtol=0.0, atol=1e-2)


def test_loss_per_example_messages_name_the_argument_and_the_expected_size() -> None:
    y_hat = torch.zeros(3, 1, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^loss_fn must be callable, got int$"):
        checks.check_loss_per_example(3, y_hat, y_hat)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^y must be a torch\.Tensor, got list$"):
        checks.check_loss_per_example(loss.squared_loss, y_hat, [0.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^scale must be a finite number > 0, got 0$"):
        checks.check_loss_per_example(loss.squared_loss, y_hat, y_hat, scale=0)
    with pytest.raises(ValueError, match=r"^y has 2 elements but y_hat has 3$"):
        checks.check_loss_per_example(loss.squared_loss, y_hat, torch.zeros(2, 1))
    with pytest.raises(
        checks.CheckFailed,
        match=r"^loss has shape \(3, 1\), expected 1 element\(s\) for reduction='mean'$",
    ):
        checks.check_loss_per_example(loss.squared_loss, y_hat, y_hat, reduction="mean")


def test_loss_per_example_names_the_mistake_its_ratio_shows() -> None:
    y_hat = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    y = torch.zeros(3, 1, dtype=torch.float64)
    book = loss.squared_loss

    def check(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw: Any) -> str:
        with pytest.raises(checks.CheckFailed) as info:
            checks.check_loss_per_example(fn, y_hat, y, **kw)
        return str(info.value)

    # a sum where a sum was declared, 3 times over, is no mean's mistake: nothing is named
    assert check(lambda a, b: book(a, b).sum() * 3, reduction="sum").endswith("expected 7")
    assert check(lambda a, b: book(a, b).sum(), reduction="mean").endswith(
        " (3 times the expected: it sums where a mean was declared)"
    )
    assert check(lambda a, b: book(a, b).mean(), reduction="sum").endswith(
        " (1/3 of the expected: it takes the mean where a sum was declared)"
    )
    assert check(lambda a, b: 2 * book(a, b)).endswith(
        " (twice the expected: the scale is off (0.5 for the book's (y_hat - y)^2 / 2, 1 for "
        "nn.MSELoss))"
    )
    assert check(lambda a, b: book(a, b) / 2).endswith(" (half the expected: the scale is off "
                                                        "(0.5 for the book's (y_hat - y)^2 / 2, "
                                                        "1 for nn.MSELoss))")  # fmt: skip
    # within 1e-4 of a factor still names it; the ratio of a zero loss names nothing
    assert check(lambda a, b: 2.00001 * book(a, b)).endswith("1 for nn.MSELoss))")
    zeros = torch.zeros(3, 1, dtype=torch.float64)
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_loss_per_example(lambda a, b: book(a, b) + 1, zeros, zeros)
    assert str(info.value).endswith("got [1, 1, 1], expected [0, 0, 0]")


def test_loss_per_example_blames_flat_labels_only_when_reshaping_them_fixes_the_loss() -> None:
    y_hat = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_loss_per_example(lambda a, b: ((a - b) ** 2 / 2).mean(), y_hat, y,
                                      reduction="mean")  # fmt: skip
    assert str(info.value) == (
        "loss differs from 0.5 * (y_hat - y)^2 (reduction='mean') by 0.25: got 0.25, expected "
        "0: labels of shape (2,) broadcast against predictions of shape (2, 1); reshape y to "
        "y_hat's shape"
    )


def test_loss_per_example_accepts_a_loss_in_another_dtype_and_shows_five_values_as_four() -> None:
    y_hat = torch.arange(6, dtype=torch.float64).reshape(6, 1)
    y = torch.zeros(6, 1, dtype=torch.float64)
    checks.check_loss_per_example(lambda a, b: loss.squared_loss(a, b).float(), y_hat, y)
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_loss_per_example(lambda a, b: loss.squared_loss(a, b) + 1, y_hat, y)
    assert "got [1, 1.5, 3, 5.5, ...], expected [0, 0.5, 2, 4.5, ...]" in str(info.value)
    five = torch.arange(5, dtype=torch.float64).reshape(5, 1)
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_loss_per_example(lambda a, b: loss.squared_loss(a, b) + 1, five, y[:5])
    assert "got [1, 1.5, 3, 5.5, ...], expected [0, 0.5, 2, 4.5, ...]" in str(info.value)
    # a given rtol replaces the dtype's
    off = lambda a, b: loss.squared_loss(a, b) * (1 + 1e-6)  # noqa: E731
    with pytest.raises(checks.CheckFailed):
        checks.check_loss_per_example(off, y_hat, y)
    checks.check_loss_per_example(off, y_hat, y, rtol=1e-5)
    four = torch.arange(4, dtype=torch.float64).reshape(4, 1)
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_loss_per_example(lambda a, b: loss.squared_loss(a, b) + 1, four, y[:4])
    assert "got [1, 1.5, 3, 5.5], expected [0, 0.5, 2, 4.5]" in str(info.value)


def test_epoch_indices_names_at_most_five_rows_of_a_mismatched_batch() -> None:
    def apart(b: int, X: torch.Tensor, y: torch.Tensor) -> Any:
        yield X, y.flip(0)

    with pytest.raises(checks.CheckFailed) as info:
        checks.epoch_indices(apart, 7, 7)
    assert str(info.value) == (
        "a batch's labels do not belong to its features: batch 0 holds the features of rows "
        "[0, 1, 2, 3, 4] with the labels of rows [6, 5, 4, 3, 2]"
    )
