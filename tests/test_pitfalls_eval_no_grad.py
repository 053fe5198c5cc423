"""Evaluation in grad mode: exactly X and the (n, 1) residual are held, 4n bytes in float32."""

from __future__ import annotations

import torch
from hypothesis import example, given
from hypothesis import strategies as st

from linreg import checks, data, pitfalls
from linreg.testing import strategies as sts


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
