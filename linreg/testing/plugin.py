"""The pytest plugin: `pytest --pitfalls-audit KIND=MODULE:NAME[,option=value...]`.

Each use adds one test item per pitfall property of KIND, run against MODULE:NAME through
`linreg.audit`: it passes, fails with the counterexample, or is skipped (the property does not
apply, or a property it rests on failed first). The items' names contain "pitfalls", so
`-k pitfalls` keeps them. Options are the audit function's keywords, e.g.
`update-step=mypkg.optim:sgd,zeroes_grad=false,under_no_grad=true`. Registered through the
`pytest11` entry point; needs Hypothesis.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

OPTION = "--pitfalls-audit"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("linreg-pitfalls", "audit your own code for training-loop pitfalls")
    group.addoption(
        OPTION,
        action="append",
        default=[],
        metavar="KIND=MODULE:NAME[,option=value...]",
        help="audit MODULE:NAME as KIND (iterator, update-step, loss, loop, epoch-loss, "
        "training-loop): one test per pitfall property; repeatable. Options are linreg.audit's "
        "keywords, e.g. update-step=pkg.mod:sgd,zeroes_grad=false or "
        "training-loop=pkg.mod:fit,model=pkg.mod:Net,example=pkg.mod:sample",
    )


@dataclass
class Spec:
    """One --pitfalls-audit value, parsed: what to audit, and how."""

    text: str
    kind: str
    target: Any  # a linreg.pitfalls.Target
    failed: set[str] = field(default_factory=set)  # pitfalls whose properties failed so far


def _value(name: str, text: str, default: Any) -> Any:
    if name in ("model", "example", "optimizer"):  # training-loop: objects to import
        from linreg.cli import resolve

        return resolve(text, callable_=name != "example")
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{name} takes true or false, got {text!r}")
        return text.lower() == "true"
    if isinstance(default, float):
        return float(text)
    if isinstance(default, int):
        return int(text)
    if name == "dtype":
        import torch

        if text not in ("float32", "float64"):
            raise ValueError(f"dtype takes float32 or float64, got {text!r}")
        return getattr(torch, text)
    return text


def parse(text: str) -> Spec:
    """Parse KIND=MODULE:NAME[,option=value...]; raise ValueError saying what is wrong."""
    from linreg import audit
    from linreg.cli import resolve

    kind, eq, rest = text.partition("=")
    if not eq or kind not in audit.KINDS:
        raise ValueError(f"expected KIND=MODULE:NAME with KIND in {', '.join(audit.KINDS)}")
    target, *pairs = rest.split(",")
    fn = resolve(target)
    params = inspect.signature(audit.KINDS[kind]).parameters
    options: dict[str, Any] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or name not in params or name in ("fn", "max_examples", "seed"):
            allowed = [p for p in params if p not in ("fn", "max_examples", "seed")]
            raise ValueError(f"unknown option {pair!r} for {kind}; options: {', '.join(allowed)}")
        options[name] = _value(name, value, params[name].default)
    return Spec(text, kind, audit.target_for(kind, fn, **options))


def pytest_configure(config: pytest.Config) -> None:
    specs = []
    for text in config.getoption("pitfalls_audit"):
        try:
            specs.append(parse(text))
        except (TypeError, ValueError, ImportError) as e:
            raise pytest.UsageError(f"{OPTION} {text}: {e}") from None
    config.stash[_SPECS] = specs


_SPECS = pytest.StashKey[list[Spec]]()


class AuditFailed(AssertionError):
    """A pitfall property failed on the audited code."""


class AuditItem(pytest.Item):
    """One pitfall property, run against the audited code."""

    def __init__(self, *, spec: Spec, prop: Any, target: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec, self.prop, self.target = spec, prop, target

    def runtest(self) -> None:
        from linreg import audit

        blocked = [r for r in self.prop.requires if r in self.spec.failed]
        if blocked:
            pytest.skip(f"not judged: the {blocked[0]} property failed first")
        result = audit.run_property(self.prop, self.target)
        if result.verdict == "skip":
            pytest.skip(result.message)
        if result.verdict == "fail":
            self.spec.failed.add(self.prop.pitfall)
            raise AuditFailed(
                f"{result.pitfall}: {result.property}\n{result.message}\n"
                f"counterexample: {result.counterexample!r}"
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AuditFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return self.spec.text, None, self.name


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    from linreg import audit
    from linreg.pitfalls import CATALOGUE

    for spec in config.stash.get(_SPECS, []):
        props = [p for pitfall in CATALOGUE for p in pitfall.properties if p.kind == spec.kind]
        for prop in audit._in_order(props):
            name = f"test_pitfalls_audit[{spec.text}][{prop.pitfall}: {prop.name}]"
            items.append(
                AuditItem.from_parent(session, name=name, spec=spec, prop=prop, target=spec.target)
            )
