"""The epoch loss as a plain mean of batch means: the short batch's samples weigh more."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, data, loss, model, optim, train
from linreg._book import BATCH_SIZE, UNEVEN_NUM_EXAMPLES
from linreg.kinds.epoch_loss import EPOCHS, run_epoch
from linreg.kinds.loop import ObjectiveOptions, curvature
from linreg.kinds.runs import params_like
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def train_epoch_mean_of_batch_means(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> float:
    """Mistake: `sum(batch_means) / num_batches`: a short last batch's samples weigh more."""
    w, b = params
    means = []
    for X, y in data.data_iter(batch_size, features, labels):
        l = loss.squared_loss(model.linreg(X, w, b), y)
        l.sum().backward()  # type: ignore[no-untyped-call]
        if lr > 0:
            optim.sgd([w, b], lr, X.shape[0])
        else:
            w.grad, b.grad = None, None
        means.append(float(l.detach().mean()))
    return sum(means) / len(means)


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def reports_the_full_loss(target: Target, run: dict[str, Any]) -> None:
    """With lr = 0, the reported epoch loss is the full-data loss of the objective."""
    X, y = run["features"], run["labels"]
    w, b = run["params"]
    with torch.no_grad():
        full = float(((X @ w + b - y) ** 2).mean()) * curvature(target.options) / 2
    reported = run_epoch(target, {**run, "lr": 0.0})
    got = float(reported.detach() if isinstance(reported, Tensor) else reported)
    tol = checks.tolerance(X.dtype) * 10
    if not abs(got - full) <= tol * max(abs(full), 1e-30):
        n, b_ = len(X), run["batch_size"]
        raise checks.CheckFailed(
            f"with lr = 0 the reported epoch loss is {got:.9g}, the full-data loss {full:.9g}: "
            f"n={n}, batch_size={b_}"
            + (
                f" (a short last batch of {n % b_}: a mean of batch means weighs it more)"
                if n % b_
                else ""
            )
        )


def _runs(options: ObjectiveOptions) -> SearchStrategy[dict[str, Any]]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    def run(n: int) -> SearchStrategy[dict[str, Any]]:
        return st.tuples(
            sts.datasets(n, dtype=options.dtype, d=2, noise=0.5), sts.seeds, st.integers(1, n + 3)
        ).map(
            lambda t: {
                "features": t[0][0],
                "labels": t[0][1],
                "params": params_like(t[0][0], t[1]),
                "seed": t[1],
                "batch_size": t[2],
                "lr": 0.0,
            }
        )

    return st.integers(1, 30).flatmap(run)


def _book() -> dict[str, Any]:
    X, y = _kit.book(UNEVEN_NUM_EXAMPLES, torch.float32)
    return {
        "features": X,
        "labels": y,
        "params": params_like(X, 0),
        "lr": 0.0,
        "batch_size": BATCH_SIZE,
        "seed": 0,
    }


PROPERTIES = (
    Property(
        name="with lr = 0 the reported epoch loss is the full-data loss",
        kind="epoch-loss",
        check=reports_the_full_loss,
        examples=_runs,
        holds_for=EPOCHS,
        refuted_by=(Variant(train_epoch_mean_of_batch_means, None, "epoch-loss"),),
        book=_book,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Report the loss of the book's untrained model over n=1003 in batches of 10, both ways."""
    n, b = UNEVEN_NUM_EXAMPLES, BATCH_SIZE
    X, y = _kit.book(n)
    full = float(train.full_loss(X, y, *params_like(X, 0)))
    got = {}
    for fn in (train.train_epoch, train_epoch_mean_of_batch_means):
        got[fn.__name__] = float(
            run_epoch(
                Target(fn, "epoch-loss"),
                {
                    "features": X,
                    "labels": y,
                    "params": params_like(X, 0),
                    "lr": 0.0,
                    "batch_size": b,
                    "seed": 0,
                },
            )
        )
    gap = {k: abs(v - full) / full for k, v in got.items()}
    ok = gap["train_epoch"] < 1e-12 < 1e-4 < gap["train_epoch_mean_of_batch_means"]
    return Evidence(
        id="epoch-mean-of-means",
        expected=(
            f"with lr = 0 over n={n}, batch {b} (a last batch of {n % b}), the size-weighted mean "
            "is "
            "the full-data loss; the mean of batch means is not"
        ),
        observed=(
            f"full-data loss {full:.9g}; train_epoch {got['train_epoch']:.9g} (relative gap "
            f"{gap['train_epoch']:.1e}); mean of means "
            f"{got['train_epoch_mean_of_batch_means']:.9g} "
            f"(gap {gap['train_epoch_mean_of_batch_means']:.1e})"
        ),
        ok=ok,
        figures={"full_loss": full, "reported": got, "relative_gap": gap},
    )


PITFALL = Pitfall(
    id="epoch-mean-of-means",
    title="The epoch loss as a plain mean of batch means",
    explanation=(
        "With an uneven last batch, averaging the batch means weighs the short batch's samples "
        "more than the others, so the reported epoch loss is not the mean over the epoch's "
        "examples (it is exactly when n % batch_size == 0). Fix: sum the per-example losses, or "
        "each batch mean times its size, and divide by the number of examples."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=18,
)
