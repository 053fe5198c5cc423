"""Check your own code: run every pitfall property of its kind against your function.

One function per kind of target, each returning a `Report`, made from the registry of kinds
(`KINDS`, from `linreg.targets`): `iterator`, `update_step`, `loss`, `loop`, `epoch_loss`,
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
import functools
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, cast

import torch

from linreg.testing import NEEDS_HYPOTHESIS

try:
    from hypothesis import HealthCheck, Phase, Verbosity, given, reporting, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Flaky
except ImportError as e:  # pragma: no cover - checked in a subprocess without Hypothesis
    raise ImportError(f"linreg.audit: {NEEDS_HYPOTHESIS}") from e

from linreg import _validate
from linreg.checks import CheckFailed, LoopRaised
from linreg.pitfalls import CATALOGUE, Property
from linreg.plain import plain
from linreg.targets import KINDS, Kind, Target, TargetError
from linreg.targets.base import AUDIT_KEYWORDS
from linreg.targets.guards import Aborted, ended_process, kept_rngs, one_thread
from linreg.targets.observe import models_restored

__all__ = [
    "DEFAULT_EXAMPLES",
    "KINDS",
    "LoopRaised",
    "Report",
    "Result",
    "TargetError",
    "audit",
    "not_judged",
    "ordered",
    "properties",
    "run",
    "run_property",
    "target_for",
    *sorted(k.function for k in KINDS.values()),
]

# One audit at a time in a process: the RNGs, grad mode, torch's thread count, the optimizer
# hooks and the time limit it sets are the process's. Audits from two threads take turns; an
# audit inside an audited function (the same thread) goes ahead.
_AUDITING = threading.RLock()
_F = TypeVar("_F", bound=Callable[..., Any])


def _one_at_a_time(fn: _F) -> _F:
    @functools.wraps(fn)
    def in_turn(*args: Any, **kwargs: Any) -> Any:
        with _AUDITING:
            return fn(*args, **kwargs)

    return cast(_F, in_turn)


DEFAULT_EXAMPLES = 30  # per property, when max_examples is None: the ci profile's
DERANDOMIZED = 0  # Hypothesis's seed when the audit is given none: the same examples every run
Verdict = Literal["pass", "fail", "skip"]


@dataclasses.dataclass(frozen=True)
class Result:
    """One property's verdict on the target."""

    pitfall: str  # the catalogue id
    property: str  # what the property states
    verdict: Verdict
    message: str = ""  # why it failed, or why it was skipped
    counterexample: Any = None  # the smallest failing input Hypothesis found, as plain data
    examples: int = 0  # how many examples ran
    measured: Any = None  # what the failing example measured, as plain data (Report.plot)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Report:
    """Every applicable property's verdict on one target."""

    target: str
    kind: str
    options: dict[str, Any]
    results: tuple[Result, ...]
    seconds: float
    error: str = ""  # the target itself raised: what, where, and on which example
    error_example: Any = None

    @property
    def ok(self) -> bool:
        """Return True when no property failed and the target did not raise."""
        return not self.error and all(r.verdict != "fail" for r in self.results)

    @property
    def failures(self) -> tuple[Result, ...]:
        """Return the results that failed."""
        return tuple(r for r in self.results if r.verdict == "fail")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "target": self.target,
            "kind": self.kind,
            "options": plain(self.options),
            "ok": self.ok,
            "seconds": self.seconds,
            "error": self.error or None,
            "error_example": self.error_example,
            "results": [r.to_dict() for r in self.results],
        }

    def raise_for_failures(self) -> None:
        """Raise CheckFailed naming each failed pitfall, if any failed."""
        if not self.ok:
            raise CheckFailed(self.describe(only_failures=True))

    def describe(self, *, only_failures: bool = False) -> str:
        """Return the report as text: a summary line, then one block per property."""
        counts = {v: sum(r.verdict == v for r in self.results) for v in ("fail", "pass", "skip")}
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        lines = [
            f"audit of {self.kind} {self.target}" + (f" ({options})" if options else "") + ": "
            f"{counts['fail']} failed, {counts['pass']} passed, {counts['skip']} skipped "
            f"in {self.seconds:.1f} s"
        ]
        if self.error:
            lines.append(f"  ERROR {self.error}")
            if self.error_example is not None:
                lines.append(f"       on: {_short(self.error_example)}")
        for r in self.results:
            if only_failures and r.verdict != "fail":
                continue
            mark = {"fail": "FAIL", "pass": "pass", "skip": "skip"}[r.verdict]
            tail = f" ({r.examples} examples)" if r.verdict == "pass" else ""
            lines.append(f"  {mark} {r.pitfall:<16} {r.property}{tail}")
            if r.message:
                lines.append(f"       {'why' if r.verdict == 'fail' else 'reason'}: {r.message}")
            if r.verdict == "fail" and r.counterexample is not None:
                lines.append(f"       counterexample: {_short(r.counterexample)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def _repr_html_(self) -> str:
        """Return the report as one HTML table, failures first (Jupyter shows it)."""
        from linreg.display import report_html

        return report_html(self)

    def _repr_markdown_(self) -> str:
        """Return the report as a Markdown table, for front ends without HTML."""
        from linreg.display import report_markdown

        return report_markdown(self)

    def plot(self, path: str | None = None) -> Any:
        """Draw what each failing property measured; save a PNG at path; return the Figure.

        For a training loop: each step's applied gradient as a multiple of the correct one,
        1.0 marked and the failing steps highlighted; for the other kinds, the values the
        property compared beside the expected ones. Needs matplotlib (the plot extra); raises
        ValueError when no failure measured anything to draw.
        """
        from linreg.display import plot_report

        return plot_report(self, path)


def _short(value: Any, limit: int = 400) -> str:
    import json

    text = json.dumps(value, allow_nan=False)
    return text if len(text) <= limit else text[: limit - 5] + " ...}"


@_one_at_a_time
def run_property(
    prop: Property,
    target: Target,
    *,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Result:
    """Run one property against a target through Hypothesis and return its verdict.

    shrink=False reports the first failing example found, unshrunk: faster, but larger.
    Hypothesis's phases otherwise follow the loaded profile.
    """
    reason = prop.applies(target.options)
    if reason is not None:
        return Result(prop.pitfall, prop.name, "skip", reason)
    limit = max_examples or DEFAULT_EXAMPLES
    if prop.max_examples is not None:
        limit = min(limit, prop.max_examples)
    seen = {"examples": 0}
    failure: list[tuple[Any, str]] = []
    measured: list[Any] = []

    def test(example: Any) -> None:
        seen["examples"] += 1
        try:
            # the target's warnings are not verdicts; grad mode is on for every example (the
            # caller's no_grad, or the target's own set_grad_enabled(False), is put back after)
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                prop.check(target, example)
        except (SystemExit, GeneratorExit) as e:  # never a pass: the target ended the process
            ended = LoopRaised(f"the target raised {ended_process(e)}: the audit stopped it")
            failure.append((example, str(ended)))
            raise Aborted(ended) from None
        except (CheckFailed, LoopRaised) as e:
            failure.append((example, str(e)))  # the last one is the shrunk one, replayed
            measured.append(getattr(e, "measured", None))
            raise
        except Aborted as e:  # past Hypothesis at once: a run that timed out is not replayed
            failure.append((example, str(e.args[0])))
            raise

    wrapped = _settings(limit, seed, shrink)(given(prop.examples(target.options))(test))
    # Derandomized, Hypothesis would seed from a hash of this function's source and key its
    # database by another (about 4 ms each, at every property of every audit): a fixed seed
    # instead, and no database key, as there is no database (Hypothesis's find() does the same)
    wrapped = hypothesis_seed(DERANDOMIZED if seed is None else seed)(wrapped)
    wrapped._hypothesis_internal_database_key = None  # type: ignore[attr-defined]
    try:
        # a factory may hand out the user's own model: models_restored puts it back as it was
        quiet = reporting.with_reporter(lambda *_: None)
        with quiet, one_thread(), kept_rngs(), models_restored():
            wrapped()
    except (LoopRaised, Aborted) as e:
        example, message = failure[-1] if failure else (None, str(e))
        raise LoopRaised(message, plain(example)) from None
    except (CheckFailed, Flaky) as e:
        example, message = failure[-1] if failure else (None, str(e))
        if isinstance(e, Flaky):
            message += " (flaky: replayed, the example did not fail again)"
        what = plain(measured[-1]) if measured else None
        return Result(
            prop.pitfall, prop.name, "fail", message, plain(example), seen["examples"], what
        )
    return Result(prop.pitfall, prop.name, "pass", examples=seen["examples"])


def _settings(limit: int, seed: int | None, shrink: bool) -> settings:
    """Return the audit's Hypothesis settings: the loaded profile's phases, quiet, no database."""
    profile = settings.default or settings()  # the loaded profile's phases (no shrink: mutation)
    return settings(
        max_examples=limit,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        # no explain phase: its report is not shown, and it costs as much as the shrinking
        phases=[
            p
            for p in profile.phases
            if (shrink or p is not Phase.shrink) and p is not Phase.explain
        ],
    )


def properties(kind: str) -> list[Property]:
    """Return the catalogue's properties of a kind, each after those it requires."""
    return ordered(_of_kind(kind))


def _of_kind(kind: str) -> list[Property]:
    return [p for pitfall in CATALOGUE for p in pitfall.properties if p.kind == kind]


def ordered(props: Sequence[Property]) -> list[Property]:
    """Return props so that each comes after the properties of the pitfalls it requires."""
    pending, out = list(props), []
    done: set[str] = set()
    present = {p.pitfall for p in props}
    while pending:
        ready = [p for p in pending if set(p.requires) & present <= done]
        step = ready[:1] or pending[:1]  # a cycle cannot happen in the catalogue; never hang
        out += step
        pending.remove(step[0])
        if not [q for q in pending if q.pitfall == step[0].pitfall]:
            done.add(step[0].pitfall)
    return out


def not_judged(prop: Property, failed: set[str]) -> str | None:
    """Return why prop is not judged when the pitfalls in failed have failed (None: it is)."""
    blocked = [r for r in prop.requires if r in failed]
    return f"not judged: the {blocked[0]} property failed first" if blocked else None


@_one_at_a_time
def run(
    target: Target,
    *,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Run every property of the target's kind from the catalogue and return the Report."""
    start = time.perf_counter()
    props = _of_kind(target.kind)  # reported in the catalogue's order, run in ordered()'s
    failed: set[str] = set()
    verdicts: dict[int, Result] = {}
    error: tuple[str, Any] = ("", None)
    for prop in ordered(props):
        reason = not_judged(prop, failed)
        if error[0]:
            reason = "not judged: " + (
                "interrupted" if error[0].startswith("interrupted") else "the target raised"
            )
        if reason is not None:
            result = Result(prop.pitfall, prop.name, "skip", reason)
        else:
            try:
                result = run_property(
                    prop, target, max_examples=max_examples, seed=seed, shrink=shrink
                )
            except LoopRaised as e:
                error = (str(e.args[0]), e.args[1] if len(e.args) > 1 else None)
                result = Result(prop.pitfall, prop.name, "skip", "not judged: the target raised")
            except KeyboardInterrupt:  # Ctrl-C: the state is restored; report what was judged
                error = ("interrupted (Ctrl-C): the properties after this one were not run", None)
                result = Result(prop.pitfall, prop.name, "skip", "not judged: interrupted")
        if result.verdict == "fail":
            failed.add(prop.pitfall)
        verdicts[id(prop)] = result
    return Report(
        str(target),
        target.kind,
        plain(target.options.shown()),
        tuple(verdicts[id(p)] for p in props),
        time.perf_counter() - start,
        *error,
    )


# --- the kinds: one audit function each, made from the registry (linreg.targets.KINDS) ------


@_one_at_a_time
def target_for(kind: str, fn: Any, **options: Any) -> Target:
    """Check fn and the options for kind (as the audit functions do) and return the Target."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # a kind may call fn once to check it (a loss's trial, a loop's probe): as in the audit
    with one_thread(), torch.enable_grad(), kept_rngs():
        try:
            return KINDS[kind].target(fn, **options)
        except (SystemExit, GeneratorExit) as e:
            raise TargetError(
                f"{fn!r} raised {ended_process(e)} when called once to check it"
            ) from None


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
