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
from linreg.kinds.training_loop.batching import Batching
from linreg.kinds.training_loop.held import models_restored
from linreg.kinds.training_loop.ledger import Observed

__all__ = [
    "KEEP_BYTES",
    "kept",
    "runs_shared",
    "said",
    "say",
    "sharing",
    "tallied",
    "tally",
    "unshared",
]

KEEP_BYTES = 256 * 2**20  # the tensors one audit keeps, at most
_T = TypeVar("_T")


class _Scope:
    def __init__(self) -> None:
        self.runs: dict[tuple[str, int, Batching], tuple[Target, Any]] = {}
        self.bytes = 0
        self.counted: set[int] = set()  # the tensors counted in bytes (kept alive by runs)
        self.models: set[int] = set()  # the models of the runs kept
        self.full = False  # past KEEP_BYTES, or a factory that hands out one model: no more
        # what each run showed that the report says (tally): what -> batching -> count
        self.tallies: dict[str, dict[Batching, int]] = {}
        self.said: dict[str, None] = {}  # what the report says once (say), in order


_SCOPE: _Scope | None = None


@contextlib.contextmanager
def runs_shared() -> Iterator[None]:
    """Share the runs made inside (one audit's) among its properties. An audit inside an
    audited loop has a scope of its own, and puts its models back when it ends."""
    global _SCOPE
    outer = _SCOPE
    try:
        _SCOPE = _Scope()
        with models_restored():  # put back as they were when the audit ends
            yield
    finally:
        _SCOPE = outer


@contextlib.contextmanager
def unshared() -> Iterator[None]:
    """Share nothing inside: a probe (in an audited loop, inside another audit's scope) makes
    runs no property will read."""
    global _SCOPE
    outer = _SCOPE
    try:
        _SCOPE = None
        yield
    finally:
        _SCOPE = outer


def sharing() -> bool:
    """Return True while the scope keeps runs: the models built then are put back when it
    ends (once it is full, each property puts back its own, as outside any scope)."""
    return _SCOPE is not None and not _SCOPE.full


def tally(batching: Batching, **counts: int) -> None:
    """Count, for the report, what a run on a batching showed (counted once per run, however
    often it is made; outside any scope, nothing is)."""
    if _SCOPE is None:
        return
    for what, n in counts.items():
        if n:
            _SCOPE.tallies.setdefault(what, {})[batching] = n


def tallied(what: str) -> dict[Batching, int]:
    """Return each run's count of what (tally), the runs that showed none left out."""
    return dict(_SCOPE.tallies.get(what, {})) if _SCOPE is not None else {}


def say(text: str) -> None:
    """Keep, for the report, something a run showed that limits the verdicts (once)."""
    if _SCOPE is not None:
        _SCOPE.said[text] = None


def said() -> list[str]:
    """Return what the runs gave the report to say (say), in order."""
    return list(_SCOPE.said) if _SCOPE is not None else []


def kept(what: str, target: Target, batching: Batching, make: Callable[[], _T]) -> _T:
    """Return what make() gives for the target's run on a batching: made once per scope.

    A factory that hands out the same model to every run (the user's own) makes a run's
    model the next run's too: a later property would compute its references on a model
    other runs have touched since, so nothing is shared from then on."""
    scope = _SCOPE
    if scope is None:
        return make()
    key = (what, id(target), batching)
    hit = scope.runs.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]  # type: ignore[no-any-return]
    value = make()
    if scope.full:
        return value
    model = value[0] if isinstance(value, tuple) and isinstance(value[0], nn.Module) else None
    if model is not None and id(model) in scope.models:
        scope.runs.clear()
        scope.full = True
        return value
    size = _bytes(value, scope.counted)
    if scope.bytes + size > KEEP_BYTES:
        scope.full = True
        return value
    scope.runs[key] = (target, value)  # the target kept alive: its id stays its own
    scope.bytes += size
    if model is not None:
        scope.models.add(id(model))
    return value


def _bytes(value: Any, seen: set[int]) -> int:
    """Return the bytes of the tensors a run's records hold (a model's parameters, each
    step's gradients) that are not in seen, and add them to it: each counted once."""
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
            for t in (
                step.applied,
                step.raw,
                step.unscaled,
                step.carried,
                *step.clip_found,
                *step.clip_covered,
                step.live,
            )
            if t is not None
        )
    if isinstance(value, (tuple, list)):
        return sum(_bytes(v, seen) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_bytes(getattr(value, f), seen) for f in value.__dataclass_fields__)
    if isinstance(value, dict):
        return sum(_bytes(v, seen) for v in value.values())
    return 0
