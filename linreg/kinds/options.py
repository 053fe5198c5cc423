"""Import what a user names as MODULE:NAME, as the command line and the pytest plugin take it."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def resolve(spec: str, *, callable_: bool = True) -> Any:
    """Import MODULE:NAME (NAME may be dotted) and return it; raise ValueError saying why not.

    callable_=False accepts any object (an example), not only a callable.
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise ValueError(f"expected MODULE:NAME, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the current directory first
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        raise ValueError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {name!r}") from None
    if callable_ and not callable(obj):
        raise ValueError(f"{spec} is not callable: it is a {type(obj).__name__}")
    return obj
