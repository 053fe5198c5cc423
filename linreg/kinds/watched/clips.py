"""What the watcher's clip and loss-scaler hooks keep (ClipHooks): each param's gradient as it
stood before torch's clipping (clip_grad_norm_, clip_grad_value_) or a loss scaler's unscale_
found it, the bounds it was clamped to, and which clips changed a gradient a scaler still held
scaled (clip-before-unscale); and the scale each of GradScaler.scale's products was
multiplied by (noted: a scale, not the code's weight). The state they read and write is the
Observer's (observed.py); seams.py installs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from linreg.kinds.watched.records import MicroBatch


class Clip(NamedTuple):
    """A call of torch's clipping as it began (ClipHooks.clip_begins)."""

    fresh: set[int]  # the params it found first in the update
    was: bool  # a clip of the norm was called before in the update
    before: list[Tensor | None]  # their gradients then


class ClipHooks:
    """The Observer's clip and loss-scaler hooks; the attributes they read and write are the
    Observer's (set in Observed.__init__, observed.py)."""

    micro: list[MicroBatch]  # the update's micro-batches so far
    blind: int  # its backward() calls that reached no loss the watcher read
    prior: dict[int, Tensor]  # each param's .grad before clipping
    clip_bounds: dict[int, float]  # param id -> clip_grad_value_'s bound, in this update
    clipped: set[int]  # params clipped in this update: before, the first's
    norm_clipped: bool  # clip_grad_norm_ was called in this update
    unscaled: bool  # a loss scaler unscaled in this update
    scaled_clip: bool  # torch's clipping changed them before that unscale_
    changed: set[int]  # params whose gradients torch's clipping changed

    def unscaling(self, opt: torch.optim.Optimizer, scale: Callable[[], float]) -> None:
        """Note a loss scaler about to unscale an optimizer's gradients, and whether torch's
        clipping changed any of them before, in this update (clip-before-unscale). What a clip
        kept of them before (and its bound by value) held the scale: it is kept over the scale
        (scale(): the scaler's), as backward() left the unscaled loss's, so that the update is
        read as a clipping of that, its weights judged beside clip-before-unscale."""
        params = [p for g in opt.param_groups for p in g["params"]]
        self.unscaled = True
        self.scaled_clip = self.scaled_clip or any(id(p) in self.changed for p in params)
        scaled = [id(p) for p in params if id(p) in self.prior]  # each kept before unscale_
        if scaled:
            inverse = 1.0 / scale()
            for key in scaled:
                self.prior[key] = self.prior[key] * inverse
                for bounds in (self.clip_bounds, *self.joined_bounds()):
                    if key in bounds:
                        bounds[key] *= inverse

    def joined_bounds(self) -> list[dict[int, float]]:
        """Return the clip bounds of an update another optimizer's step of it closed already
        (its own, not clip_bounds since), which this optimizer's step joins: none here."""
        return []

    def clip_begins(self, params: list[Tensor], value: float | None = None) -> Clip:
        """Note a call of torch's clipping about to run (clipping), and return what clip_ends
        needs: the params it finds first in this update, whether a clip of the norm was
        called before, and their gradients now."""
        if not (self.micro or self.blind):  # after a step, before zero_grad: no update's
            return Clip(set(), self.norm_clipped, [])
        fresh = {id(p) for p in params if p.grad is not None and id(p) not in self.clipped}
        was = self.norm_clipped
        before = [None if p.grad is None else p.grad.detach().clone() for p in params]
        self.clipping(params, value, found=before)
        return Clip(fresh, was, before)

    def clip_ends(self, params: list[Tensor], clip: Clip) -> None:
        """Note what the clip changed. One that changed a param's gradient in an update a
        backward() fed counts for clip-before-unscale; one that changed nothing (a norm logged
        at an infinite bound, a bound that never binds) is no clip: what it found is not the
        gradient before clipping, and no clip of the norm was called."""
        if not clip.before:  # no update's (clip_begins)
            return
        changed = {
            id(p)
            for p, b in zip(params, clip.before, strict=True)
            if p.grad is not None and b is not None and not torch.equal(p.grad, b)
        }
        self.changed |= changed
        for key in clip.fresh - changed:
            self.prior.pop(key, None)
            self.clipped.discard(key)
            self.clip_bounds.pop(key, None)
        if not changed:
            self.norm_clipped = clip.was

    def unscaled_by(self, opt: torch.optim.Optimizer) -> None:
        # what a clip kept before unscale_ (divided by unscaling) stays: an optimizer's step
        # of the same update before this one began clip_bounds anew, not prior
        params = [p for g in opt.param_groups for p in g["params"]]
        self.clipping([p for p in params if id(p) not in self.prior], clips=False)

    def clipping(
        self,
        params: list[Tensor],
        value: float | None = None,
        clips: bool = True,
        found: list[Tensor | None] | None = None,
    ) -> None:
        """Keep the gradients as they are before clipping (unscaled, divided by the code as it
        meant): what a clipped update is read as a factor of, or, clipped by value (each
        element to [-value, value]), read as. A param clipped twice in an update (its
        groups clipped one by one, or by value, then by norm) keeps what it held before the
        first clip; each param keeps its own bound (the least, where clamped twice). found:
        their gradients, copied already (clip_begins: not copied twice)."""
        for i, p in enumerate(params):
            if p.grad is not None and id(p) not in self.clipped:
                copy = found[i] if found is not None else None
                self.prior[id(p)] = copy if copy is not None else p.grad.detach().clone()
        if clips:
            self.clipped |= {id(p) for p in params}
            self.norm_clipped = self.norm_clipped or value is None
        if value is not None:
            for p in params:
                self.clip_bounds[id(p)] = min(value, self.clip_bounds.get(id(p), math.inf))


def noted(out: Any, scales: dict[int, float]) -> Any:
    """Note the storage and value of the scale each of a GradScaler's products was multiplied
    by (its own, or the copy of it a list's products share), in tensors, lists and tuples of
    them however nested; a generator's (a map) as they are drawn. No graph is held."""
    if isinstance(out, Tensor):
        other = getattr(out.grad_fn, "_saved_other", None)
        if isinstance(other, Tensor) and other.numel() == 1:
            scales[other.untyped_storage().data_ptr()] = float(other)
    elif isinstance(out, list | tuple):
        drawn = [noted(t, scales) for t in out]  # (a generator inside: wrapped)
        if any(a is not b for a, b in zip(drawn, out, strict=True)):
            return type(out)(drawn)
    elif isinstance(out, Iterator):
        return (noted(t, scales) for t in out)
    return out
