"""Check your own code: run every pitfall property of its kind against your function.

One function per kind of target, each returning a `Report`, made from the registry of kinds
(`KINDS`, from `linreg.kinds`): `iterator`, `update_step`, `loss`, `loop`, `epoch_loss`,
`training_loop`; `audit(kind, fn, **options)` is the same by the kind's name. Each takes the
function to audit, then its kind's options by keyword (`help(linreg.audit.loss)` lists them),
and `max_examples`, `seed` and `shrink`.

Each property runs through Hypothesis (`max_examples` examples, 30 unless given; derandomized
unless `seed` is given) and gives a verdict: pass, fail (with the smallest counterexample
Hypothesis found, as plain data; `shrink=False` reports the first one found, faster) or skip (it
does not apply, or a property it rests on failed first). Tolerances follow the dtype
(`linreg.checks.tolerance`). Needs Hypothesis: `pip install 'linreg-pitfalls[test]'`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from linreg import _validate
from linreg.audit.report import Report, Result
from linreg.audit.runner import (
    DEFAULT_EXAMPLES,
    OneAudit,
    not_judged,
    one_audit,
    ordered,
    properties,
    run,
    run_property,
    target_for,
)
from linreg.audit.watcher import watch, watch_script
from linreg.checks import LoopRaised
from linreg.kinds import KINDS, Kind, TargetError
from linreg.kinds.options import AUDIT_KEYWORDS

__all__ = [
    "DEFAULT_EXAMPLES",
    "KINDS",
    "LoopRaised",
    "OneAudit",
    "Report",
    "Result",
    "TargetError",
    "audit",
    "not_judged",
    "one_audit",
    "ordered",
    "properties",
    "run",
    "run_property",
    "target_for",
    "watch",
    "watch_script",
    *sorted(k.function for k in KINDS.values()),
]

# --- the kinds: one audit function each, made from the registry (linreg.kinds.KINDS) ------


def audit(
    kind: str,
    fn: Callable[..., Any],
    *,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
    **options: Any,
) -> Report:
    """Audit fn as a target of kind, with that kind's options; return the Report."""
    if max_examples is not None:
        _validate.positive_int("max_examples", max_examples)
    if seed is not None:
        _validate.non_negative_int("seed", seed)
    shrink = _validate.flag("shrink", shrink)
    target = target_for(kind, fn, **options)
    return run(target, max_examples=max_examples, seed=seed, shrink=shrink)


def _function(kind: Kind) -> Callable[..., Report]:
    """Return the audit function of one kind: fn, then the kind's options, by keyword."""

    def audit_kind(fn: Callable[..., Any], /, **keywords: Any) -> Report:
        return audit(kind.name, fn, **keywords)

    fields = kind.options.fields()
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("fn", inspect.Parameter.POSITIONAL_ONLY)]
    params += [inspect.Parameter(f.name, keyword, default=f.default) for f in fields]
    params += [inspect.Parameter(name, keyword, default=d) for name, d, _ in AUDIT_KEYWORDS]
    audit_kind.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    audit_kind.__name__ = audit_kind.__qualname__ = kind.function
    audit_kind.__module__ = __name__
    lines = [f"Audit {kind.summary}: `{kind.signature}`.", "", kind.doc, "", "Options:"]
    lines += [f"    {f.name} ({_meaning(f)}): {f.metadata['help']}" for f in fields]
    lines += [f"    {name} (default {d!r}): {text}" for name, d, text in AUDIT_KEYWORDS]
    audit_kind.__doc__ = "\n".join(lines)
    return audit_kind


def _meaning(f: dataclasses.Field[Any]) -> str:
    if f.default is True:
        return "default True; False"
    return "True" if f.default is False else f"default {f.default!r}"


FUNCTIONS: dict[str, Callable[..., Report]] = {k.function: _function(k) for k in KINDS.values()}


def __getattr__(name: str) -> Callable[..., Report]:
    """Return the audit function of a kind: linreg.audit.iterator, linreg.audit.update_step."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *FUNCTIONS])
