"""The stable learning rate on the book's data, and the command line when a run diverges."""

from __future__ import annotations

import math

import torch

from linreg import data, pitfalls, train


def test_pitfalls_the_books_lr_diverges_at_full_batch_only_with_a_summed_loss() -> None:
    X, y = data.book_data(1000, dtype=torch.float64)
    bound = train.stable_bound(X)
    assert bound / 1000 < 0.03 < bound  # the summed loss divides the bound by n
    summed = pitfalls.train_full_batch_summed(X, y, lr=0.03, num_epochs=20)
    mean = train.train(X, y, lr=0.03, batch_size=1000, num_epochs=20)
    assert summed.losses[-1] > 1e6 * summed.losses[0]
    assert all(b <= a for a, b in zip(mean.losses, mean.losses[1:], strict=False))


def test_pitfalls_train_stops_after_the_first_epoch_that_diverged() -> None:
    X, y = data.book_data(100)
    result = train.train(X, y, lr=50.0, num_epochs=5)
    finite = [math.isfinite(v) for v in result.losses]
    assert finite[-1] is False and all(finite[:-1]) and len(finite) < 5
    assert result.num_steps == 10 * len(finite)
