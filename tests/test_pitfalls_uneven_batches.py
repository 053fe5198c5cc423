"""Uneven batches, beyond the catalogue's properties: what each wrong iterator still gets right."""

from __future__ import annotations

import functools

from hypothesis import given

from linreg import checks, pitfalls
from linreg.testing import strategies as sts


@given(sts.sizes(uneven=True), sts.seeds)
def test_pitfalls_wrong_iterators_still_partition_one_epoch(
    size: tuple[int, int], seed: int
) -> None:
    # Their fault is across epochs, not within one: the partition property alone cannot see it.
    n, b = size
    pitfalls.reset_shuffled_once()
    for variant in (pitfalls.data_iter_never_shuffled, pitfalls.data_iter_shuffled_once):
        batches = checks.epoch_indices(functools.partial(variant, drop_last=True), n, b)
        checks.check_epoch_partition(batches, n, b, True)


@given(sts.sizes(uneven=False), sts.seeds)
def test_pitfalls_floor_batches_are_harmless_when_batches_are_even(
    size: tuple[int, int], seed: int
) -> None:
    n, b = size
    batches = checks.epoch_indices(pitfalls.data_iter_floor_batches, n, b)
    checks.check_epoch_partition(batches, n, b, False)
