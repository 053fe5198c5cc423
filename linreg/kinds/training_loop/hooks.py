"""Watch a training loop run, as it is written, through torch's own hooks: the global optimizer
step hooks (any optimizer over the model's parameters; the pre-hook holds every param group's
lr at 0), each parameter's post-accumulate-grad hook (the gradients as backward() left them:
"raw") and gradient hook (what .grad held when an update's first backward() reached it:
"carried", the trace of a missing zero_grad), `GradScaler.unscale_` (divided by the loss
scaler's scale: "unscaled", and the scale), torch's clipping (the gradients as each call
found them, after what the loop did to .grad itself, and whose), and the model's forward
pre-hook (what each forward pass with grad enabled was fed). Each step's reading is taken
after the step ("applied"), since a framework may run forward, zero_grad and backward inside
`optimizer.step(closure)`. Each batch a DataLoader's pass makes is held, by its memory, with
the pass that made it (a forward fed it came from there). The rows an update consumed are the
rows fed since the update before (which of those forwards fed it: feeds.py): prefetching and
a loop's own DataLoader are judged by what they did. What each hook does, and the state
they share: watcher.py (the forward hooks: forwards.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import clip_grad
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data.dataloader import _BaseDataLoaderIter
from torch.utils.hooks import RemovableHandle

from linreg.kinds.training_loop.labels import BROADCASTING, compared
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.sources import batch_made, pass_ended
from linreg.kinds.training_loop.watcher import Watcher


@dataclass(frozen=True)
class Watch:
    """What a loop's steps are read from: what each step's rows were fed to (the model's
    forward, or a method of it a framework calls, Lightning's training_step), and whether
    calling that again has no effects (a manual training_step steps its own optimizer)."""

    method: str = "forward"
    replayable: bool = True


@contextmanager
def watching(
    model: nn.Module,
    method: str = "forward",
    replayable: bool = True,
    on_update: Callable[[], None] | None = None,
    trained: frozenset[int] | None = None,
    masks: bool = True,
    data: Sequence[Tensor] | None = None,
) -> Iterator[Observed]:
    """Watch the model's training while the block runs; yield what it saw, filled in after;
    call on_update after each update it records; trained: the params (by position) the
    loop's first run stepped, which an update must step to be whole; masks=False: the steps
    keep the params no optimizer stepped (seen.trained says which); data: the first tensor of
    each distinct row of the data the loop was handed (rows.foreign).

    What each step consumed is read from what the model's forward was fed, or, for a framework
    that hands batches to a method of the model (Lightning's training_step), what that was fed.
    """
    watch = Watcher(model, method, replayable, on_update, trained, masks, data)
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
        handles.append(model.register_forward_hook(watch.output, with_kwargs=True))
    else:
        handles.append(_wrapped(model, method, watch.fed))
    for p in watch.params:
        if p.requires_grad:
            handles += [
                p.register_post_accumulate_grad_hook(watch.accumulated),  # type: ignore[no-untyped-call]
                p.register_hook(functools.partial(watch.incoming, p)),  # type: ignore[no-untyped-call]
            ]
    made = _BaseDataLoaderIter.__next__
    thread = threading.get_ident()
    losses = {name: getattr(F, name) for name in BROADCASTING}

    def read(name: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def loss(input: Any, target: Any, *args: Any, **kwargs: Any) -> Tensor:
            out = fn(input, target, *args, **kwargs)
            if threading.get_ident() == thread:  # label-shape's, once a backward() reaches it
                compared(name, input, target, out, watch.seen)
            return out

        return loss

    # every clip of torch.nn.utils (by norm, by value, the norm alone) groups the grads through
    # this module global first, whatever name the loop imported the clip under
    grouped = clip_grad._group_tensors_by_device_and_dtype  # type: ignore[attr-defined]

    def group(tensorlistlist: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == thread:
            watch.clipping([t for ts in tensorlistlist for t in ts if t is not None])
        return grouped(tensorlistlist, *args, **kwargs)

    def next_batch(it: _BaseDataLoaderIter) -> Any:
        if threading.get_ident() != thread:  # another thread's loader: not this run's
            return made(it)
        seen = watch.seen
        outer, seen.drawing = seen.drawing, it  # the pass the rows drawn meanwhile are of
        try:
            batch = made(it)
        except StopIteration:
            pass_ended(seen, it)
            raise
        finally:
            seen.drawing = outer
        batch_made(seen, it, batch)
        return batch

    torch.amp.GradScaler.unscale_ = unscale_  # type: ignore[method-assign,assignment]
    _BaseDataLoaderIter.__next__ = next_batch  # type: ignore[method-assign,assignment]
    clip_grad._group_tensors_by_device_and_dtype = group  # type: ignore[attr-defined]
    for name, fn in losses.items():  # nn.MSELoss and the others call these by attribute
        setattr(F, name, read(name, fn))
    try:
        yield watch.seen
    finally:
        torch.amp.GradScaler.unscale_ = original  # type: ignore[method-assign]
        _BaseDataLoaderIter.__next__ = made  # type: ignore[method-assign]
        clip_grad._group_tensors_by_device_and_dtype = grouped  # type: ignore[attr-defined]
        for name, fn in losses.items():
            setattr(F, name, fn)
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
