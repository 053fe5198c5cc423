"""The pytest plugin: `pytest --pitfalls-audit KIND=MODULE:NAME[,option=value...]`.

Each use adds one test item per pitfall property of KIND, run against MODULE:NAME through
`linreg.audit`: it passes, fails with the counterexample, or is skipped (the property does not
apply, a property it rests on failed first, or it held on nothing it reads). One use's items,
run in a row, are one audit (`linreg.audit.one_audit`): their properties share its runs, the
models it held are put back after the last, where no step of its runs could be judged
(nothing failed) the last one's teardown fails with the audit's error, and the summary says
what its runs showed that limits the verdicts (the Report's note). The items' names
contain "pitfalls", so `-k pitfalls` keeps them. Options are the audit function's keywords, e.g.
`update-step=mypkg.optim:sgd,zeroes_grad=false,under_no_grad=true`. Registered through the
`pytest11` entry point; needs Hypothesis.

The fixture `pitfalls_watch` watches training code inside a test, unchanged:
`with pitfalls_watch() as reports: train(model, loader)` fails the test, naming each pitfall,
when the block's updates show one (`check=False` leaves the Report in `reports` alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
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
        help="audit MODULE:NAME as KIND (" + ", ".join(_kinds()) + "): one test per pitfall "
        "property; repeatable. Options are the kind's (linreg.audit's keywords), e.g. "
        "update-step=pkg.mod:sgd,zeroes_grad=false or "
        "training-loop=pkg.mod:fit,model=pkg.mod:Net,example=pkg.mod:sample",
    )


def _kinds() -> list[str]:
    # the names alone: the kinds' registry imports torch, which every pytest run that loads
    # the plugin (any, where linreg is installed) would then pay for, using it or not
    from linreg._kind_names import NAMES

    return list(NAMES)


@dataclass
class Spec:
    """One --pitfalls-audit value, parsed: what to audit, and how."""

    text: str
    kind: str
    target: Any  # a linreg.pitfalls.Target
    keywords: dict[str, Any] = field(default_factory=dict)  # max_examples, seed, shrink
    failed: set[str] = field(default_factory=set)  # pitfalls whose properties failed so far
    error: str = ""  # the target raised: its properties after the first are not judged
    # while its items run in a row: one audit's scope (its properties share their runs)
    shared: contextlib.ExitStack | None = None
    audit: Any = None  # a linreg.audit.OneAudit on the target, inside that scope

    def run_property(self, prop: Any) -> Any:
        """Return prop's Result on the target, as a part of one audit with the spec's items
        run before it in a row (`linreg.audit.one_audit`)."""
        from linreg import audit

        if self.audit is None:
            self.shared = contextlib.ExitStack()
            self.audit = self.shared.enter_context(audit.one_audit(self.target))
        return self.audit.run(prop, **self.keywords)

    def end(self) -> tuple[str | None, str]:
        """End the audit its items share (the models the factory handed out put back); return
        its error where nothing failed and no step of its runs could be judged, and its note
        (what its runs showed that limits the verdicts, as linreg.audit's Report says it)."""
        one, shared, self.audit, self.shared = self.audit, self.shared, None, None
        unjudged = None if one is None or self.failed or self.error else one.unjudged()
        note = "" if one is None else one.note(passed=not self.failed and not self.error)
        if shared is not None:
            shared.close()
        return unjudged, note


def parse(text: str) -> Spec:
    """Parse KIND=MODULE:NAME[,option=value...]; raise ValueError saying what is wrong."""
    from linreg import audit
    from linreg.kinds.options import from_text, resolve

    kind, eq, rest = text.partition("=")
    if not eq or kind not in audit.KINDS:
        raise ValueError(f"expected KIND=MODULE:NAME with KIND in {', '.join(audit.KINDS)}")
    target, *pairs = rest.split(",")
    fn = resolve(target)
    fields = {f.name: f for f in audit.KINDS[kind].options.fields()}
    options: dict[str, Any] = {}
    keywords: dict[str, Any] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if eq and name in KEYWORDS:
            keywords[name] = _keyword(name, value)
            continue
        if not eq or name not in fields:
            known = ", ".join([*fields, *KEYWORDS])
            raise ValueError(f"unknown option {pair!r} for {kind}; options: {known}")
        try:
            options[name] = from_text(fields[name], value)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return Spec(text, kind, audit.target_for(kind, fn, **options), keywords)


KEYWORDS = ("max_examples", "seed", "shrink")  # the audit's own keywords, as audit() takes them


def _keyword(name: str, text: str) -> Any:
    """Return an audit keyword's value from text; raise ValueError saying what was expected."""
    from linreg import _validate

    if name == "shrink":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"shrink: expected true or false, got {text!r}")
        return text.lower() == "true"
    check = _validate.positive_int if name == "max_examples" else _validate.non_negative_int
    try:
        return check(name, int(text))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {_validate.EXPECTED[check]}, got {text!r}") from None


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

        reason = audit.not_judged(self.prop, self.spec.failed)
        if self.spec.error:
            reason = "not judged: the target raised (see the first failure)"
        if reason is not None:
            pytest.skip(reason)
        try:
            result = self.spec.run_property(self.prop)
        except audit.LoopRaised as e:
            self.spec.error = str(e.args[0])
            raise AuditFailed(f"{self.spec.error}\non: {e.args[1]!r}") from None
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
    specs = config.stash.get(_SPECS, [])
    if not specs:  # a run that audits nothing imports nothing (torch, Hypothesis)
        return
    from linreg import audit

    for spec in specs:
        for prop in audit.properties(spec.target.kind):  # a framework: its loop's kind
            name = f"test_pitfalls_audit[{spec.text}][{prop.pitfall}: {prop.name}]"
            items.append(
                AuditItem.from_parent(session, name=name, spec=spec, prop=prop, target=spec.target)
            )


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """An audit's items share their runs while they run in a row: the next item another's,
    or none, ends it (a spec's items later again start another). Where nothing failed and no
    step of its runs could be judged, that is the audit's error (linreg.audit's, never a
    pass), given at the last item's teardown."""
    if isinstance(item, AuditItem) and not (
        isinstance(nextitem, AuditItem) and nextitem.spec is item.spec
    ):
        unjudged, note = item.spec.end()
        if note:  # (on the teardown's report: under xdist too, the summary reads it)
            item.user_properties.append((NOTE, f"{item.spec.text}: {note}"))
        if unjudged is not None:
            pytest.fail(f"{item.spec.text}: {unjudged}", pytrace=False)


NOTE = "linreg-pitfalls note"
_noted: list[str] = []  # the notes of the audits this session ran, for the summary


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, text in report.user_properties:
        if name == NOTE and report.when == "teardown":
            _noted.append(str(text))


def pytest_sessionstart(session: pytest.Session) -> None:
    del _noted[:]  # (a session run in-process after another: pytester's)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say what each audit's runs showed that limits its verdicts (the Report's note)."""
    notes = list(dict.fromkeys(_noted))
    del _noted[:]
    if notes:
        terminalreporter.section("linreg-pitfalls audit notes")
        for text in notes:
            terminalreporter.write_line(text)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for spec in session.config.stash.get(_SPECS, []):  # (one stopped by -x or Ctrl-C)
        spec.end()


@pytest.fixture
def pitfalls_watch() -> Callable[..., contextlib.AbstractContextManager[list[Any]]]:
    """Return watch(steps=None, check=True, reduction="mean"): a context manager that watches
    the training code its block runs (`linreg.audit.watch`) and, with check, fails the test
    naming each pitfall its updates show, or saying why none could be judged."""

    @contextlib.contextmanager
    def watch(
        steps: int | None = None, check: bool = True, reduction: str = "mean"
    ) -> Iterator[list[Any]]:
        from linreg import audit

        with audit.watch(steps, reduction) as reports:
            yield reports
        if check and not reports[0].ok:  # (not chained to the watch's own end of the run)
            raise AuditFailed(reports[0].describe(only_failures=True)) from None

    return watch
