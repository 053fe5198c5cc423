"""The parameter update: linreg's sgd against the .data variant, a foreach update, and optim.SGD.

Each round gets fresh params and grads (pedantic setup), so every timed call does the same
work, and its result is checked against p - lr * g / B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks.common import sync
from linreg import optim

LR, B = 0.03, 10


def sgd_data(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
    for p in params:
        p.data -= lr * p.grad / batch_size  # type: ignore[operator]
        p.grad.zero_()  # type: ignore[union-attr]


def sgd_foreach(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
    grads = [p.grad for p in params]
    with torch.no_grad():
        torch._foreach_add_(params, grads, alpha=-lr / batch_size)  # type: ignore[arg-type]
    torch._foreach_zero_(grads)  # type: ignore[arg-type]


class OptimSGD:
    """optim.SGD at lr / B as an update step; setup() gives it the round's params."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.trainer: torch.optim.SGD | None = None

    def setup(self, params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        self.trainer = torch.optim.SGD(params, lr=lr / batch_size, **self.options)

    def __call__(self, params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        assert self.trainer is not None
        self.trainer.step()
        self.trainer.zero_grad()


UPDATES: dict[str, Callable[..., Any]] = {
    "sgd": optim.sgd,
    "data": sgd_data,
    "foreach": sgd_foreach,
    "optim.SGD": OptimSGD(),
    "optim.SGD(foreach=True)": OptimSGD(foreach=True),
    "optim.SGD(foreach=False)": OptimSGD(foreach=False),
    "optim.SGD(fused=True)": OptimSGD(fused=True),
}


@pytest.mark.parametrize("update", list(UPDATES))
@pytest.mark.parametrize("size", [2, 10**2, 10**4, 10**6])
def test_update(benchmark: Any, device: str, size: int, update: str) -> None:
    step = UPDATES[update]
    g = torch.Generator().manual_seed(size)
    w0, gw = (
        torch.randn(size, 1, generator=g).to(device),
        torch.randn(size, 1, generator=g).to(device),
    )
    b0, gb = torch.randn(1, generator=g).to(device), torch.randn(1, generator=g).to(device)

    def setup() -> tuple[tuple[list[torch.Tensor], float, int], dict[str, Any]]:
        params = [w0.clone().requires_grad_(), b0.clone().requires_grad_()]
        params[0].grad, params[1].grad = gw.clone(), gb.clone()
        if isinstance(step, OptimSGD):
            step.setup(params, LR, B)
        return (params, LR, B), {}

    if update == "optim.SGD(fused=True)":
        try:
            setup()
        except (RuntimeError, ValueError) as e:
            pytest.skip(f"fused SGD not supported on {device}: {e}")

    last: list[list[torch.Tensor]] = []

    def run(params: list[torch.Tensor], lr: float, batch_size: int) -> None:
        step(params, lr, batch_size)
        sync(device)
        last[:] = [params]

    benchmark.group = f"update size={size:.0e} {device}"
    benchmark.extra_info.update(size=size, update=update, device=device)
    rounds = 200 if size <= 10**4 else 30
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=5)
    (params,) = last
    # the last timed call's result: p - lr * g / B, grads cleared
    torch.testing.assert_close(params[0].detach(), w0 - LR * gw / B, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(params[1].detach(), b0 - LR * gb / B, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None or not bool(p.grad.any()) for p in params)
    assert all(p.is_leaf for p in params)
