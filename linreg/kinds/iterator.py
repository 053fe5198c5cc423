"""The iterator kind: `fn(batch_size, features, labels)` yields (X, y) batches, once per epoch.

The book's `data_iter`. Its properties run it on an index dataset (row i holds i) and read
which samples each batch holds; torch's `DataLoader(shuffle=True)` is the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from linreg import _kind_names as names
from linreg import _validate, checks
from linreg.kinds.base import Kind, Target, binds, takes_keyword
from linreg.kinds.guards import guarded
from linreg.kinds.late import late
from linreg.kinds.options import Options, option, timeout_option

SIGNATURE = "fn(batch_size, features, labels)"


@dataclass(frozen=True)
class IteratorOptions(Options):
    """What an iterator promises beyond its signature."""

    drop_last: bool = option(
        False,
        "it drops the n % B left-over samples each epoch (True is passed to a drop_last keyword)",
        flag="--drop-last",
        check=_validate.flag,
    )
    reused: bool = option(
        False,
        "the trainer calls it once and iterates the result every epoch",
        flag="--reused",
        check=_validate.flag,
    )
    timeout: float | None = timeout_option("the iterator")


def build(fn: Callable[..., Any], options: IteratorOptions) -> Callable[..., Any]:
    """Return what the properties call: fn, with drop_last=True passed if it takes it."""
    binds(fn, SIGNATURE, 1, None, None)
    return (
        partial(fn, drop_last=True) if options.drop_last and takes_keyword(fn, "drop_last") else fn
    )


def epoch(target: Target, n: int, batch_size: int, *, pairs: bool = False) -> list[list[int]]:
    """Run one epoch of an iterator target on the index dataset; return each batch's indices.

    With pairs, each batch's labels must be its features' own (the shuffled-apart property).
    """
    with guarded("the iterator"):
        return checks.epoch_indices(target.fn, n, batch_size, pairs=pairs)


def loader(drop_last: bool) -> Callable[..., Any]:
    """Return an iterator that wraps the data in DataLoader(shuffle=True), torch's."""

    def iterate(b: int, X: Tensor, y: Tensor) -> DataLoader[Any]:
        return DataLoader(TensorDataset(X, y), batch_size=b, shuffle=True, drop_last=drop_last)

    iterate.__name__ = f"DataLoader(shuffle=True, drop_last={drop_last})"
    return iterate


def iterators(drop_last: bool) -> tuple[Target, ...]:
    """Return linreg's data_iter and torch's DataLoader (the oracle) as iterator targets."""
    options = IteratorOptions(drop_last=drop_last)
    return (
        Target(
            partial(late("data.data_iter"), drop_last=drop_last),
            "iterator",
            options,
            f"data_iter(drop_last={drop_last})",
        ),
        Target(loader(drop_last), "iterator", options, oracle=True),
    )


KIND = Kind(
    name=names.ITERATOR,
    signature=SIGNATURE,
    summary="a mini-batch iterator (the book's data_iter), called once per epoch",
    options=IteratorOptions,
    build=build,
    calls="the iterator",
    doc="Its shuffling is seeded per example through torch's and Python's global RNGs.",
)
