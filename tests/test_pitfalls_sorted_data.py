"""Sorted data: the reflection bound the property rests on, checked against every path."""

from __future__ import annotations

import itertools
import math

import pytest

from linreg.pitfalls.sorted_data import reflection_bound


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 8])
def test_pitfalls_reflection_bound_covers_every_order_of_a_small_bridge(m: int) -> None:
    # Enumerate every order of m labels +1 and m labels -1: the share whose largest prefix sum
    # reaches k in size must not exceed the failure the bound was asked for.
    orders = [
        [1 if i in ups else -1 for i in range(2 * m)]
        for ups in map(set, itertools.combinations(range(2 * m), m))
    ]
    assert len(orders) == math.comb(2 * m, m)
    for failure in (0.5, 0.2, 0.05):
        k = reflection_bound(m, failure)
        reach = sum(
            max(abs(s) for s in itertools.accumulate(order)) >= k for order in orders
        ) / len(orders)
        assert reach <= failure, (m, failure, k, reach)
        if k > 0:  # the least such k: at k - 1 the two-sided reflection formula exceeds failure
            assert 2 * math.comb(2 * m, m - k + 1) / math.comb(2 * m, m) > failure
