"""Backward twice: the RuntimeError, when it does not come, and the seed's second attempt."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linreg import checks, data, loss, model, pitfalls, train
from linreg.pitfalls.backward_twice import SECOND_TIME
from linreg.testing import strategies as sts


@given(sts.runs())
def test_pitfalls_second_backward_through_the_squared_loss_raises(run: dict[str, Any]) -> None:
    w, b = run["params"]
    l = loss.squared_loss(model.linreg(run["features"], w, b), run["labels"]).sum()
    l.backward()
    with pytest.raises(RuntimeError, match=SECOND_TIME):
        l.backward()


@given(sts.runs())
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


@given(sts.sizes(), sts.seeds)
def test_pitfalls_one_epoch_of_train_takes_one_step_per_batch(
    size: tuple[int, int], seed: int
) -> None:
    n, b = size
    X, y = data.book_data(n, seed=seed, dtype=torch.float64)
    result = train.train(X, y, batch_size=b, num_epochs=1, generator=torch.Generator())
    assert result.num_steps == math.ceil(n / b)


def test_pitfalls_seeds_backward_every_batch_raises_at_the_second_batch_only() -> None:
    X, y = data.book_data(30, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=SECOND_TIME):
        pitfalls.train_concat_backward_every_batch(X, y, batch_size=10)
    single = pitfalls.train_concat_backward_every_batch(X[:10], y[:10], batch_size=10)
    assert single.num_steps == 1  # one batch: the first backward alone does not raise
