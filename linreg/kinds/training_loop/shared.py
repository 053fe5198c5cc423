"""One audit's runs, shared by its properties: a loop run once on a batching is judged by
every property that draws that batching, not run again for each.

The properties of the training-loop kind draw their batchings from one strategy, so each
draws the same examples in the same order, and each run (the loop at lr 0 and its rows'
references) is made by the first property to draw it and read by the others. An audit is one
scope (`runs_shared`); outside any, nothing is kept. The models a scope's runs built stay held
still (Dropout at p = 0, batch norms in eval mode) until it ends, not until the property that
built them ends: a later property computes its references on them. What a scope keeps is
bounded: past `KEEP_BYTES` of tensors a run is made and judged as before, not kept, so the
first examples (the ones every property begins with) are the ones shared.

A run is keyed by its target and batching: the audit seeds the RNGs before each run and
refuses a forward that is still random, so a second run of the same batching is the first
one again, and a replay of a failing example reads what was seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from linreg.kinds.base import Target
from linreg.kinds.training_loop.held import models_restored
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.settings import Batching

__all__ = ["KEEP_BYTES", "kept", "runs_shared", "sharing"]

KEEP_BYTES = 256 * 2**20  # the tensors one audit keeps, at most
_T = TypeVar("_T")


class _Scope:
    def __init__(self) -> None:
        self.runs: dict[tuple[str, int, Batching], tuple[Target, Any]] = {}
        self.bytes = 0


_SCOPE: _Scope | None = None


@contextlib.contextmanager
def runs_shared() -> Iterator[None]:
    """Share the runs made inside (one audit's) among its properties; an inner scope is the
    outer one's."""
    global _SCOPE
    if _SCOPE is not None:
        yield
        return
    _SCOPE = _Scope()
    try:
        with models_restored():  # put back as they were when the audit ends
            yield
    finally:
        _SCOPE = None


def sharing() -> bool:
    """Return True inside a scope: the models built in it are put back when it ends."""
    return _SCOPE is not None


def kept(what: str, target: Target, batching: Batching, make: Callable[[], _T]) -> _T:
    """Return what make() gives for the target's run on a batching: made once per scope."""
    scope = _SCOPE
    if scope is None:
        return make()
    key = (what, id(target), batching)
    hit = scope.runs.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]  # type: ignore[no-any-return]
    value = make()
    size = _bytes(value)
    if scope.bytes + size <= KEEP_BYTES:
        scope.runs[key] = (target, value)  # the target kept alive: its id stays its own
        scope.bytes += size
    return value


def _bytes(value: Any, seen: set[int] | None = None) -> int:
    """Return the bytes of the tensors a run's records hold (a model's parameters, each
    step's gradients), each tensor counted once."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, nn.Module):
        return sum(_bytes(t, seen) for t in (*value.parameters(), *value.buffers()))
    if isinstance(value, Observed):
        return sum(
            _bytes(t, seen)
            for step in value.steps
            for t in (step.applied, step.raw, step.unscaled, step.carried)
            if t is not None
        )
    if isinstance(value, (tuple, list)):
        return sum(_bytes(v, seen) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_bytes(getattr(value, f), seen) for f in value.__dataclass_fields__)
    if isinstance(value, dict):
        return sum(_bytes(v, seen) for v in value.values())
    return 0
