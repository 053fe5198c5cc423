"""What is known of each loop, kept by its function: what it asks for (read once), and what
its first run (the probe's) showed, for each run of it after: its time limit and the params it
stepped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from linreg.kinds.base import Target
from linreg.kinds.guards import user_fn
from linreg.kinds.training_loop import contract as contracts
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.settings import FLOOR, options_of

_T = TypeVar("_T")
# what each loop's first run (the probe's) showed, by the function: kept beside it, as an id
# may be a later function's
_LIMITS: dict[int, tuple[Callable[..., Any], float]] = {}  # its derived time limit
_TRAINED: dict[int, tuple[Callable[..., Any], frozenset[int]]] = {}  # its stepped params


def _kept_for(table: dict[int, tuple[Callable[..., Any], _T]], fn: Callable[..., Any]) -> _T | None:
    """Return what the table keeps for fn itself, or None."""
    hit = table.get(id(fn))
    return hit[1] if hit is not None and hit[0] is fn else None


def limit_of(target: Target) -> float:
    """Return the seconds one run of the target's loop may take."""
    given = options_of(target).timeout
    if given is not None:
        return given
    # the function as _checked saw it, before the target wrapped it
    limit = _kept_for(_LIMITS, user_fn(target.fn))
    return FLOOR if limit is None else limit


def trained_of(target: Target) -> frozenset[int] | None:
    """Return the params (by position) the target's loop stepped on its first run (the
    probe's), or None before it."""
    return _kept_for(_TRAINED, user_fn(target.fn))


def trained_from(fn: Callable[..., Any], seen: Observed) -> None:
    """Keep the params a loop's first run stepped, for each run of it after."""
    _TRAINED[id(fn)] = (fn, seen.stepped_params)


def limit_from(fn: Callable[..., Any], seconds: float) -> None:
    """Keep the time limit a loop's first run (the probe's) gave: 50 times that run, at least
    FLOOR, for each run of it after."""
    _LIMITS[id(fn)] = (fn, max(FLOOR, 50 * seconds))


_CONTRACTS: dict[int, tuple[Callable[..., Any], contracts.Contract]] = {}


def asks_of(fn: Callable[..., Any]) -> contracts.Contract:
    """Return what the loop asks for, read once per function."""
    asks = _kept_for(_CONTRACTS, fn)
    if asks is None:
        asks = contracts.contract_of(fn)
        _CONTRACTS[id(fn)] = (fn, asks)
    return asks
