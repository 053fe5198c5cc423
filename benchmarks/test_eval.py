"""What no_grad and inference_mode save on the full-data loss: time, saved tensors, bytes.

Accounting: in grad mode, `mm` saves X for w's gradient (the input itself: no new memory) and
`pow` saves the (n, 1) residual (n * 4 bytes in float32); `add`, `sub`, `div` by a constant and
`mean` save nothing. So the graph holds 4n bytes beyond the inputs; no_grad and inference_mode
hold none. The three modes are timed interleaved, round by round (benchmarks.common.interleave).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks.common import interleave, sync
from linreg import checks, loss, model

MODES: dict[str, Callable[[], Any]] = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def make(n: int, d: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n + d)
    X = torch.randn(n, d, generator=g)
    w = torch.randn(d, 1, generator=g)
    y = X @ w + 0.1 * torch.randn(n, 1, generator=g)
    w0 = (0.01 * torch.randn(d, 1, generator=g)).requires_grad_()
    return [
        t.to(device) if not t.requires_grad else t.detach().to(device).requires_grad_()
        for t in (X, y, w0, torch.zeros(1, requires_grad=True))
    ]


@pytest.mark.parametrize("d", [2, 64])
@pytest.mark.parametrize("n", [10**3, 10**4, 10**5, 10**6])
def test_eval_full_data_loss(benchmark: Any, device: str, n: int, d: int) -> None:
    X, y, w, b = make(n, d, device)

    def full_loss(mode: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with MODES[mode]():
                out = loss.squared_loss(model.linreg(X, w, b), y).mean()
            sync(device)
            return out

        return run

    saved, held, outs = {}, {}, {}
    for mode in MODES:
        with MODES[mode]():
            outs[mode], saved[mode] = checks.saved_for_backward(full_loss(mode), [X, y, w, b])
        if device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            out = full_loss(mode)()
            held[mode] = torch.cuda.memory_allocated() - before  # the graph's and the output's
            del out
    benchmark.group = f"eval n={n:.0e} d={d} {device}"
    benchmark.extra_info.update(
        n=n,
        d=d,
        device=device,
        base="grad",
        saved_tensors={m: s.count for m, s in saved.items()},
        saved_bytes_beyond_inputs={m: s.new_nbytes for m, s in saved.items()},
        cuda_bytes_held=held or None,
    )
    interleave(benchmark, {m: full_loss(m) for m in MODES}, rounds=30 if n < 10**6 else 10)
    # fast but wrong must fail: the value, the graph, and the bytes against the accounting
    with torch.no_grad():
        want = ((X.double() @ w.double() + b.double() - y.double()) ** 2 / 2).mean()
    for mode, out in outs.items():
        torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=0)
        assert (out.grad_fn is not None) == (mode == "grad")
        assert saved[mode].new_nbytes == (4 * n if mode == "grad" else 0)
        assert saved[mode].count == (2 if mode == "grad" else 0)
