"""Any PyTorch training loop, checked against itself: batch-partition invariance.

If every row of the data is the same sample, every row has the same gradient, so a loop that
averages correctly applies the same gradient at every step however the rows are batched: the
gradient of one row. The audit owns what the loop is given (a fresh model from the user's
factory, a `DataLoader` in order, an optimizer whose lr it holds at 0 so the params stay where
they started) and reads the gradients at each `optimizer.step()` twice: as the step finds them
(a step pre-hook) and as backward() left them (post-accumulate-grad hooks), since a loop may
rescale them in between (clip_grad_norm_, or dividing a summed loss's grads by the rows); a
step passes if either reading is right. Every step's gradient is predicted from the loop
itself, run for one full step on batches of one row (where a mean and a sum agree, and
nothing is uneven): the mean (or the sum, for `reduction="sum"`) of its rows' gradients.
Two kinds of rows (the example, and a contrast row with a different gradient) show how a step
weighs its rows; without them a mean of micro-batch means is invisible.

The loop must step with the optimizer it is given, once per `accumulation_steps` batches of
the loader and once for what is left at the end of each epoch. A model whose rows interact
(BatchNorm) or whose forward is random in training mode cannot be compared across batchings:
`check_model` refuses it before any work; its `Dropout` modules are set to p = 0, which leaves
the loop's own arithmetic as it is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

# torch has no public base class for its batch norms nor for its dropouts: the private ones
# are what BatchNorm1d/2d/3d, SyncBatchNorm and the lazy ones, and Dropout, Dropout1d/2d/3d,
# AlphaDropout and FeatureAlphaDropout all derive from
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.utils.data import DataLoader, TensorDataset

from linreg import _validate, checks
from linreg.checks import CheckFailed
from linreg.targets.base import Kind, Options, Target, TargetError, binds, name_of, option
from linreg.targets.guards import guarded, seeded

SIGNATURE = "fn(model, loader, optimizer, *, num_epochs)"


def _factory(name: str, value: object) -> Callable[[], nn.Module]:
    if not callable(value):
        raise TargetError(
            f"{name} must be a zero-argument factory of an nn.Module, got {type(value).__name__}"
        )
    return value


def _optimizer(name: str, value: object) -> Callable[..., torch.optim.Optimizer] | None:
    if value is not None and not callable(value):
        raise TargetError(
            f"{name} must be a factory params -> torch.optim.Optimizer, got {type(value).__name__}"
        )
    return value


def _example(name: str, value: object) -> tuple[Tensor, Tensor]:
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
    example: tuple[Tensor, Tensor] = option(
        None,
        "one (x, y) sample, unbatched, as the dataset holds it, or a function returning one",
        flag="--example",
        check=_example,
        imported="object",
        required=True,
        compare=False,
    )
    optimizer: Callable[..., torch.optim.Optimizer] | None = option(
        None,
        "a factory params -> torch.optim.Optimizer (default: plain SGD)",
        flag="--optimizer",
        check=_optimizer,
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


def build(fn: Callable[..., Any], options: TrainingLoopOptions) -> Callable[..., Any]:
    """Return fn once it takes the signature, the model suits the audit and the loop steps."""
    binds(fn, SIGNATURE, None, None, None, num_epochs=1)
    try:
        check_model(options.model, options.example)
        built = (options.optimizer or default_optimizer)(build_model(options.model).parameters())
    except TypeError as e:
        raise TargetError(str(e)) from None
    if not isinstance(built, torch.optim.Optimizer):
        raise TargetError(
            f"the optimizer factory returned {type(built).__name__}, not a torch.optim.Optimizer"
        )
    try:
        check_loop(Target(fn, "training-loop", options))
    except TypeError as e:
        raise TargetError(f"{name_of(fn)}: {e}") from None
    return fn


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

    def steps(self, accumulation_steps: int) -> list[tuple[int, ...]]:
        """Return the rows each optimizer step consumes, over every epoch."""
        b, k = self.batch_size, accumulation_steps
        batches = [self.rows[i : i + b] for i in range(0, self.n, b)]
        groups = [sum(batches[j : j + k], ()) for j in range(0, len(batches), k)]
        return groups * self.num_epochs


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Return plain SGD (the audit sets its lr to 0: only the gradients are read)."""
    return torch.optim.SGD(params, lr=0.1)


def contrast(x: Tensor) -> Tensor:
    """Return a row unlike x, valid wherever x is: x + 1 for floats; 0 (or 1) for indices."""
    if x.is_floating_point() or x.is_complex():
        return x + 1
    return torch.zeros_like(x) if bool(x.any()) else torch.ones_like(x)


def as_example(example: Any) -> tuple[Tensor, Tensor]:
    """Return an (x, y) sample as two tensors; raise TypeError if it is not a pair."""
    if not isinstance(example, (tuple, list)) or len(example) != 2:
        raise TypeError(
            f"the example must be one (x, y) sample, got {type(example).__name__}"
            + (f" of length {len(example)}" if isinstance(example, (tuple, list)) else "")
        )
    try:
        x, y = (torch.as_tensor(v) for v in example)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"the example's x and y must be tensors or numbers: {e}") from None
    return x, y


def build_model(factory: Callable[[], nn.Module]) -> nn.Module:
    """Return a fresh model from the factory, its Dropout modules at p = 0."""
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    for m in model.modules():
        if isinstance(m, _DropoutNd):
            m.p = 0.0
    return model


def check_model(factory: Callable[[], nn.Module], example: tuple[Tensor, Tensor]) -> None:
    """Raise TypeError if the model's rows interact or its forward is random in training mode."""
    model = build_model(factory)
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)})
    if norms:
        raise TypeError(
            f"the model has {', '.join(norms)}: in training mode each row's output depends on "
            "the other rows of its batch, so batchings cannot be compared (use LayerNorm or "
            "GroupNorm, or audit the model without it)"
        )
    x, _ = example
    a, b = x.unsqueeze(0), contrast(x).unsqueeze(0)
    model.train()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a user's model may warn; that is not a verdict
            mixed, same = model(torch.cat([a, b])), model(torch.cat([a, a]))
            again = model(torch.cat([a, b]))
    except Exception as e:
        raise TypeError(
            f"model(X) on a batch of copies of the example's x raised {type(e).__name__}: {e}"
        ) from None
    if not all(isinstance(t, Tensor) for t in (mixed, same, again)):
        return  # an output the audit cannot compare (a dict, a tuple): the loop's business
    if not torch.equal(mixed, again):
        raise TypeError(
            "the model's forward is random in training mode (with its Dropout modules at "
            "p = 0): batchings cannot be compared; audit a factory of a deterministic model"
        )
    if not torch.allclose(mixed[0], same[0], rtol=1e-5, atol=1e-6):
        raise TypeError(
            "in training mode the model's output for one row depends on the other rows of its "
            "batch: batchings cannot be compared"
        )


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor | None:
    """Return the grads as one float64 vector (None as zeros), or None if every one is None."""
    if all(g is None for g in grads):
        return None
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
            for g, p in zip(grads, params, strict=True)
        ]
    )


@dataclass(frozen=True)
class Observed:
    """What a loop did at each optimizer.step(), read through hooks."""

    applied: list[Tensor | None]  # the grads the step found (after any clipping), one per step
    raw: list[Tensor | None]  # the grads as backward() left them since the last step
    moved: bool  # a param changed, though the optimizer's lr was held at 0

    def flavour(self, name: str) -> list[Tensor | None]:
        """Return the applied or the raw gradients."""
        return self.applied if name == "applied" else self.raw


def observe(target: Target, batching: Batching) -> Observed:
    """Run the loop at lr = 0 on a batching; return the gradients of each step."""
    c = options_of(target)
    x, y = c.example
    kinds = (x, contrast(x))
    features = torch.stack([kinds[r] for r in batching.rows])
    labels = torch.stack([y] * batching.n)
    loader = DataLoader(TensorDataset(features, labels), batch_size=batching.batch_size)
    with seeded(batching.seed):
        model = build_model(c.model)
        optimizer = (c.optimizer or default_optimizer)(model.parameters())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    start = [p.detach().clone() for p in params]
    applied: list[Tensor | None] = []
    raw: list[Tensor | None] = []
    latest: dict[int, Tensor] = {}

    def accumulated(p: Tensor) -> None:
        if p.grad is not None:
            latest[id(p)] = p.grad.detach().clone()

    def read(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:  # before every step, whatever a scheduler set: the
            group["lr"] = 0.0  # params stay where they start, only gradients are read
        applied.append(_flat([p.grad for p in params], params))
        raw.append(_flat([latest.get(id(p)) for p in params], params))
        latest.clear()

    handles = [optimizer.register_step_pre_hook(read)] + [
        p.register_post_accumulate_grad_hook(accumulated) for p in params if p.requires_grad
    ]
    try:
        with seeded(batching.seed), guarded("the loop"):
            target.fn(model, loader, optimizer, num_epochs=batching.num_epochs)
    finally:
        for handle in handles:
            handle.remove()
    moved = any(not torch.equal(p.detach(), q) for p, q in zip(params, start, strict=True))
    return Observed(applied, raw, moved)


def check_loop(target: Target) -> None:
    """Raise TypeError if the loop changes the params with the lr held at 0 (it steps itself)."""
    try:
        seen = observe(target, Batching((0, 1, 0), 2, 2, 0))
    except CheckFailed:
        return  # the loop raised: that is a verdict, for the properties to give
    if seen.moved:
        raise TypeError(
            "with the optimizer's lr held at 0 the loop still changed the model's parameters: "
            "it updates them outside optimizer.step(), and the audit judges only a loop that "
            "steps with the optimizer it is given"
        )


_REFS: dict[tuple[int, int, int], tuple[Target, dict[str, Tensor | None]]] = {}


def reference(target: Target, kind: int, seed: int) -> dict[str, Tensor | None]:
    """Return one_row(target, kind, seed), computed once per target, kind and seed.

    The entry holds the target itself, so its id cannot be reused while the entry lives.
    """
    key = (id(target), kind, seed)
    hit = _REFS.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]
    if len(_REFS) > 256:
        _REFS.clear()
    ref = one_row(target, kind, seed)
    _REFS[key] = (target, ref)
    return ref


def one_row(target: Target, kind: int, seed: int) -> dict[str, Tensor | None]:
    """Return one row's gradient, applied and raw, read from the loop itself: the reference.

    The loop runs one full step of `accumulation_steps` batches of one row each (one batch of
    one row, usually), where a mean over the rows and over the batches agree and nothing is
    uneven; under reduction="sum" the step's gradient is divided by its rows.
    """
    k = options_of(target).accumulation_steps
    seen = observe(target, Batching((kind,) * k, 1, 1, seed))
    if len(seen.applied) != 1 or seen.applied[0] is None:
        raise CheckFailed(
            f"on {k} row(s) in batches of one for one epoch the loop took {len(seen.applied)} "
            "optimizer step(s)"
            + (" with no gradient" if seen.applied and seen.applied[0] is None else "")
            + ": expected one step with a gradient"
        )
    per_row = k if reduced(target) == "sum" else 1
    return {
        name: None if g[0] is None else g[0] / per_row
        for name, g in (("applied", seen.applied), ("raw", seen.raw))
    }


def expected(
    target: Target, batching: Batching, refs: dict[int, Tensor | None]
) -> list[Tensor | None]:
    """Return the gradient each step of a correct loop has on the batching, from the refs."""
    out: list[Tensor | None] = []
    for rows in batching.steps(options_of(target).accumulation_steps):
        grads = [refs[r] for r in rows]
        if any(g is None for g in grads):
            out.append(None)
            continue
        total = torch.stack(grads).sum(0)  # type: ignore[arg-type]
        out.append(total if reduced(target) == "sum" else total / len(rows))
    return out


def tolerance(options: TrainingLoopOptions) -> float:
    """Return the relative tolerance for a step's gradient, in the example's dtype."""
    return checks.tolerance(options.example[0].dtype, steps=True)


def close(got: Tensor | None, want: Tensor, target: Target, scale: float) -> bool:
    """Return True if a step's gradient matches the expected one, relative to scale."""
    if got is None:
        return bool(want.abs().max() == 0)
    return float((got - want).abs().max()) <= tolerance(options_of(target)) * max(scale, 1e-12)


def factor(got: Tensor | None, want: Tensor, target: Target) -> float | None:
    """Return s if got is s * want (to the tolerance), else None."""
    if got is None:
        return 0.0
    norm = float(want @ want)
    if norm == 0:
        return None
    s = float(got @ want) / norm
    scale = float(want.abs().max()) * max(1.0, abs(s))
    return s if close(got, s * want, target, scale) else None


def describe(batching: Batching, accumulation_steps: int) -> str:
    """Return the batching in words, for a failure message."""
    steps = batching.steps(accumulation_steps)
    per_epoch = len(steps) // batching.num_epochs
    sizes = [len(rows) for rows in steps[:per_epoch]]
    rows = "rows of both kinds" if len(set(batching.rows)) > 1 else "identical rows"
    return (
        f"{batching.n} {rows} in batches of {batching.batch_size}, {batching.num_epochs} "
        f"epoch(s) of {per_epoch} step(s) over {sizes} rows"
    )


def expected_steps(batching: Batching, accumulation_steps: int) -> int:
    """Return the number of optimizer steps a correct loop takes on the batching."""
    batches = math.ceil(batching.n / batching.batch_size)
    return batching.num_epochs * math.ceil(batches / accumulation_steps)


def compare(
    target: Target,
    batching: Batching,
    which: Callable[[int, int], bool],
    explain: Callable[[int, float | None, Batching], str],
) -> None:
    """Check the loop's gradient at the steps `which(step, count)` picks; explain a mismatch.

    A step passes if its applied gradients, or its raw ones (as backward() left them, before
    any clipping), are what a correct loop's would be: the loop may rescale its gradients
    between backward() and step(), as clip_grad_norm_ does.
    """
    seen = observe(target, batching)
    count = len(batching.steps(options_of(target).accumulation_steps))
    if len(seen.applied) != count:
        return  # the number of steps is exhausted-generator's property, not this one's
    refs = {r: reference(target, r, batching.seed) for r in sorted(set(batching.rows))}
    mismatches = []
    for name in ("applied", "raw"):
        want = expected(target, batching, {r: ref[name] for r, ref in refs.items()})
        got = seen.flavour(name)
        scale = max((float(w.abs().max()) for w in want if w is not None), default=0.0)
        bad = [
            (j, g, w)
            for j, (g, w) in enumerate(zip(got, want, strict=True))
            if which(j, count) and not _same(g, w, target, scale)
        ]
        if not bad:
            return
        mismatches.append(bad[0])
    j, g, w = mismatches[0]
    s = factor(g, w, target) if w is not None else None
    raise CheckFailed(
        f"on {describe(batching, options_of(target).accumulation_steps)}, step {j + 1} "
        f"applied {'no gradient' if g is None else _times(s)} the gradient a correct "
        f"loop applies (the {reduced(target)} of its rows' gradients, each read from the loop "
        f"on one row): it {explain(j, s, batching)}"
    )


def _same(got: Tensor | None, want: Tensor | None, target: Target, scale: float) -> bool:
    if want is None:
        return got is None or not bool(got.any())
    return close(got, want, target, scale)


def reduced(target: Target) -> str:
    """Return how a step reduces its rows' gradients: "sum" or "mean"."""
    return "sum" if options_of(target).reduction == "sum" else "mean"


def _times(s: float | None) -> str:
    return "a gradient unlike" if s is None else f"{s:.4g} times"


# --- the loops that hold, and what they are given --------------------------------------------


def loss_of(y_hat: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Return cross-entropy for class labels, else mean squared error, under reduction."""
    if y.dtype in (torch.int64, torch.int32):
        return nn.functional.cross_entropy(y_hat, y, reduction=reduction)
    return nn.functional.mse_loss(y_hat, y, reduction=reduction)


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

KIND = Kind(
    name="training-loop",
    signature=SIGNATURE,
    summary="any PyTorch training loop, checked against itself on copies of one sample",
    options=TrainingLoopOptions,
    build=build,
    doc=(
        "model is a zero-argument factory of a fresh nn.Module (torch is seeded before each "
        "call); example one (x, y) sample, unbatched, as the dataset holds it (or a "
        "zero-argument function returning one); optimizer a factory params -> "
        "torch.optim.Optimizer (default: plain SGD). The audit hands the loop a model, a "
        "DataLoader (in order) over copies of x and of a contrast row, and the optimizer with "
        "its lr set to 0, and reads the gradients at each optimizer.step(): a correct loop "
        "applies the mean of its rows' gradients at every step (their sum for "
        'reduction="sum"), whatever the batching. accumulation_steps=k says the loop steps '
        "once per k batches, and once for what is left at the end of an epoch. A model with "
        "BatchNorm, or random in training mode beyond its Dropout modules (set to p = 0), is "
        "refused."
    ),
)
