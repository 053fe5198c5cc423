"""The shape every pitfall module fills in: its text, its properties, its wrong variants, its demo.

A `Property` is a check of one target (an iterator, an update step, a loss, a loop, ...) on one
example, plus where its examples come from. The tests run it with Hypothesis against linreg's
own code (it must hold) and against each wrong variant (it must be refuted); `linreg.audit`
runs it against a user's code; `python -m linreg pitfalls` runs it on the book's example. So
each property is written once, in its pitfall's module, and read by all three.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:  # Hypothesis is needed only to draw examples, never to import linreg
    from hypothesis.strategies import SearchStrategy

# The kinds a user can audit (linreg.audit); the other kinds are linreg's own signatures.
AUDIT_KINDS = ("iterator", "update-step", "loss", "loop", "epoch-loss", "training-loop")


@dataclass(frozen=True)
class Contract:
    """What a target promises beyond its signature: the audit's keyword options, by kind."""

    drop_last: bool = False  # iterator, loop: the n % B left-over samples are dropped
    reused: bool = False  # iterator: the trainer keeps what fn returns and iterates it again
    zeroes_grad: bool = True  # update-step: the step zeroes (or sets to None) the grads
    under_no_grad: bool = False  # update-step: the caller runs it inside torch.no_grad()
    divides_by_batch_size: bool = True  # update-step: p - lr*g/B (False: p - lr*g)
    reduction: Literal["none", "mean", "sum"] = "none"  # loss; training-loop (none = mean)
    scale: float = 0.5  # loss: the factor in front of (y_hat - y)^2
    flat_labels: bool = True  # loss: labels of shape (n,) must give the same loss as (n, 1)
    objective: Literal["book", "mse"] = "book"  # loop, epoch-loss: mean of r^2 / 2, or of r^2
    full_batch: bool = False  # loop: every step takes the whole data
    dtype: torch.dtype = torch.float32  # loop, epoch-loss: the dtype of the data and params
    # training-loop: what the audit hands the loop (a model factory, one (x, y) sample, an
    # optimizer factory; None: plain SGD), and how many loader batches each step takes
    model: Callable[[], torch.nn.Module] | None = field(default=None, compare=False)
    example: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, compare=False)
    optimizer: Callable[..., torch.optim.Optimizer] | None = field(default=None, compare=False)
    accumulation_steps: int = 1


@dataclass(frozen=True)
class Target:
    """A function to check, the kind of function it is, and what it promises."""

    fn: Callable[..., Any]
    kind: str
    contract: Contract = field(default_factory=Contract)
    name: str = ""
    oracle: bool = False  # torch's own code (DataLoader, optim.SGD, nn.MSELoss), not linreg's

    def __str__(self) -> str:
        return self.name or getattr(self.fn, "__name__", repr(self.fn))


@dataclass(frozen=True)
class Variant:
    """A wrong variant; `replaces` names the linreg function ("module.name") it can stand in for.

    `kind`, `contract` and `call` say how it is checked as a target: `call` (default: the
    function itself) is what the properties call.
    """

    func: Callable[..., Any]
    replaces: str | None = None
    kind: str | None = None
    contract: Contract = field(default_factory=Contract)
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
        return Target(self.call or self.func, self.kind, self.contract, self.name)


def _always(contract: Contract) -> str | None:
    del contract
    return None


@dataclass(frozen=True)
class Property:
    """One property of one kind of target: `check(target, example)` raises CheckFailed if not.

    `examples(contract)` is a Hypothesis strategy of examples; `book()` the book's example,
    pinned in the tests and shown by the report. `holds_for` are linreg's (and torch's) own
    targets, `refuted_by` the wrong variants Hypothesis must refute. `applies(contract)` says
    why the property does not apply to a target (None when it does); `requires` names pitfalls
    whose properties, if they fail in the same audit, leave this one not judged.
    """

    name: str
    kind: str
    check: Callable[[Target, Any], None]
    examples: Callable[[Contract], SearchStrategy[Any]]
    holds_for: tuple[Target, ...]
    refuted_by: tuple[Variant, ...]
    book: Callable[[], Any] | None = None
    applies: Callable[[Contract], str | None] = _always
    requires: tuple[str, ...] = ()
    max_examples: int | None = None  # a cap, for properties whose examples start processes
    pitfall: str = ""  # filled in by Pitfall


@dataclass
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


@dataclass(frozen=True)
class Pitfall:
    """One pitfall: an id, a title, what goes wrong and the fix, its properties and its demo."""

    id: str
    title: str
    explanation: str
    properties: tuple[Property, ...]
    demo: Callable[[], Evidence]
    order: int  # its place in the catalogue
    extra_variants: tuple[Variant, ...] = ()  # wrong variants no property of its own refutes
    prepare: Callable[[], None] | None = None  # start slow work (processes) before the demos
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
