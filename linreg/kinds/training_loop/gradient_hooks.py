"""What each gradient hook of the Watcher keeps (GradientHooks): a param's .grad as the
update's first backward() reaches it and as backward() left it; what a loss scaler's unscale_
divided, and the scale; what each call of torch's clipping found, and whose; whether a
backward() found .grad zeroed since the one before (`zeroed_in`: zero_grad inside an
accumulation window). The state they read and write is the Watcher's (watcher.py); hooks.py
installs them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping

import torch
from torch import Tensor

from linreg.kinds.training_loop.calls import (
    Call,
    apart,
    first_value,
    input_key,
    memory_of,
    within,
)
from linreg.kinds.training_loop.ledger import Observed, flat, mask
from linreg.kinds.training_loop.measure import clipping


class GradientHooks:
    """The Watcher's gradient, loss-scaler and clipping hooks; the attributes they read and
    write are the Watcher's (set in Watcher.__init__)."""

    params: list[Tensor]
    ids: set[int]  # the params' ids
    start: list[Tensor]  # the params as the run's first backward() found them
    based: bool  # that backward() has come
    versions: list[int] | None  # each param's version counter then
    seen: Observed
    latest: dict[int, Tensor]  # each param's grad after its last backward()
    carried: dict[int, Tensor | None]  # its grad as the update's first began
    unscaled: dict[int, Tensor]  # each param's grad after GradScaler.unscale_
    scale: float | None  # the scale GradScaler.unscale_ divided by
    clip_found: list[Tensor]  # the grads as each of torch's clipping found them
    clip_covered: list[Tensor]  # the params each of those calls clipped
    unscaled_at: int  # how many of those came before GradScaler.unscale_
    live_now: tuple[bool, ...] | None  # which params the update's backward() calls train
    depth: int  # optimizer steps under way
    backward_before: int  # the clock of the backward() before the latest
    # per backward() of the update (its clock) that found what the one before left: how many
    # params it found zeroed, how many not, and the clock of that backward() before
    resets: dict[int, list[int]]

    def ours(self, opt: torch.optim.Optimizer) -> bool:
        """Return True if the optimizer steps any of the model's parameters."""
        return any(id(p) in self.ids for g in opt.param_groups for p in g["params"])

    def incoming(self, p: Tensor, grad: Tensor) -> None:
        """Keep what a param's .grad holds as the update's first gradient reaches it; count a
        backward() among the run's events, once however many params it reaches."""
        del grad
        if not self.based:
            self.based = True
            found = [q.detach().clone() for q in self.params]
            if not self.seen.steps and any(
                not torch.equal(a, b) for a, b in zip(found, self.start, strict=True)
            ):
                self.start = found
                self.versions = [q._version for q in self.params]
        if self.seen.backward_at != self.seen.clock:
            self.seen.clock += 1
            self.backward_before, self.seen.backward_at = self.seen.backward_at, self.seen.clock
            # the params this backward() trains: those frozen in each of the update's train
            # nothing in it, whatever the loop unfreezes before its step
            now = tuple(q.requires_grad for q in self.params)
            was = self.live_now
            self.live_now = now if was is None else tuple(map(operator.or_, was, now))
        if not self.carried:  # the update's first: a clip or a norm logged before is not its
            self.clip_found, self.clip_covered, self.unscaled_at = [], [], 0
        if id(p) not in self.carried:
            self.carried[id(p)] = None if p.grad is None else p.grad.detach().clone()
        # what the update's backward() before left, gone before this one for every param it
        # reaches (zero_grad between the micro-batches of a window, not one layer's .grad
        # dropped to freeze it): the forwards fed before that backward() may weigh 0
        # (zeroed_in). (Inside an optimizer step: a closure's, LBFGS's, zeroed each call.)
        left = self.latest.get(id(p))
        if left is not None and not self.depth and bool(left.any()):
            tally = self.resets.setdefault(self.seen.backward_at, [0, 0, self.backward_before])
            tally[0 if p.grad is None or not p.grad.any() else 1] += 1

    def accumulated(self, p: Tensor) -> None:
        """Keep a param's gradient as backward() left it."""
        if p.grad is not None:
            self.latest[id(p)] = p.grad.detach().clone()

    def unscaled_by(self, opt: torch.optim.Optimizer, scale: float) -> None:
        """Keep the gradients a loss scaler just divided by its scale, and the scale."""
        if self.ours(opt):
            self.scale = scale
            self.unscaled_at = len(self.clip_found)  # a clip before is of the scaled gradient
            own = {id(p) for g in opt.param_groups for p in g["params"]}
            for p in self.params:
                if p.grad is not None and id(p) in own:
                    self.unscaled[id(p)] = p.grad.detach().clone()

    def clipping(self, tensors: Collection[Tensor]) -> None:
        """Keep the gradients as each call of torch's clipping (clip_grad_norm_,
        clip_grad_value_, get_total_norm) in an update finds them, and which params' it was
        handed (tensors): after what the loop did to .grad itself (a division by the window's
        tokens), before the clip; a norm logged before that division is one more, not the one."""
        handed = {id(t) for t in tensors}
        if not any(p.grad is not None and id(p.grad) in handed for p in self.params):
            return  # another model's
        found = flat([p.grad for p in self.params], self.params)
        assert found is not None
        mine = [p.grad is not None and id(p.grad) in handed for p in self.params]
        covered = mask(mine, self.params, found.device)
        if (
            self.clip_found
            and torch.equal(found, self.clip_found[-1])
            and torch.equal(covered, self.clip_covered[-1])
        ):
            return  # get_total_norm, then the clip it called
        self.clip_found.append(found)
        self.clip_covered.append(covered)


def zeroed_in(
    calls: list[Call],
    resets: dict[int, list[int]],
    applied: Tensor | None,
    left: Tensor | None,
    held: Mapping[int, tuple[Tensor, int | None, int]],
    idle: Collection[int] = (),
    held_out: Callable[[Call], bool] = lambda c: False,
) -> tuple[bool, list[Call]]:
    """Return whether the loop zeroed inside the update, and the calls the update consumed.

    Zeroed (True): the loop zeroed every param's gradient between two backward() calls of an
    update (resets: GradientHooks'), applied what the last backward() left or a clip of it
    (left: unscaled where a loss scaler unscaled it; no gradient rebuilt by hand after:
    DP-SGD's), and a batch fed before the zeroing was not fed again after: of another draw,
    rows of one batch that those fed after do not hold (its chunks, or its rows one by one,
    zeroed between), or (a window fetched before its first forward) one of the data's
    batches (held: their memory) where those fed after are others of them, not a copy of it
    (an attack's, SAM's, a closure's second pass on the same batch).

    Where every batch fed before such a zeroing is fed again after (the same tensor, a view
    of it, or a copy the loop made of a batch of the data: its rows, of the same draw), that
    pass was a throwaway (a gradient norm logged, then the batch trained on as a copy): the
    update consumed the calls after the zeroing alone. So did one whose batch a pass that is
    no stream made (idle: a pass no update consumed a batch of, that ran out or made one
    batch): a probe's, its gradient read then zeroed before each step, taken once from a pass
    before training or from a fresh iterator each time (a second loader's pass, a batch of it
    zeroed inside every window, is a stream); and one on rows of the loop's own (held_out: a
    held-out set's). Else all the calls, as given."""
    after = max(
        (before for zeroed, kept, before in resets.values() if zeroed and not kept), default=0
    )
    if not after or applied is None or left is None:
        return False, calls
    if not (torch.equal(applied, left) or clipping(applied, left, 1e-4)):
        return False, calls
    kept = [c for c in calls if c.clock > after]
    keys, draws = {input_key(c) for c in kept}, {c.drawn for c in kept}
    memories = [memory_of(c) for c in kept]

    def copy(c: Call, k: Call) -> bool:
        """One of the two a batch of the data, the other a copy of its rows the loop made, and
        no other batch made since that one holds those rows (two copies, or two batches of
        equal rows, are no copy of each other: a window fetched whole, on identical rows)."""
        one, other = memory_of(c), memory_of(k)
        if (one in held) == (other in held) or c.drawn != k.drawn or c.row_keys != k.row_keys:
            return False
        batch, made = (one, k) if one in held else (other, c)
        values = first_value(made)
        since = held[batch][2] if batch is not None else 0
        return values is not None and not any(
            memory != batch and clock >= since and _equal(t, values)
            for memory, (t, _, clock) in held.items()
        )

    def again(c: Call) -> bool:  # the same batch, a view of it or a copy, fed again
        return input_key(c) in keys or any(within(c, k) or within(k, c) or copy(c, k) for k in kept)

    kept_passes = {held[m][1] for m in memories if m is not None and m in held}

    def aside(c: Call) -> bool:
        """A probe's batch: an idle pass's (told by its memory: not a copy, nor a row read
        outside a pass), or rows of the loop's own, whatever made them (a held-out loader's
        pass too)."""
        memory = memory_of(c)
        made = None if memory is None else held.get(memory)
        idle_pass = made is not None and made[1] in idle and made[1] not in kept_passes
        return idle_pass or held_out(c)

    def lost(c: Call) -> bool:
        if again(c) or aside(c):
            return False
        if c.drawn not in draws:
            return True
        memory = memory_of(c)
        ours = [k for k, m in zip(kept, memories, strict=True) if m == memory]
        if ours and all(apart(c, k) for k in ours):  # rows of the batch none after holds
            return True  # (its chunks run one by one, zeroed between)
        return memory in held and all(m in held and m != memory for m in memories)

    before = [c for c in calls if c.clock < after]
    if any(lost(c) for c in before):
        return True, calls
    if before and all(again(c) or aside(c) for c in before):
        return False, kept
    return False, calls


def _equal(t: Tensor, values: Tensor) -> bool:
    return t.shape == values.shape and t.dtype == values.dtype and torch.equal(t, values)
