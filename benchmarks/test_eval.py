"""What no_grad and inference_mode save on the full-data loss: time, saved tensors, bytes.

Accounting: in grad mode, `mm` saves X for w's gradient (the input itself: no new memory) and
`pow` saves the (n, 1) residual (n * 4 bytes in float32); `add`, `sub`, `div` by a constant and
`mean` save nothing. So the graph holds 4n bytes beyond the inputs; no_grad and inference_mode
hold none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks.common import sync
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


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("d", [2, 64])
@pytest.mark.parametrize("n", [10**3, 10**4, 10**5, 10**6])
def test_eval_full_data_loss(benchmark: Any, device: str, n: int, d: int, mode: str) -> None:
    X, y, w, b = make(n, d, device)

    def full_loss() -> torch.Tensor:
        with MODES[mode]():
            out = loss.squared_loss(model.linreg(X, w, b), y).mean()
        sync(device)
        return out

    with MODES[mode]():
        _, saved = checks.saved_for_backward(full_loss, [X, y, w, b])
    held = None
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        out = full_loss()
        held = torch.cuda.memory_allocated() - before  # the graph's buffers and the output's
        del out
    benchmark.group = f"eval n={n:.0e} d={d} {device}"
    benchmark.extra_info.update(
        n=n,
        d=d,
        mode=mode,
        device=device,
        saved_tensors=saved.count,
        saved_bytes_beyond_inputs=saved.new_nbytes,
        accounted_bytes=4 * n if mode == "grad" else 0,
        cuda_bytes_held=held,
    )
    out = benchmark(full_loss)
    # fast but wrong must fail: the value, the graph, and the bytes against the accounting
    with torch.no_grad():
        want = ((X.double() @ w.double() + b.double() - y.double()) ** 2 / 2).mean()
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=0)
    assert (out.grad_fn is not None) == (mode == "grad")
    assert saved.new_nbytes == (4 * n if mode == "grad" else 0)
    assert saved.count == (2 if mode == "grad" else 0)
