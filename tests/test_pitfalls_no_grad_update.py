"""The update needs no_grad: the exact error torch raises without it."""

from __future__ import annotations

import pytest
from hypothesis import given

from linreg import pitfalls
from linreg.kinds.update_step import Update
from linreg.pitfalls.no_grad_update import LEAF_ERROR
from linreg.testing import strategies as sts


@given(sts.updates())
def test_pitfalls_update_without_no_grad_raises_the_leaf_error(u: Update) -> None:
    with pytest.raises(RuntimeError, match=LEAF_ERROR):
        pitfalls.sgd_without_no_grad(*u)
