"""Watch a training loop run, as it is written: every optimizer step, and what fed each one.

The audit hands the loop a fresh model and its data, and watches through torch's own hooks:
the global optimizer step hooks (any optimizer over the model's parameters, built by the loop
or given to it, wrapped by a framework or not), whose pre-hook holds every param group's lr at
0 so the parameters stay where they start; each parameter's post-accumulate-grad hook (the
gradients as backward() left them: "raw"); `GradScaler.unscale_` (the same gradients divided
by a loss scaler's scale: "unscaled"); and the model's forward pre-hook, which records what each
forward pass with grad enabled was fed. Each step's reading is taken after the step ("applied"),
since a framework may run forward, zero_grad and backward inside `optimizer.step(closure)`.
The rows a step consumed are the rows fed to the model since the step before, so prefetching,
streams and a loop's own DataLoader are judged by what they did.

Dropout modules are set to p = 0 and batch norms held in eval mode (their running statistics
fixed): then no row's output depends on another's, and the loop's arithmetic is what is judged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MethodType
from typing import Any

import torch
from torch import Tensor, nn

# torch has no public base class for its batch norms nor for its dropouts: the private ones
# are what BatchNorm1d/2d/3d, SyncBatchNorm and the lazy ones, and Dropout, Dropout1d/2d/3d,
# AlphaDropout and FeatureAlphaDropout all derive from
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.hooks import RemovableHandle

from linreg.checks import LoopRaised, where
from linreg.kinds.guards import user_fn

STEP_COUNT = "num_items_in_batch"


def not_finite(seen: Observed) -> str:
    """Return where the loop's gradients first stop being finite, or ""."""
    for j, step in enumerate(seen.steps):
        for what, g in (
            ("as backward() left them", step.raw),
            ("as the step applied them", step.applied),
        ):
            if g is not None and not bool(torch.isfinite(g).all()):
                kind = "nan" if bool(torch.isnan(g).any()) else "inf"
                return (
                    f"the gradients {what} at optimizer step {j + 1} are not finite ({kind}): "
                    "a loss of nan or inf on these rows (a log of 0, a division by 0?), or an "
                    "overflow"
                )
    return ""


def _stays_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return module


_HELD: list[Callable[[], None]] = []  # what puts each held model back, in order


def held_still(model: nn.Module) -> nn.Module:
    """Set the model's Dropout modules to p = 0 and hold its batch norms in eval mode.

    `models_restored()` puts every model held still in its block back as it was (Dropout's p,
    the batch norms' mode, each parameter's .grad): a factory may hand out the user's model.
    """
    undo: list[Callable[[], None]] = [
        functools.partial(setattr, p, "grad", None if p.grad is None else p.grad.clone())
        for p in model.parameters()
    ]
    for m in model.modules():
        if isinstance(m, _DropoutNd):
            undo.append(functools.partial(setattr, m, "p", m.p))
            m.p = 0.0
        elif isinstance(m, _BatchNorm):
            undo.append(functools.partial(_release, m, m.training))
            m.eval()
            m.train = MethodType(_stays_in_eval, m)  # type: ignore[method-assign]

    def restore() -> None:
        for step in reversed(undo):
            step()

    _HELD.append(restore)
    return model


@contextmanager
def models_restored() -> Iterator[None]:
    """Put every model held still in the block back as it was, the latest first, on leaving it;
    those an enclosing audit held stay as it holds them (an audit inside an audited loop)."""
    mark = len(_HELD)
    try:
        yield
    finally:
        while len(_HELD) > mark:
            _HELD.pop()()


def _release(module: nn.Module, training: bool) -> None:
    module.__dict__.pop("train", None)
    module.train(training)


@dataclass(frozen=True)
class Watch:
    """What a loop's steps are read from: what each step's rows were fed to (the model's
    forward, or a method of it a framework calls, Lightning's training_step), and whether
    calling that again has no effects (a manual training_step steps its own optimizer)."""

    method: str = "forward"
    replayable: bool = True


@dataclass(frozen=True)
class Call:
    """One forward pass with grad enabled: what the model was fed, and its batch's rows."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    rows: int
    method: str = "forward"  # what was called: the model, or a method of it (training_step)
    replayable: bool = True  # False: calling it again has effects (it steps an optimizer)

    def replay(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call what was called, on other arguments (one row's); a method without logging."""
        if self.method == "forward":
            return model(*args, **kwargs)
        quiet = {name: _no_log for name in ("log", "log_dict") if hasattr(model, name)}
        model.__dict__.update(quiet)  # a framework's self.log() needs its loop running
        try:
            return getattr(model, self.method)(*args, **kwargs)
        finally:
            for name in quiet:
                model.__dict__.pop(name, None)

    def row(self, i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the call's arguments for its row i alone (a batch of one).

        Without `num_items_in_batch` (transformers' count of a whole step's targets, which a
        model divides its summed loss by): on one row alone the model's loss is its mean.
        """
        return _row(self.args, i, self.rows), {
            k: _row(v, i, self.rows) for k, v in self.kwargs.items() if k != STEP_COUNT
        }

    @functools.cached_property
    def row_keys(self) -> list[bytes]:
        """Return a key per row: the bytes of everything the row was fed (computed once)."""
        batched = [t for t in _tensors(self.args, self.kwargs) if t.shape[:1] == (self.rows,)]
        return [
            b"|".join(t[i].detach().contiguous().numpy().tobytes() for t in batched)
            for i in range(self.rows)
        ]


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


def _tensors(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    """Return the tensors fed, in order, inside lists, tuples and dicts too (a batch [X, y])."""
    out = []
    for v in [*args, *kwargs.values()]:
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, Mapping):
            out += _tensors([], v)
        elif isinstance(v, (list, tuple)):
            out += _tensors(v, {})
    return out


def _mapped(v: Any, f: Callable[[Tensor], Tensor]) -> Any:
    """Return v with f applied to every tensor in it, inside lists, tuples and dicts too."""
    if isinstance(v, Tensor):
        return f(v)
    if isinstance(v, Mapping):
        return type(v)({k: _mapped(t, f) for k, t in v.items()})  # type: ignore[call-arg]
    if isinstance(v, (list, tuple)):
        return type(v)(_mapped(t, f) for t in v)
    return v


def _row(v: Any, i: int, rows: int) -> Any:
    """Return v with each tensor of the batch's rows cut to its row i (others as they are)."""
    return _mapped(v, lambda t: t[i : i + 1] if t.ndim > 0 and t.shape[0] == rows else t)


def _detached(v: Any) -> Any:
    return _mapped(v, Tensor.detach)


@dataclass
class Step:
    """One optimizer step: its gradients read three ways, and the forward passes that fed it."""

    applied: Tensor | None  # the gradients as the step used them (after it: closures)
    raw: Tensor | None  # as backward() left them
    unscaled: Tensor | None  # raw, divided by a loss scaler's scale where the loop unscaled
    calls: list[Call]
    scale: float | None = None  # the loss scaler's scale when the loop unscaled, else None

    @property
    def before_clipping(self) -> Tensor | None:
        """Return the gradient before any clipping: what backward() left, divided by the loss
        scaler's scale where the loop unscaled (a clip of the still-scaled gradient, before
        unscale_, shows as unscaled differing from this)."""
        if self.scale is None or self.raw is None:
            return self.unscaled
        return self.raw / self.scale

    @property
    def rows(self) -> int:
        """Return the number of rows fed to the model for this step."""
        return sum(c.rows for c in self.calls)

    @property
    def sizes(self) -> list[int]:
        """Return the rows of each forward pass (micro-batch) of the step."""
        return [c.rows for c in self.calls]

    @property
    def row_keys(self) -> list[bytes]:
        """Return the key of every row fed for this step, in order."""
        return [key for call in self.calls for key in call.row_keys]


@dataclass
class Observed:
    """What the loop did: its optimizer steps, the forward passes after the last, whether a
    parameter moved though the lr was held at 0."""

    steps: list[Step] = field(default_factory=list)
    leftover: list[Call] = field(default_factory=list)  # fed to the model, never stepped
    moved: bool = False
    fed: int = 0  # rows fed to the model with grad enabled, in all

    @property
    def calls(self) -> list[Call]:
        """Return every forward pass the run fed, the steps' and the left-over ones, in order."""
        return [call for step in self.steps for call in step.calls] + self.leftover


def _same_batch(call: Call, t: Tensor) -> bool:
    first = next((u for u in _tensors(call.args, call.kwargs) if u.ndim > 0), None)
    return first is not None and first.shape == t.shape and first.data_ptr() == t.data_ptr()


def flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor | None:
    """Return the grads as one float64 vector (None as zeros), or None if every one is None."""
    if all(g is None for g in grads):
        return None
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
            for g, p in zip(grads, params, strict=True)
        ]
    )


class Watcher:
    """The hooks' shared state: what was fed since the last step, and each step's readings."""

    def __init__(
        self,
        model: nn.Module,
        method: str = "forward",
        replayable: bool = True,
        on_update: Callable[[], None] | None = None,
    ) -> None:
        self.method, self.replayable, self.on_update = method, replayable, on_update
        self.params = list(model.parameters())
        self.ids = {id(p) for p in self.params}
        self.start = [p.detach().clone() for p in self.params]
        self.seen = Observed()
        self.calls: list[Call] = []
        self.latest: dict[int, Tensor] = {}  # each param's grad after its last backward()
        self.unscaled: dict[int, Tensor] = {}  # each param's grad after GradScaler.unscale_
        self.scale: float | None = None  # the scale GradScaler.unscale_ divided by
        self.stepped: set[int] = set()  # the params the optimizers of the last update stepped
        self.depth = 0  # optimizer steps under way: a wrapper optimizer's holds its inner one's

    def ours(self, opt: torch.optim.Optimizer) -> bool:
        """Return True if the optimizer steps any of the model's parameters."""
        return any(id(p) in self.ids for g in opt.param_groups for p in g["params"])

    def before(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Hold every param group's lr at 0, whatever a scheduler set."""
        if self.ours(opt):
            self.depth += 1
            for group in opt.param_groups:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(0.0)
                else:
                    group["lr"] = 0.0

    def after(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Record the update: its gradients read three ways, and what fed it.

        The steps of several optimizers with nothing fed between them are one update (one for
        the embeddings, one for the matrices); a step fed nothing that applies nothing (a flush
        after an epoch that ended on a full window) is no update. A step fed nothing that
        applies a gradient is recorded: the same micro-batches move the params twice.
        """
        if not self.ours(opt):
            return
        self.depth = max(self.depth - 1, 0)
        if self.depth:  # the inner step of a wrapper optimizer (Lookahead, ZeRO): its outer
            return  # step is the update
        params = self.params
        applied = flat([p.grad for p in params], params)
        stepped = {id(p) for g in opt.param_groups for p in g["params"]}
        if not self.calls:
            if self.seen.steps and not stepped & self.stepped:  # another optimizer, same update
                self.stepped |= stepped
                return
            if applied is None or not bool(applied.any()):
                return
        raw = flat([self.latest.get(id(p)) for p in params], params)
        unscaled = flat([self.unscaled.get(id(p)) for p in params], params)
        kept = unscaled if self.unscaled else raw
        self.seen.steps.append(Step(applied, raw, kept, self.calls, self.scale))
        self.calls, self.latest, self.unscaled, self.stepped = [], {}, {}, stepped
        self.scale = None
        if self.on_update is not None:
            self.on_update()

    def accumulated(self, p: Tensor) -> None:
        """Keep a param's gradient as backward() left it."""
        if p.grad is not None:
            self.latest[id(p)] = p.grad.detach().clone()

    def fed(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Record what a forward pass with grad enabled was fed."""
        if not torch.is_grad_enabled():
            return  # an evaluation pass: it feeds no step
        batch = [t for t in _tensors(args, kwargs) if t.ndim > 0]
        if not batch:
            return
        if self.calls and _same_batch(self.calls[-1], batch[0]):
            return  # the same batch fed again (a logging pass with grad on): no new rows
        rows = batch[0].shape[0]
        self.calls.append(
            Call(_detached(args), _detached(kwargs), rows, self.method, self.replayable)
        )
        self.seen.fed += batch[0].shape[0]

    def unscaled_by(self, opt: torch.optim.Optimizer, scale: float) -> None:
        """Keep the gradients a loss scaler just divided by its scale, and the scale."""
        if self.ours(opt):
            self.scale = scale
            for p in self.params:
                if p.grad is not None:
                    self.unscaled[id(p)] = p.grad.detach().clone()

    def finish(self) -> Observed:
        """Return what was seen, with the rows fed after the last step and whether params moved."""
        self.seen.leftover = self.calls if self.latest else []  # rows no step used
        self.seen.moved = any(
            not torch.equal(p.detach(), q) for p, q in zip(self.params, self.start, strict=True)
        )
        return self.seen


@contextmanager
def watching(
    model: nn.Module,
    method: str = "forward",
    replayable: bool = True,
    on_update: Callable[[], None] | None = None,
) -> Iterator[Observed]:
    """Watch the model's training while the block runs; yield what it saw, filled in after;
    call on_update after each update it records.

    What each step consumed is read from what the model's forward was fed, or, for a framework
    that hands batches to a method of the model (Lightning's training_step), what that was fed.
    """
    watch = Watcher(model, method, replayable, on_update)
    original = torch.amp.GradScaler.unscale_

    def unscale_(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        original(scaler, optimizer)
        if scaler.is_enabled():  # a disabled scaler (enabled=use_amp) neither scales nor unscales
            watch.unscaled_by(optimizer, scaler.get_scale())

    handles: list[RemovableHandle | _Unwrap] = [
        register_optimizer_step_pre_hook(watch.before),
        register_optimizer_step_post_hook(watch.after),
    ]
    if method == "forward":
        handles.append(model.register_forward_pre_hook(watch.fed, with_kwargs=True))
    else:
        handles.append(_wrapped(model, method, watch.fed))
    handles += [
        p.register_post_accumulate_grad_hook(watch.accumulated)  # type: ignore[no-untyped-call]
        for p in watch.params
        if p.requires_grad
    ]
    torch.amp.GradScaler.unscale_ = unscale_  # type: ignore[method-assign,assignment]
    try:
        yield watch.seen
    finally:
        torch.amp.GradScaler.unscale_ = original  # type: ignore[method-assign]
        for handle in handles:
            handle.remove()
        watch.finish()


class _Unwrap:
    """Remove an instance attribute that wrapped a method (a hook handle's remove())."""

    def __init__(self, model: nn.Module, method: str) -> None:
        self.model, self.method = model, method

    def remove(self) -> None:
        self.model.__dict__.pop(self.method, None)


def _wrapped(model: nn.Module, method: str, fed: Callable[..., None]) -> _Unwrap:
    """Wrap model.<method> so that fed(model, args, kwargs) sees each call first."""
    original = getattr(model, method)

    @functools.wraps(original)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        fed(model, args, kwargs)
        return original(*args, **kwargs)

    model.__dict__[method] = recorded
    return _Unwrap(model, method)


def raised(e: BaseException, fn: Callable[..., Any]) -> LoopRaised:
    """Return the loop's exception as LoopRaised: its type, message and the frame it came from."""
    fn = user_fn(fn)
    source = getattr(getattr(fn, "func", fn), "__code__", None)  # a partial: its function's
    file = source.co_filename if source is not None else None
    at = where(e, file=file, outside=("/torch/", "/linreg/kinds/"))
    message = str(e) or "(no message)"
    hint = ""
    if "backward through the graph a second time" in message:
        hint = " (backward-twice: a graph kept across steps? detach what you keep)"
    return LoopRaised(f"the loop raised {type(e).__name__}: {message}{at}{hint}")
