"""The book's synthetic dataset and its mini-batch iterator.

Not a DataLoader: no workers, no collation. One permutation per epoch, then slices, so the
book's pitfall (samples starved when n % batch_size != 0 and nothing reshuffles) cannot happen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from linreg import _validate
from linreg._book import TRUE_B, TRUE_W


def synthetic_data(
    w: Tensor | Sequence[float],
    b: float | Tensor,
    num_examples: int,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Generate y = Xw + b + N(0, noise^2) with X ~ N(0, 1), as the book does."""
    if isinstance(w, Tensor):
        w = _validate.floating_tensor("w", w).detach()
    else:
        w = torch.tensor([float(v) for v in w])  # torch's default dtype, as the book has it
    if w.ndim not in (1, 2) or (w.ndim == 2 and w.shape[1] != 1) or w.numel() == 0:
        raise ValueError(f"w must have shape (d,) or (d, 1) with d >= 1, got {tuple(w.shape)}")
    if isinstance(b, Tensor):
        if b.numel() != 1:
            raise ValueError(f"b must hold one element, got shape {tuple(b.shape)}")
        b = b.item()
    b = float(b)
    n = _validate.positive_int("num_examples", num_examples)
    noise = _validate.non_negative_finite("noise", noise)
    generator = _validate.generator(generator)
    w = w.reshape(-1)  # (d,)
    X = torch.randn(n, w.numel(), generator=generator, dtype=w.dtype, device=w.device)  # (n, d)
    y = X @ w + b  # (n,)
    y += noise * torch.randn(n, generator=generator, dtype=w.dtype, device=w.device)
    return X, y.reshape(-1, 1)  # (n, d), (n, 1)


def data_iter(
    batch_size: int,
    features: Tensor,
    labels: Tensor,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield one epoch of (X, y) mini-batches, reshuffled on every call."""
    batch_size = _validate.positive_int("batch_size", batch_size)
    features, labels = _validate.dataset(features, labels)
    shuffle = _validate.flag("shuffle", shuffle)
    drop_last = _validate.flag("drop_last", drop_last)
    generator = _validate.generator(generator)
    n = features.shape[0]
    if shuffle:
        # One gather per epoch; the batches below are then views, not copies.
        device = generator.device if generator is not None else features.device
        order = torch.randperm(n, generator=generator, device=device).to(features.device)
        features, labels = features[order], labels[order]
    stop = n - n % batch_size if drop_last else n
    return _slices(batch_size, features, labels, stop)


def _slices(
    batch_size: int, features: Tensor, labels: Tensor, stop: int
) -> Iterator[tuple[Tensor, Tensor]]:
    # A separate generator so that data_iter checks its arguments when called, not when
    # the first batch is asked for.
    for i in range(0, stop, batch_size):
        yield features[i : min(i + batch_size, stop)], labels[i : min(i + batch_size, stop)]


def book_data(
    num_examples: int = 1000, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Return the book's dataset (true_w = [2, -3.4], true_b = 4.2), reproducibly from seed."""
    generator = torch.Generator().manual_seed(seed)
    return synthetic_data(
        torch.tensor(TRUE_W, dtype=dtype), TRUE_B, num_examples, generator=generator
    )
