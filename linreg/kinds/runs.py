"""Runs of linreg's own training signature: a drawn dataset, its hyperparameters and params.

A run is a dict (features, labels, batch_size, lr, num_epochs, seed, params) that
`linreg.testing.strategies.runs` draws; `trajectory` trains a target of linreg's signature
(`fn(features, labels, *, lr, batch_size, num_epochs, generator, params, on_step)`) on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from linreg import checks, data
from linreg.kinds.base import Target
from linreg.kinds.guards import guarded


def params_like(features: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Return the book's initial (w, b) for features, from seed: leaves that require grad."""
    w = 0.01 * torch.randn(
        features.shape[1], 1, generator=torch.Generator().manual_seed(seed), dtype=features.dtype
    )
    return w.requires_grad_(), torch.zeros(1, dtype=features.dtype, requires_grad=True)


def copy_params(params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Return fresh leaf copies of (w, b), so two runs start from the same point."""
    w, b = params
    return w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()


def book_run(n: int, batch_size: int) -> dict[str, Any]:
    """Return a run on the book's data (float64): lr 0.03, one epoch, the book's init from 0."""
    X, y = data.book_data(n, dtype=torch.float64)
    return {
        "features": X,
        "labels": y,
        "batch_size": batch_size,
        "lr": 0.03,
        "num_epochs": 1,
        "seed": 0,
        "params": params_like(X, 0),
    }


def run_kwargs(run: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Return a run's training arguments: a fresh generator from its seed, fresh params."""
    return {
        "lr": run["lr"],
        "batch_size": run["batch_size"],
        "num_epochs": run["num_epochs"],
        "generator": torch.Generator().manual_seed(run["seed"]),
        "params": copy_params(run["params"]),
        **overrides,
    }


def trajectory(
    target: Target, run: dict[str, Any], **overrides: Any
) -> list[tuple[Tensor, Tensor]]:
    """Run a target of linreg's training signature and return (w, b) after every step."""
    steps = checks.Trajectory()
    with guarded("the loop"):
        target.fn(run["features"], run["labels"], **run_kwargs(run, on_step=steps, **overrides))
    return steps.steps
