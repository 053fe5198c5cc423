"""In place vs rebinding: the caller's tensors stay bit-identical, and ints behave the other way."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linreg import pitfalls
from linreg.kinds.update_step import Update
from linreg.testing import strategies as sts


@given(sts.updates())
def test_pitfalls_rebinding_leaves_the_callers_tensors_bit_identical(u: Update) -> None:
    before = [p.detach().clone() for p in u.params]
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'zero_'"):
        pitfalls.sgd_rebinding(*u)
    for p, old in zip(u.params, before, strict=True):
        assert torch.equal(p.detach(), old)


@given(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=5),
    st.integers(-1000, 1000).filter(bool),
)
def test_pitfalls_isub_rebinds_ints_but_mutates_tensors(values: list[int], k: int) -> None:
    ints = list(values)
    for p in ints:
        p -= k  # rebinds the loop's name: an int is immutable
    assert ints == values
    tensors = [torch.tensor(v) for v in values]
    ids = [id(t) for t in tensors]
    for t in tensors:
        t -= k  # Tensor.__isub__: the list's own tensors change
    assert [int(t) for t in tensors] == [v - k for v in values]
    assert [id(t) for t in tensors] == ids
