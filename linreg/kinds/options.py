"""A kind's options: each a dataclass field with its help, flag, choices and check, given from
Python, the command line or the plugin; and MODULE:NAME, resolved, for those that name code.

`option()` makes one field; `Options`, the frozen dataclass a kind's options subclass, checks
them once when built; `from_text` reads one from the command line's or the plugin's text;
`shown_value` is how a report shows one; `AUDIT_KEYWORDS` are the keywords every audit function
takes beside its kind's options.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import reprlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from linreg import _validate
from linreg.kinds.guards import FLOOR

# An option's metadata: its help text, its command-line flag, its choices, its check.
HELP, FLAG, CHOICES, CHECK, IMPORT, REQUIRED, READ = (
    "help",
    "flag",
    "choices",
    "check",
    "import",
    "required",
    "read",
)


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    check: Callable[[str, Any], Any] | None = None,
    imported: str | None = None,
    required: bool = False,
    compare: bool = True,
) -> Any:
    """Return a dataclass field for an option: its default, help text, flag, choices and check.

    help says what the option's other value means (for a flag whose default is True: what
    False means). check(name, value) returns the value (converted) or raises TypeError or
    ValueError naming the option; imported="callable" (or "object") says the command line
    and the plugin take it as MODULE:NAME; required=True that the kind needs it.
    """
    meta = {
        HELP: help,
        FLAG: flag,
        CHOICES: choices,
        CHECK: check,
        IMPORT: imported,
        REQUIRED: required,
    }
    return field(default=default, metadata=meta, compare=compare)


def read_from_run(default: Any, help: str) -> Any:
    """Return a dataclass field for what the audit reads from the loop's first runs, never
    given: no keyword, flag or plugin key takes it, and a report shows it where it is not the
    default (what the run showed)."""
    return field(default=default, metadata={HELP: help, READ: True})


# The keywords every audit function takes beside its kind's options: name, default, help (the
# audit functions' signatures and docstrings, and the command line's --max-examples, --seed).
AUDIT_KEYWORDS = (
    ("max_examples", None, "examples per property (default: 30)"),
    ("seed", None, "seed for Hypothesis, an int >= 0 (default: derandomized)"),
    ("shrink", True, "shrink a failing example to the smallest (False: report the first found)"),
)
KEYWORD_HELP = {name: text for name, _, text in AUDIT_KEYWORDS}


@dataclass(frozen=True)
class Options:
    """A kind's options, checked once when built; the base class has none."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check = f.metadata.get(CHECK)
            if check is not None:
                value = check(f.name, value)
                object.__setattr__(self, f.name, value)
            if f.metadata.get(CHOICES) is not None:
                _validate.choice(f.name, value, f.metadata[CHOICES])

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field[Any], ...]:
        """Return the options' fields that can be given, in order (not those read from a run)."""
        return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get(READ))

    def first_examples(self) -> tuple[Any, ...]:
        """Return the examples every property of the kind runs first, where the kind read
        from its target's first run that it is slow: a few that hold what each property
        judges. An audit then runs those at least, the rest while its time lasts, and reports
        a failure as found, unshrunk (shrinking would run the slow target again and again)."""
        return ()

    def shown(self) -> dict[str, Any]:
        """Return the options as a report shows them: dtypes by name, objects by MODULE:NAME;
        what was read from a run where it is not the default."""
        return {
            f.name: shown_value(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.metadata.get(READ) or getattr(self, f.name) != f.default
        }


def shown_value(value: Any) -> Any:
    """Return an option's value as a report shows it: a dtype by name, an object by name."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if callable(value) and not isinstance(value, torch.Tensor):
        return name_of(value)
    return value


def name_of(fn: object) -> str:
    """Return MODULE:QUALNAME for a function or class, as the CLI names targets; a
    functools.partial as its function's, with the arguments it fixed."""
    if isinstance(fn, functools.partial):
        fixed = [_short(a) for a in fn.args] + [f"{k}={_short(v)}" for k, v in fn.keywords.items()]
        return f"{name_of(fn.func)}({', '.join(fixed)})"
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}" if module else name


def _short(value: object) -> str:
    """Return a value a partial fixed, on one short line: a function or class by its name."""
    if callable(value) and hasattr(value, "__qualname__"):
        return name_of(value)
    return " ".join(reprlib.repr(value).split())


def floating_dtype(name: str, value: object) -> torch.dtype:
    """Return value if it is a floating torch.dtype, else raise naming the option."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype, got {value!r}")
    return value


def number_of(f: dataclasses.Field[Any]) -> Callable[[str], Any] | None:
    """Return int or float for a number option, by its default or, when that is None (as
    --timeout's is), by its annotation ("float | None"); None for any other option."""
    if type(f.default) in (int, float):
        return type(f.default)
    names = {name.strip() for name in str(getattr(f.type, "__name__", f.type)).split("|")}
    return float if "float" in names else int if "int" in names else None


def from_text(f: dataclasses.Field[Any], text: str) -> Any:
    """Return an option's value from text, as the command line and the plugin give it.

    MODULE:NAME for an imported option, a choice by name, true/false for a flag, a number for
    a number; raise ValueError saying what was expected. The kind's check runs later, once,
    when its Options are built.
    """
    if f.metadata.get(IMPORT):
        return resolve(text, callable_=f.metadata[IMPORT] == "callable")
    choices = f.metadata.get(CHOICES)
    if choices is not None:
        named = {str(shown_value(c)): c for c in choices}
        return named.get(text, text)  # not a choice: the kind's check names the option
    if isinstance(f.default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    parse = number_of(f)
    if parse is None:
        return text
    check = f.metadata.get(CHECK)
    try:
        return parse(text) if check is None else check(f.name, parse(text))
    except (TypeError, ValueError):
        expected = f"a {parse.__name__}"
        if check is not None:
            expected = _validate.EXPECTED.get(check, expected)
        raise ValueError(f"expected {expected}, got {text!r}") from None


def timeout_option(what: str) -> Any:
    """Return the --timeout option of a kind whose calls the audit bounds (guards.bounded)."""
    return option(
        None,
        f"seconds one call of {what} may take (default: 50 times its first call, and at least "
        f"{FLOOR:g} s)",
        flag="--timeout",
        check=_validate.positive_finite_or_none,
    )


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
        kind = type(obj).__name__
        raise ValueError(
            f"{spec} is not callable: it is {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        )
    return obj
