"""What a kind of target is: its signature, its options, and how a user's function becomes one.

A `Kind` is one record per kind of target (an iterator, an update step, a loss, a loop, ...):
its name, the signature it expects, its options as a frozen `Options` dataclass (defaults,
help text and validation beside each field), how it turns the user's function into a `Target`
(checked once, at the boundary); its results are compared by the one rule,
`linreg.checks.tolerance`. The
registry, `linreg.kinds.KINDS`, is what the audit functions, the command line, the pytest
plugin and the README's table of kinds are made from.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from linreg import _validate
from linreg.kinds.guards import FIRST, FLOOR, TimeUp, bounded, time_limit
from linreg.kinds.options import resolve

# An option's metadata: its help text, its command-line flag, its choices, its check.
HELP, FLAG, CHOICES, CHECK, IMPORT, REQUIRED = (
    "help",
    "flag",
    "choices",
    "check",
    "import",
    "required",
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


# The keywords every audit function takes beside its kind's options: name, default, help (the
# audit functions' signatures and docstrings, and the command line's --max-examples, --seed).
AUDIT_KEYWORDS = (
    ("max_examples", None, "examples per property (default: 30)"),
    ("seed", None, "seed for Hypothesis, an int >= 0 (default: derandomized)"),
    ("shrink", True, "shrink a failing example to the smallest (False: report the first found)"),
)
KEYWORD_HELP = {name: text for name, _, text in AUDIT_KEYWORDS}


class TargetError(TypeError):
    """The target cannot be audited: not callable, or not the kind's signature."""


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
        """Return the options' fields, in order."""
        return dataclasses.fields(cls)

    def shown(self) -> dict[str, Any]:
        """Return the options as a report shows them: dtypes by name, objects by MODULE:NAME."""
        return {f.name: shown_value(getattr(self, f.name)) for f in dataclasses.fields(self)}


def shown_value(value: Any) -> Any:
    """Return an option's value as a report shows it: a dtype by name, an object by name."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if callable(value) and not isinstance(value, torch.Tensor):
        return name_of(value)
    return value


@dataclass(frozen=True)
class Target:
    """A function to check, the kind of function it is, and its options."""

    fn: Callable[..., Any]
    kind: str
    options: Any = field(default_factory=Options)  # the kind's Options subclass
    name: str = ""
    oracle: bool = False  # torch's own code (DataLoader, optim.SGD, nn.MSELoss), not linreg's
    watch: Any = None  # a training loop's: what its steps are read from (observe.Watch)

    def __post_init__(self) -> None:
        if type(self.options) is Options and self.kind in _DEFAULTS:  # the kind's defaults
            object.__setattr__(self, "options", _DEFAULTS[self.kind]())

    def __str__(self) -> str:
        return self.name or getattr(self.fn, "__name__", repr(self.fn))


_DEFAULTS: dict[str, type[Options]] = {}  # each Kind's Options, by name, filled in by Kind


@dataclass(frozen=True)
class Kind:
    """One kind of target: what the audit, the CLI, the plugin and the README know of it."""

    name: str  # as the CLI and the plugin spell it: "update-step"
    signature: str  # what the user's function must take
    summary: str  # one line: what the kind is
    options: type[Options]
    # fn, options -> what the properties call, or the Target of another kind that judges it (a
    # framework's trainer, run as a training loop); raises TargetError when fn cannot be one
    build: Callable[[Callable[..., Any], Any], Any]
    doc: str = ""  # the audit function's docstring, after its first line
    judged_as: str = ""  # the kind whose properties judge it, where build returns its Target
    calls: str = "the code"  # the user's code in a message: "the loss did not return within"
    times_itself: bool = False  # its build bounds each run itself (a training loop's probe)

    def __post_init__(self) -> None:
        _DEFAULTS[self.name] = self.options

    @property
    def function(self) -> str:
        """Return the name of the kind's audit function: linreg.audit.update_step."""
        return self.name.replace("-", "_")

    def target(self, fn: object, **options: Any) -> Target:
        """Check fn and the options once and return the Target the properties run against."""
        if not callable(fn):
            raise TargetError(f"the target must be callable, got {type(fn).__name__}")
        known = {f.name for f in self.options.fields()}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"{self.name} takes no option {unknown[0]!r}; its options: "
                + (", ".join(sorted(known)) or "none")
            )
        built = self.options(**options)
        timeout = None if self.times_itself else getattr(built, "timeout", None)
        limit = None if self.times_itself else timeout or FIRST
        try:
            with time_limit(limit):  # a build may call fn once to check it (a loss's trial)
                made = self.build(fn, built)
        except TimeUp:
            raise TargetError(
                f"{name_of(fn)} did not return within {limit:g} s when called once to check it"
            ) from None
        if isinstance(made, Target):
            return made
        made = bounded(made, self.calls, timeout, limited=not self.times_itself)
        return Target(made, self.name, built, name_of(fn))


def name_of(fn: object) -> str:
    """Return MODULE:QUALNAME for a function or class, as the CLI names targets."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}" if module else name


def binds(fn: Callable[..., Any], signature: str, *args: Any, **kwargs: Any) -> None:
    """Raise TargetError unless fn can be called with these arguments (builtins pass)."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except ValueError:  # no signature to read (a builtin): judged when called
        return
    except TypeError as e:
        raise TargetError(
            f"{name_of(fn)} does not take {signature.removeprefix('fn')}: {e}"
        ) from None


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Return True if fn takes `name` by keyword."""
    try:
        p = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def keyword_only(fn: Callable[..., Any], name: str) -> bool:
    """Return True if fn takes `name` only by keyword."""
    try:
        p = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY


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
        check=seconds,
    )


def seconds(name: str, value: object) -> float | None:
    """Return a time limit in seconds: None (derived) or a positive finite number."""
    return None if value is None else _validate.positive_finite(name, value)
