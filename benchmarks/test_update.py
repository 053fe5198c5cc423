"""The parameter update: linreg's sgd against the .data variant, a foreach update, and optim.SGD.

All of them are timed interleaved, round by round; every timed call gets fresh params and grads
(untimed setup), so each does the same work, and its result is checked against p - lr * g / B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks.common import interleave, sync
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


@pytest.mark.parametrize("size", [2, 10**2, 10**4, 10**6])
def test_update(benchmark: Any, device: str, size: int) -> None:
    g = torch.Generator().manual_seed(size)
    w0, gw = (
        torch.randn(size, 1, generator=g).to(device),
        torch.randn(size, 1, generator=g).to(device),
    )
    b0, gb = torch.randn(1, generator=g).to(device), torch.randn(1, generator=g).to(device)
    updates = dict(UPDATES)
    if device == "cpu":  # fused SGD is for accelerators; on the CPU it may not exist
        try:
            OptimSGD(fused=True).setup([w0.clone().requires_grad_()], LR, B)
        except (RuntimeError, ValueError):
            del updates["optim.SGD(fused=True)"]
    current: dict[str, list[torch.Tensor]] = {}

    def setup(name: str) -> None:  # fresh params and grads before every timed call
        params = [w0.clone().requires_grad_(), b0.clone().requires_grad_()]
        params[0].grad, params[1].grad = gw.clone(), gb.clone()
        step = updates[name]
        if isinstance(step, OptimSGD):
            step.setup(params, LR, B)
        current[name] = params

    def case(name: str) -> Any:
        def run() -> None:
            updates[name](current[name], LR, B)
            sync(device)

        return run

    benchmark.group = f"update size={size:.0e} {device}"
    benchmark.extra_info.update(size=size, device=device, base="sgd")
    interleave(
        benchmark,
        {name: case(name) for name in updates},
        rounds=30 if size <= 10**4 else 10,
        setup=setup,
    )
    for name, params in current.items():
        # each one's last timed call: p - lr * g / B, grads cleared
        torch.testing.assert_close(params[0].detach(), w0 - LR * gw / B, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(params[1].detach(), b0 - LR * gb / B, rtol=1e-6, atol=1e-7)
        assert all(p.grad is None or not bool(p.grad.any()) for p in params), name
        assert all(p.is_leaf for p in params), name
