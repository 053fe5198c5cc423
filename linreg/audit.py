"""Check your own code: run every pitfall property of its kind against your function.

One function per kind of target, each returning a `Report`:

- `iterator(fn)`: `fn(batch_size, features, labels)` yields `(X, y)` batches (the book's
  `data_iter`), called once per epoch;
- `update_step(fn)`: `fn(params, lr, batch_size)` updates `params` (the book's `sgd`);
- `loss(fn)`: `fn(y_hat, y)` returns `scale * (y_hat - y)^2` under `reduction`;
- `loop(fn)`: `fn(features, labels, params, *, lr, batch_size, num_epochs)` trains `params`
  (`[w (d, 1), b (1,)]`, leaves that require grad) and returns them, or None when it trains
  them in place (`params` may also be a keyword-only argument, as in `linreg.train`);
- `epoch_loss(fn)`: `fn(features, labels, params, *, lr, batch_size)` trains one epoch and
  returns the loss it reports for it (`linreg.train.train_epoch`);
- `training_loop(fn, model=..., example=...)`: any PyTorch loop `fn(model, loader, optimizer,
  *, num_epochs)`, checked against itself on copies of one sample (batch-partition invariance,
  `linreg.pitfalls._partition`).

Each property runs through Hypothesis (`max_examples` examples, 30 unless given; derandomized
unless `seed` is given) and gives a verdict: pass, fail (with the smallest counterexample
Hypothesis found, as plain data; `shrink=False` reports the first one found, faster) or skip (it
does not apply, or a property it rests on failed first). Tolerances
follow the dtype. Needs Hypothesis: `pip install 'linreg-pitfalls[test]'`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import numpy
import torch

from linreg.testing import NEEDS_HYPOTHESIS

try:
    from hypothesis import HealthCheck, Phase, Verbosity, given, reporting, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Flaky
except ImportError as e:  # pragma: no cover - checked in a subprocess without Hypothesis
    raise ImportError(f"linreg.audit: {NEEDS_HYPOTHESIS}") from e

from linreg import _validate
from linreg.checks import CheckFailed
from linreg.pitfalls import CATALOGUE, Contract, Property, Target, _partition
from linreg.pitfalls.kinds import EPOCH_SIGNATURE, LOOP_SIGNATURE, check_loop_signature

__all__ = [
    "DEFAULT_EXAMPLES",
    "Report",
    "Result",
    "TargetError",
    "epoch_loss",
    "iterator",
    "loop",
    "loss",
    "run",
    "run_property",
    "target_for",
    "training_loop",
    "update_step",
]

DEFAULT_EXAMPLES = 30  # per property, when max_examples is None: the ci profile's
Verdict = Literal["pass", "fail", "skip"]


class TargetError(TypeError):
    """The target cannot be audited: not callable, or not the kind's signature."""


@dataclasses.dataclass(frozen=True)
class Result:
    """One property's verdict on the target."""

    pitfall: str  # the catalogue id
    property: str  # what the property states
    verdict: Verdict
    message: str = ""  # why it failed, or why it was skipped
    counterexample: Any = None  # the smallest failing input Hypothesis found, as plain data
    examples: int = 0  # how many examples ran

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

    @property
    def ok(self) -> bool:
        """Return True when no property failed."""
        return all(r.verdict != "fail" for r in self.results)

    @property
    def failures(self) -> tuple[Result, ...]:
        """Return the results that failed."""
        return tuple(r for r in self.results if r.verdict == "fail")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "target": self.target,
            "kind": self.kind,
            "options": self.options,
            "ok": self.ok,
            "seconds": self.seconds,
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


def plain(value: Any) -> Any:
    """Return value as plain data: tensors as lists (with their grads), dtypes as strings."""
    if isinstance(value, torch.Tensor):
        data = _tolist(value)
        return data if value.grad is None else {"value": data, "grad": _tolist(value.grad)}
    if isinstance(value, torch.dtype):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple: keep its names
        return plain(value._asdict())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _tolist(t: torch.Tensor) -> Any:
    """Return t as nested lists; float32 values as their shortest float32 repr (0.2, not
    0.20000000298023224), which reads back to the same float32."""
    data = t.detach().tolist()
    if t.dtype != torch.float32:
        return data

    def short(x: Any) -> Any:
        return [short(v) for v in x] if isinstance(x, list) else float(str(numpy.float32(x)))

    return short(data)


def _short(value: Any, limit: int = 400) -> str:
    import json

    text = json.dumps(value, allow_nan=False)
    return text if len(text) <= limit else text[: limit - 5] + " ...}"


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
    reason = prop.applies(target.contract)
    if reason is not None:
        return Result(prop.pitfall, prop.name, "skip", reason)
    limit = max_examples or DEFAULT_EXAMPLES
    if prop.max_examples is not None:
        limit = min(limit, prop.max_examples)
    seen = {"examples": 0}
    failure: list[tuple[Any, str]] = []

    def test(example: Any) -> None:
        seen["examples"] += 1
        try:
            with warnings.catch_warnings():  # the target's warnings are not verdicts
                warnings.simplefilter("ignore")
                prop.check(target, example)
        except CheckFailed as e:
            failure.append((example, str(e)))  # the last one is the shrunk one, replayed
            raise

    profile = settings.default or settings()  # the loaded profile's phases (no shrink: mutation)
    wrapped = settings(
        max_examples=limit,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
        # no explain phase: its report is not shown, and it costs as much as the shrinking
        phases=[
            p
            for p in profile.phases
            if (shrink or p is not Phase.shrink) and p is not Phase.explain
        ],
    )(given(prop.examples(target.contract))(test))
    if seed is not None:
        wrapped = hypothesis_seed(seed)(wrapped)
    try:
        with reporting.with_reporter(lambda *_: None):
            wrapped()
    except (CheckFailed, Flaky) as e:
        example, message = failure[-1] if failure else (None, str(e))
        if isinstance(e, Flaky):
            message += " (flaky: replayed, the example did not fail again)"
        return Result(prop.pitfall, prop.name, "fail", message, plain(example), seen["examples"])
    return Result(prop.pitfall, prop.name, "pass", examples=seen["examples"])


def _in_order(props: Sequence[Property]) -> list[Property]:
    """Return props so that each comes after the properties of the pitfalls it requires."""
    pending, ordered = list(props), []
    done: set[str] = set()
    present = {p.pitfall for p in props}
    while pending:
        ready = [p for p in pending if set(p.requires) & present <= done]
        step = ready[:1] or pending[:1]  # a cycle cannot happen in the catalogue; never hang
        ordered += step
        pending.remove(step[0])
        if not [q for q in pending if q.pitfall == step[0].pitfall]:
            done.add(step[0].pitfall)
    return ordered


def run(
    target: Target,
    *,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
    options: dict[str, Any] | None = None,
) -> Report:
    """Run every property of the target's kind from the catalogue and return the Report."""
    start = time.perf_counter()
    props = [p for pitfall in CATALOGUE for p in pitfall.properties if p.kind == target.kind]
    failed: set[str] = set()
    verdicts: dict[int, Result] = {}
    for prop in _in_order(props):
        blocked = [r for r in prop.requires if r in failed]
        if blocked:
            result = Result(
                prop.pitfall,
                prop.name,
                "skip",
                f"not judged: the {blocked[0]} property failed first",
            )
        else:
            result = run_property(prop, target, max_examples=max_examples, seed=seed, shrink=shrink)
        if result.verdict == "fail":
            failed.add(prop.pitfall)
        verdicts[id(prop)] = result
    return Report(
        str(target),
        target.kind,
        options or {},
        tuple(verdicts[id(p)] for p in props),
        time.perf_counter() - start,
    )


# --- the four kinds --------------------------------------------------------------------------


def _name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}" if module else name


def _checked(fn: object, signature: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
    if not callable(fn):
        raise TargetError(f"the target must be callable, got {type(fn).__name__}")
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ValueError):  # no signature to read (a builtin): judged when called
            return fn
        raise TargetError(f"{_name(fn)} does not take {signature}: {e}") from None
    return fn


def _takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def _iterator(
    fn: Any, *, drop_last: bool = False, reused: bool = False
) -> tuple[Target, dict[str, Any]]:
    fn = _checked(fn, "(batch_size, features, labels)", 1, None, None)
    drop_last = _validate.flag("drop_last", drop_last)
    reused = _validate.flag("reused", reused)
    call = partial(fn, drop_last=True) if drop_last and _takes_keyword(fn, "drop_last") else fn
    target = Target(call, "iterator", Contract(drop_last=drop_last, reused=reused), _name(fn))
    return target, {"drop_last": drop_last, "reused": reused}


def _update_step(
    fn: Any,
    *,
    zeroes_grad: bool = True,
    under_no_grad: bool = False,
    divides_by_batch_size: bool = True,
) -> tuple[Target, dict[str, Any]]:
    fn = _checked(fn, "(params, lr, batch_size)", [], 0.1, 1)
    contract = Contract(
        zeroes_grad=_validate.flag("zeroes_grad", zeroes_grad),
        under_no_grad=_validate.flag("under_no_grad", under_no_grad),
        divides_by_batch_size=_validate.flag("divides_by_batch_size", divides_by_batch_size),
    )
    options = {
        "zeroes_grad": zeroes_grad,
        "under_no_grad": under_no_grad,
        "divides_by_batch_size": divides_by_batch_size,
    }
    return Target(fn, "update-step", contract, _name(fn)), options


def _loss(
    fn: Any, *, reduction: str = "none", scale: float = 0.5, flat_labels: bool = True
) -> tuple[Target, dict[str, Any]]:
    fn = _checked(fn, "(y_hat, y)", None, None)
    contract = Contract(
        reduction=_validate.choice("reduction", reduction, ("none", "mean", "sum")),  # type: ignore[arg-type]
        scale=_validate.positive_finite("scale", scale),
        flat_labels=_validate.flag("flat_labels", flat_labels),
    )
    options = {"reduction": reduction, "scale": scale, "flat_labels": flat_labels}
    return Target(fn, "loss", contract, _name(fn)), options


def _loop(
    fn: Any,
    *,
    objective: str = "book",
    full_batch: bool = False,
    drop_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Target, dict[str, Any]]:
    if not callable(fn):
        raise TargetError(f"the target must be callable, got {type(fn).__name__}")
    try:
        check_loop_signature(fn)
    except TypeError as e:
        raise TargetError(f"{_name(fn)}: a loop {e}") from None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    contract = Contract(
        objective=_validate.choice("objective", objective, ("book", "mse")),  # type: ignore[arg-type]
        full_batch=_validate.flag("full_batch", full_batch),
        drop_last=_validate.flag("drop_last", drop_last),
        dtype=dtype,
    )
    options = {
        "objective": objective,
        "full_batch": full_batch,
        "drop_last": drop_last,
        "dtype": str(dtype).removeprefix("torch."),
    }
    return Target(fn, "loop", contract, _name(fn)), options


def _epoch_loss(
    fn: Any, *, objective: str = "book", dtype: torch.dtype = torch.float32
) -> tuple[Target, dict[str, Any]]:
    if not callable(fn):
        raise TargetError(f"the target must be callable, got {type(fn).__name__}")
    try:
        check_loop_signature(fn, epochs=False)
    except TypeError as e:
        raise TargetError(f"{_name(fn)}: an epoch {e}") from None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    contract = Contract(
        objective=_validate.choice("objective", objective, ("book", "mse")),  # type: ignore[arg-type]
        dtype=dtype,
    )
    options = {"objective": objective, "dtype": str(dtype).removeprefix("torch.")}
    return Target(fn, "epoch-loss", contract, _name(fn)), options


def _training_loop(
    fn: Any,
    *,
    model: Any = None,
    example: Any = None,
    optimizer: Any = None,
    accumulation_steps: int = 1,
    reduction: str = "mean",
) -> tuple[Target, dict[str, Any]]:
    fn = _checked(fn, _partition.TRAINING_LOOP_SIGNATURE, None, None, None, num_epochs=1)
    if not callable(model):
        raise TargetError(
            f"model must be a zero-argument factory of an nn.Module, got {type(model).__name__}"
        )
    if optimizer is not None and not callable(optimizer):
        raise TargetError(
            f"optimizer must be a factory params -> torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}"
        )
    try:
        pair = _partition.as_example(example() if callable(example) else example)
        _partition.check_model(model, pair)
        built = (optimizer or _partition.default_optimizer)(_partition.build(model).parameters())
    except TypeError as e:
        raise TargetError(str(e)) from None
    if not isinstance(built, torch.optim.Optimizer):
        raise TargetError(
            f"the optimizer factory returned {type(built).__name__}, not a torch.optim.Optimizer"
        )
    contract = Contract(
        model=model,
        example=pair,
        optimizer=optimizer,
        accumulation_steps=_validate.positive_int("accumulation_steps", accumulation_steps),
        reduction=_validate.choice("reduction", reduction, ("mean", "sum")),  # type: ignore[arg-type]
    )
    target = Target(fn, "training-loop", contract, _name(fn))
    try:
        _partition.check_loop(target)
    except TypeError as e:
        raise TargetError(f"{_name(fn)}: {e}") from None
    options = {
        "model": _name(model),
        "example": plain(pair),
        "optimizer": "SGD" if optimizer is None else _name(optimizer),
        "accumulation_steps": accumulation_steps,
        "reduction": reduction,
    }
    return target, options


_TARGETS: dict[str, Callable[..., tuple[Target, dict[str, Any]]]] = {
    "iterator": _iterator,
    "update-step": _update_step,
    "loss": _loss,
    "loop": _loop,
    "epoch-loss": _epoch_loss,
    "training-loop": _training_loop,
}


def target_for(kind: str, fn: Any, **options: Any) -> Target:
    """Check fn and the options for kind (as the audit functions do) and return the Target."""
    if kind not in _TARGETS:
        raise ValueError(f"kind must be one of {', '.join(_TARGETS)}, got {kind!r}")
    return _TARGETS[kind](fn, **options)[0]


def _audit(
    built: tuple[Target, dict[str, Any]], max_examples: int | None, seed: int | None, shrink: bool
) -> Report:
    if max_examples is not None:
        _validate.positive_int("max_examples", max_examples)
    if seed is not None:
        _validate.non_negative_int("seed", seed)
    target, options = built
    shrink = _validate.flag("shrink", shrink)
    return run(target, max_examples=max_examples, seed=seed, shrink=shrink, options=options)


def iterator(
    fn: Callable[..., Any],
    *,
    drop_last: bool = False,
    reused: bool = False,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Audit a mini-batch iterator `fn(batch_size, features, labels)`, called once per epoch.

    drop_last=True says it drops the n % batch_size left-over samples; if fn takes a
    `drop_last` keyword, True is passed to it. reused=True says the trainer calls fn once and
    iterates what it returns every epoch. Its shuffling is seeded per example through torch's
    and Python's global RNGs.
    """
    return _audit(_iterator(fn, drop_last=drop_last, reused=reused), max_examples, seed, shrink)


def update_step(
    fn: Callable[..., Any],
    *,
    zeroes_grad: bool = True,
    under_no_grad: bool = False,
    divides_by_batch_size: bool = True,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Audit an update step `fn(params, lr, batch_size)`: p - lr * grad / B, in place.

    zeroes_grad=False says the loop zeroes the grads (a grad of zeros or None counts as
    zeroed); under_no_grad=True calls it inside torch.no_grad(), as a trainer that wraps the
    step does; divides_by_batch_size=False expects p - lr * grad (a step for a mean loss).
    """
    built = _update_step(
        fn,
        zeroes_grad=zeroes_grad,
        under_no_grad=under_no_grad,
        divides_by_batch_size=divides_by_batch_size,
    )
    return _audit(built, max_examples, seed, shrink)


def loss(
    fn: Callable[..., Any],
    *,
    reduction: Literal["none", "mean", "sum"] = "none",
    scale: float = 0.5,
    flat_labels: bool = True,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Audit a loss `fn(y_hat, y)`: scale * (y_hat - y)^2, reduced by `reduction`.

    scale is 0.5 for the book's squared_loss, 1.0 for nn.MSELoss. flat_labels=False says the
    labels are always (n, 1): labels of shape (n,) are then not tried.
    """
    built = _loss(fn, reduction=reduction, scale=scale, flat_labels=flat_labels)
    return _audit(built, max_examples, seed, shrink)


def loop(
    fn: Callable[..., Any],
    *,
    objective: Literal["book", "mse"] = "book",
    full_batch: bool = False,
    drop_last: bool = False,
    dtype: torch.dtype = torch.float32,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Audit a training loop `fn(features, labels, params, *, lr, batch_size, num_epochs)`.

    objective="book" is the mean of (y_hat - y)^2 / 2 per step (the book's loop, or
    nn.MSELoss() + optim.SGD at lr / 2); "mse" the mean of (y_hat - y)^2 (nn.MSELoss() +
    optim.SGD at lr). full_batch=True: every step takes the whole data (batch_size = n).
    drop_last=True: the n % batch_size left-over rows are dropped each epoch. The data and
    params come in dtype, with 2 features; the loop's RNGs are seeded per example.
    """
    built = _loop(fn, objective=objective, full_batch=full_batch, drop_last=drop_last, dtype=dtype)
    return _audit(built, max_examples, seed, shrink)


def epoch_loss(
    fn: Callable[..., Any],
    *,
    objective: Literal["book", "mse"] = "book",
    dtype: torch.dtype = torch.float32,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Audit one epoch that reports its loss: `fn(features, labels, params, *, lr, batch_size)`.

    fn trains `params` for one epoch and returns the epoch's loss as it reports it (a float, or
    a one-element tensor): the mean of the objective over the epoch's examples. objective is
    "book" (the mean of (y_hat - y)^2 / 2) or "mse" (the mean of (y_hat - y)^2). With lr = 0
    the report must be the full-data loss; it must hold no graph.
    """
    return _audit(_epoch_loss(fn, objective=objective, dtype=dtype), max_examples, seed, shrink)


def training_loop(
    fn: Callable[..., Any],
    *,
    model: Callable[[], torch.nn.Module],
    example: Any,
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    accumulation_steps: int = 1,
    reduction: Literal["mean", "sum"] = "mean",
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> Report:
    """Audit any PyTorch training loop `fn(model, loader, optimizer, *, num_epochs)`.

    model is a zero-argument factory of a fresh nn.Module (torch is seeded before each call);
    example one (x, y) sample, unbatched, as the dataset holds it (or a zero-argument function
    returning one); optimizer a factory params -> torch.optim.Optimizer (default: plain SGD).
    The audit hands the loop a model, a DataLoader (in order) over copies of x and of a
    contrast row, and the optimizer with its lr set to 0, and reads the gradients at each
    optimizer.step(): a correct loop applies the mean of its rows' gradients at every step
    (their sum for reduction="sum"), whatever the batching. accumulation_steps=k says the loop
    steps once per k batches, and once for what is left at the end of an epoch. A model with
    BatchNorm, or random in training mode beyond its Dropout modules (set to p = 0), is refused.
    """
    built = _training_loop(
        fn,
        model=model,
        example=example,
        optimizer=optimizer,
        accumulation_steps=accumulation_steps,
        reduction=reduction,
    )
    return _audit(built, max_examples, seed, shrink)


KINDS: dict[str, Callable[..., Report]] = {
    "iterator": iterator,
    "update-step": update_step,
    "loss": loss,
    "loop": loop,
    "epoch-loss": epoch_loss,
    "training-loop": training_loop,
}
SIGNATURES = {
    "iterator": "fn(batch_size, features, labels)",
    "update-step": "fn(params, lr, batch_size)",
    "loss": "fn(y_hat, y)",
    "loop": LOOP_SIGNATURE,
    "epoch-loss": EPOCH_SIGNATURE,
    "training-loop": _partition.TRAINING_LOOP_SIGNATURE,
}
