"""DistributedSampler pads uneven data to equal shards, and reshuffles only with set_epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from linreg import checks
from linreg._book import UNEVEN_NUM_EXAMPLES
from linreg.kinds.late import late
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def sampler_epochs_without_set_epoch(sampler: Any, epochs: int) -> list[list[int]]:
    """Mistake: no `sampler.set_epoch(epoch)`: DistributedSampler repeats epoch 0's order."""
    return [list(sampler) for _ in range(epochs)]


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------

Ordering = tuple[int, int, int]  # n, world size, seed


def orders_differ(target: Target, args: Ordering) -> None:
    """Across 3 epochs, the ranks' concatenated orders are pairwise different."""
    from linreg import distributed

    n, world_size, seed = args
    per_rank = [
        target.fn(distributed.index_sampler(n, world_size=world_size, rank=r, seed=seed), 3)
        for r in range(world_size)
    ]
    orders = [tuple(i for r in per_rank for i in r[e]) for e in range(3)]
    if len(set(orders)) != 3:
        raise checks.CheckFailed("two epochs had the same order: the sampler did not reshuffle")


def _orderings(options: Options) -> SearchStrategy[Ordering]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    return st.tuples(st.integers(20, 300), st.integers(1, 8), sts.seeds)  # 20! orders: no ties


PROPERTIES = (
    Property(
        name="with set_epoch, each of 3 epochs comes in a new order",
        kind="sampler-epochs",
        check=orders_differ,
        examples=_orderings,
        holds_for=(
            Target(late("distributed.sampler_epochs"), "sampler-epochs", name="sampler_epochs"),
        ),
        refuted_by=(
            Variant(
                sampler_epochs_without_set_epoch, "distributed.sampler_epochs", "sampler-epochs"
            ),
        ),
        book=lambda: (UNEVEN_NUM_EXAMPLES, 2, 0),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Count the samples the padding repeats, and whether epochs reshuffle without set_epoch."""
    from torch.utils.data import DistributedSampler

    from linreg import distributed

    n, world = UNEVEN_NUM_EXAMPLES, 2

    def samplers() -> list[DistributedSampler[int]]:
        return [distributed.index_sampler(n, world_size=world, rank=r) for r in range(world)]

    counts: dict[int, int] = {}
    for s in samplers():
        for i in s:
            counts[i] = counts.get(i, 0) + 1
    twice = sorted(i for i, c in counts.items() if c == 2)
    first = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()[: len(twice)]
    same = {}
    for name, epochs_of in (
        ("set_epoch", distributed.sampler_epochs),
        ("no set_epoch", sampler_epochs_without_set_epoch),
    ):
        orders = [epochs_of(s, 3) for s in samplers()]
        same[name] = all(o[0] == o[e] for o in orders for e in (1, 2))
    shards = [
        len(distributed.shard_indices(n, rank=r, world_size=world, epoch=0)) for r in range(world)
    ]
    ok = (
        twice == sorted(first)
        and len(twice) == 1
        and same == {"set_epoch": False, "no set_epoch": True}
    )
    return Evidence(
        id="distributed-sampler",
        expected=(
            f"n={n} over {world} ranks: the sampler repeats 1 sample (the permutation's first); "
            "without set_epoch 3 epochs share one order, with it they differ"
        ),
        observed=(
            f"repeated {twice} (first of the permutation: {first}); epochs identical without "
            f"set_epoch: {same['no set_epoch']}, with: {same['set_epoch']}; shard_iter shard "
            f"sizes {shards}, no repeats"
        ),
        ok=ok,
        figures={"repeated": twice, "epochs_identical": same, "shard_sizes": shards},
    )


PITFALL = Pitfall(
    id="distributed-sampler",
    title="DistributedSampler pads uneven data and needs set_epoch",
    explanation=(
        "DistributedSampler gives every rank the same number of samples: when n % R != 0 it "
        "repeats the first total_size - n indices of the epoch's permutation, so those samples "
        "count twice. Its order is seeded by seed + epoch: without sampler.set_epoch(epoch) "
        "every epoch repeats the first one's order. Fix: call set_epoch every epoch; shard "
        "without padding (linreg.distributed.shard_iter) when double counting matters."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=12,
)
