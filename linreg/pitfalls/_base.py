"""The shape every pitfall module fills in: its text, its properties, its wrong variants, its demo.

A `Property` is a check of one target (an iterator, an update step, a loss, a loop, ...) on one
example, plus where its examples come from. The tests run it with Hypothesis against linreg's
own code (it must hold) and against each wrong variant (it must be refuted); `linreg.audit`
runs it against a user's code; `python -m linreg pitfalls` runs it on the book's example. So
each property is written once, in its pitfall's module, and read by all three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from linreg.kinds.base import Target
from linreg.kinds.options import Options

if TYPE_CHECKING:  # Hypothesis is needed only to draw examples, never to import linreg
    from hypothesis.strategies import SearchStrategy


@dataclass(frozen=True)
class Variant:
    """A wrong variant; `replaces` names the linreg function ("module.name") it can stand in for.

    `kind`, `options` and `call` say how it is checked as a target: `call` (default: the
    function itself) is what the properties call.
    """

    func: Callable[..., Any]
    replaces: str | None = None
    kind: str | None = None
    options: Any = field(default_factory=Options)  # the kind's Options subclass
    call: Callable[..., Any] | None = None

    @property
    def name(self) -> str:
        """Return the variant's function name, which names its mistake."""
        return self.func.__name__

    @property
    def mistake(self) -> str:
        """Return the first line of the variant's docstring."""
        return (self.func.__doc__ or "").strip().splitlines()[0].removeprefix("Mistake: ")

    @property
    def target(self) -> Target:
        """Return the variant as a target of its kind."""
        if self.kind is None:
            raise ValueError(f"{self.name} has no kind: it is not checked as a target")
        return Target(self.call or self.func, self.kind, self.options, self.name)


def _nothing_last(options: Any) -> tuple[Any, ...]:
    return ()


def _always(options: Options) -> str | None:
    del options
    return None


@dataclass(frozen=True, kw_only=True)
class Property:
    """One property of one kind of target: `check(target, example)` raises CheckFailed if not.

    `examples(options)` is a Hypothesis strategy of examples; `book()` the book's example,
    pinned in the tests and shown by the report. `holds_for` are linreg's (and torch's) own
    targets, `refuted_by` the wrong variants Hypothesis must refute. `applies(options)` says
    why the property does not apply to a target (None when it does); `requires` names pitfalls
    whose properties, if they fail in the same audit, leave this one not judged.
    """

    name: str
    kind: str
    check: Callable[[Target, Any], None]
    examples: Callable[[Any], SearchStrategy[Any]]  # the kind's Options -> examples
    holds_for: tuple[Target, ...]
    refuted_by: tuple[Variant, ...]
    book: Callable[[], Any] | None = None
    applies: Callable[[Any], str | None] = _always  # the kind's Options -> why not
    requires: tuple[str, ...] = ()
    max_examples: int | None = None  # a cap, for properties whose examples start processes
    # the kind's Options -> examples it judges once its drawn ones passed, found there unshrunk
    # (what the drawn never hold: the training-loop kind's wide run)
    last: Callable[[Any], tuple[Any, ...]] = _nothing_last
    # after an audit's examples held: why they judged nothing (None: they did), as the runs
    # the audit shares showed it (a loop that never called what the property reads)
    unjudged: Callable[[Target], str | None] | None = None
    pitfall: str = ""  # filled in by Pitfall


@dataclass(kw_only=True)
class Evidence:
    """What a demonstration expected, what it observed, and whether they agree."""

    id: str
    expected: str
    observed: str
    ok: bool
    figures: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None  # why it could not run here (then ok says nothing)
    properties: list[dict[str, Any]] = field(default_factory=list)  # verdicts on the book example


@dataclass(frozen=True, kw_only=True)
class Pitfall:
    """One pitfall: an id, a title, what goes wrong and the fix, its properties and its demo."""

    id: str
    title: str
    explanation: str
    properties: tuple[Property, ...]
    demo: Callable[[], Evidence]
    order: int  # its place in the catalogue
    extra_variants: tuple[Variant, ...] = ()  # wrong variants no property of its own refutes
    start_early: Callable[[], None] | None = None  # start slow work (processes) before the demos
    plots: bool = False  # its demo draws loss curves (python -m linreg pitfalls --plot)

    def __post_init__(self) -> None:
        owned = tuple(replace(p, pitfall=self.id) for p in self.properties)
        object.__setattr__(self, "properties", owned)

    @property
    def variants(self) -> tuple[Variant, ...]:
        """Return the wrong variants: those its properties refute, then the extra ones."""
        out: dict[str, Variant] = {}
        for p in self.properties:
            for v in p.refuted_by:
                out.setdefault(v.name, v)
        for v in self.extra_variants:
            out.setdefault(v.name, v)
        return tuple(out.values())
