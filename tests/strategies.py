"""Hypothesis strategies shared by the whole suite."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from linreg import data

seeds = st.integers(min_value=0, max_value=2**32 - 1)
learning_rates = st.floats(min_value=1e-3, max_value=0.1, allow_nan=False, allow_infinity=False)
num_epochs = st.integers(min_value=1, max_value=3)


@st.composite
def sizes(draw: st.DrawFn, *, max_n: int = 200, uneven: bool | None = None) -> tuple[int, int]:
    """Draw (n, batch_size); uneven=True forces n % batch_size != 0, False forces 0."""
    if uneven is None:
        n = draw(st.integers(1, max_n), label="n")
        return n, draw(st.integers(1, n + 3), label="batch_size")
    batch_size = draw(st.integers(2 if uneven else 1, max(2, max_n // 2)), label="batch_size")
    full = draw(st.integers(1, max(1, (max_n - batch_size) // batch_size)), label="full batches")
    rest = draw(st.integers(1, batch_size - 1), label="rest") if uneven else 0
    return full * batch_size + rest, batch_size


@st.composite
def datasets(
    draw: st.DrawFn,
    n: int,
    *,
    dtype: torch.dtype = torch.float64,
    max_d: int = 4,
    noise: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Draw (features (n, d), labels (n, 1)) from synthetic_data with bounded true params."""
    d = draw(st.integers(1, max_d), label="d")
    coef = st.floats(
        min_value=-5,
        max_value=5,
        allow_nan=False,
        allow_infinity=False,
        width=32 if dtype == torch.float32 else 64,
    )
    true_w = draw(st.lists(coef, min_size=d, max_size=d), label="true_w")
    true_b = draw(coef, label="true_b")
    generator = torch.Generator().manual_seed(draw(seeds, label="data seed"))
    return data.synthetic_data(
        torch.tensor(true_w, dtype=dtype), true_b, n, noise=noise, generator=generator
    )


def params_like(features: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Return the book's initial (w, b) for features, from seed."""
    w = 0.01 * torch.randn(
        features.shape[1], 1, generator=torch.Generator().manual_seed(seed), dtype=features.dtype
    )
    return w.requires_grad_(), torch.zeros(1, dtype=features.dtype, requires_grad=True)


def copy_params(params: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Return fresh leaf copies of (w, b), so two runs start from the same point."""
    w, b = params
    return w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()


def run_kwargs(run: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The training arguments of a drawn run: a fresh generator from its seed, fresh params."""
    return {
        "lr": run["lr"],
        "batch_size": run["batch_size"],
        "num_epochs": run["num_epochs"],
        "generator": torch.Generator().manual_seed(run["seed"]),
        "params": copy_params(run["params"]),
        **overrides,
    }
