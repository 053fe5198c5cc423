"""How an audit runs: each property of a kind through Hypothesis, in order, one audit at a time.

`run_property` gives one property's verdict on a target; `run` every property of the target's
kind, each after those it requires (`ordered`), a property whose requirement failed first
skipped (`not_judged`), the runs one property made read by the others that draw them
(`runs_shared`); `one_audit` does the same for properties run one by one (the pytest
plugin's items); `target_for` checks a function and options once, as a kind's target.
Everything the user's code might change (RNGs, grad mode, torch's thread count) is restored
after each property, and the models the factory hands out when the audit ends (after each
property where runs are not shared).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import torch

from linreg.testing import NEEDS_HYPOTHESIS

try:
    from hypothesis import HealthCheck, Phase, Verbosity, given, reporting, settings
    from hypothesis import example as explicit
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Flaky
except ImportError as e:  # pragma: no cover - checked in a subprocess without Hypothesis
    raise ImportError(f"linreg.audit: {NEEDS_HYPOTHESIS}") from e

from linreg._plain import plain
from linreg.audit.budget import BUDGET, FEWEST, Budget
from linreg.audit.offered import Offered
from linreg.audit.report import Report, Result
from linreg.checks import CheckFailed, LoopRaised
from linreg.kinds import KINDS, Target, TargetError
from linreg.kinds.guards import (
    Aborted,
    eager,
    ended_process,
    kept_rngs,
    one_thread,
    watchdog_kept,
)
from linreg.kinds.options import name_of
from linreg.kinds.training_loop import (
    models_restored,
    notes,
    runs_shared,
    sharing,
    unreferenced_error,
    unshared,
)
from linreg.pitfalls import CATALOGUE, Property

__all__ = [
    "BUDGET",
    "DEFAULT_EXAMPLES",
    "FEWEST",
    "Budget",
    "OneAudit",
    "not_judged",
    "one_audit",
    "ordered",
    "properties",
    "run",
    "run_property",
    "target_for",
]

# One audit at a time in a process: the RNGs, grad mode, torch's thread count, the optimizer
# hooks and the time limit it sets are the process's. Audits from two threads take turns; an
# audit inside an audited function (the same thread) goes ahead.
_AUDITING = threading.RLock()
_F = TypeVar("_F", bound=Callable[..., Any])


def _one_at_a_time(fn: _F) -> _F:
    @functools.wraps(fn)
    def in_turn(*args: Any, **kwargs: Any) -> Any:
        with _AUDITING, watchdog_kept(), eager():
            return fn(*args, **kwargs)

    return cast(_F, in_turn)


DEFAULT_EXAMPLES = 30  # per property, when max_examples is None: the ci profile's
DERANDOMIZED = 0  # Hypothesis's seed when the audit is given none: the same examples every run


@_one_at_a_time
def run_property(
    prop: Property,
    target: Target,
    *,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
    budget: Budget | None = None,
    offered: Offered | None = None,
) -> Result:
    """Run one property against a target through Hypothesis and return its verdict.

    shrink=False reports the first failing example found, unshrunk: faster, but larger.
    Hypothesis's phases otherwise follow the loaded profile. With a budget, the examples left
    when its time is spent are passed over (never once one has failed: shrinking and the
    replay of the failure run in full). With `offered` (the examples another property that
    draws the same strategy was offered), those are checked first, outside Hypothesis.
    """
    reason = prop.applies(target.options)
    if reason is not None:
        return Result(prop.pitfall, prop.name, "skip", reason)
    limit = max_examples or DEFAULT_EXAMPLES
    if prop.max_examples is not None:
        limit = min(limit, prop.max_examples)
    seen = {"examples": 0, "passed over": 0}
    failure: list[tuple[Any, str]] = []
    measured: list[Any] = []
    drawn: list[Any] = []  # the examples test() was offered, in order

    def test(example: Any) -> None:
        drawn.append(example)
        if budget is not None and not failure and budget.over(seen["examples"]):
            seen["passed over"] += 1
            return
        seen["examples"] += 1
        start = time.perf_counter()
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
        finally:
            if budget is not None:
                budget.took(time.perf_counter() - start)

    wrapped = given(prop.examples(target.options))(test)
    firsts = target.options.first_examples()  # a slow target's: its failures unshrunk
    shrink = shrink and not firsts
    for first in reversed(firsts):  # run in order, before the drawn
        wrapped = explicit(first)(wrapped)
    wrapped = _settings(limit, seed, shrink, explicit=bool(firsts))(wrapped)
    # Derandomized, Hypothesis would seed from a hash of this function's source and key its
    # database by another (about 4 ms each, at every property of every audit): a fixed seed
    # instead, and no database key, as there is no database (Hypothesis's find() does the same)
    wrapped = hypothesis_seed(DERANDOMIZED if seed is None else seed)(wrapped)
    wrapped._hypothesis_internal_database_key = None  # type: ignore[attr-defined]
    try:
        # a factory may hand out the user's own model: models_restored puts it back as it was
        quiet = reporting.with_reporter(lambda *_: None)
        # (in an audit whose properties share runs, when the audit ends: runs_shared)
        restored = contextlib.nullcontext() if sharing() else models_restored()
        with quiet, one_thread(), kept_rngs(), restored:
            if offered is None or not offered.pass_(test, limit):
                seen.update({"examples": 0, "passed over": 0})
                del failure[:], measured[:], drawn[:]
                wrapped()
            _last(test, prop.last(target.options), drawn, failure, seen)
    except (LoopRaised, Aborted) as e:
        example, message = failure[-1] if failure else (None, str(e))
        raise LoopRaised(message, plain(example)) from None
    except (CheckFailed, Flaky) as e:
        example, message = failure[-1] if failure else (None, str(e))
        if isinstance(e, Flaky):
            message += " (flaky: replayed, the example did not fail again)"
        what = plain(measured[-1]) if measured else None
        if budget is not None:  # its examples, shrinking's too: the time per example is theirs
            budget.ran(seen["examples"], False)
        return Result(
            prop.pitfall, prop.name, "fail", message, plain(example), seen["examples"], what
        )
    if budget is not None:
        budget.ran(seen["examples"], seen["passed over"] > 0)
    if offered is not None:
        offered.keep(drawn, limit)
    return Result(prop.pitfall, prop.name, "pass", examples=seen["examples"])


def _last(
    test: Callable[[Any], None],
    lasts: Sequence[Any],
    drawn: list[Any],
    failure: list[Any],
    seen: dict[str, int],
) -> None:
    """Check a property's last examples once its drawn ones passed; never offered to another
    property. One the target raised on, or ran out of time on, is passed over uncounted: the
    drawn ones judged the loop; a failure is a CheckFailed, reported unshrunk."""
    for last in lasts:
        try:
            test(last)
        except (LoopRaised, Aborted):
            del failure[:]
            seen["examples"] -= 1
        finally:
            drawn.pop()


def _settings(limit: int, seed: int | None, shrink: bool, explicit: bool = False) -> settings:
    """Return the audit's Hypothesis settings: the loaded profile's phases (with the explicit
    one where the target's first examples must run, whatever the profile), quiet, no
    database."""
    profile = settings.default or settings()  # the loaded profile's phases (no shrink: mutation)
    phases = [
        p for p in profile.phases if (shrink or p is not Phase.shrink) and p is not Phase.explain
    ]
    if explicit and Phase.explicit not in phases:
        phases.insert(0, Phase.explicit)
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
        phases=phases,
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
    # properties that draw one strategy share their runs (runs_shared), and so the budget
    firsts = target.options.first_examples()  # a slow target's: those at least
    budget = Budget(
        len(props), whole=len({p.examples for p in props}) == 1, fewest=len(firsts) or FEWEST
    )
    offered = Offered() if budget.whole else None  # one strategy: the examples offered
    with runs_shared():  # a run one property made, another that draws it reads
        for prop in ordered(props):
            result, error = _verdict(
                prop, target, failed, error, budget, max_examples, seed, shrink, offered
            )
            if result.verdict == "fail":
                failed.add(prop.pitfall)
            verdicts[id(prop)] = result
        unjudged = OneAudit.unjudged()  # no step of any run could be judged: no pass
        if unjudged is not None and not failed and not error[0]:
            error = (unjudged, None)
        seen = OneAudit.note(passed=not failed and not error[0])  # what limits the verdicts
    return Report(
        str(target),
        target.shown or target.kind,
        plain(target.options.shown()),
        tuple(verdicts[id(p)] for p in props),
        time.perf_counter() - start,
        *error,
        note="; ".join(n for n in (budget.note(), seen) if n),
    )


class OneAudit:
    """A target's properties run one by one as parts of one audit (`one_audit`)."""

    def __init__(self, target: Target) -> None:
        props = _of_kind(target.kind)
        self.target = target
        # where all draw one strategy, the examples offered (as in `run`)
        self.offered = Offered() if len({p.examples for p in props}) == 1 else None

    def run(self, prop: Property, **keywords: Any) -> Result:
        """Return prop's verdict on the target (run_property's keywords), reading the runs
        the properties before it made."""
        result = run_property(prop, self.target, offered=self.offered, **keywords)
        return _judged(prop, self.target, result)

    @staticmethod
    def unjudged() -> str | None:
        """Return the audit's error where no step of the runs made so far could be judged:
        `run` reports it where no property failed (no pass then)."""
        return unreferenced_error()

    @staticmethod
    def note(passed: bool) -> str:
        """Return what the runs made so far showed that limits the verdicts ("" if nothing),
        as `run`'s Report notes it (passed: no property failed and the target never raised)."""
        return notes(passed=passed)


@contextlib.contextmanager
def one_audit(target: Target) -> Iterator[OneAudit]:
    """Run the target's properties one by one as parts of one audit (OneAudit.run): they
    share their runs, as in `run`; the models the factory handed out are put back when the
    block ends. The block is one audit at a time too: another thread's waits for its end."""
    with _AUDITING, runs_shared():
        yield OneAudit(target)


def _judged(prop: Property, target: Target, result: Result) -> Result:
    """Return the result, a pass made a skip where the property held on nothing it reads (its
    unjudged hook, reading what the audit's runs so far showed)."""
    why = prop.unjudged(target) if prop.unjudged is not None else None
    if result.verdict == "pass" and why:
        return Result(prop.pitfall, prop.name, "skip", why)
    return result


def _verdict(
    prop: Property,
    target: Target,
    failed: set[str],
    error: tuple[str, Any],
    budget: Budget,
    max_examples: int | None,
    seed: int | None,
    shrink: bool,
    offered: Offered | None = None,
) -> tuple[Result, tuple[str, Any]]:
    """Return one property's verdict in an audit, and the audit's error after it."""
    reason = not_judged(prop, failed)
    if error[0]:
        reason = "not judged: " + (
            "interrupted" if error[0].startswith("interrupted") else "the target raised"
        )
    if reason is not None:
        budget.left = max(budget.left - 1, 0)  # its share goes to the others
        return Result(prop.pitfall, prop.name, "skip", reason), error
    try:
        with budget.share() as shared:
            result = run_property(
                prop,
                target,
                max_examples=max_examples,
                seed=seed,
                shrink=shrink,
                budget=shared if max_examples is None else None,
                offered=offered,
            )
        result = _judged(prop, target, result)
    except LoopRaised as e:
        error = (str(e.args[0]), e.args[1] if len(e.args) > 1 else None)
        result = Result(prop.pitfall, prop.name, "skip", "not judged: the target raised")
    except KeyboardInterrupt:  # Ctrl-C: the state is restored; report what was judged
        error = ("interrupted (Ctrl-C): the properties after this one were not run", None)
        result = Result(prop.pitfall, prop.name, "skip", "not judged: interrupted")
    return result, error


@_one_at_a_time
def target_for(kind: str, fn: Any, **options: Any) -> Target:
    """Check fn and the options for kind (as the audit functions do) and return the Target."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # a kind may call fn once to check it (a loss's trial, a loop's probe): as in the audit
    with one_thread(), torch.enable_grad(), kept_rngs(), unshared():
        try:
            return KINDS[kind].target(fn, **options)
        except (SystemExit, GeneratorExit) as e:
            raise TargetError(
                f"{name_of(fn)} raised {ended_process(e)} when called once to check it"
            ) from None
