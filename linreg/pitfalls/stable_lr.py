"""The largest stable learning rate: full-batch GD converges below 2 / lambda_max only."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import accumulate, checks, loss, model, optim, train
from linreg._book import LR, NUM_EXAMPLES
from linreg.config import TrainConfig, bind, mirrors
from linreg.kinds.guards import seeded
from linreg.kinds.loop import FULL_BATCH_LOOPS, LoopOptions, curvature, train_loop
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


@mirrors(accumulate.train_full_batch)
def train_full_batch_summed(*args: Any, **kwargs: Any) -> train.TrainResult:
    """Mistake: the full-batch loss summed, not averaged: each step n times, the bound over n."""
    a = bind(train_full_batch_summed, *args, **kwargs)
    return accumulate.fit_per_epoch(
        a["features"], a["labels"], TrainConfig.of(a), _summed_epoch, a["params"]
    )


def _summed_epoch(features: Tensor, labels: Tensor, w: Tensor, b: Tensor, c: TrainConfig) -> None:
    loss.squared_loss(model.linreg(features, w, b), labels).sum().backward()  # type: ignore[no-untyped-call]
    optim.sgd([w, b], c.lr, 1)  # no / n


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def _push_toward(value: float) -> None:
    # Hypothesis's target(): search near the bound, where a wrong loop's divergence starts
    try:
        from hypothesis import target
        from hypothesis.control import currently_in_test_context
    except ImportError:  # pragma: no cover - the property also runs outside Hypothesis
        return
    if currently_in_test_context():
        target(value, label="closeness to the stable bound")


def stable_below_unstable_above(target: Target, run: dict[str, Any]) -> None:
    """Below 2 / lambda_max the loss falls every epoch; above it, it grows without limit."""
    X, y, factor = run["features"], run["labels"], run["factor"]
    _push_toward(-abs(factor - 1))
    c = curvature(target.options)
    lr = factor * train.stable_bound(X, objective=target.options.objective)

    def full_loss(epochs: int) -> float:
        with seeded(run["seed"]):
            w, b = train_loop(
                target,
                X,
                y,
                [p.clone().requires_grad_() for p in run["params"]],
                lr=lr,
                batch_size=len(X),
                num_epochs=epochs,
            )
        r = X.double() @ w + b - y.double().reshape(-1)
        return float((r**2).mean()) * c / 2

    if factor < 1:
        losses = [full_loss(e) for e in (0, 1, 2, 4, 8)]
        for k in range(1, len(losses)):
            if not losses[k] <= losses[k - 1] * (1 + 1e-6) + 1e-12 * losses[0]:
                raise checks.CheckFailed(
                    f"at lr = {factor:.3g} x the bound 2 / lambda_max the full-data loss went "
                    f"from {losses[k - 1]:.6g} to {losses[k]:.6g}: it must fall every epoch"
                )
        return
    start, end = full_loss(0), full_loss(run["epochs_above"])
    if math.isfinite(end) and end < 100 * start:
        raise checks.CheckFailed(
            f"at lr = {factor:.3g} x the bound 2 / lambda_max the loss went from {start:.6g} to "
            f"{end:.6g} in {run['epochs_above']} epochs: above the bound it must grow"
        )


def _runs(options: LoopOptions) -> SearchStrategy[dict[str, Any]]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    factors = st.one_of(st.floats(0.05, 0.95), st.floats(1.05, 3.0))

    def run(t: tuple[tuple[Tensor, Tensor], int, float]) -> dict[str, Any]:
        (X, y), seed, factor = t
        A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1).double()
        _, vectors = torch.linalg.eigh(A.T @ A)
        theta = torch.linalg.lstsq(A, y.double()).solution.reshape(-1)
        # start one unit along the top eigenvector from the fit: above the bound, that grows
        start = (theta + vectors[:, -1]).to(X.dtype)
        # growth per epoch is (2 * factor - 1)^2 in the loss: epochs to grow 1000x
        epochs = math.ceil(math.log(1e3) / (2 * math.log(2 * factor - 1))) if factor > 1 else 0
        return {
            "features": X,
            "labels": y,
            "seed": seed,
            "factor": factor,
            "params": [start[:-1].reshape(-1, 1), start[-1:]],
            "epochs_above": epochs,
        }

    data_ = st.integers(3, 40).flatmap(lambda n: sts.datasets(n, dtype=options.dtype, max_d=3))
    return st.tuples(data_, sts.seeds, factors).map(run)


def _book() -> dict[str, Any]:
    X, y = _kit.book(NUM_EXAMPLES)
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    _, vectors = torch.linalg.eigh(A.T @ A)
    start = torch.linalg.lstsq(A, y).solution.reshape(-1) + vectors[:, -1]
    return {
        "features": X,
        "labels": y,
        "seed": 0,
        "factor": 0.9,
        "epochs_above": 0,
        "params": [start[:-1].reshape(-1, 1), start[-1:]],
    }


def _needs_full_batch(options: LoopOptions) -> str | None:
    return None if options.full_batch else "the bound is for full-batch gradient descent"


PROPERTIES = (
    Property(
        name=(
            "below 2 / lambda_max(A^T A / n) the loss falls every epoch; above, it grows unbounded"
        ),
        kind="loop",
        check=stable_below_unstable_above,
        examples=_runs,
        holds_for=FULL_BATCH_LOOPS,
        refuted_by=(
            Variant(
                train_full_batch_summed,
                "accumulate.train_full_batch",
                "loop",
                LoopOptions(full_batch=True),
            ),
        ),
        book=_book,
        applies=_needs_full_batch,
        requires=("backward-twice", "rebinding"),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Measure the bound on the book's data; run full-batch GD just below and above it."""
    X, y = _kit.book(NUM_EXAMPLES)
    bound = train.stable_bound(X)
    runs = {}
    for name, fn, lr, epochs in (
        ("0.9 x bound", train.train, 0.9 * bound, 30),
        ("1.1 x bound", train.train, 1.1 * bound, 30),
        (f"summed, lr {LR}", train_full_batch_summed, LR, 30),
    ):
        w, b = model.init_params(2, generator=_kit.gen(1), dtype=X.dtype)
        kw = {"batch_size": len(X)} if fn is train.train else {}
        runs[name] = fn(
            X, y, lr=lr, num_epochs=epochs, generator=_kit.gen(), params=(w, b), **kw
        ).losses
    below, above, summed = runs.values()
    falling = all(b <= a for a, b in itertools.pairwise(below))
    ok = falling and not (above[-1] < 100 * above[0]) and not (summed[-1] < 100 * summed[0])
    ok = ok and bound > LR > bound / NUM_EXAMPLES
    return Evidence(
        id="stable-lr",
        expected=(
            "on the book's data, full-batch GD falls every epoch at 0.9 x 2 / lambda_max and "
            "grows "
            f"at 1.1 x; with a summed loss the bound is divided by n = {NUM_EXAMPLES}, so the "
            "book's "
            f"lr = {LR} diverges"
        ),
        observed=(
            f"2 / lambda_max(A^T A / n) = {bound:.4g}; loss after 30 epochs: 0.9 x {below[-1]:.3g} "
            f"(falling every epoch: {falling}), 1.1 x {above[-1]:.3g}, summed at lr {LR} "
            f"{summed[-1]:.3g}"
        ),
        ok=ok,
        figures={"bound": bound, "final_loss": {k: v[-1] for k, v in runs.items()}},
        curves=runs,
    )


PITFALL = Pitfall(
    id="stable-lr",
    title="The largest stable learning rate",
    explanation=(
        "Full-batch gradient descent on the book's loss (the mean of r^2 / 2, A = [X, 1]) maps the "
        "error e to (I - lr A^T A / n) e: it converges for lr < 2 / lambda_max(A^T A / n) and "
        "diverges above it, the loss growing without limit. A summed loss (no / n) multiplies "
        "every "
        "step by n, so the bound is divided by n: the book's lr = 0.03 diverges at full batch on "
        "the book's data. Mini-batches are less stable still. Fix: average the loss; keep lr below "
        "2 / lambda_max (python -m linreg train names it when a run diverges)."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=19,
    plots=True,
)
