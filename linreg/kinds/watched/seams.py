"""Watch real training code run, unchanged: every loss it computes with a torch loss function,
every backward() and every optimizer update, on the user's own rows.

Torch's own seams, all put back after: the loss functions of `torch.nn.functional`
(the `nn` loss modules call them too), whose call the watcher repeats with reduction="none" on
the same input to take the gradient of the summed per-element loss through the loop's own graph
(dropout masks, BatchNorm and -100 labels as they ran) and the count a mean divides by;
`Tensor.backward` and `torch.autograd.backward`, which tell which of those losses each
micro-batch's backward() reached and what .grad held before the update's first; and the global
optimizer step hooks, which hold every lr at 0 and close each update; `GradScaler.scale`
(its products: a scale, not the code's weight) and `unscale_`,
`clip_grad_norm_` and `clip_grad_value_` (the gradients before clipping, as the code left
them; clipped by value, an update is read as it was before) and a
DataLoader's iterator (an epoch's end). Nothing is copied: what
an update applied is read against the micro-batches it consumed (`Update`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.nn.utils import clip_grad
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data.dataloader import _BaseDataLoaderIter

from linreg.kinds.guards import compile_disabled
from linreg.kinds.watched.clips import noted
from linreg.kinds.watched.divided import divided_by
from linreg.kinds.watched.fetching import fetching
from linreg.kinds.watched.kept import Watched
from linreg.kinds.watched.observer import Observer
from linreg.kinds.watched.records import Enough
from linreg.kinds.watched.reductions import SEAMS, scriptable, whole

# the loss functions read (each holds its target in its `target` argument)
LOSSES = (
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",  # a distillation's term: its weight solved for, never judged (observer.SOLVED)
)


@contextmanager
def watching(steps: int | None = None) -> Iterator[Watched]:
    """Watch the code the block runs; yield what it saw, filled in as it runs. After `steps`
    updates (None: the first update after a DataLoader ran out, an epoch's end) the step hook
    raises Enough, which ends the block cleanly here. Every seam is put
    back after, and every lr the hooks held at 0 is as the code had set it."""
    w = Observer(steps)
    losses = {name: getattr(F, name) for name in LOSSES}
    live = [True]  # a wrapper a name kept after the watch passes straight through

    def watched() -> bool:
        """Whether to read the code's call: the watch is on and has not ended the code (a
        call after its end raises Enough again: Observer.halted)."""
        return live[0] and not w.halted()

    tensor_backward, autograd_backward = Tensor.backward, torch.autograd.backward
    scale_fn = torch.amp.GradScaler.scale
    unscale, scaler_step = torch.amp.GradScaler.unscale_, torch.amp.GradScaler.step
    scheduler_step = LRScheduler.step

    def schedule(scheduler: LRScheduler, *a: Any, **k: Any) -> None:
        # set up (not its own first step): its state as found, to put back
        if live[0] and hasattr(scheduler, "last_epoch"):
            w.keep(scheduler)
        scheduler_step(scheduler, *a, **k)

    def loss_of(name: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def read(*args: Any, **kwargs: Any) -> Tensor:
            w.calling += 1  # (its own sums and means are no loss written by hand)
            try:
                out = fn(*args, **kwargs)
            finally:
                w.calling -= 1
            if watched():
                w.loss(name, fn, args, kwargs, out)
            return out

        return read

    def backward(self: Tensor, *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            tensor_backward(self, *args, **kwargs)  # type: ignore[no-untyped-call]

        if watched():
            w.backward([self], run, _retains(args, kwargs), divided_by(sys._getframe(1)))
        else:
            run()

    def autograd(tensors: Any, *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            autograd_backward(tensors, *args, **kwargs)

        if watched():
            roots = [tensors] if isinstance(tensors, Tensor) else list(tensors)
            w.backward(roots, run, _retains(args, kwargs), divided_by(sys._getframe(1)))
        else:
            run()

    def scale(scaler: torch.amp.GradScaler, outputs: Any) -> Any:
        out = scale_fn(scaler, outputs)
        if watched() and scaler.is_enabled():  # its products: a scale, not a weight (graphs)
            return noted(out, w.scales)
        return out

    def unscale_(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        read = watched() and scaler.is_enabled()
        if read:
            w.keep(scaler)
            w.unscaling(optimizer, scaler.get_scale)
        unscale(scaler, optimizer)
        if read:
            w.unscaled_by(optimizer)
            w.scalers.setdefault(id(scaler), scaler)

    def step(
        scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, *a: Any, **k: Any
    ) -> Any:
        out = scaler_step(scaler, optimizer, *a, **k)
        if watched() and w.micro and scaler.is_enabled():  # skipped (inf or nan): let go
            w.dropped()
        return out

    clip_norm = clip_grad.clip_grad_norm_

    @functools.wraps(clip_norm)
    def clip_grad_norm_(parameters: Any, *a: Any, **k: Any) -> Tensor:
        params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
        if not watched():
            return clip_norm(params, *a, **k)
        clip = w.clip_begins(params)
        norm = clip_norm(params, *a, **k)
        w.clip_ends(params, clip)
        return norm

    clip_value_fn = clip_grad.clip_grad_value_

    @functools.wraps(clip_value_fn)
    def clip_grad_value_(parameters: Any, clip_value: float, *a: Any, **k: Any) -> None:
        params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
        if not watched():
            clip_value_fn(params, clip_value, *a, **k)
            return
        clip = w.clip_begins(params, float(clip_value))
        clip_value_fn(params, clip_value, *a, **k)
        w.clip_ends(params, clip)

    next_batch, next_index = fetching(w, watched, live)
    grad_mode = torch.is_grad_enabled()
    eager = compile_disabled()
    handles = [
        register_optimizer_step_pre_hook(w.before),
        register_optimizer_step_post_hook(w.after),
    ]
    seams: list[tuple[Any, str, Any]] = [(F, name, loss_of(name, losses[name])) for name in LOSSES]
    seams += [
        (Tensor, "backward", backward),
        (torch.autograd, "backward", autograd),
        (torch.amp.GradScaler, "scale", scale),
        (torch.amp.GradScaler, "unscale_", unscale_),
        (torch.amp.GradScaler, "step", step),
        (LRScheduler, "step", schedule),
        (_BaseDataLoaderIter, "__next__", next_batch),
        (_BaseDataLoaderIter, "_next_index", next_index),
        (clip_grad, "clip_grad_norm_", clip_grad_norm_),
        (torch.nn.utils, "clip_grad_norm_", clip_grad_norm_),
        (clip_grad, "clip_grad_value_", clip_grad_value_),
        (torch.nn.utils, "clip_grad_value_", clip_grad_value_),
    ]
    # the whole sums and means: a loss written by hand's (reductions.py)
    sums = [(owner, name, whole(getattr(owner, name), watched, w.reduced)) for owner, name in SEAMS]
    forget = scriptable([(seam, getattr(owner, name)) for owner, name, seam in sums])
    seams += sums
    found = [(owner, name, getattr(owner, name)) for owner, name, _ in seams]
    for owner, name, seam in seams:
        setattr(owner, name, seam)
    try:
        yield w.seen
    except Enough:
        w.seen.reached = True
    except (Exception, SystemExit) as e:  # the code's own, raised where it caught the end
        if not _from_end(e):  # (except: raise RuntimeError(...); except: sys.exit(1))
            raise
        w.seen.reached = True
    finally:
        live[0] = False
        for handle in handles:
            handle.remove()
        for owner, name, fn in found:
            setattr(owner, name, fn)
        forget()
        torch.set_grad_enabled(grad_mode)
        eager()
        w.ran_out()
        w.seen.leftover, w.seen.ran_out = w.micro, w.straddles
        w.put_back()
        w.let_go_hand()


def _retains(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Return whether a backward() call keeps its graph for another (retain_graph, or
    create_graph, which retains it): the second argument after the tensors' gradients."""
    keep = kwargs.get("retain_graph", args[1] if len(args) > 1 else None)
    make = kwargs.get("create_graph", args[2] if len(args) > 2 else False)
    return bool(keep if keep is not None else make)


def _from_end(e: BaseException) -> bool:
    """Return whether an exception was raised while the code handled the watch's end (an
    Enough in its chain of contexts and causes): the end, in the code's own words."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [e]
    while chain:
        now = chain.pop()
        if now is None or id(now) in seen:
            continue
        if isinstance(now, Enough):
            return True
        seen.add(id(now))
        chain += [now.__context__, now.__cause__]
    return False
