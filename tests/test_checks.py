"""The check functions themselves: each refuses a small but visible departure."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linreg import checks

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


def test_check_epoch_partition_says_what_is_wrong() -> None:
    with pytest.raises(checks.CheckFailed, match=r"^expected batch sizes \[2, 1\], got \[1, 2\]"):
        checks.check_epoch_partition([[0], [1, 2]], 3, 2, False)
    with pytest.raises(checks.CheckFailed, match=r"^drop_last: expected 1 full batches"):
        checks.check_epoch_partition([[0], [1]], 3, 2, True)
    with pytest.raises(checks.CheckFailed, match=r"^a sample appears twice"):
        checks.check_epoch_partition([[0, 1], [1]], 3, 2, False)
    with pytest.raises(checks.CheckFailed, match=r"^a batch holds an index outside"):
        checks.check_epoch_partition([[0, 3], [1]], 3, 2, False)
    with pytest.raises(checks.CheckFailed, match=r"^3 of 3 samples never seen in 2 epochs"):
        checks.check_every_sample_seen(lambda: [], 3, 2)
