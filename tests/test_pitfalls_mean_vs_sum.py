"""Mean vs sum: the full-data sum loss is n times the mean (the seed's '1000x')."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.nn import functional as F

from linreg import data
from linreg.testing import strategies as sts


@given(st.integers(1, 2000).flatmap(sts.datasets))
@example(data.book_data(1000, dtype=torch.float64))
def test_pitfalls_full_data_sum_loss_is_n_times_the_mean(dataset: Any) -> None:
    X, y = dataset
    y_hat = X @ torch.ones(X.shape[1], 1, dtype=X.dtype)
    total, mean = F.mse_loss(y_hat, y, reduction="sum"), F.mse_loss(y_hat, y)
    torch.testing.assert_close(total, len(X) * mean, rtol=1e-12, atol=0)
