"""linreg's own functions as targets: looked up when called, so a wrong variant can stand in.

`swap` puts a wrong variant in place of linreg's `module.name` while a block runs (the whole
suite, under LINREG_SWAP); `late` returns a function that calls whatever is there now.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def swap(target: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Put replacement in place of linreg's `module.name` target while the block runs."""
    module_name, _, attr = target.rpartition(".")
    module = importlib.import_module(f"linreg.{module_name}")
    original = getattr(module, attr)
    setattr(module, attr, replacement)
    try:
        yield
    finally:
        setattr(module, attr, original)


def late(target: str) -> Callable[..., Any]:
    """Return a function that calls linreg's `module.name` as it is when called (swap-aware)."""
    module_name, _, attr = target.rpartition(".")
    module = importlib.import_module(f"linreg.{module_name}")

    @functools.wraps(getattr(module, attr))
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(module, attr)(*args, **kwargs)

    return call
