"""What the watcher does when the code's optimizers step (Steps, the Observer's): each step's
lrs held at 0 and given back, and the update closed (the steps of several optimizers with
nothing fed between them are one), its micro-batches zeroed before it let go or set aside (a
probe's), and the code ended once the watch has what it needs. The state it reads and writes
is the Observer's (observed.py).
"""

from __future__ import annotations

import copy
import functools
import sys
import threading
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from linreg import checks
from linreg.kinds.training_loop.held import hold_still, zero_lr
from linreg.kinds.watched.applied import scaled_by
from linreg.kinds.watched.closing import close, finite, unread
from linreg.kinds.watched.kept import Update, Watched
from linreg.kinds.watched.objectives import are_terms, objectives
from linreg.kinds.watched.records import Enough, LossCall, MicroBatch, Open
from linreg.kinds.watched.zeroed import Zeroed, let_go_from

# the catches of the watch's end after which code that catches it each time runs on unread
MOST_CAUGHT = 100


class Steps(Zeroed):
    """The Observer's optimizer-step hooks (the micro-batches the code zeroed before an
    update: Zeroed, zeroed.py); the attributes they read and write are the Observer's (set
    in Observed.__init__)."""

    seen: Watched
    ended_on: int | None  # the thread the watch ended the code on (_end_if)
    steps: int | None
    ends: list[int]
    pending: list[LossCall]
    micro: list[MicroBatch]
    blind: int
    carried: dict[int, Tensor | None] | None
    closed: dict[int, Tensor | None]
    raw: dict[int, Tensor]
    fresh: set[int]
    prior: dict[int, Tensor]
    states: list[tuple[torch.optim.Optimizer, dict[str, Any]]]
    depth: int
    ending: bool
    optimizers: set[int]
    open: Open | None
    lr_values: dict[int, list[Any]]
    first: dict[int, tuple[Tensor, Tensor]]
    longest: int
    straddles: bool
    held_at_end: int
    cut: int
    fetched: int
    all_fetched: int
    all_micro: int
    precision: float
    held: dict[int, list[Any]]
    still: dict[int, list[tuple[Tensor, Tensor]]]
    clip_bounds: dict[int, float]
    norm_clipped: bool
    unscaled: bool
    scaled_clip: bool

    def _anew(self) -> None:  # the Observer's
        raise NotImplementedError

    def before(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # (unread after its end, its lrs held at 0 as before it; a step is no cleanup: raised
        # again inside a handler of the end too, where a retry would train anew)
        self.halted(stepping=True)
        self.depth += 1
        if id(opt) not in self.seen.lrs:  # its state as the watch found it, put back after
            self.states.append((opt, copy.deepcopy(opt.state_dict())))
            self.seen.lrs[id(opt)] = [g.get("lr") for g in opt.param_groups]  # a tensor: the same
            self.lr_values[id(opt)] = _lr_values(opt)  # object, and its value
        # the code's lrs, given back after the step: a checkpoint the code saves, or a
        # scheduler that reads them, sees its own, not the watch's 0
        self.held[id(opt)] = _lr_values(opt)
        self.still[id(opt)] = zero_lr(opt)

    def after(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Close an update: the steps of several optimizers with nothing fed between them are
        one (one for the embeddings, one for the rest); a step fed nothing that applies nothing
        (a flush after an epoch that ended on a full window) is none; one fed nothing that
        applies a gradient is recorded: the same micro-batches move the params twice."""
        self.depth = max(self.depth - 1, 0)
        hold_still(self.still.pop(id(opt), []))
        for group, lr in zip(opt.param_groups, self.held.pop(id(opt), []), strict=False):
            if "lr" not in group:  # (none to give back: zero_lr held its params instead)
                continue
            if isinstance(group["lr"], Tensor) and isinstance(lr, Tensor):
                group["lr"].copy_(lr)
            else:
                group["lr"] = lr
        if self.depth or self.seen.ended:  # the inner step of a wrapper optimizer (its outer
            return  # step is the update), or a step after the watch's end: read no more
        params = [p for g in opt.param_groups for p in g["params"]]
        fed = bool(self.micro or self.blind)
        last = self.open
        if not fed and last is not None and {id(p) for p in params} - {id(p) for p in last.params}:
            last.params += params  # another optimizer of the same update: read it again
            last.optimizers.append(id(opt))
            last.stepped.append({id(p) for p in params})
            self.seen.updates[-1] = self._closed(last, params, self.closed)
            self.optimizers.add(id(opt))
            self._end_if(  # (more may join)
                self.ending
                and not self.seen.updates[-1].elsewhere
                and len(last.optimizers) >= len(self.optimizers)
            )
            return
        self._end_if(self.ending)  # the update before was the last: this step is another's
        if not fed and not any(p.grad is not None and bool(p.grad.any()) for p in params):
            return
        kept, zeroed = self.micro[self.cut :], self.micro[: self.cut]
        let_go = self._let_go_zeroed(kept, zeroed)
        kept = objectives(kept, {id(p) for p in params})
        update = Open([], {}, {}, {}, kept, self.blind, self.terms(kept, self.fetched))
        update.fetched = self.fetched
        # crossed: an epoch ended while it was open, and the code zeroed no micro-batch fed
        # after that end (the left-over window zeroed at the next epoch's start, not zeroing
        # inside every window whose windows cross epochs)
        let_go_from(update, let_go)
        update.crossed = self.straddles and self.cut <= self.held_at_end
        update.before_end = self.held_at_end - self.cut if update.crossed else 0
        update.clip_bounds, update.norm_clipped = self.clip_bounds, self.norm_clipped
        update.unscaled, update.scaled_clip = self.unscaled, self.scaled_clip
        update.params, update.optimizers = params, [id(opt)]
        update.stepped = [{id(p) for p in params}]
        self.optimizers.add(id(opt))
        self.open = update
        self.seen.updates.append(self._closed(update, params, self.carried or {}))
        self.first = {}  # a torch optimizer stepped: what moved before was not an update by hand
        # (a flush after the epoch's end, stepping what came before it alone, crosses none)
        # (kept on both sides: micro-batches zeroed before the end, a probe's, held none)
        self.seen.crossed += self.straddles and self.cut < self.held_at_end < len(self.micro)
        self.closed = self.carried or {}  # another optimizer of the same update reads it
        stepped = {id(p) for p in params}  # losses on what was stepped, never reached: let go
        self.pending = [c for c in self.pending if stepped.isdisjoint(map(id, c.under))]
        self._anew()
        made = len(self.seen.updates)
        if self.steps is not None:
            enough = made >= self.steps
        else:  # an epoch's end, or a run with none in sight (batches drawn at random, a
            self.seen.whole = self.past_an_epoch(made)  # long one)
            self.seen.capped = made >= self.longest and not self.seen.whole
            enough = self.seen.capped or self.seen.whole
        # an update whose optimizer stepped params no loss of it reached may be joined by the
        # next optimizer's step (a frozen backbone's optimizer stepped before the head's): the
        # run ends at the next step instead, once that one has joined it or is another update
        # or (fewer optimizers than the run has stepped) by another's step, each set's updates
        # read apart
        self.ending = enough and (
            self.seen.updates[-1].elsewhere or len(update.optimizers) < len(self.optimizers)
        )
        self._end_if(enough and not self.ending)

    def joined_bounds(self) -> list[dict[int, float]]:
        """Return the clip bounds of the update this step may join (ClipHooks.joined_bounds):
        the open one's, closed by another optimizer's step since the last backward()."""
        if self.open is None or self.open.clip_bounds is self.clip_bounds:
            return []
        return [self.open.clip_bounds]

    def _end_if(self, enough: bool) -> None:
        """End the code's run here (Enough) where the watch has what it needs."""
        if enough:
            self.seen.ended, self.ended_on = True, threading.get_ident()
            raise Enough

    def halted(self, stepping: bool = False) -> bool:
        """Return whether the watch has ended the code, raising Enough again until it ends.

        Code that goes on after its end caught it (a bare `except:` around each step) is
        ended again at the next seam it enters, each a catch counted (Watched.caught): what it
        does after its end (a zero_grad() the catch skipped) is never read. Code that catches
        it every time (a `try` that holds its fetch and `continue`s) runs on unread after
        MOST_CAUGHT catches, its lrs still held at 0 (True: read nothing). Read nothing, and
        raise nothing, on another thread than the one ended (a thread that prefetches
        batches would die, and the code wait for its batches forever) nor while the end
        unwinds (a `finally` or `except BaseException:` that evaluates or saves, then
        raises again: it runs as it would), but at an optimizer step (stepping: a handler
        that trains again, a retry, is ended there)."""
        if not self.seen.ended:
            return False
        unwinding = isinstance(sys.exc_info()[1], Enough)  # (the same end: no catch yet)
        if (
            self.seen.caught >= MOST_CAUGHT
            or threading.get_ident() != self.ended_on
            or (unwinding and not stepping)
        ):
            return True
        self.seen.caught += not unwinding
        raise Enough

    def _closed(
        self, update: Open, params: list[Tensor], carried: dict[int, Tensor | None]
    ) -> Update:
        """Read what the steps applied to params and close the update; one that cannot be
        read is unread (not judged), never an error raised into the code's step."""
        try:
            self._read(update, params, carried)
            # (a part's terms told by the update's own fetches: another optimizer's step of it
            # reads it again after the next update's count began)
            terms = functools.partial(self.terms, fetched=update.fetched)
            closed = close(update, max(tolerance_of(update.params), self.precision), terms)
            if not finite(closed):
                closed = replace(unread(closed.tol), nonfinite=True)
        except Exception:
            closed = unread(tolerance_of(update.params))
        # (the code's own unscaling, .grad / scaler.get_scale() by hand, applied 1 / scale of
        # what backward() left: undone, no bypass; a scale of 1 changes nothing)
        bypassed = 0.0 if update.unscaled else max((mb.scaled for mb in update.micro), default=0)
        by, _ = scaled_by(closed.aa, closed.bb, closed.ab, closed.tol)
        if bypassed <= 1 or (by is not None and abs(by * bypassed - 1) <= 1e-2):
            bypassed = 0.0
        return replace(
            closed, unscaled=update.unscaled, scaled_clip=update.scaled_clip, bypassed=bypassed
        )

    def _read(self, update: Open, params: list[Tensor], carried: dict[int, Tensor | None]) -> None:
        for p in params:
            key = id(p)
            update.applied[key] = None if p.grad is None else p.grad.detach().clone()
            raw = self.raw[key] if key in self.fresh else update.applied[key]
            update.before[key] = self.prior.get(key, raw)
            update.carried[key] = carried.get(key)

    def terms(self, micro: list[MicroBatch], fetched: int) -> bool:
        """Return whether the update's micro-batches are terms of one objective rather than
        batches of data (objectives.are_terms), fetched: the batches fetched for it."""
        return are_terms(micro, fetched, 0 < self.all_fetched < self.all_micro)

    def past_an_epoch(self, made: int) -> bool:
        """Return True once an update follows an epoch's end that updates preceded (a loop that
        lists its loader before training runs it out first: its next end counts)."""
        return any(0 < e < made for e in self.ends)

    def dropped(self) -> None:
        """Let go of the micro-batches of a step the loss scaler skipped (inf or nan)."""
        self._anew()
        self.seen.skipped += 1


def tolerance_of(params: list[Tensor]) -> float:
    """Return an update's relative tolerance: the audit's, for its least precise param."""
    return max((checks.tolerance(p.dtype, steps=True) for p in params), default=1e-4)


def _lr_values(opt: torch.optim.Optimizer) -> list[Any]:
    """Return each param group's lr as it is now (a tensor lr copied: zero_lr fills it)."""
    lrs = [g.get("lr") for g in opt.param_groups]
    return [lr.clone() if isinstance(lr, Tensor) else lr for lr in lrs]
