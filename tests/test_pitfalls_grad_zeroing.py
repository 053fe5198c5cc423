"""Grad zeroing: backward() adds up, sgd resets, optimizer.zero_grad() sets None, and a loop
without zeroing leaves the torch oracle's trajectory."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st

from linreg import checks, loss, model, optim, pitfalls, train
from linreg.config import TrainConfig, bind, mirrors
from linreg.pitfalls import short_last_batch
from linreg.testing import strategies as sts
from tests.refute import refutes


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


@given(sts.runs(), st.integers(1, 5))
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


@given(sts.runs(), st.integers(2, 5))
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
    # train's loop with sgd_without_zero_grad for its update: a variant of train's signature
    @mirrors(train.train)
    def train_without_zeroing(*args: Any, **kwargs: Any) -> train.TrainResult:
        a = bind(train_without_zeroing, *args, **kwargs)
        return train.fit(a["features"], a["labels"], TrainConfig.of(a), unzeroed, a["params"])

    def unzeroed(X: Any, y: Any, w: Any, b: Any, config: TrainConfig) -> None:
        loss.squared_loss(model.linreg(X, w, b), y).sum().backward()
        pitfalls.sgd_without_zero_grad([w, b], config.lr, X.shape[0])

    target = pitfalls.Target(train_without_zeroing, "train")
    refutes(sts.runs(), lambda run: short_last_batch.follows_the_oracle(target, run))
