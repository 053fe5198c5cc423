"""Hypothesis strategies for the pitfall properties; use them in your own tests too.

Requires Hypothesis. Every float is bounded and finite; dependent draws carry a `label`, so a
counterexample reads as the sizes, values and seeds that produced it. The project's own suite
draws from here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import torch

from linreg.testing import NEEDS_HYPOTHESIS

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - checked in a subprocess without Hypothesis
    raise ImportError(f"linreg.testing.strategies: {NEEDS_HYPOTHESIS}") from e
from torch import Tensor

from linreg import data
from linreg.kinds.runs import book_run, copy_params, params_like, run_kwargs
from linreg.kinds.training_loop import MOST_DRAWN, Batching, TrainingLoopOptions
from linreg.kinds.twin_rows import TwinRows
from linreg.kinds.update_step import Update

__all__ = [
    "batchings",
    "book_run",
    "copy_params",
    "datasets",
    "epoch_cases",
    "learning_rates",
    "loop_runs",
    "micro_batches",
    "num_epochs",
    "params_like",
    "predictions",
    "run_kwargs",
    "runs",
    "seeds",
    "sizes",
    "training_runs",
    "twin_rows",
    "updates",
]

seeds = st.integers(min_value=0, max_value=2**32 - 1)
"""Seeds for torch.Generator and the global RNGs."""
learning_rates = st.floats(min_value=1e-3, max_value=0.1, allow_nan=False, allow_infinity=False)
"""Learning rates at which SGD on the generated data is stable."""
num_epochs = st.integers(min_value=1, max_value=3)
"""Numbers of epochs: a few, so that a run stays fast."""


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


def epoch_cases(
    *, split: st.SearchStrategy[tuple[int, int]] | None = None
) -> st.SearchStrategy[dict[str, int]]:
    """Draw an iterator example: {"n", "batch_size", "seed"}, (n, batch_size) from split."""
    return st.tuples(sizes() if split is None else split, seeds).map(
        lambda t: {"n": t[0][0], "batch_size": t[0][1], "seed": t[1]}
    )


def _floats(bound: float, dtype: torch.dtype) -> st.SearchStrategy[float]:
    # float32 values for float32 tensors: what is drawn is exactly what the tensor holds
    if dtype == torch.float32:
        return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False)


@st.composite
def datasets(
    draw: st.DrawFn,
    n: int,
    *,
    dtype: torch.dtype = torch.float64,
    d: int | None = None,
    max_d: int = 4,
    noise: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Draw (features (n, d), labels (n, 1)) from synthetic_data with bounded true params.

    d is drawn from 1..max_d unless given.
    """
    d = d if d is not None else draw(st.integers(1, max_d), label="d")
    coef = _floats(5, dtype)
    true_w = draw(st.lists(coef, min_size=d, max_size=d), label="true_w")
    true_b = draw(coef, label="true_b")
    generator = torch.Generator().manual_seed(draw(seeds, label="data seed"))
    return data.synthetic_data(
        torch.tensor(true_w, dtype=dtype), true_b, n, noise=noise, generator=generator
    )


@st.composite
def runs(
    draw: st.DrawFn,
    *,
    uneven: bool | None = None,
    max_n: int = 48,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """Draw one training run: features, labels, batch_size, lr, num_epochs, seed, params.

    Up to 48 rows: the step-for-step properties hold or fail at any size once there are a
    few batches, uneven ones included, and smaller runs leave time for more examples.
    """
    n, b = draw(sizes(max_n=max_n, uneven=uneven))
    X, y = draw(datasets(n, dtype=dtype))
    seed = draw(seeds, label="seed")
    return {
        "features": X,
        "labels": y,
        "batch_size": b,
        "lr": draw(learning_rates, label="lr"),
        "num_epochs": draw(num_epochs, label="num_epochs"),
        "seed": seed,
        "params": params_like(X, seed),
    }


@st.composite
def updates(draw: st.DrawFn) -> Update:
    """Draw leaf params [w (d, 1), b (1,)] with grads set, an lr and a batch size."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    values = _floats(100, dtype)
    params = []
    for shape in ((draw(st.integers(1, 4), label="d"), 1), (1,)):
        numel = shape[0]
        p = torch.tensor(draw(st.lists(values, min_size=numel, max_size=numel)), dtype=dtype)
        p = p.reshape(shape).requires_grad_()
        p.grad = torch.tensor(
            draw(st.lists(values, min_size=numel, max_size=numel)), dtype=dtype
        ).reshape(shape)
        params.append(p)
    return Update(
        params, draw(learning_rates, label="lr"), draw(st.integers(1, 1000), label="batch_size")
    )


@st.composite
def twin_rows(
    draw: st.DrawFn,
    *,
    sizes: st.SearchStrategy[tuple[int, int]],
    num_epochs: st.SearchStrategy[int] | None = None,
    d: int = 2,
    nonzero: bool = False,
) -> TwinRows:
    """Draw a loop example on n identical rows (see TwinRows); one epoch unless num_epochs.

    nonzero=True draws no zero feature, so that every weight has a gradient.
    """
    n, batch_size = draw(sizes, label="(n, batch_size)")
    return TwinRows(
        n=n,
        batch_size=batch_size,
        num_epochs=1 if num_epochs is None else draw(num_epochs, label="num_epochs"),
        x=tuple(
            draw(st.lists(_NONZERO if nonzero else _EIGHTHS, min_size=d, max_size=d), label="x")
        ),
        w0=tuple(draw(st.lists(_UNIT, min_size=d, max_size=d), label="w0")),
        b0=draw(_UNIT, label="b0"),
        residual=draw(_RESIDUALS, label="residual"),
        rate=draw(_RATES, label="rate"),
        seed=draw(_SMALL_SEEDS, label="seed"),
    )


# eighths: exact in float32 and float64, quick to draw, and they shrink to readable values
_EIGHTHS = st.integers(-16, 16).map(lambda k: k / 8)  # [-2, 2]
_NONZERO = _EIGHTHS.filter(bool)  # every feature moves its weight
_UNIT = st.integers(-8, 8).map(lambda k: k / 8)  # [-1, 1]
_RESIDUALS = st.tuples(st.integers(4, 32), st.sampled_from([1, -1])).map(lambda t: t[0] * t[1] / 8)
_RATES = st.integers(1, 10).map(lambda k: k / 20)  # 0.05 .. 0.5
_SMALL_SEEDS = st.integers(0, 2**16)


@st.composite
def micro_batches(draw: st.DrawFn, *, uneven: bool | None = None) -> dict[str, Any]:
    """Draw a dataset split into micro-batches; uneven=True forces two different sizes."""
    sizes_ = draw(st.lists(st.integers(1, 20), min_size=1, max_size=5), label="micro sizes")
    if uneven is False:
        sizes_ = [sizes_[0]] * len(sizes_)
    elif uneven:
        sizes_ = [*sizes_, sizes_[0] + draw(st.integers(1, 5), label="longer")]
    X, y = draw(datasets(sum(sizes_)))
    w, b = params_like(X, draw(seeds, label="seed"))
    return {"features": X, "labels": y, "sizes": sizes_, "params": (w, b)}


@st.composite
def predictions(draw: st.DrawFn, *, min_n: int = 1, max_n: int = 20) -> dict[str, Tensor]:
    """Draw predictions y_hat (n, 1) and labels y (n, 1) of one dtype, float32 or float64."""
    n = draw(st.integers(min_n, max_n), label="n")
    dtype = draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    values = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
    column = st.lists(values, min_size=n, max_size=n)
    return {
        "y_hat": torch.tensor(draw(column, label="y_hat"), dtype=dtype).reshape(n, 1),
        "y": torch.tensor(draw(column, label="y"), dtype=dtype).reshape(n, 1),
    }


@st.composite
def loop_runs(
    draw: st.DrawFn, *, dtype: torch.dtype = torch.float32, d: int = 2, max_n: int = 16
) -> dict[str, Any]:
    """Draw a run for a loop of the audit's signature: data with two batches or more."""
    n = draw(st.integers(2, max_n), label="n")
    X, y = draw(datasets(n, dtype=dtype, d=d))
    seed = draw(seeds, label="seed")
    return {
        "features": X,
        "labels": y,
        "params": params_like(X, seed),
        "batch_size": draw(st.integers(1, n - 1), label="batch_size"),
        "num_epochs": draw(st.integers(1, 2), label="num_epochs"),
        "lr": draw(st.floats(1e-3, 0.03), label="lr"),
        "seed": seed,
    }


@st.composite
def batchings(
    draw: st.DrawFn,
    options: TrainingLoopOptions | None = None,
    *,
    steps: str = "any",
    min_steps: int = 1,
    max_epochs: int = 1,
    mixed: bool | None = False,
    max_n: int = 10,
    accumulation_steps: int = 1,
    drop_last: bool = False,
) -> Batching:
    """Draw a run of a training loop: n rows in batches, in order (see linreg.audit).

    options, the training-loop kind's Options, give the accumulation count and drop_last (else
    accumulation_steps and drop_last do), and the fewest batches an epoch the loop runs on (an
    epoch of fewer grows to that many); for a loop that takes a count and was given none, the
    count is drawn too (1 to MOST_DRAWN), and handed to the loop with the batching; for a slow
    loop (options.slow) batches of 3 rows at most, 2 full steps an epoch, 2 seeds.
    steps="full": every optimizer step takes batch_size *
    accumulation_steps rows (at least min_steps of them); "short": the last step of each epoch
    takes fewer; "either": full steps, then maybe a short one; "any": any n and batch size.
    mixed=True draws each row as the example or its contrast row; False makes every row the
    example; None draws which of the two (the training-loop kind's properties judge both, on
    the same runs). From 1 to max_epochs epochs. drop_last=True (the
    audit's DataLoader drops the short last batch) keeps at least one batch, and a short step
    short by whole batches.
    """
    least = 1  # batches an epoch: a loop that raised on fewer gets at least this many
    drawn = None  # the count handed to a loop that takes one and was given none
    slow = False  # a slow loop's runs hold fewer updates
    if options is not None:
        accumulation_steps, drop_last = options.accumulation_steps or 1, options.drop_last
        least, slow = options.least_batches, options.slow
        if options.draws_count:
            drawn = accumulation_steps = draw(st.integers(1, MOST_DRAWN), label="count")
    k = accumulation_steps
    if steps == "any":
        n = draw(st.integers(1, max_n), label="n")
        b = draw(st.integers(1, n if drop_last else n + 1), label="batch_size")
        if least > 1:
            n = max(n, least * b)
    else:
        # a step takes b * k rows: keep runs short when k is large ("either" keeps batches of 3,
        # which a loop that splits each batch in two micro-batches splits unevenly)
        top = max(3, 5 // k) if steps == "either" else max(2, 4 // k)
        # slow: batches of 3 at most (a batch split in two still splits unevenly), 2 full
        # steps an epoch
        top, most = (min(top, 3), max(min_steps, 2)) if slow else (top, 3)
        b = draw(st.integers(1 if steps != "short" or k > 1 else 2, top), label="batch_size")
        whole = max(draw(st.integers(min_steps, most), label="full steps"), -(-least // k))
        rest, least_rest = 0, int(steps == "short")
        if steps in ("short", "either") and drop_last and k > 1:
            rest = b * draw(st.integers(least_rest, k - 1), label="rest in batches")
        elif steps in ("short", "either"):
            rest = draw(st.integers(least_rest, b * k - 1), label="rest")
        n = b * k * whole + rest
    rows = (0,) * n
    if mixed is None:
        mixed = draw(st.booleans(), label="mixed")
    if mixed:
        rows = tuple(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n), label="rows"))
    epochs = 1 if max_epochs == 1 else draw(st.integers(1, max_epochs), label="num_epochs")
    # a few model inits: the properties are about the loop, and each seed's reference (the
    # loop on batches of one row) is then computed once per audit, not once per example
    return Batching(rows, b, epochs, draw(st.integers(0, 1 if slow else 3), label="seed"), drawn)


def training_runs(options: TrainingLoopOptions) -> st.SearchStrategy[Batching]:
    """Draw the runs of the training-loop kind's properties (`batchings`): full steps, then
    maybe a short one; identical rows or two kinds; one or two epochs. (A slow loop's audit
    runs `first_runs` first, as Hypothesis's explicit examples: Options.first_examples.)"""
    return batchings(options, steps="either", mixed=None, max_epochs=2)
