"""Features and labels shuffled apart: two permutations, and the pairs are gone."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from linreg import data, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES, TRUE_B, TRUE_W, UNEVEN_NUM_EXAMPLES
from linreg.kinds.guards import seeded
from linreg.kinds.iterator import epoch, iterators
from linreg.kinds.late import swap
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def data_iter_shuffled_apart(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: `features[randperm(n)]`, `labels[randperm(n)]`: two orders, pairs pulled apart."""
    n = len(features)
    if shuffle:
        features = features[torch.randperm(n, generator=generator)]
        labels = labels[torch.randperm(n, generator=generator)]  # another permutation
    stop = n - n % batch_size if drop_last else n
    return data._slices(batch_size, features, labels, stop)


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def pairs_stay_together(target: Target, case: dict[str, int]) -> None:
    """Every (x, y) pair the iterator yields is a pair of the dataset."""
    with seeded(case["seed"]):
        epoch(target, case["n"], case["batch_size"], pairs=True)


PROPERTIES = (
    Property(
        name="every (x, y) pair it yields is a pair of the dataset",
        kind="iterator",
        check=pairs_stay_together,
        examples=_kit.drawn("epoch_cases"),
        holds_for=iterators(False) + iterators(True),
        refuted_by=(Variant(data_iter_shuffled_apart, "data.data_iter", "iterator"),),
        book=lambda: {"n": UNEVEN_NUM_EXAMPLES, "batch_size": BATCH_SIZE, "seed": 0},
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Count the broken pairs in one epoch and train the book's model on them."""
    n = NUM_EXAMPLES
    X, y = _kit.book(n)
    gen = _kit.gen()
    batches = list(data_iter_shuffled_apart(BATCH_SIZE, X, y, generator=gen))
    Xa, ya = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    # a pair is intact when its label is the one the features give (the noise is 0.01)
    truth = Xa @ torch.tensor(TRUE_W, dtype=X.dtype).reshape(-1, 1) + TRUE_B
    intact = int(((ya - truth).abs() < 0.1).sum())
    right = train.train(X, y, generator=_kit.gen())
    with swap("data.data_iter", data_iter_shuffled_apart), seeded(0):
        wrong = train.train(X, y, generator=_kit.gen())
    final = {"data_iter": right.losses[-1], "data_iter_shuffled_apart": wrong.losses[-1]}
    ok = intact < n // 10 and final["data_iter"] < 1e-3 and final["data_iter_shuffled_apart"] > 1
    return Evidence(
        id="shuffled-apart",
        expected=(
            f"with two permutations, almost none of the {n} pairs survive an epoch and training "
            "fits noise: the loss stays near the labels' variance"
        ),
        observed=(
            f"pairs intact after one epoch: {intact} of {n}; loss after 3 epochs: "
            f"{final['data_iter']:.3g} (one permutation) vs {final['data_iter_shuffled_apart']:.3g}"
            " (two)"
        ),
        ok=ok,
        figures={"intact_pairs": intact, "final_loss": final},
        curves={"one permutation": right.losses, "two permutations": wrong.losses},
    )


PITFALL = Pitfall(
    id="shuffled-apart",
    title="Features and labels shuffled apart",
    explanation=(
        "A data_iter that permutes the features and the labels with two separate permutations (or "
        "shuffles one of them in place) pairs every example with another example's label: the "
        "model trains on noise and converges to the mean label. Fix: draw ONE permutation and "
        "index both with it, as data_iter does, or use DataLoader(TensorDataset(X, y))."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=14,
    plots=True,
)
