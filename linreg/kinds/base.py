"""What a kind of target is: its signature, its options, and how a user's function becomes one.

A `Kind` is one record per kind of target (an iterator, an update step, a loss, a loop, ...):
its name, the signature it expects, its options as a frozen `Options` dataclass
(`linreg.kinds.options`: defaults, help text and validation beside each field), how it turns
the user's function into a `Target` (checked once, at the boundary); its results are compared
by the one rule, `linreg.checks.tolerance`. The registry, `linreg.kinds.KINDS`, is what the
audit functions, the command line, the pytest plugin and the README's table of kinds are made
from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from linreg.kinds.guards import FIRST, TimeUp, bounded, time_limit
from linreg.kinds.options import Options, name_of


class TargetError(TypeError):
    """The target cannot be audited: not callable, or not the kind's signature."""


@dataclass(frozen=True)
class Target:
    """A function to check, the kind of function it is, and its options."""

    fn: Callable[..., Any]
    kind: str
    options: Any = field(default_factory=Options)  # the kind's Options subclass
    name: str = ""
    oracle: bool = False  # torch's own code (DataLoader, optim.SGD, nn.MSELoss), not linreg's
    watch: Any = None  # a training loop's: what its steps are read from (observe.Watch)
    shown: str = ""  # the kind the user named, where another's properties judge it: lightning

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
    # fn, options -> what the properties call (alone, or with the options a first call showed:
    # a loop's accumulation window), or the Target of another kind that judges it (a
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
            return made if made.kind == self.name else replace(made, shown=self.name)
        if isinstance(made, tuple):
            made, built = made
        made = bounded(made, self.calls, timeout, limited=not self.times_itself)
        return Target(made, self.name, built, name_of(fn))


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
