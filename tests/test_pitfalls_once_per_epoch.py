"""The seed's once-per-epoch update on the book's data: only the first batch is kept."""

from __future__ import annotations

from linreg import data, model, pitfalls


def test_pitfalls_seeds_accumulation_keeps_only_the_first_of_the_books_batches() -> None:
    X, y = data.book_data(1000)
    w, b = model.init_params(2)
    l, count = pitfalls.accumulate_losses_seed(data.data_iter(10, X, y), w, b)
    assert l.shape == (10, 1) and count == 101  # the book's 100 batches: only the first is kept
