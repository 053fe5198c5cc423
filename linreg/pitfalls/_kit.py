"""What the pitfall modules share: the shapes they fill in (Pitfall, Property, Variant,
Evidence) and the targets they name (Target, a kind's Options), a property's examples by name
(`drawn`), and the demonstrations' helpers (the book's data, seeded generators, trajectories).
A pitfall module imports these from here, and what it checks from its kind's package."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, data, model
from linreg._book import BATCH_SIZE
from linreg.kinds.base import Target
from linreg.kinds.options import Options
from linreg.pitfalls._base import Evidence, Pitfall, Property, Variant

__all__ = [
    "Evidence",
    "Options",
    "Pitfall",
    "Property",
    "Target",
    "Variant",
    "book",
    "drawn",
    "gap",
    "gen",
    "params_with_grads",
    "training_runs",
    "trajectory",
]

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy


def drawn(strategy: str, /, **keywords: Any) -> Callable[[Any], SearchStrategy[Any]]:
    """Return a property's examples: `linreg.testing.strategies.<strategy>(**keywords)`, given
    the kind's Options where the strategy takes them. Made when first drawn: importing the
    catalogue needs no Hypothesis."""

    def examples(options: Any) -> SearchStrategy[Any]:
        from linreg.testing import strategies as sts

        make = getattr(sts, strategy)
        if "options" in inspect.signature(make).parameters:
            return make(options, **keywords)  # type: ignore[no-any-return]
        return make(**keywords)  # type: ignore[no-any-return]

    examples.__name__ = examples.__qualname__ = strategy
    return examples


training_runs = drawn("training_runs")
"""The runs every property of the training-loop kind draws (strategies.training_runs): one
strategy, so that each property draws the same batchings and an audit runs each once."""


def gen(seed: int = 0) -> torch.Generator:
    """Return a CPU generator seeded with seed."""
    return torch.Generator().manual_seed(seed)


def book(n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Return the book's dataset of n examples (seed 0), float64 unless asked."""
    return data.book_data(n, dtype=dtype)


def gap(a: Sequence[tuple[Tensor, Tensor]], b: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Return the largest entrywise difference between two trajectories of equal length."""
    return max(
        float((x - y).abs().max())
        for pa, pb in zip(a, b, strict=True)
        for x, y in zip(pa, pb, strict=True)
    )


def trajectory(fn: Callable[..., Any], X: Tensor, y: Tensor, lr: float, **kw: Any) -> list[Any]:
    """Run one epoch of fn (linreg's training signature) from the book's init; return its steps."""
    t = checks.Trajectory()
    w, b = model.init_params(X.shape[1], generator=gen(1), dtype=X.dtype)
    fn(
        X,
        y,
        lr=lr,
        batch_size=BATCH_SIZE,
        num_epochs=1,
        generator=gen(),
        params=(w, b),
        on_step=t,
        **kw,
    )
    return t.steps


def params_with_grads() -> list[Tensor]:
    """Return the book's initial [w, b] with the grads of one batch's summed loss."""
    w, b = model.init_params(2, generator=gen())
    X, y = book(BATCH_SIZE, torch.float32)
    ((X @ w + b - y) ** 2 / 2).sum().backward()  # type: ignore[no-untyped-call]
    return [w, b]
