"""Watch real training code run, unchanged: every loss it computes with a torch loss function,
every backward() and every optimizer update, on the user's own rows.

Torch's own seams, all put back after: the loss functions of `torch.nn.functional`
(the `nn` loss modules call them too), whose call the watcher repeats with reduction="none" on
the same input to take the gradient of the summed per-element loss through the loop's own graph
(dropout masks, BatchNorm and -100 labels as they ran) and the count a mean divides by;
`Tensor.backward` and `torch.autograd.backward`, which tell which of those losses each
micro-batch's backward() reached and what .grad held before the update's first; and the global
optimizer step hooks, which hold every lr at 0 and close each update; `GradScaler.unscale_`
(the gradients unscaled) and a DataLoader's iterator (an epoch's end). Nothing is copied: what
an update applied is read against the micro-batches it consumed (`Update`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data.dataloader import _BaseDataLoaderIter

from linreg import checks
from linreg.kinds.training_loop.hooks import zero_lr
from linreg.kinds.watched.records import (
    Enough,
    LossCall,
    MicroBatch,
    Open,
    Watched,
    close,
    count_of,
    graph,
    leaves,
    leaves_of,
    storages,
)

# the loss functions read, each with the argument that holds its target
# with no --steps: the updates watched at most when no epoch ends (get_batch() loops drawing
# at random, an epoch longer than this): the code is ended there and the note says so
MOST = 64
# losses computed with grad on that no backward() has reached yet, kept at most (an evaluation
# with grad on computes many: each holds its graph)
PENDING = 64
# an epoch of known length up to this many batches is watched to its end (its last, short
# update is what short-last-batch reads)
LONGEST = 2048
LOSSES = (
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
)


def tolerance_of(params: list[Tensor]) -> float:
    """Return an update's relative tolerance: the audit's, for its least precise param."""
    return max((checks.tolerance(p.dtype, steps=True) for p in params), default=1e-4)


class _Watcher:
    def __init__(self, steps: int | None) -> None:
        self.steps, self.seen = steps, Watched()
        self.ends: list[int] = []  # the updates made when a DataLoader ran out (an epoch ended)
        self.pending: list[LossCall] = []  # losses computed, no backward() has reached yet
        self.micro: list[MicroBatch] = []
        self.blind = 0
        self.carried: dict[int, Tensor | None] | None = None
        self.raw: dict[int, Tensor] = {}  # buffers: each param's .grad after a backward()
        self.fresh: set[int] = set()  # the params whose raw buffer this update's backward() set
        self.unscaled: dict[int, Tensor] = {}
        self.busy = False  # inside the watcher's own autograd calls, or a backward() already
        self.found: dict[int, tuple[Tensor, Tensor | None]] = {}  # each param's .grad at first
        self.states: list[tuple[torch.optim.Optimizer, dict[str, Any]]] = []  # as first stepped
        self.depth = 0  # optimizer steps under way: a wrapper's (accelerate's) holds its inner one
        self.open: Open | None = None  # the last update, read again if another optimizer steps
        self.scalers: dict[int, torch.amp.GradScaler] = {}  # the loss scalers that unscaled
        self.kept: dict[int, tuple[Any, dict[str, Any]]] = {}  # schedulers, scalers: as found
        self.lr_values: dict[int, list[Any]] = {}
        self.first: dict[int, tuple[Tensor, Tensor]] = {}  # the params at the first backward()
        self.before_any = 0  # backward() calls before any optimizer stepped
        self.longest = MOST  # the updates watched at most with no --steps (an epoch's, if known)
        self.straddles = False  # an epoch ended while the open update held micro-batches
        self.cut = 0  # micro-batches before it: their gradients zeroed by the code, not stepped
        self.fetched = 0  # DataLoader batches since the last update
        self.batched: set[int] = set()  # their tensors' storages

    # --- losses ---------------------------------------------------------------------------
    def loss(self, name: str, fn: Callable[..., Tensor], args: Any, kwargs: Any, out: Any) -> None:
        """Read a loss the code computed with grad on: repeated per element on the same input,
        its summed per-element loss differentiated through the code's own graph. What cannot be
        read (legacy arguments, a graph that allows no second pass: reentrant checkpointing) is
        left unread, never raised into the code: a backward() that reaches it is not judged."""
        if self.busy or not isinstance(out, Tensor) or out.grad_fn is None or out.ndim != 0:
            return
        self.busy = True
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
            given = bound.arguments
            if given.get("size_average") is not None or given.get("reduce") is not None:
                return  # the legacy arguments: not read
            given["reduction"] = "none"
            per = fn(*bound.args, **bound.kwargs)
            under = leaves(per.grad_fn)
            grads = torch.autograd.grad(per.sum(), under, retain_graph=True, allow_unused=True)
            for p in under:  # its .grad as the watch found it, put back after
                if id(p) not in self.found:
                    self.found[id(p)] = (p, None if p.grad is None else p.grad.detach().clone())
            del self.pending[:-PENDING]  # losses no backward() reached: the latest
            self.pending.append(
                LossCall(
                    out.grad_fn,
                    {id(p): g.detach() for p, g in zip(under, grads, strict=True) if g is not None},
                    count_of(name, per, given),
                    self._from_batch(given.get("target")),
                    _storage(given.get("target")),
                    under,
                )
            )
        except Exception:
            return
        finally:
            self.busy = False

    def _from_batch(self, target: Any) -> bool:
        return _storage(target) in self.batched

    def fetch(self, batch: Any, epoch: int | None) -> None:
        """Count a batch a DataLoader yielded, and keep its tensors' storages; an epoch of a
        known length up to LONGEST batches is watched to its end (updates <= batches)."""
        if epoch is not None and self.longest < epoch + 1 <= LONGEST + 1:
            self.longest = epoch + 1
        self.fetched += 1
        with contextlib.suppress(Exception):  # a tensor without storage: nothing kept
            storages(batch, self.batched)

    # --- backward -------------------------------------------------------------------------
    def backward(self, roots: list[Tensor], run: Callable[[], None]) -> None:
        if self.busy:
            run()
            return
        if self.first and not self.seen.updates:  # no torch optimizer has stepped yet
            self.before_any += 1
            if self.before_any > MOST and self.moved():
                raise Enough  # updates made by hand: nothing the watch can read, ended here
        under = graph([t.grad_fn for t in roots if t.grad_fn is not None])
        if not self.first and not self.seen.updates:  # to see an update made by hand
            self.first = {
                id(p): (p, p.detach().clone())
                for t in roots
                if t.grad_fn is not None
                for p in leaves(t.grad_fn)
            }
        reached = [c for c in self.pending if id(c.node) in under]
        self.open = None  # the update before is closed: its gradients are let go
        if len(self.micro) > self.cut and self._reset():  # the code zeroed .grad since the
            self.cut, self.carried = len(self.micro), {}  # last backward(): those are let go
        if self.carried is None:  # the update's first backward(): what .grad holds now
            self.fresh, self.unscaled = set(), {}
            self.carried = {
                id(p): None if p.grad is None else p.grad.detach().clone()
                for c in reached
                for p in leaves_of(c)
            }
        self.busy = True
        try:
            run()
        finally:
            self.busy = False
        gone = {id(c) for c in reached}
        self.pending = [c for c in self.pending if id(c) not in gone]
        for c in reached:  # the gradients as this backward() left them, into kept buffers
            for p in leaves_of(c):
                if p.grad is not None:
                    self.fresh.add(id(p))
                    kept = self.raw.get(id(p))
                    if kept is not None and kept.shape == p.grad.shape:
                        kept.copy_(p.grad)
                    else:
                        self.raw[id(p)] = p.grad.detach().clone()
        for c in reached:  # reached: its graph is let go
            c.node = None
        if reached:
            self.micro.append(MicroBatch(reached))
        else:
            self.blind += 1

    # --- updates --------------------------------------------------------------------------
    def before(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.depth += 1
        if id(opt) not in self.seen.lrs:  # its state as the watch found it, put back after
            self.states.append((opt, copy.deepcopy(opt.state_dict())))
            self.seen.lrs[id(opt)] = [g["lr"] for g in opt.param_groups]  # a tensor: the same
            self.lr_values[id(opt)] = [  # object, and its value
                g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"]
                for g in opt.param_groups
            ]
        zero_lr(opt)

    def after(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Close an update: the steps of several optimizers with nothing fed between them are
        one (one for the embeddings, one for the rest); a step fed nothing that applies nothing
        (a flush after an epoch that ended on a full window) is none; one fed nothing that
        applies a gradient is recorded: the same micro-batches move the params twice."""
        self.depth = max(self.depth - 1, 0)
        if self.depth:  # the inner step of a wrapper optimizer: its outer step is the update
            return
        params = [p for g in opt.param_groups for p in g["params"]]
        fed = bool(self.micro or self.blind)
        last = self.open
        if not fed and last is not None and {id(p) for p in params} - {id(p) for p in last.params}:
            last.params += params  # another optimizer of the same update: read it again
            self._read(last, params)
            self.seen.updates[-1] = close(last, tolerance_of(last.params))
            return
        if not fed and not any(p.grad is not None and bool(p.grad.any()) for p in params):
            return
        kept, let_go = self.micro[self.cut :], self.micro[: self.cut]
        update = Open([], {}, {}, {}, kept, self.blind, self.terms(kept))
        update.dropped, update.crossed = len(let_go), self.straddles
        update.redone = _targets(let_go) <= _targets(kept)
        update.params = params
        self._read(update, params)
        self.open = update
        self.seen.updates.append(close(update, tolerance_of(params)))
        self.first = {}  # a torch optimizer stepped: what moved before was not an update by hand
        self.seen.crossed += self.straddles
        self.micro, self.blind, self.carried, self.straddles = [], 0, None, False
        self.fetched, self.batched, self.cut = 0, set(), 0
        made = len(self.seen.updates)
        if self.steps is not None:
            enough = made >= self.steps
        else:  # an epoch's end, or a run with none in sight (batches drawn at random, a
            self.seen.capped = made >= self.longest and not self.past_an_epoch(made)  # long one)
            enough = self.seen.capped or self.past_an_epoch(made)
        if enough:
            self.seen.ended = True
            raise Enough

    def _read(self, update: Open, params: list[Tensor]) -> None:
        carried = self.carried or {}
        for p in params:
            key = id(p)
            update.applied[key] = None if p.grad is None else p.grad.detach().clone()
            raw = self.raw[key] if key in self.fresh else update.applied[key]
            update.before[key] = self.unscaled.get(key, raw)
            update.carried[key] = carried.get(key)

    def _reset(self) -> bool:
        """Return whether the code zeroed the gradients since the last backward() (zero_grad,
        set to None or filled with 0): every nn.Parameter that backward() gave one holds none."""
        params = [
            p
            for key in self.fresh
            if key in self.found and isinstance(p := self.found[key][0], nn.Parameter)
        ]
        return bool(params) and all(p.grad is None or not bool(p.grad.any()) for p in params)

    def terms(self, micro: list[MicroBatch]) -> bool:
        """Return whether the update's micro-batches are terms of one objective rather than
        batches of data: more backward() calls than the DataLoader batches fetched for it
        (at least one), some on targets no batch held (a GAN's real and fake labels; chunks
        of a fetched batch are views of it, and stay micro-batches)."""
        calls = [c for mb in micro for c in mb.losses]
        return 0 < self.fetched < len(micro) and not all(c.from_batch for c in calls)

    def past_an_epoch(self, made: int) -> bool:
        """Return True once an update follows an epoch's end that updates preceded (a loop that
        lists its loader before training runs it out first: its next end counts)."""
        return any(0 < e < made for e in self.ends)

    def dropped(self) -> None:
        """Let go of the micro-batches of a step the loss scaler skipped (inf or nan)."""
        self.micro, self.blind, self.carried, self.straddles = [], 0, None, False
        self.fetched, self.batched, self.cut = 0, set(), 0
        self.seen.skipped += 1

    def put_back(self) -> None:
        """Put back what the watched steps changed: each optimizer's state and lrs (a tensor
        lr, filled with 0 in place: the user's own object, with its value), each scheduler's
        and loss scaler's state (a scaler ended between unscale_ and update() too), each
        param's .grad as it was found; params an update made by hand moved (no optimizer
        stepped), as they were at the first backward()."""
        for opt, state in self.states:
            with self.attempt(f"{type(opt).__name__}'s state and lrs"):
                opt.load_state_dict(state)
                for group, lr, value in zip(
                    opt.param_groups, self.seen.lrs[id(opt)], self.lr_values[id(opt)], strict=False
                ):
                    if isinstance(lr, Tensor) and isinstance(value, Tensor):
                        lr.copy_(value)
                    group["lr"] = lr
        for thing, state in self.kept.values():
            with self.attempt(f"{type(thing).__name__}'s state"):
                thing.load_state_dict(state)
        for scaler in self.scalers.values():  # no unscale_ left pending
            scaler._per_optimizer_states.clear()
        for p, grad in self.found.values():
            with self.attempt("a param's .grad"):
                p.grad = grad
        if not self.seen.updates and self.moved():  # by hand: put back as first seen
            for p, value in self.first.values():
                if _same_kind(p, value):  # a param the code reshaped is left as it is
                    p.detach().copy_(value)

    @contextmanager
    def attempt(self, what: str) -> Iterator[None]:
        """Put one thing back; if it cannot be (the code changed it past restoring), say so
        in the report and go on to the next."""
        try:
            yield
        except Exception as e:
            self.seen.unrestored.append(f"{what} ({type(e).__name__}: {e})")

    def moved(self) -> bool:
        """Return whether a param moved since the first backward() (read while no optimizer
        has stepped: after one, the lrs are held at 0)."""
        try:
            self.seen.moved = self.seen.moved or any(
                not _same(p.detach(), value) for p, value in self.first.values()
            )
        except Exception:  # a param that cannot be compared (meta, offloaded): not read
            return False
        return self.seen.moved

    def keep(self, thing: Any) -> None:
        """Keep a scheduler's or scaler's state as the watch found it, to put back after."""
        if id(thing) not in self.kept:
            self.kept[id(thing)] = (thing, copy.deepcopy(thing.state_dict()))

    def unscaled_by(self, opt: torch.optim.Optimizer) -> None:
        for p in (p for g in opt.param_groups for p in g["params"]):
            if p.grad is not None:
                self.unscaled[id(p)] = p.grad.detach().clone()


@contextmanager
def watching(steps: int | None = None) -> Iterator[Watched]:
    """Watch the code the block runs; yield what it saw, filled in as it runs. After `steps`
    updates (None: the first update after a DataLoader ran out, an epoch's end) the step hook
    raises Enough, which ends the block cleanly here. Every seam is put
    back after, and every lr the hooks held at 0 is as the code had set it."""
    w = _Watcher(steps)
    losses = {name: getattr(F, name) for name in LOSSES}
    loader_next = _BaseDataLoaderIter.__next__

    def next_batch(self: _BaseDataLoaderIter) -> Any:
        try:
            batch = loader_next(self)
            w.fetch(batch, _length(self))
            return batch
        except StopIteration:
            w.ends.append(len(w.seen.updates))
            w.straddles = w.straddles or bool(w.micro)  # the open window runs into the next
            raise

    tensor_backward, autograd_backward = Tensor.backward, torch.autograd.backward
    unscale, scaler_step = torch.amp.GradScaler.unscale_, torch.amp.GradScaler.step
    scheduler_step = LRScheduler.step

    def schedule(scheduler: LRScheduler, *a: Any, **k: Any) -> None:
        if hasattr(scheduler, "last_epoch"):  # set up: its state as found (not its own first)
            w.keep(scheduler)
        scheduler_step(scheduler, *a, **k)

    def loss_of(name: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def read(*args: Any, **kwargs: Any) -> Tensor:
            out = fn(*args, **kwargs)
            w.loss(name, fn, args, kwargs, out)
            return out

        return read

    def backward(self: Tensor, *args: Any, **kwargs: Any) -> None:
        w.backward([self], lambda: tensor_backward(self, *args, **kwargs))  # type: ignore[no-untyped-call]

    def autograd(tensors: Any, *args: Any, **kwargs: Any) -> None:
        roots = [tensors] if isinstance(tensors, Tensor) else list(tensors)
        w.backward(roots, lambda: autograd_backward(tensors, *args, **kwargs))

    def unscale_(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        if scaler.is_enabled():
            w.keep(scaler)
        unscale(scaler, optimizer)
        if scaler.is_enabled():
            w.unscaled_by(optimizer)
            w.scalers.setdefault(id(scaler), scaler)

    def step(
        scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, *a: Any, **k: Any
    ) -> Any:
        out = scaler_step(scaler, optimizer, *a, **k)
        if w.micro and scaler.is_enabled():  # skipped on inf or nan: its gradient is dropped
            w.dropped()
        return out

    grad_mode = torch.is_grad_enabled()
    eager = _eager()
    handles = [
        register_optimizer_step_pre_hook(w.before),
        register_optimizer_step_post_hook(w.after),
    ]
    for name in LOSSES:
        setattr(F, name, loss_of(name, losses[name]))
    Tensor.backward = backward  # type: ignore[method-assign]
    torch.autograd.backward = autograd
    torch.amp.GradScaler.unscale_ = unscale_  # type: ignore[method-assign,assignment]
    torch.amp.GradScaler.step = step  # type: ignore[method-assign,assignment]
    LRScheduler.step = schedule  # type: ignore[method-assign,assignment]
    _BaseDataLoaderIter.__next__ = next_batch  # type: ignore[method-assign]
    try:
        yield w.seen
    except Enough:
        pass
    finally:
        for handle in handles:
            handle.remove()
        for name, fn in losses.items():
            setattr(F, name, fn)
        Tensor.backward = tensor_backward  # type: ignore[method-assign]
        torch.autograd.backward = autograd_backward
        torch.amp.GradScaler.unscale_ = unscale  # type: ignore[method-assign]
        torch.amp.GradScaler.step = scaler_step  # type: ignore[method-assign]
        LRScheduler.step = scheduler_step  # type: ignore[method-assign]
        _BaseDataLoaderIter.__next__ = loader_next  # type: ignore[method-assign]
        torch.set_grad_enabled(grad_mode)
        eager()
        w.seen.leftover, w.seen.ran_out = w.micro, w.straddles
        w.put_back()


def _eager() -> Callable[[], None]:
    """Run torch.compile'd code eagerly while watched (a compiled graph calls no torch loss
    function the watcher could read; the math is the same), whether torch._dynamo is imported
    now or by the code; return what puts its setting back."""
    env = os.environ.get("TORCH_COMPILE_DISABLE")
    config = sys.modules.get("torch._dynamo.config")
    was = getattr(config, "disable", None)
    os.environ["TORCH_COMPILE_DISABLE"] = "1"  # read when the code imports torch._dynamo
    if config is not None:
        setattr(config, "disable", True)  # noqa: B010 (a module found at run time)

    def back() -> None:
        if env is None:
            os.environ.pop("TORCH_COMPILE_DISABLE", None)
        else:
            os.environ["TORCH_COMPILE_DISABLE"] = env
        now = sys.modules.get("torch._dynamo.config")
        if now is not None:  # as found; imported while watched: as the environment says
            setattr(now, "disable", was if was is not None else env == "1")  # noqa: B010
        dynamo = sys.modules.get("torch._dynamo")
        if config is None and dynamo is not None:  # imported while watched: the frames it
            with contextlib.suppress(Exception):  # skipped then are compiled when next run
                dynamo.reset()

    return back


def _same_kind(t: Tensor, u: Tensor) -> bool:
    return t.shape == u.shape and t.dtype == u.dtype and t.device == u.device


def _same(t: Tensor, u: Tensor) -> bool:
    return _same_kind(t, u) and torch.equal(t, u)


def _length(it: _BaseDataLoaderIter) -> int | None:
    """Return the batches of the epoch a DataLoader's iterator runs, None where not known."""
    try:
        return len(it)
    except Exception:  # an IterableDataset without a length
        return None


def _targets(micro: list[MicroBatch]) -> set[int]:
    """Return the storages of the targets the micro-batches' losses were called on."""
    return {c.target for mb in micro for c in mb.losses if c.target is not None}


def _storage(t: Any) -> int | None:
    """Return the address of a tensor's storage (its views share it), None if not a tensor."""
    return t.untyped_storage().data_ptr() if isinstance(t, Tensor) else None
