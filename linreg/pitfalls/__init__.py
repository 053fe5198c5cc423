"""The catalogue of training-loop pitfalls: one module per pitfall, found by discovery.

Each module here (not starting with "_") defines `PITFALL`: its id, title and
explanation, its properties (each a check, where its examples come from, linreg's own targets
that satisfy it and the wrong variants that refute it) and its live demonstration. Adding a
pitfall is adding a module. The wrong variants, each a function named after its mistake, are
importable from here by name (`linreg.pitfalls:sgd_rebinding`); `swap` puts one in place of
the linreg function it `replaces`, so the whole suite can be run against the wrong code.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from linreg.kinds.base import Target
from linreg.kinds.late import swap
from linreg.kinds.options import Options
from linreg.pitfalls._base import Evidence, Pitfall, Property, Variant


def _discover() -> tuple[Pitfall, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(module.PITFALL)
    return tuple(sorted(found, key=lambda p: p.order))


CATALOGUE: tuple[Pitfall, ...] = _discover()
BY_ID: dict[str, Pitfall] = {p.id: p for p in CATALOGUE}
VARIANTS: dict[str, Variant] = {v.name: v for p in CATALOGUE for v in p.variants}
PROPERTIES: tuple[Property, ...] = tuple(prop for p in CATALOGUE for prop in p.properties)

# Every wrong variant, and the helpers beside them, by name: linreg.pitfalls:sgd_rebinding.
_NAMES: dict[str, Any] = {name: v.func for name, v in VARIANTS.items()}
_NAMES["reset_shuffled_once"] = importlib.import_module(
    f"{__name__}.uneven_batches"
).reset_shuffled_once
globals().update(_NAMES)

__all__ = [
    "BY_ID",
    "CATALOGUE",
    "PROPERTIES",
    "VARIANTS",
    "Evidence",
    "Options",
    "Pitfall",
    "Property",
    "Target",
    "Variant",
    "swap",
    *sorted(_NAMES),
]
