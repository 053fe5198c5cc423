"""The hooks' shared state (a Watcher) and what the optimizer's hooks do with it: a step's
pre-hook holds its lr at 0 and its post-hook records the update (its gradients read at each
stage, and the forwards that fed it). The gradient hooks (gradient_hooks.py) keep each
parameter's gradient as backward() left it and what .grad held as the update's first
backward() reached it, what a loss scaler unscaled and what torch's clipping found; the
forward hooks (forwards.py) record what each forward was fed; a probe's batch an update set
aside is read in set_aside.py. hooks.py installs them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from linreg.kinds.training_loop.calls import Call
from linreg.kinds.training_loop.feeds import Feeds
from linreg.kinds.training_loop.forwards import ForwardHooks
from linreg.kinds.training_loop.gradient_hooks import GradientHooks
from linreg.kinds.training_loop.held import hold_still, zero_lr
from linreg.kinds.training_loop.ledger import Observed, Step, flat, mask
from linreg.kinds.training_loop.set_aside import Probed, SetAside
from linreg.kinds.training_loop.sources import source_of


class Watcher(ForwardHooks, GradientHooks, SetAside):
    """The hooks' shared state: what was fed since the last step, and each step's readings
    (its forward hooks: ForwardHooks, forwards.py; its gradient hooks: GradientHooks,
    gradient_hooks.py; the probes' batches its updates set aside: SetAside, set_aside.py)."""

    def __init__(
        self,
        model: nn.Module,
        method: str = "forward",
        replayable: bool = True,
        on_update: Callable[[], None] | None = None,
        trained: frozenset[int] | None = None,
        masks: bool = True,
        data: Sequence[Tensor] | None = None,
    ) -> None:
        self.method, self.replayable, self.on_update = method, replayable, on_update
        self.feeds = Feeds(data)  # which forwards fed an update
        self.params = list(model.parameters())
        self.ids = {id(p) for p in self.params}
        # the params (by position) the loop's first run stepped: an update is whole only once
        # its steps cover them (a run may end there); masks: each step read on the params
        # the run's optimizers stepped alone
        self.masks = masks
        self.known = (
            None if trained is None else {id(p) for i, p in enumerate(self.params) if i in trained}
        )
        # the params as the run's first backward() found them: what the loop did to them
        # before it trained (net.apply(init_weights), as d2l's train_ch6 begins) is its own
        self.start = [p.detach().clone() for p in self.params]
        self.based = False
        # where the loop changed them before that (initialized them itself), each param's
        # version counter then, and the bumps optimizer steps made since: a write outside a
        # step afterwards, of the same values (the same init again each epoch, a checkpoint
        # loaded again), is an update outside optimizer.step() too (finish)
        self.versions: list[int] | None = None
        self.in_steps = [0] * len(self.params)
        self.step_versions: list[int] = []
        self.seen = Observed()
        self.calls: list[Call] = []
        self.streams: set[int | None] = set()  # the passes whose batches updates consumed
        self.probed: list[Probed] = []  # updates that set a probe's batch aside
        self.early: set[int] = set()  # the passes that ran out before the first update
        self.latest: dict[int, Tensor] = {}  # each param's grad after its last backward()
        self.carried: dict[int, Tensor | None] = {}  # its grad as the update's first began
        self.unscaled: dict[int, Tensor] = {}  # each param's grad after GradScaler.unscale_
        self.scale: float | None = None  # the scale GradScaler.unscale_ divided by
        self.clip_found: list[Tensor] = []  # the grads as each of torch's clipping found them
        self.clip_covered: list[Tensor] = []  # the params each of those calls clipped
        self.unscaled_at = 0  # how many of those came before GradScaler.unscale_
        self.stepped: set[int] = set()  # the params the optimizers of the last update stepped
        self.trained: set[int] = set()  # the params any optimizer of the run stepped
        self.last: Call | None = None  # the forward under way, until its output is seen
        self.handles: list[RemovableHandle] = []  # the hooks on forward outputs
        self.depth = 0  # optimizer steps under way: a wrapper optimizer's holds its inner one's
        self.still: dict[int, list[tuple[Tensor, Tensor]]] = {}  # zero_lr's, per optimizer
        self.live: dict[tuple[bool, ...], Tensor | None] = {}  # Step.live, by what was frozen
        self.live_now: tuple[bool, ...] | None = None  # the update's backward() calls' (_live)
        self.backward_before = 0  # the clock of the backward() before the latest
        self.resets: dict[int, list[int]] = {}  # Step.zeroed's (GradientHooks.resets)

    def before(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Hold every param group's lr at 0, whatever a scheduler set."""
        if self.ours(opt):
            if not self.depth:
                self.step_versions = [p._version for p in self.params]
            self.depth += 1
            self.still[id(opt)] = zero_lr(opt)

    def after(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Record the update: its gradients read at each stage, and what fed it.

        The steps of several optimizers with nothing fed between them are one update (one for
        the embeddings, one for the matrices); a step fed nothing that applies nothing (a flush
        after an epoch that ended on a full window) is no update. A step fed nothing that
        applies a gradient is recorded: the same micro-batches move the params twice.
        """
        if not self.ours(opt):
            if not self.depth and all(
                p.grad is None or not p.grad.any() for g in opt.param_groups for p in g["params"]
            ):
                self.seen.foreign_empty += 1  # over params not the model's, none with a gradient
            return
        self.depth = max(self.depth - 1, 0)
        hold_still(self.still.pop(id(opt), []))
        if self.depth:  # the inner step of a wrapper optimizer (Lookahead, ZeRO): its outer
            return  # step is the update
        for i, (p, v) in enumerate(zip(self.params, self.step_versions, strict=False)):
            self.in_steps[i] += p._version - v
        params = self.params
        applied = flat([p.grad for p in params], params)
        stepped = {id(p) for g in opt.param_groups for p in g["params"]}
        self.calls = self.consumed()
        self._forget_all_but(self.calls)  # a dropped call's id may be a new call's
        self.trained |= stepped
        if not self.calls:
            if self.seen.steps and not stepped & self.stepped:  # another optimizer, same update
                self.stepped |= stepped
                self._refresh(self.seen.steps[-1], stepped)
                return
            if applied is None or not bool(applied.any()):
                self.clip_found, self.clip_covered = [], []  # a flush's: no update's
                self.seen.empty_steps += 1
                return
        raw = flat([self.latest.get(id(p)) for p in params], params)
        unscaled = flat([self.unscaled.get(id(p)) for p in params], params)
        kept = unscaled if self.unscaled else raw
        carried = flat([self.carried.get(id(p)) for p in params], params)
        if not self.seen.steps:  # the passes that ran out before the first update
            self.early = {
                number
                for number, events in self.seen.pass_events.items()
                if any(e in self.seen.pass_ends for e in events)
            }
        zeroed, consumed = self._set_aside(applied, kept, carried)
        if len(consumed) < len(self.calls):  # a throwaway pass first: .grad zeroed since
            self.calls, carried = consumed, None
        unreached = self.feeds.unreached(self.calls)
        # a clip of the still-scaled gradient (clip-before-unscale's) is read as backward()
        # left it over the scale (Step.before_clipping)
        kept_from = self.unscaled_at if self.scale is not None else 0
        live = self._live()
        self.resets = {}
        self.seen.steps.append(
            Step(
                applied,
                raw,
                kept,
                self.calls,
                self.scale,
                carried,
                unreached,
                (*self.clip_found[kept_from:],),
                (*self.clip_covered[kept_from:],),
                live,
                zeroed,
            )
        )
        self.feeds.stepped(self.calls)
        self.streams |= {source_of(self.seen, c) for c in self.calls}
        self.seen.stepped_at.append(time.perf_counter())
        self.seen.whole = (self.known is None or stepped >= self.known) and all(
            id(p) in stepped for p in params if p.grad is not None
        )
        self.calls, self.latest, self.unscaled, self.stepped = [], {}, {}, stepped
        self._forget_all_but(self.calls)
        self.carried = {}
        self.scale = None
        self.clip_found, self.clip_covered, self.unscaled_at = [], [], 0
        if self.on_update is not None:
            self.on_update()

    def _live(self) -> Tensor | None:
        """Return Step.live: which params required grad in some backward() of the update (or,
        where none was seen, now; None: all did), and count them in Observed.live_params."""
        live = self.live_now or tuple(p.requires_grad for p in self.params)
        self.live_now = None
        if live not in self.live:
            self.seen.live_params |= {i for i, k in enumerate(live) if k}
            self.live[live] = None if all(live) else mask(live, self.params)
        return self.live[live]

    def _forget_all_but(self, calls: list[Call]) -> None:
        """Keep what was marked of these calls alone: the marks of calls no longer kept go
        (their ids may be reused), and, where none is left, the hooks on their outputs."""
        self.feeds.forget_all_but(calls)
        if not calls:
            for handle in self.handles:
                handle.remove()
            self.handles = []

    def _refresh(self, step: Step, stepped: set[int]) -> None:
        """Read an update's gradients again for the params a later optimizer of the same update
        stepped: as that step used them, and as its loss scaler unscaled them."""
        now = flat([p.grad for p in self.params], self.params)
        unscaled = flat([self.unscaled.get(id(p)) for p in self.params], self.params)
        at, mine = 0, []
        for p in self.params:
            if id(p) in stepped:
                mine.append(slice(at, at + p.numel()))
            at += p.numel()
        for part in mine:
            if step.applied is not None and now is not None:
                step.applied[part] = now[part]
            if step.unscaled is not None and unscaled is not None and self.unscaled:
                step.unscaled[part] = unscaled[part]
        self.unscaled = {}
        # what torch's clipping found since the first optimizer's step (each its own params')
        step.clip_found += (*self.clip_found,)
        step.clip_covered += (*self.clip_covered,)
        self.clip_found, self.clip_covered = [], []

    def consumed(self) -> list[Call]:
        """Return the calls since the last update that it consumed (Feeds.consumed)."""
        last = self.seen.steps[-1].calls if self.seen.steps else []
        return self.feeds.consumed(self.calls, last, self.seen)

    def finish(self) -> Observed:
        """Return what was seen, with the rows fed after the last step and whether params moved."""
        self.seen.leftover = self.consumed() if self.latest else []  # rows no step used
        self._settle()
        self._forget_all_but([])
        # a param no optimizer steps (a backbone left out of a head's optimizer, not frozen):
        # what its .grad holds is never applied, so it is read as applying nothing (a run
        # read for references keeps it: each run it is the reference of masks it as its own)
        kept = [id(p) in self.trained for p in self.params]
        self.seen.stepped_params = frozenset(i for i, k in enumerate(kept) if k)
        if self.trained and not all(kept):
            self.seen.trained = mask(kept, self.params)
            for step in self.seen.steps if self.masks else ():
                step.keep(self.seen.trained)
        self.seen.moved = any(
            not torch.equal(p.detach(), q) for p, q in zip(self.params, self.start, strict=True)
        ) or (
            self.versions is not None
            and any(
                p._version - v > n
                for p, v, n in zip(self.params, self.versions, self.in_steps, strict=True)
            )
        )
        return self.seen
