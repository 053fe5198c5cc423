"""Zero init, the other half: with a hidden layer, units that start equal stay equal."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from linreg import checks
from linreg.pitfalls.zero_init import HiddenLayer
from linreg.testing import strategies as sts
from tests.refute import refutes


def hidden_units_stay_identical(args: tuple[Any, bool]) -> None:
    """After training, every hidden unit of the layer has the same weights."""
    (X, y), zero = args
    net = HiddenLayer(X.shape[1], zero=zero, activation=nn.Tanh()).to(X.dtype)
    trainer = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(5):  # a few steps: equal units get equal gradients, every one of them
        ((net(X) - y) ** 2 / 2).mean().backward()
        trainer.step()
        trainer.zero_grad()
    if len(torch.unique(net.first.weight.detach(), dim=0)) != 1:
        raise checks.CheckFailed("the hidden units differ")


data = st.integers(2, 30).flatmap(lambda n: sts.datasets(n))


@given(data)
def test_pitfalls_zero_init_keeps_every_hidden_unit_identical(dataset: Any) -> None:
    hidden_units_stay_identical((dataset, True))


def test_pitfalls_random_init_breaks_the_symmetry() -> None:
    refutes(st.tuples(data, st.just(False)), hidden_units_stay_identical)
