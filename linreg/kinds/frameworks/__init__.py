"""Frameworks whose own Trainer the audit runs as a training loop: one module each, found here.

Each module (not starting with "_", beside `framework`, the record) defines `FRAMEWORK`, a
`Framework`; its kind (`FRAMEWORK.kind()`) joins the registry, `linreg.kinds.KINDS`. Adding a
framework is adding a module here, and its tests in tests/frameworks/. Importing a module here
never imports its framework: the audit does, when it runs.
"""

from __future__ import annotations

import importlib
import pkgutil

from linreg.kinds.frameworks.framework import Fit, Framework


def _discover() -> tuple[Framework, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "framework":
            continue
        found.append(importlib.import_module(f"{__name__}.{info.name}").FRAMEWORK)
    return tuple(found)


FRAMEWORKS: tuple[Framework, ...] = _discover()

__all__ = ["FRAMEWORKS", "Fit", "Framework"]
