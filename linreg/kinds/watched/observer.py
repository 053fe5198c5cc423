"""What the watcher does at each of torch's seams (seams.py): reads a loss the code computed
(losses.py) and the batches its DataLoaders yield (passes.py), notes which losses each
backward() reached and what .grad held, closes an update when the optimizers step (or ends the
code), and puts back what the watched steps changed (restore.py)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from linreg.kinds.watched.by_hand import HandReader
from linreg.kinds.watched.clips import ClipHooks
from linreg.kinds.watched.graphs import graph, leaves, leaves_of, reduced_whole
from linreg.kinds.watched.heads import number
from linreg.kinds.watched.loss_gradients import take
from linreg.kinds.watched.losses import LossReader
from linreg.kinds.watched.masks import masked
from linreg.kinds.watched.mixed import mixed
from linreg.kinds.watched.observed import MOST, Observed
from linreg.kinds.watched.passes import Passes
from linreg.kinds.watched.records import MicroBatch
from linreg.kinds.watched.restore import PutBack
from linreg.kinds.watched.steps import Steps
from linreg.kinds.watched.ways import divisors, scaler_scale, weighed


class Observer(Steps, ClipHooks, LossReader, HandReader, Passes, PutBack, Observed):
    """What the watched code did so far, and what to put back after (the optimizers' steps'
    part: Steps, first, its joined_bounds ClipHooks' own; the clip and loss-scaler hooks':
    ClipHooks; the losses': LossReader; the DataLoaders' passes': Passes; putting back:
    PutBack; what it holds, each field said once: Observed)."""

    # --- backward -------------------------------------------------------------------------
    def backward(
        self,
        roots: list[Tensor],
        run: Callable[[], None],
        retained: bool = False,
        divided: tuple[str, int] = ("", 1),
    ) -> None:
        if self.busy:
            run()
            return
        self.backwards += 1
        self.leaves.clear()  # (the graph is freed: a node's id may be another's)
        if self.first and not self.seen.updates:  # no torch optimizer has stepped yet
            self.before_any += 1
            if self.before_any > MOST and self.moved():
                self._end_if(True)  # updates made by hand: nothing the watch can read, ended
        # its nodes but the leaves' (every graph on the same params shares those)
        under = graph([t.grad_fn for t in roots if t.grad_fn is not None], accumulators=False)
        shared = not under.isdisjoint(self.kept_graph)  # on a graph an earlier one retained
        if retained:  # kept (the code retained it anyway) so its ids stay its own
            self.kept_roots += [t.grad_fn for t in roots if t.grad_fn is not None]
            self.kept_graph |= under
        if not self.first and not self.seen.updates:  # to see an update made by hand
            self.first = {
                id(p): (p, p.detach().clone())
                for t in roots
                if t.grad_fn is not None
                for p in leaves(t.grad_fn)
            }
        matched = [c for c in self.pending if id(c.node) in under]
        self.read_torch = self.read_torch or bool(matched)
        # (none read: a loss written by hand, where one is read; by_hand.py)
        matched = matched or self.by_hand(under, retained)
        ids = {id(c.node) for c in matched}
        on_way = [weighed(t.grad_fn, ids, self.scales) for t in roots if matched]
        for c in matched:  # each loss's head, numbered as the watch met those trained on
            c.head = number(self.heads, c.nearest, c.piece, c.source)
            c.weights = next((w[id(c.node)] for w in on_way if id(c.node) in w), None)
        # targets mixed on one prediction (mixup's): one loss each (of: the calls it is of)
        calls, of = mixed(matched)
        self.busy = True  # their gradients, before this backward() frees the graph
        try:
            failed = {id(c) for c in take(calls)}
            masked(calls, [t.grad_fn for t in roots if t.grad_fn is not None], self._fetched_now)
        finally:
            self.busy = False
        if failed:  # left unread, as a loss whose gradients cannot be taken
            calls = [c for c in calls if id(c) not in failed]
            failed |= {id(c) for key in failed for c in of.get(key, ())}
            matched = [c for c in matched if id(c) not in failed]
            self.pending = [c for c in self.pending if id(c) not in failed]
        read = {id(c.node) for c in matched}  # the code's own division by a framework's count
        again = divided[1] > 1 and all(  # (loss / k inside accelerate's accumulate())
            divisors(t.grad_fn, read).count(divided[1]) >= 2 for t in roots
        )
        # (ce + kl) / k: from k = 3 (at 2, the mean of two terms reads the same)
        again = again or (
            divided[1] > 2
            and all(divisors(t.grad_fn, read, past_sums=True).count(divided[1]) >= 2 for t in roots)
        )
        if any(c.by_code and c.elements == 1 for c in matched):  # one element: its weight
            nodes = [t.grad_fn for t in roots if t.grad_fn is not None]  # looks like a
            for c in matched:  # coefficient, so what uses it tells (reduced_whole)
                if c.by_code and c.elements == 1 and not reduced_whole(nodes, c.node):
                    c.alike = False
        scaled = max((scaler_scale(t.grad_fn, self.scales) for t in roots), default=0.0)
        self.open = None  # the update before is closed: its gradients are let go
        if len(self.micro) > self.cut and self._reset():  # the code zeroed .grad since the
            self.cut, self.carried = len(self.micro), {}  # last backward(): those are let go
            self.stale = {}
        if self.carried is None:  # the update's first backward()
            self.fresh, self.prior, self.carried, self.stale = set(), {}, {}, {}
        for key, p in list(self.stale.items()):  # zeroed since (one model's zero_grad, right
            if p.grad is None or not bool(p.grad.any()):  # before its own backward()):
                self.carried[key] = None  # what it held is not carried into the step
                del self.stale[key]
        # what .grad holds as the update's first backward() to reach it begins (a second
        # model's loss, after the first's: its optimizer's zero_grad forgotten), whatever that
        # backward() reached it through (a penalty on every param, beside the first task's loss)
        for t in roots:
            for p in leaves(t.grad_fn) if t.grad_fn is not None else ():
                if id(p) not in self.carried:
                    self.carried[id(p)] = None if p.grad is None else p.grad.detach().clone()
                    if p.grad is not None and bool(p.grad.any()):
                        self.stale[id(p)] = p
        self.busy = True
        try:
            run()
        finally:
            self.busy = False
        # rows the code weighs itself (a mask, a class weight, a focal term) are not read
        reached = [c for c in calls if c.alike]
        gone = {id(c) for c in matched}
        if matched:
            self._let_go(gone)
        self.pending = [c for c in self.pending if id(c) not in gone]
        for c in reached:  # the gradients as this backward() left them, into kept buffers
            for p in leaves_of(c):
                if p.grad is not None:
                    self.fresh.add(id(p))
                    self.left[id(p)] = (id(p.grad), bool(p.grad.any()))
                    kept = self.raw.get(id(p))
                    if kept is not None and kept.shape == p.grad.shape:
                        kept.copy_(p.grad)
                    else:
                        self.raw[id(p)] = p.grad.detach().clone()
        for c in [*matched, *calls]:  # reached: its graph is let go
            c.node = c.output = None
        if reached:
            epoch = min(  # the batches an epoch of the passes its losses' targets came from
                (self.epoch_of[c.fetched_by] for c in reached if c.fetched_by in self.epoch_of),
                default=None,
            )
            self.micro.append(
                MicroBatch(
                    reached,
                    self.source,
                    shared,
                    divided,
                    epoch,
                    (reached[0].fetched_by, reached[0].fetched_at),
                    again,
                    scaled,
                )
            )
            self.all_micro += 1
        else:
            self.blind += 1

    def _fetched_now(self) -> list[Tensor]:
        """Return the tensors of the update's batches, and the latest fetched (a loader that
        fetches ahead): those that may tell a mask of the code's (masks.py)."""
        return [*self.batch_tensors, *(t for r in self.samples if (t := r()) is not None)]

    def _let_go(self, gone: set[int]) -> None:
        """Count the losses on fetched batches, computed since the backward() before, that this
        one (reaching others: gone) let go: strays within a pass, or an epoch's last ones."""
        ended = {id(c) for c in self.at_end}
        skipped = [
            c
            for c in self.pending
            if c.from_batch and c.backwards == self.backwards - 1 and id(c) not in gone
        ]
        self.seen.unreached += sum(id(c) in ended for c in skipped)
        # strays: those of a pass that trained before this backward() (not a validation's)
        self.seen.strays += sum(
            id(c) not in ended and self._trained_before(c.fetched_by) for c in skipped
        )
        self.at_end = []

    def _reset(self) -> bool:
        """Return whether the code zeroed the gradients since the last backward() (zero_grad,
        set to None or filled with 0): every nn.Parameter that backward() gave one holds none."""
        params = [
            p
            for key in self.fresh
            if key in self.found and isinstance(p := self.found[key][0], nn.Parameter)
        ]
        if not params or not all(p.grad is None or not bool(p.grad.any()) for p in params):
            return False
        # every gradient the tensor the last backward() left all 0 (rows of no gradient, a
        # dead ReLU's): not zeroed, or zeroed losing nothing (.data.zero_() leaves no version
        # to tell); one it left not 0, now 0, was zeroed
        return not all(
            p.grad is not None and self.left.get(id(p)) == (id(p.grad), False) for p in params
        )

    def _anew(self) -> None:
        """Begin the next update: nothing fed, carried, fetched or retained yet."""
        self.micro, self.blind, self.carried, self.straddles = [], 0, None, False
        self.clip_bounds, self.clipped, self.norm_clipped = {}, set(), False
        self.unscaled = self.scaled_clip = False
        self.changed = set()
        self.fetched, self.batched, self.cut = 0, set(), 0
        self.fetchers = {}
        self.precision = 0.0
        self.batch_tensors.clear()
        self.kept_graph, self.kept_roots = set(), []
        self.scales.clear()  # (the one dict: a generator's products still note into it)
