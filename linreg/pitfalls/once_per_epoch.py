"""The seed's once-per-epoch update: one step per epoch must be gradient descent on ALL the data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import accumulate, checks, data, loss, model, optim, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.config import TrainConfig, bind, mirrors
from linreg.kinds.guards import seeded
from linreg.kinds.late import late
from linreg.kinds.loop import (
    FULL_BATCH_LOOPS,
    LoopOptions,
    ObjectiveOptions,
    curvature,
    train_loop,
)
from linreg.kinds.runs import book_run, copy_params, params_like
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def accumulate_losses_seed(
    batches: Iterator[tuple[Tensor, Tensor]] | Sequence[tuple[Tensor, Tensor]],
    w: Tensor,
    b: Tensor,
) -> tuple[Tensor, int]:
    """Mistake: the seed's `torch.cat((l, ...))` result is discarded and `count` starts at 1."""
    count = 1
    l: Tensor | None = None
    for X, y in batches:
        count += 1
        if l is None:
            l = loss.squared_loss(model.linreg(X, w, b), y)
        else:
            torch.cat((l, loss.squared_loss(model.linreg(X, w, b), y)), dim=0)
    if l is None:
        raise ValueError("batches is empty")
    return l, count


@mirrors(accumulate.train_full_batch)
def train_once_per_epoch_seed(*args: Any, **kwargs: Any) -> train.TrainResult:
    """Mistake: the seed's 1st attempt: one step per epoch on the 1st batch, divided by b*count."""
    a = bind(train_once_per_epoch_seed, *args, **kwargs)
    return accumulate.fit_per_epoch(
        a["features"], a["labels"], TrainConfig.of(a), _seed_epoch, a["params"]
    )


def _seed_epoch(features: Tensor, labels: Tensor, w: Tensor, b: Tensor, c: TrainConfig) -> None:
    batches = data.data_iter(c.batch_size, features, labels, generator=c.generator)
    l, count = accumulate_losses_seed(batches, w, b)
    l.sum().backward()  # type: ignore[no-untyped-call]
    optim.sgd([w, b], c.lr, c.batch_size * count)


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def accumulates_every_batch(target: Target, run: dict[str, Any]) -> None:
    """The accumulated loss holds every example's loss, in batch order, and counts the batches."""
    w, b = run["params"]
    X, y, B = run["features"], run["labels"], run["batch_size"]
    batches = list(zip(X.split(B), y.split(B), strict=True))
    l, count = target.fn(batches, w, b)
    if l.shape != (len(X), 1):
        raise checks.CheckFailed(f"accumulated {tuple(l.shape)} losses for {len(X)} examples")
    checks.check_grads_close([l], [loss.squared_loss(X @ w + b, y)])
    if count != len(batches):
        raise checks.CheckFailed(f"counted {count} batches, there are {len(batches)}")


def full_batch_descent(target: Target, run: dict[str, Any]) -> None:
    """After E epochs, a full-batch loop equals E steps of gradient descent on all the data.

    On the mean objective, a step maps theta to theta - lr * c * A^T (A theta - y) / n with
    A = [X, 1]; the lr is a fraction `rate` of 1 / (c * lambda_max(A^T A / n)): stable.
    """
    X, y = run["features"], run["labels"]
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1).double()
    c = curvature(target.options)
    lr = run["rate"] / (c * float(torch.linalg.eigvalsh(A.T @ A / len(X)).max()))
    theta = torch.cat([p.detach().double().reshape(-1) for p in run["params"]])
    for _ in range(run["num_epochs"]):
        theta = theta - lr * c * A.T @ (A @ theta - y.double().reshape(-1)) / len(X)
    with seeded(run["seed"]):
        got = torch.cat(
            train_loop(
                target,
                X,
                y,
                list(copy_params(run["params"])),
                lr=lr,
                batch_size=len(X),
                num_epochs=run["num_epochs"],
            )
        )
    tol = checks.tolerance(X.dtype, steps=True) * max(1.0, float(theta.abs().max()))
    if not float((got - theta).abs().max()) <= tol:
        raise checks.CheckFailed(
            f"after {run['num_epochs']} full-batch epoch(s) the params are {got.tolist()}, "
            f"gradient descent on all {len(X)} rows gives {theta.tolist()}"
        )


def _full_batch_runs(options: ObjectiveOptions) -> SearchStrategy[dict[str, Any]]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    return st.tuples(
        st.integers(2, 30).flatmap(lambda n: sts.datasets(n, dtype=options.dtype, d=2)),
        sts.seeds,
        st.floats(0.1, 1.5),
        st.integers(1, 5),
    ).map(
        lambda t: {
            "features": t[0][0],
            "labels": t[0][1],
            "params": params_like(t[0][0], t[1]),
            "seed": t[1],
            "rate": t[2],
            "num_epochs": t[3],
        }
    )


def _book_descent() -> dict[str, Any]:
    X, y = _kit.book(NUM_EXAMPLES, torch.float32)
    return {
        "features": X,
        "labels": y,
        "params": params_like(X, 0),
        "seed": 0,
        "rate": 1.0,
        "num_epochs": 5,
    }


def _needs_full_batch(options: LoopOptions) -> str | None:
    return None if options.full_batch else "a mini-batch loop: see the short-last-batch property"


PROPERTIES = (
    Property(
        name="the accumulated losses hold every batch's examples, and the count is the batches'",
        kind="accumulate-losses",
        check=accumulates_every_batch,
        examples=_kit.drawn("runs"),
        holds_for=(
            Target(
                late("accumulate.accumulate_losses"), "accumulate-losses", name="accumulate_losses"
            ),
        ),
        refuted_by=(
            Variant(accumulate_losses_seed, "accumulate.accumulate_losses", "accumulate-losses"),
        ),
        book=lambda: book_run(NUM_EXAMPLES, BATCH_SIZE),
    ),
    Property(
        name="after E epochs a full-batch loop equals E steps of gradient descent on all the data",
        kind="loop",
        check=full_batch_descent,
        examples=_full_batch_runs,
        holds_for=FULL_BATCH_LOOPS,
        refuted_by=(
            Variant(
                train_once_per_epoch_seed,
                "accumulate.train_full_batch",
                "loop",
                LoopOptions(full_batch=True),
            ),
        ),
        book=_book_descent,
        applies=_needs_full_batch,
        requires=("backward-twice", "rebinding"),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Run the seed's update and full-batch GD for 300 epochs; measure each against lstsq."""
    n, b, long_b = NUM_EXAMPLES, BATCH_SIZE, 100  # 300 epochs in batches of 100: 10x cheaper
    X, y = _kit.book(n)
    runs = {}
    for fn in (train_once_per_epoch_seed, accumulate.train_full_batch):
        w0, b0 = model.init_params(2, generator=_kit.gen(1), dtype=X.dtype)
        runs[fn.__name__] = fn(
            X, y, batch_size=long_b, num_epochs=300, generator=_kit.gen(), params=(w0, b0)
        )
    A = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], dim=1)
    theta = torch.linalg.lstsq(A, y).solution.reshape(-1)
    dist = {
        k: float((torch.cat([r.w.detach().reshape(-1), r.b.detach()]) - theta).norm())
        for k, r in runs.items()
    }
    l, count = accumulate_losses_seed(
        data.data_iter(b, X, y, generator=_kit.gen()), *model.init_params(2, dtype=X.dtype)
    )
    seed_loss = runs["train_once_per_epoch_seed"].losses[-1]
    full_loss = runs["train_full_batch"].losses[-1]
    ok = (
        l.shape == (b, 1)
        and count == n // b + 1
        and dist["train_full_batch"] < 1e-2 < dist["train_once_per_epoch_seed"]
    )
    return Evidence(
        id="once-per-epoch",
        expected=(
            f"the seed's accumulated loss holds only the 1st batch ({b} of {n} rows, count "
            f"{n // b + 1}); after 300 epochs in batches of {long_b} it is far from lstsq, "
            "full-batch "
            "GD is within 1e-2"
        ),
        observed=(
            f"accumulated {l.shape[0]} rows, count {count}; after 300 epochs loss {seed_loss:.4g} "
            f"(seed) vs {full_loss:.3g} (full batch); distance to lstsq "
            f"{dist['train_once_per_epoch_seed']:.3g} vs {dist['train_full_batch']:.2g}"
        ),
        ok=ok,
        figures={
            "accumulated_rows": l.shape[0],
            "count": count,
            "distance_to_lstsq": dist,
            "final_loss": {k: r.losses[-1] for k, r in runs.items()},
        },
        curves={
            "seed's once-per-epoch": runs["train_once_per_epoch_seed"].losses,
            "full-batch GD": runs["train_full_batch"].losses,
        },
    )


PITFALL = Pitfall(
    id="once-per-epoch",
    title="The seed's once-per-epoch update",
    explanation=(
        "The seed tries one update per epoch by concatenating batch losses, but discards "
        "torch.cat's result and starts count at 1: the loss it backpropagates holds only the "
        "first batch, divided by b * (batches + 1). After 300 epochs it is still far from the "
        "least-squares solution. Fix: keep the concatenation (or sum the losses) and divide by n: "
        "that is full-batch gradient descent, which converges at the rate its curvature allows."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=8,
    plots=True,
)
