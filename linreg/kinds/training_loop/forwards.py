"""What each forward pass with grad enabled was fed, recorded as the loop runs (ForwardHooks,
the Watcher's forward hooks): the model's forward pre-hook (`fed`) makes a Call of it, and its
forward hook (`output`) marks that call consumed once a backward() reaches its output. The
state they read and write is the Watcher's (watcher.py); hooks.py installs them.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.utils.hooks import RemovableHandle

from linreg.kinds.training_loop.calls import (
    Call,
    autocast_now,
    copied,
    same_batch,
    tensors_in,
    version_of,
)
from linreg.kinds.training_loop.feeds import Feeds
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.sites import site


class ForwardHooks:
    """The Watcher's forward hooks; the attributes they read and write are the Watcher's (set
    in Watcher.__init__)."""

    method: str  # what each step's rows are fed to: the model's forward, or a method of it
    replayable: bool  # False: calling that again has effects (Watch)
    feeds: Feeds  # which forwards fed an update
    seen: Observed
    calls: list[Call]  # the forwards since the last update
    last: Call | None  # the forward under way, until its output is seen
    handles: list[RemovableHandle]  # the hooks on forward outputs

    def output(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        """Mark the forward under way as consumed once a backward() reaches its output (at
        once, where no output tensor requires grad: nothing to tell by)."""
        call, self.last = self.last, None
        if call is None:
            return
        call.settle()
        # a leaf returned as it is (a parameter: a learned variance) is every pass's, not this
        # one's: a backward() through it tells nothing of this pass
        outputs = [t for t in tensors_in([out], {}) if t.requires_grad and t.grad_fn is not None]
        if not outputs:
            self.feeds.reached.add(id(call))
        for t in outputs:
            self.handles.append(
                t.register_hook(functools.partial(self._reached, id(call)))  # type: ignore[no-untyped-call]
            )

    def _reached(self, key: int, grad: Tensor) -> None:
        self.feeds.reached.add(key)

    def fed(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Record what a forward pass with grad enabled was fed."""
        self.last = None
        self.seen.forwards += 1
        if not torch.is_grad_enabled():
            return  # an evaluation pass: it feeds no step
        batch = [t for t in tensors_in(args, kwargs) if t.ndim > 0]
        if not batch:
            return
        if any(is_functorch_wrapped_tensor(t) for t in batch):
            self.seen.transformed += 1  # under torch.func's vmap or grad: no backward() of
            return  # the run's reaches it, and its rows cannot be replayed one at a time
        if self.calls and same_batch(self.calls[-1], batch[0]):
            self.last = self.calls[-1]  # a backward() through this pass consumes that call
            return  # the same batch fed again (a logging pass with grad on): no new rows
        again = not self.calls and any(
            same_batch(c, batch[0]) for c in (self.seen.steps[-1].calls if self.seen.steps else ())
        )
        rows = batch[0].shape[0]
        self.seen.clock += 1
        self.calls.append(
            Call(
                copied(args),
                copied(kwargs),
                rows,
                self.method,
                self.replayable,
                autocast=autocast_now(),
                drawn=self.seen.drawn,
                clock=self.seen.clock,
                site=site(),
                first=batch[0].detach(),
                version=version_of(batch[0]),
            )
        )
        self.last = self.calls[-1]
        if again or not module.training:
            self.feeds.unless_reached.add(id(self.last))
        self.seen.fed += rows
