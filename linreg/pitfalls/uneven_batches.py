"""Uneven batches: n not divisible by batch_size, drop_last, and a new order every epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, data
from linreg._book import BATCH_SIZE, UNEVEN_NUM_EXAMPLES
from linreg.kinds.guards import seeded
from linreg.kinds.iterator import IteratorOptions, epoch, iterators
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# 64 epochs: a sample left out with probability r / n <= 1/2 per epoch is missed by all of them
# with probability <= 2**-64, and the RNGs are seeded, so the outcome is fixed.
MAX_EPOCHS = 64

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def data_iter_never_shuffled(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: `for i in range(0, n - n % b, b)` in index order: the same tail is never seen."""
    del shuffle, generator
    stop = len(features) - len(features) % batch_size if drop_last else len(features)
    return data._slices(batch_size, features, labels, stop)  # data_iter's slices, unshuffled


_ONCE: dict[int, Tensor] = {}


def reset_shuffled_once() -> None:
    """Forget data_iter_shuffled_once's permutations, as a new run of a program would."""
    _ONCE.clear()


def data_iter_shuffled_once(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: `indices` shuffled once, before the epoch loop: every epoch drops the same ones."""
    n = len(features)
    if n not in _ONCE:  # the first epoch's permutation is kept for all later epochs
        _ONCE[n] = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = _ONCE[n]
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        j = order[i : min(i + batch_size, stop)]
        yield features[j], labels[j]


def data_iter_floor_batches(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mistake: `for i in range(n // batch_size)`: the n % b left over are dropped unasked."""
    del drop_last
    order = torch.randperm(len(features), generator=generator) if shuffle else None
    for i in range(len(features) // batch_size):
        j = slice(i * batch_size, (i + 1) * batch_size)
        idx = order[j] if order is not None else j
        yield features[idx], labels[idx]


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def _orderable_sizes(options: Options) -> SearchStrategy[dict[str, int]]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    # n >= 20: two independent shuffles tie with probability 1/20! at most
    n = st.integers(20, 200)
    return sts.epoch_cases(split=n.flatmap(lambda k: st.tuples(st.just(k), st.integers(1, k))))


def _uneven_sizes(options: Options) -> SearchStrategy[dict[str, int]]:
    from linreg.testing import strategies as sts

    return sts.epoch_cases(split=sts.sizes(uneven=True))


def partition(target: Target, case: dict[str, int]) -> None:
    """One epoch is a partition of the data, in batches sized like BatchSampler's."""
    n, b, drop_last = case["n"], case["batch_size"], target.options.drop_last
    with seeded(case["seed"]):
        batches = epoch(target, n, b)
    checks.check_epoch_partition(batches, n, b, drop_last)
    checks.check_sizes_match_batch_sampler(batches, n, b, drop_last)


def reshuffles(target: Target, case: dict[str, int]) -> None:
    """Two consecutive epochs come in different orders."""
    with seeded(case["seed"]):
        first, second = (epoch(target, case["n"], case["batch_size"]) for _ in range(2))
    if first == second:
        raise checks.CheckFailed(
            f"two consecutive epochs of n={case['n']} came in the same order, starting "
            f"{first[0][:5]}: the iterator does not reshuffle every epoch"
        )


def every_sample_seen(target: Target, case: dict[str, int]) -> None:
    """With drop_last, every sample is seen within 64 epochs."""
    n, b = case["n"], case["batch_size"]
    with seeded(case["seed"]):
        checks.check_every_sample_seen(lambda: epoch(target, n, b), n, MAX_EPOCHS)


def _dropping(func: Callable[..., Any]) -> Variant:
    return Variant(
        func,
        "data.data_iter",
        "iterator",
        IteratorOptions(drop_last=True),
        partial(func, drop_last=True),
    )


NEVER_SHUFFLED = _dropping(data_iter_never_shuffled)
SHUFFLED_ONCE = _dropping(data_iter_shuffled_once)
FLOOR_BATCHES = Variant(data_iter_floor_batches, "data.data_iter", "iterator")
BOOK_CASE = {"n": UNEVEN_NUM_EXAMPLES, "batch_size": BATCH_SIZE, "seed": 0}


def _book() -> dict[str, int]:
    return dict(BOOK_CASE)


def _needs_drop_last(options: IteratorOptions) -> str | None:
    if options.drop_last:
        return None
    return "without drop_last every epoch holds every sample: the partition property covers it"


PROPERTIES = (
    Property(
        name="one epoch is a partition of the data, in batches sized like BatchSampler's",
        kind="iterator",
        check=partition,
        examples=_kit.drawn("epoch_cases"),
        holds_for=iterators(False) + iterators(True),
        refuted_by=(FLOOR_BATCHES,),
        book=_book,
    ),
    Property(
        name="two consecutive epochs come in different orders",
        kind="iterator",
        check=reshuffles,
        examples=_orderable_sizes,
        holds_for=iterators(False) + iterators(True),
        refuted_by=(NEVER_SHUFFLED, SHUFFLED_ONCE),
        book=_book,
    ),
    Property(
        name=f"with drop_last, every sample is seen within {MAX_EPOCHS} epochs",
        kind="iterator",
        check=every_sample_seen,
        examples=_uneven_sizes,
        holds_for=iterators(True),
        refuted_by=(NEVER_SHUFFLED, SHUFFLED_ONCE),
        book=_book,
        applies=_needs_drop_last,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Count what a drop_last epoch skips and how many epochs each iterator needs to see all."""
    n, b = UNEVEN_NUM_EXAMPLES, BATCH_SIZE

    def drop_last_epochs(iterate: Callable[..., Any]) -> Callable[[], list[list[int]]]:
        gen = torch.Generator().manual_seed(0)
        return lambda: checks.epoch_indices(
            lambda b_, f, l: iterate(b_, f, l, drop_last=True, generator=gen), n, b
        )

    skipped = n - sum(len(bt) for bt in drop_last_epochs(data.data_iter)())
    epochs: dict[str, int | None] = {}
    for iterate in (data.data_iter, data_iter_never_shuffled, data_iter_shuffled_once):
        reset_shuffled_once()
        try:
            epochs[iterate.__name__] = checks.check_every_sample_seen(
                drop_last_epochs(iterate), n, 100
            )
        except checks.CheckFailed:
            epochs[iterate.__name__] = None
    starved = [k for k, v in epochs.items() if v is None]
    ok = skipped == n % b and starved == ["data_iter_never_shuffled", "data_iter_shuffled_once"]
    return Evidence(
        id="uneven-batches",
        expected=(
            f"a drop_last epoch of n={n}, b={b} skips {n % b} samples; reshuffled, all are seen "
            "within a few epochs; never shuffled or shuffled once, some never are"
        ),
        observed=(
            f"skipped {skipped} per epoch; all seen after {epochs['data_iter']} epochs with "
            f"data_iter; not within 100 epochs with {', '.join(starved) or 'none'}"
        ),
        ok=ok,
        figures={"skipped_per_epoch": skipped, "epochs_to_see_all": epochs},
    )


PITFALL = Pitfall(
    id="uneven-batches",
    title="Uneven batches: n not divisible by batch_size",
    explanation=(
        "When n % batch_size != 0 the last batch is short, or, with drop_last, n % batch_size "
        "samples are left out of the epoch. If the order is never reshuffled (or shuffled only "
        "once, before the epoch loop), the SAME samples are left out every epoch and the model "
        "never sees them. Fix: draw a new permutation every epoch, as data_iter and "
        "DataLoader(shuffle=True) do; then every sample is seen within a few epochs."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=1,
)
