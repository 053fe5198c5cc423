"""Pitfall 1, uneven batches: coverage, drop_last, the BatchSampler oracle, reshuffling."""

from __future__ import annotations

import functools

import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from linreg import checks, data, pitfalls
from tests import strategies as sts
from tests.refute import refutes

# 64 epochs: a sample left out with probability r / n <= 1/2 per epoch is missed by all of them
# with probability <= 2**-64; and the generator is seeded, so the outcome is fixed.
MAX_EPOCHS = 64


def data_iter(drop_last: bool, seed: int) -> checks.Iterate:
    generator = torch.Generator().manual_seed(seed)
    return lambda b, X, y: data.data_iter(b, X, y, drop_last=drop_last, generator=generator)


def dataloader(drop_last: bool, seed: int) -> checks.Iterate:
    generator = torch.Generator().manual_seed(seed)
    return lambda b, X, y: DataLoader(
        TensorDataset(X, y), batch_size=b, shuffle=True, drop_last=drop_last, generator=generator
    )


def one_epoch_partition(iterate: checks.Iterate, n: int, b: int, drop_last: bool) -> None:
    batches = checks.epoch_indices(iterate, n, b)
    checks.check_epoch_partition(batches, n, b, drop_last)
    checks.check_sizes_match_batch_sampler(batches, n, b, drop_last)


@given(sts.sizes(), st.booleans(), sts.seeds)
@example((1000, 10), False, 0)
@example((1003, 10), False, 0)
@example((1003, 10), True, 0)
def test_pitfalls_one_epoch_is_a_partition_sized_like_batch_sampler(
    size: tuple[int, int], drop_last: bool, seed: int
) -> None:
    n, b = size
    one_epoch_partition(data_iter(drop_last, seed), n, b, drop_last)


@given(sts.sizes(), st.booleans(), sts.seeds)
def test_pitfalls_dataloader_satisfies_the_same_partition_property(
    size: tuple[int, int], drop_last: bool, seed: int
) -> None:
    n, b = size
    one_epoch_partition(dataloader(drop_last, seed), n, b, drop_last)


def every_sample_seen_with_drop_last(iterate: checks.Iterate, size: tuple[int, int]) -> None:
    n, b = size
    checks.check_every_sample_seen(lambda: checks.epoch_indices(iterate, n, b), n, MAX_EPOCHS)


@given(sts.sizes(uneven=True), sts.seeds)
@example((1003, 10), 0)
def test_pitfalls_reshuffling_sees_every_sample_despite_drop_last(
    size: tuple[int, int], seed: int
) -> None:
    every_sample_seen_with_drop_last(data_iter(True, seed), size)
    every_sample_seen_with_drop_last(dataloader(True, seed), size)


def test_pitfalls_never_shuffling_starves_the_same_samples() -> None:
    iterate = functools.partial(pitfalls.data_iter_never_shuffled, drop_last=True)
    n, b = refutes(
        sts.sizes(uneven=True), functools.partial(every_sample_seen_with_drop_last, iterate)
    )
    assert n % b != 0


def test_pitfalls_shuffling_once_starves_the_same_samples() -> None:
    def prop(args: tuple[tuple[int, int], int]) -> None:
        size, seed = args
        pitfalls.reset_shuffled_once()  # a fresh "program run": shuffled once, at its start
        generator = torch.Generator().manual_seed(seed)
        every_sample_seen_with_drop_last(
            functools.partial(
                pitfalls.data_iter_shuffled_once, drop_last=True, generator=generator
            ),
            size,
        )

    (n, b), _ = refutes(st.tuples(sts.sizes(uneven=True), sts.seeds), prop)
    assert n % b != 0


@given(sts.sizes(uneven=True), sts.seeds)
def test_pitfalls_wrong_iterators_still_partition_one_epoch(
    size: tuple[int, int], seed: int
) -> None:
    # Their fault is across epochs, not within one: the partition property alone cannot see it.
    n, b = size
    pitfalls.reset_shuffled_once()
    for variant in (pitfalls.data_iter_never_shuffled, pitfalls.data_iter_shuffled_once):
        one_epoch_partition(functools.partial(variant, drop_last=True), n, b, True)
