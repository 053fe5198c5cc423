"""Micro-batch accumulation: the mean of means is right exactly when the micro-batches are even."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from linreg import pitfalls
from linreg.pitfalls import micro_batch_accumulation
from linreg.testing import strategies as sts

MEAN_OF_MEANS = pitfalls.Target(pitfalls.accumulate_grad_mean_of_means, "accumulate-grad")


@given(sts.micro_batches(uneven=False))
def test_pitfalls_mean_of_means_is_right_when_micro_batches_are_even(case: dict[str, Any]) -> None:
    micro_batch_accumulation.full_batch_gradient(MEAN_OF_MEANS, case)
