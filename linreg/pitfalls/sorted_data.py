"""Sorted data without reshuffling: the fit ends biased toward the last batches' labels."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, loss, model, optim, train
from linreg._book import NUM_EXAMPLES
from linreg.kinds.guards import seeded
from linreg.kinds.late import swap
from linreg.kinds.loop import LOOPS, LoopOptions, curvature, train_loop
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant
from linreg.pitfalls.uneven_batches import data_iter_never_shuffled

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

FAILURE = 1e-12  # the chance a loop that reshuffles fails the property, per example, at most

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def train_never_shuffled(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Mistake: the book's loop over the rows in their stored order: sorted data stays sorted."""
    w, b = params
    for _ in range(num_epochs):
        for i in range(0, len(features), batch_size):
            X, y = features[i : i + batch_size], labels[i : i + batch_size]
            loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
            optim.sgd([w, b], lr, len(X))


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def reflection_bound(m: int, failure: float = FAILURE) -> int:
    """Return the least k with P(max_p |S_p| >= k) <= failure for a random +-1 bridge of 2m steps.

    S_p is the sum of the first p of m labels +1 and m labels -1 in a uniformly random order.
    By the reflection principle P(max_p S_p >= k) = C(2m, m - k) / C(2m, m) exactly; two sides
    double it.
    """

    def log_tail(k: int) -> float:  # log C(2m, m - k) / C(2m, m)
        return 2 * math.lgamma(m + 1) - math.lgamma(m - k + 1) - math.lgamma(m + k + 1)

    k = 0
    while k <= m and math.log(2) + log_tail(k) > math.log(failure):
        k += 1
    return k


def sorted_labels(case: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Return zero features (n, 2) and labels sorted: n/2 rows of -1, then n/2 rows of +1."""
    n = case["batch_size"] * case["batches"]
    labels = torch.cat([-torch.ones(n // 2), torch.ones(n - n // 2)]).to(dtype).reshape(-1, 1)
    return torch.zeros(n, 2, dtype=dtype), labels


def ends_near_the_fit(target: Target, case: dict[str, Any]) -> None:
    """On label-sorted rows, one epoch ends within a bound that holds for any row order.

    The features are zero, so the fit is the intercept alone: the mean label, 0. With b0 = 0,
    one epoch of steps b <- (1 - a) b + a * (batch mean) ends at a weighted sum of the batch
    means with weights rising to a; summed by parts, |b| <= (a / B) max_p |S_p|, S_p the sum of
    the first p labels in the order the loop took them. Reshuffled, that order is uniformly
    random, and the reflection principle bounds max_p |S_p| exactly (reflection_bound): the
    bound fails with probability <= 1e-12 whatever order the rows were stored in. Never
    shuffled, the sorted labels end the epoch on n/2 rows of +1: b ends near 1, above it.
    """
    X, y = sorted_labels(case, target.options.dtype)
    B, n = case["batch_size"], len(X)
    a = case["rate"]
    bound = a * reflection_bound(n // 2) / B
    params = [
        torch.zeros(2, 1, dtype=X.dtype).requires_grad_(),
        torch.zeros(1, dtype=X.dtype).requires_grad_(),
    ]
    with seeded(case["seed"]):
        _, b = train_loop(
            target,
            X,
            y,
            params,
            lr=a / curvature(target.options),
            batch_size=n if target.options.full_batch else B,
            num_epochs=1,
        )
    if not abs(float(b)) <= bound * (1 + 1e-6) + 1e-6:
        raise checks.CheckFailed(
            f"on {n} rows sorted by label (-1 then +1, features zero: the fit is b = 0) one "
            f"epoch ended at b = {float(b):.4g}, beyond {bound:.4g}, which a reshuffling loop "
            "exceeds with probability <= 1e-12: the batches came in the stored order"
        )


def _cases(options: Options) -> SearchStrategy[dict[str, Any]]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    def case(t: tuple[int, int, int]) -> dict[str, Any]:
        rate = t[0] / 100  # 0.1 .. 0.2
        batches = 2 * math.ceil(4 / rate)  # a * K / 2 >= 4: never shuffled, b ends >= 0.96
        return {"rate": rate, "batch_size": t[1], "batches": batches, "seed": t[2]}

    # a / B <= 0.008 keeps the bound below 0.85: never shuffled, b ends above it
    return st.tuples(st.integers(10, 20), st.integers(25, 40), sts.seeds).map(case)


def _no_drop(options: LoopOptions) -> str | None:
    if options.drop_last:
        return "a loop that drops samples: the epoch's labels need not sum to zero"
    return None


PROPERTIES = (
    Property(
        name="on label-sorted rows one epoch ends within a bound that holds for any row order",
        kind="loop",
        check=ends_near_the_fit,
        examples=_cases,
        holds_for=LOOPS,
        refuted_by=(Variant(train_never_shuffled, None, "loop"),),
        book=lambda: {"rate": 0.1, "batch_size": 32, "batches": 60, "seed": 0},
        applies=_no_drop,
        requires=("backward-twice", "rebinding", "mean-vs-sum"),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Train on label-sorted data with and without reshuffling: the book's data, then +-1 labels."""
    X, y = _kit.book(NUM_EXAMPLES)
    order = torch.argsort(y.reshape(-1))
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    fit = torch.linalg.lstsq(A, y).solution.reshape(-1)
    book: dict[str, float] = {}
    for name, never in (("reshuffled", False), ("never shuffled", True)):
        with (
            swap("data.data_iter", data_iter_never_shuffled) if never else contextlib.nullcontext()
        ):
            r = train.train(X[order], y[order], generator=_kit.gen())
        theta = torch.cat([r.w.detach().reshape(-1), r.b.detach()])
        book[name] = float((theta - fit).norm())
    case = {"rate": 0.1, "batch_size": 32, "batches": 60, "seed": 0}
    Xz, yz = sorted_labels(case, torch.float64)
    ends = {}
    for name, fn in (("reshuffled", train.train), ("never shuffled", train_never_shuffled)):
        params = [
            torch.zeros(2, 1, dtype=torch.float64).requires_grad_(),
            torch.zeros(1, dtype=torch.float64).requires_grad_(),
        ]
        with seeded(0):
            if fn is train.train:
                train.train(Xz, yz, lr=0.1, batch_size=32, num_epochs=1, params=tuple(params))  # type: ignore[arg-type]
            else:
                train_never_shuffled(Xz, yz, params, lr=0.1, batch_size=32, num_epochs=1)
        ends[name] = float(params[1].detach())
    bound = 0.1 * reflection_bound(len(Xz) // 2) / 32
    ok = abs(ends["reshuffled"]) <= bound < ends["never shuffled"]
    return Evidence(
        id="sorted-data",
        expected=(
            f"on {len(Xz)} rows sorted by label (-1, then +1; the fit b = 0), one epoch of a "
            f"reshuffling loop ends within {bound:.3g} of the fit (failure <= 1e-12); never "
            "shuffled, b ends near the last batches' +1"
        ),
        observed=(
            f"b after one epoch: reshuffled {ends['reshuffled']:.3g}, never shuffled "
            f"{ends['never shuffled']:.3g}; on the book's data sorted by label (noise 0.01) the "
            f"distance to lstsq after 3 epochs is {book['reshuffled']:.2g} reshuffled vs "
            f"{book['never shuffled']:.2g} never shuffled: with little noise the order hardly "
            "matters"
        ),
        ok=ok,
        figures={"bound": bound, "b_after_one_epoch": ends, "book_distance_to_lstsq": book},
    )


PITFALL = Pitfall(
    id="sorted-data",
    title="Sorted data without reshuffling",
    explanation=(
        "On data stored sorted by label (the book's exercise), a loop that never reshuffles sees "
        "the smallest labels first and the largest last, every epoch: each epoch ends having "
        "stepped toward the last batches, so the fit is biased toward them wherever the labels "
        "carry what the features cannot explain. A fresh permutation every epoch makes the order "
        "of the stored rows irrelevant. Fix: reshuffle every epoch (data_iter, DataLoader(shuffle="
        "True))."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=21,
)
