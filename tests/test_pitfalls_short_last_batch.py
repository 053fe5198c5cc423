"""The short last batch: the nominal divisor is harmless exactly when the batches are even."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given

from linreg import pitfalls
from linreg.kinds.runs import book_run
from linreg.pitfalls import short_last_batch
from linreg.testing import strategies as sts

NOMINAL = pitfalls.Target(pitfalls.train_nominal_batch_size, "train")


@given(sts.runs(uneven=False))
@example(book_run(1000, 10))
def test_pitfalls_nominal_batch_size_is_harmless_when_batches_are_even(
    run: dict[str, Any],
) -> None:
    short_last_batch.follows_the_oracle(NOMINAL, run)
