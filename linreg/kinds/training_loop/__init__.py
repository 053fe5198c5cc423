"""Any PyTorch training loop, as it is written, checked on rows it can be judged on.

The audit hands the loop what its parameters ask for (`contract`, in this folder: a fresh model
from the user's factory, a DataLoader, a dataset or a batch function over the audit's rows, an
optimizer or none, a number of epochs or of steps) and watches it run (`observe`): every
optimizer step over the model's parameters, its lr held at 0, and the rows fed to the model
before it. The rows are copies of one example and of a contrast row with a
different gradient, so how a step weighs its rows shows. Each step's gradient is judged
against an absolute reference (`gradients`): the mean (or, for
`reduction="sum"`, the sum) over the rows it consumed of each row's own gradient, from the
loss the user names, the model's own loss where its output carries one, or else the usual loss
for the labels, confirmed against the loop on one row at a time.

Dropout modules are set to p = 0 and batch norms held in eval mode, so no row's output depends
on another's; a forward that is still random, or rows that still interact, is refused before
any work, as is a loop that moves the parameters outside `optimizer.step()`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from linreg import _validate
from linreg.checks import CheckFailed, LoopRaised
from linreg.kinds import guards
from linreg.kinds.base import Kind, Target, TargetError
from linreg.kinds.guards import Aborted, TimeUp, seeded, silenced, time_limit, user_fn
from linreg.kinds.options import Options, name_of, option, seconds
from linreg.kinds.training_loop import contract as contracts
from linreg.kinds.training_loop.observe import (
    Observed,
    Watch,
    held_still,
    models_restored,
    not_finite,
    raised,
    watching,
)

SIGNATURE = "fn(model, loader/dataset/get_batch, [optimizer], num_epochs/max_steps)"
INPUT_KEYS = ("input_ids", "x", "inputs", "input", "pixel_values", "features")
LABEL_KEYS = ("labels", "label", "y", "target", "targets")
FLOOR = guards.FLOOR  # seconds: the least time a run of the loop is given (see limit_of)
IGNORE_INDEX = -100  # the targets a token loss does not count (nn.CrossEntropyLoss's default)
Example = tuple[Tensor, Tensor] | dict[str, Tensor]


def _factory(name: str, value: object) -> Callable[[], nn.Module]:
    if not callable(value):
        raise TargetError(
            f"{name} must be a zero-argument factory of an nn.Module, got {type(value).__name__}"
        )
    return value


def _callable_or_none(what: str) -> Callable[[str, object], Any]:
    def check(name: str, value: object) -> Any:
        if value is not None and not callable(value):
            raise TargetError(f"{name} must be {what}, got {type(value).__name__}")
        return value

    return check


EXAMPLE_HELP = (
    "one sample, unbatched, as the dataset holds it: (x, y), or a dict of tensors (or a "
    "function returning one)"
)


def example_option() -> Any:
    """Return the example option's field: the training loop's, and each framework's."""
    return option(
        None,
        EXAMPLE_HELP,
        flag="--example",
        check=checked_example,
        imported="object",
        required=True,
        compare=False,
    )


def checked_example(name: str, value: object) -> Example:
    """Return the example option as (x, y) tensors or a dict of tensors; raise TargetError."""
    try:
        return as_example(value() if callable(value) else value)
    except TypeError as e:
        raise TargetError(str(e)) from None


@dataclass(frozen=True)
class TrainingLoopOptions(Options):
    """What a training loop is given, and how it steps."""

    model: Callable[[], nn.Module] = option(
        None,
        "a zero-argument factory of a fresh nn.Module (a class will do)",
        flag="--model",
        check=_factory,
        imported="callable",
        required=True,
        compare=False,
    )
    example: Example = example_option()
    optimizer: Callable[..., torch.optim.Optimizer] | None = option(
        None,
        "a factory params -> torch.optim.Optimizer, for a loop that takes one (default: SGD)",
        flag="--optimizer",
        check=_callable_or_none("a factory params -> torch.optim.Optimizer"),
        imported="callable",
        compare=False,
    )
    loss: Callable[[Any, Tensor], Tensor] | None = option(
        None,
        "the loss the loop trains, (output, y) -> the batch's mean loss (default: the model's "
        "own where its output carries one, else cross-entropy for class labels and mean "
        "squared error otherwise, confirmed against the loop)",
        flag="--loss",
        check=_callable_or_none("a function (output, y) -> loss"),
        imported="callable",
        compare=False,
    )
    accumulation_steps: int = option(
        1,
        "the loop steps once per this many batches, and once for what is left of an epoch",
        flag="--accumulation-steps",
        check=_validate.positive_int,
    )
    reduction: str = option(
        "mean",
        "a step applies the mean (or the sum) of its rows' gradients",
        flag="--reduction",
        choices=("mean", "sum"),
    )
    drop_last: bool = option(
        False,
        "the audit's DataLoader drops each epoch's short last batch (drop_last=True)",
        flag="--drop-last",
    )
    timeout: float | None = option(
        None,
        "seconds one run of the loop may take (default: 50 times its first small run, and at "
        f"least {FLOOR:g} s)",
        flag="--timeout",
        check=seconds,
    )


_LIMITS: dict[int, tuple[Callable[..., Any], float]] = {}  # each loop's derived time limit


def limit_of(target: Target) -> float:
    """Return the seconds one run of the target's loop may take."""
    given = options_of(target).timeout
    if given is not None:
        return given
    fn = user_fn(target.fn)  # as _checked saw it, before the target wrapped it
    hit = _LIMITS.get(id(fn))
    return hit[1] if hit is not None and hit[0] is fn else FLOOR


def options_of(target: Target) -> TrainingLoopOptions:
    """Return a training-loop target's options."""
    options = target.options
    assert isinstance(options, TrainingLoopOptions), f"{target} is not a training-loop target"
    return options


@dataclass(frozen=True)
class Batching:
    """One run of a loop: n rows (0 = the example, 1 = the contrast row) in batches, in order."""

    rows: tuple[int, ...]
    batch_size: int
    num_epochs: int
    seed: int  # torch's and Python's RNGs, seeded before the model is built and the loop runs

    @property
    def n(self) -> int:
        """Return the number of rows."""
        return len(self.rows)

    def steps(self, accumulation_steps: int, drop_last: bool = False) -> list[tuple[int, ...]]:
        """Return the rows each optimizer step of a correct loop consumes, over every epoch."""
        b, k = self.batch_size, accumulation_steps
        end = self.n - self.n % b if drop_last else self.n
        batches = [self.rows[i : i + b] for i in range(0, end, b)]
        groups = [sum(batches[j : j + k], ()) for j in range(0, len(batches), k)]
        return groups * self.num_epochs


def expected_steps(batching: Batching, accumulation_steps: int, drop_last: bool = False) -> int:
    """Return the number of optimizer steps a correct loop takes on the batching."""
    return len(batching.steps(accumulation_steps, drop_last))


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Return plain SGD (the audit holds its lr at 0: only the gradients are read)."""
    return torch.optim.SGD(params, lr=0.1)


def contrast(x: Tensor) -> Tensor:
    """Return a row unlike x, valid wherever x is: x + 1 for floats; 0 (or 1) for indices."""
    if x.is_floating_point() or x.is_complex():
        return x + 1
    return torch.zeros_like(x) if bool(x.any()) else torch.ones_like(x)


def as_example(example: Any) -> Example:
    """Return a sample as (x, y) tensors or a dict of tensors; raise TypeError otherwise."""
    if isinstance(example, Mapping):
        if not example:
            raise TypeError("the example is an empty dict: give the sample's tensors by name")
        try:
            return {str(k): torch.as_tensor(v) for k, v in example.items()}
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"the example's values must be tensors or numbers: {e}") from None
    if not isinstance(example, (tuple, list)) or len(example) != 2:
        raise TypeError(
            f"the example must be one (x, y) sample or a dict of tensors, got "
            f"{type(example).__name__}"
            + (f" of length {len(example)}" if isinstance(example, (tuple, list)) else "")
        )
    try:
        x, y = (torch.as_tensor(v) for v in example)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"the example's x and y must be tensors or numbers: {e}") from None
    return x, y


def input_key(example: Mapping[str, Tensor]) -> str:
    """Return the key of a dict example whose value the contrast row changes."""
    return next((k for k in INPUT_KEYS if k in example), next(iter(example)))


def label_key(example: Mapping[str, Tensor]) -> str | None:
    """Return the key of a dict example's labels (None if it names none)."""
    return next((k for k in LABEL_KEYS if k in example), None)


def labels_of(example: Example) -> Tensor | None:
    """Return the example's labels: y, or a dict's labels (None if it names none)."""
    if isinstance(example, tuple):
        return example[1]
    label = label_key(example)
    return None if label is None else example[label]


def rows_of(example: Example, kinds: Iterable[int]) -> list[Any]:
    """Return the rows: the example (0) or its contrast row (1), as the dataset holds them."""
    if isinstance(example, tuple):
        x, y = example
        pair = ((x, y), (contrast(x), y))
        return [pair[k] for k in kinds]
    key = input_key(example)
    other = {**example, key: contrast(example[key])}
    label = label_key(example)
    if label is not None:  # token labels: the contrast row counts fewer targets
        other[label] = fewer_targets(example[label])
    return [dict(example) if k == 0 else dict(other) for k in kinds]


def fewer_targets(labels: Tensor) -> Tensor:
    """Return token labels with every target but the last set to IGNORE_INDEX (-100).

    The contrast row then counts one target where the example counts several, so a step that
    takes the mean of its micro-batches' means over uneven counts of targets shows.
    """
    counted = (labels != IGNORE_INDEX).nonzero()
    if labels.ndim == 0 or labels.is_floating_point() or len(counted) < 2:
        return labels
    out = torch.full_like(labels, IGNORE_INDEX)
    last = tuple(counted[-1].tolist())
    out[last] = labels[last]
    return out


def build_model(factory: Callable[[], nn.Module], example: Example | None = None) -> nn.Module:
    """Return a fresh model from the factory, Dropout at p = 0, batch norms held in eval mode.

    A lazy module (nn.LazyLinear, as d2l builds its models) is initialized by a forward pass on
    the example, batched as one row, so its parameters exist before the loop runs.
    """
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    lazy = any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    if lazy and example is not None:
        with torch.no_grad():
            if isinstance(example, tuple):
                model(example[0].unsqueeze(0))
            else:
                model(**{k: v.unsqueeze(0) for k, v in example.items()})
    return held_still(model)


_CONTRACTS: dict[int, tuple[Callable[..., Any], contracts.Contract]] = {}


def asks_of(fn: Callable[..., Any]) -> contracts.Contract:
    """Return what the loop asks for, read once per function."""
    hit = _CONTRACTS.get(id(fn))
    if hit is None or hit[0] is not fn:
        hit = (fn, contracts.contract_of(fn))
        _CONTRACTS[id(fn)] = hit
    return hit[1]


def run_at_zero_lr(target: Target, batching: Batching) -> tuple[nn.Module, Observed]:
    """Run the loop at lr = 0 on a batching; return its model and what it did."""
    c = options_of(target)
    asks = asks_of(target.fn)
    with seeded(batching.seed):
        model = build_model(c.model, c.example)
        optimizer = None
        if asks.has("optimizer"):
            optimizer = (c.optimizer or default_optimizer)(model.parameters())
    k = c.accumulation_steps
    kwargs = contracts.arguments(
        asks,
        model=model,
        rows=rows_of(c.example, batching.rows),
        batch_size=batching.batch_size,
        drop_last=c.drop_last,
        optimizer=optimizer,
        num_epochs=batching.num_epochs,
        steps=max(1, expected_steps(batching, k, c.drop_last)),
        accumulation_steps=k,
    )
    watch = target.watch or Watch()
    limit = limit_of(target)  # from the start, and anew after each update: the loop's progress
    seen = Observed()
    try:
        with (
            time_limit(limit) as anew,
            watching(model, watch.method, watch.replayable, anew) as seen,
            seeded(batching.seed),
            warnings.catch_warnings(),
            silenced(),
        ):
            warnings.simplefilter("ignore")  # the loop's warnings are not verdicts
            target.fn(**kwargs)
    except (CheckFailed, LoopRaised):
        raise
    except TimeUp:
        raise Aborted(LoopRaised(_no_progress(limit, len(seen.steps)))) from None
    except Exception as e:
        raise raised(e, target.fn) from e
    infinite = not_finite(seen)
    if infinite:
        raise LoopRaised(infinite)
    return model, seen


def _no_progress(limit: float, updates: int) -> str:
    if not updates:
        return (
            f"the loop did not return within {limit:g} s and made no update: an endless loop, "
            "or a step budget it never reaches? (timeout= sets the limit)"
        )
    return (
        f"the loop did not return within {limit:g} s of its update {updates}, and made no "
        "other: an endless loop, or a step budget it never reaches? (timeout= sets the limit)"
    )


def observe(target: Target, batching: Batching) -> Observed:
    """Run the loop at lr = 0 on a batching; return what it did."""
    return run_at_zero_lr(target, batching)[1]


def build(fn: Callable[..., Any], options: TrainingLoopOptions) -> Callable[..., Any]:
    """Return fn once it says what it takes, its model can be judged and it steps the optimizer."""
    with models_restored():
        return _checked(fn, options)


def _checked(fn: Callable[..., Any], options: TrainingLoopOptions) -> Callable[..., Any]:
    asks_of(fn)
    try:
        with seeded(0):  # the user's RNG is left as it was
            probe = build_model(options.model, options.example)
        if options.optimizer is not None:
            built = options.optimizer(probe.parameters())
            if not isinstance(built, torch.optim.Optimizer):
                raise TypeError(
                    f"the optimizer factory returned {type(built).__name__}, not a "
                    "torch.optim.Optimizer"
                )
    except TypeError as e:
        raise TargetError(str(e)) from None
    from linreg.kinds.training_loop.gradients import check_model  # the references need this module

    target = Target(fn, "training-loop", options)
    batching = Batching((0, 1, 0), 2, 2, 0)
    start = time.perf_counter()
    try:
        model, seen = run_at_zero_lr(target, batching)
    except LoopRaised as e:
        raise TargetError(f"{name_of(fn)}: on {describe(batching, options)}, {e}") from None
    except Aborted as e:
        raise TargetError(f"{name_of(fn)}: on {describe(batching, options)}, {e.args[0]}") from None
    _LIMITS[id(fn)] = (fn, max(FLOOR, 50 * (time.perf_counter() - start)))
    if seen.moved:
        raise TargetError(
            f"{name_of(fn)}: with the optimizer's lr held at 0 the loop still changed the "
            "model's parameters: it updates them outside optimizer.step(), and the audit "
            "judges only a loop that steps an optimizer"
        )
    try:
        check_model(model, seen.calls)
    except TypeError as e:
        raise TargetError(str(e)) from None
    return fn


def most_rows(target: Target, batching: Batching) -> int | None:
    """Return the most rows a step of a correct loop consumes (None: the loop batches itself)."""
    asks = asks_of(target.fn)
    if asks.data == "dataset" and not asks.has("batch_size"):
        return None
    return batching.batch_size * options_of(target).accumulation_steps


def describe(batching: Batching, options: TrainingLoopOptions) -> str:
    """Return the batching in words, for a failure message."""
    rows = "rows of both kinds" if len(set(batching.rows)) > 1 else "identical rows"
    return (
        f"{batching.n} {rows} in batches of {batching.batch_size}, for {batching.num_epochs} "
        f"epoch(s)" + (" (drop_last)" if options.drop_last else "")
    )


def reduced(target: Target) -> str:
    """Return how a step reduces its rows' gradients: "sum" or "mean"."""
    return "sum" if options_of(target).reduction == "sum" else "mean"


def loss_of(y_hat: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Return cross-entropy for class labels, else mean squared error, under reduction."""
    if y.dtype in (torch.int64, torch.int32):
        return nn.functional.cross_entropy(y_hat, y, reduction=reduction)
    return nn.functional.mse_loss(y_hat, y, reduction=reduction)


# --- the loops that hold, and what they are given --------------------------------------------


def fit(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """The plain loop: zero the grads, the batch's mean loss, backward, step; any model."""
    model.train()
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_of(model(X), y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def fit_micro_batches(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *, num_epochs: int
) -> None:
    """Accumulate each batch over micro-batches of 2 rows: each summed loss / the batch's rows."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad(set_to_none=False)
            for Xm, ym in zip(X.split(2), y.split(2), strict=True):
                (loss_of(model(Xm), ym, "sum") / len(X)).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def linear() -> nn.Module:
    """Return nn.Linear(2, 1): the book's model."""
    return nn.Linear(2, 1)


def mlp() -> nn.Module:
    """Return a small classifier: 4 features, 8 hidden units (ReLU, Dropout), 3 classes."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


LINEAR = TrainingLoopOptions(model=linear, example=(torch.tensor([1.0, -0.5]), torch.tensor([4.2])))
CLASSIFIER = TrainingLoopOptions(
    model=mlp, example=(torch.tensor([0.5, -1.0, 0.25, 2.0]), torch.tensor(2))
)
TRAINING_LOOPS = (
    Target(fit, "training-loop", LINEAR, "fit(nn.Linear, mse_loss)"),
    Target(fit, "training-loop", CLASSIFIER, "fit(MLP, cross_entropy)"),
    Target(fit_micro_batches, "training-loop", LINEAR, "fit_micro_batches(nn.Linear)"),
)


def framework_target(
    loop: Callable[..., Any],
    framework: str,
    factory: Callable[[], nn.Module],
    watch: Watch | None = None,
    **options: Any,
) -> Target:
    """Return the training-loop target that judges a framework's Trainer, run by loop, on the
    models factory makes, watched as `watch` says; named framework(MODULE:NAME) after the
    factory alone."""
    loop.__name__ = loop.__qualname__ = f"{framework}({name_of(factory)})"
    loop.__module__ = ""
    return replace(KIND.target(loop, model=factory, **options), watch=watch)


KIND = Kind(
    name="training-loop",
    signature=SIGNATURE,
    summary="any PyTorch training loop, as written, judged step by step on copies of one sample",
    options=TrainingLoopOptions,
    build=build,
    calls="the loop",
    times_itself=True,
    doc=(
        "The loop asks for what it needs by name: model (or net); loader, dataset or get_batch; "
        "num_epochs or a step count (max_steps, max_iters, ...); optionally optimizer, device, "
        "batch_size and an accumulation count (accumulation_steps, ...). model is a "
        "zero-argument factory of a fresh nn.Module (torch is seeded before each call); "
        "example one sample, unbatched, as the dataset holds it: (x, y), or a dict of tensors "
        "(or a zero-argument function returning one); optimizer a factory params -> "
        "torch.optim.Optimizer for a loop that takes one (default: plain SGD); a loop may "
        "build its own. The audit holds every step's lr at 0 and reads, after each "
        "optimizer.step(), the gradients it applied, and which rows were fed to the model for "
        "it: a correct loop applies the mean of those rows' own gradients (their sum for "
        "reduction=\"sum\"), each from the loss (loss=, the model's own, or the labels' "
        "usual loss confirmed against the loop). accumulation_steps=k says the loop steps "
        "once per k batches, and once for what is left at the end of an epoch; drop_last=True "
        "that the audit's DataLoader drops the short last batch. Dropout is set to p = 0 and "
        "batch norms held in eval mode; a model still random, or whose rows still interact, "
        "is refused, as is a loop that moves the parameters outside optimizer.step()."
    ),
)
