"""What the watcher does at each of torch's seams (seams.py): reads a loss the code computed
(losses.py) and the batches its DataLoaders yield (passes.py), notes which losses each
backward() reached and what .grad held, closes an update when the optimizers step (or ends the
code), and puts back what the watched steps changed (restore.py)."""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from linreg.kinds.watched.clips import ClipHooks
from linreg.kinds.watched.graphs import Leaves, graph, leaves, leaves_of, reduced_whole
from linreg.kinds.watched.heads import Head, number
from linreg.kinds.watched.loss_gradients import take
from linreg.kinds.watched.losses import LossReader
from linreg.kinds.watched.masks import masked
from linreg.kinds.watched.mixed import mixed
from linreg.kinds.watched.passes import Passes
from linreg.kinds.watched.records import LossCall, MicroBatch, Open, Watched
from linreg.kinds.watched.restore import PutBack
from linreg.kinds.watched.steps import Steps
from linreg.kinds.watched.ways import divisors, weighed

# with no --steps: the updates watched at most when no epoch ends (get_batch() loops drawing
# at random, an epoch longer than this): the code is ended there and the note says so
MOST = 64
# the fetched tensors kept to tell a cast target (y.float(), y.to(device)) as a batch's
KEPT_TENSORS = 64


class Observer(Steps, ClipHooks, LossReader, Passes, PutBack):
    """What the watched code did so far, and what to put back after (the optimizers' steps'
    part: Steps, first, its joined_bounds ClipHooks' own; the clip and loss-scaler hooks':
    ClipHooks; the losses': LossReader; the DataLoaders' passes': Passes; putting back:
    PutBack)."""

    def __init__(self, steps: int | None) -> None:
        self.steps, self.seen = steps, Watched()
        self.ended_on: int | None = None
        # the updates made when a DataLoader's pass over data an update applied (or before any
        # update) ran out: an epoch's end, which ends the watch (a probe loader's pass between
        # two steps ends none)
        self.ends: list[int] = []
        self.pending: list[LossCall] = []  # losses computed, no backward() has reached yet
        # those pending as a training pass ended, computed after its last backward(): the next
        # backward() that reaches a loss tells whether they were let go (Watched.unreached)
        self.at_end: list[LossCall] = []
        self.micro: list[MicroBatch] = []
        self.blind = 0
        self.carried: dict[int, Tensor | None] | None = None
        self.stale: dict[int, Tensor] = {}  # the params whose .grad carried held a gradient
        self.closed: dict[int, Tensor | None] = {}  # the last closed update's, for its others
        self.raw: dict[int, Tensor] = {}  # buffers: each param's .grad after a backward()
        self.fresh: set[int] = set()  # the params whose raw buffer this update's backward() set
        # each param's .grad before clipping, as at unscale_ or clip_grad_norm_'s call
        self.prior: dict[int, Tensor] = {}
        self.busy = False  # inside the watcher's own autograd calls, or a backward() already
        self.found: dict[int, tuple[Tensor, Tensor | None]] = {}  # each param's .grad at first
        self.states: list[tuple[torch.optim.Optimizer, dict[str, Any]]] = []  # as first stepped
        self.depth = 0  # optimizer steps under way: a wrapper's (accelerate's) holds its inner one
        self.ending = False  # the run ends at the next optimizer step (after)
        self.optimizers: set[int] = set()  # the ids of those that stepped an update
        self.open: Open | None = None  # the last update, read again if another optimizer steps
        self.scalers: dict[int, torch.amp.GradScaler] = {}  # the loss scalers that unscaled
        # the storages of the scales GradScaler.scale's products in this update were
        # multiplied by (seams._noted: a scale, not the code's weight)
        self.scales: dict[int, float] = {}  # (and their values: a storage freed is reused)
        self.leaves = Leaves()  # the leaves under each loss computed since the last backward()
        self.kept: dict[int, tuple[Any, dict[str, Any]]] = {}  # schedulers, scalers: as found
        self.lr_values: dict[int, list[Any]] = {}
        self.first: dict[int, tuple[Tensor, Tensor]] = {}  # the params at the first backward()
        self.before_any = 0  # backward() calls before any optimizer stepped
        self.longest = MOST  # the updates watched at most with no --steps (an epoch's, if known)
        self.straddles = False  # an epoch ended while the open update held micro-batches
        self.held_at_end = 0  # how many it held then (more after: it crosses the end)
        self.cut = 0  # micro-batches before it: their gradients zeroed by the code, not stepped
        # each param's .grad as the last backward() left it (the tensor's id, whether not 0)
        self.left: dict[int, tuple[int, bool]] = {}
        self.fetched = 0  # DataLoader batches since the last update
        self.kept_graph: set[int] = set()  # the inner nodes of graphs retained this update
        self.kept_roots: list[Any] = []  # their roots, held so that their ids stay theirs
        self.all_fetched = self.all_micro = 0  # batches and micro-batches since the start: a
        # fetcher that fetches ahead (accelerate's) counts a window's batches in the one before
        self.last_fetched: dict[int, int] = {}  # iterator -> dataset, each whose last
        # batch was fetched: its pass is over at its next fetch, a new pass over its dataset,
        # or the watch's end (not at another loader's fetch: two loaders zipped)
        self.source: int | None = None  # the dataset of the last batch fetched
        self.iterator: int | None = None  # the iterator that fetched it
        self.heads: dict[int, Head] = {}  # each loss head's number: its record (heads.number)
        # each iterator's last batch fetched (its tensors), until a loss reads a target of it:
        # a wrapper that fetches ahead (accelerate's) runs the DataLoader out before it hands
        # the code its last batch, whose pass then ends as a pass whose last batch was fetched
        self.unread_last: dict[int, list[Tensor]] = {}
        self.ahead: set[int] = set()  # iterators whose pass's end waits for its last batch
        self.precision = 0.0  # the update's losses' lowest precision, as a tolerance
        self.held: dict[int, list[Any]] = {}  # each stepping optimizer's lrs, as the code set
        self.backwards = 0  # the backward() calls watched
        self.began: dict[int, int] = {}  # each iterator's: backward() calls as its pass began
        self.batched: set[int] = set()  # their tensors' storages
        # each such storage's iterator (the one fetching it) and that iterator's dataset
        self.fetchers: dict[int, tuple[int, int]] = {}
        # each storage fetched, past its update: the tensor (weakly: no batch kept alive) and
        # the same (iterator, dataset), so a probe batch fetched once and fed before every
        # update is told by its own pass; and the iterators whose batches updates applied
        self.origins: dict[int, tuple[weakref.ref[Tensor], tuple[int, int]]] = {}
        self.stepping: set[int | None] = set()
        self.yields: dict[int, int] = {}  # the batches each iterator yielded so far
        self.rows: dict[int, int] = {}  # each fetched tensor's storage: its batch's samples
        # the latest fetched tensors whose batch's samples are known, kept past an update (a
        # loader that fetches ahead: timm's PrefetchLoader)
        self.samples: collections.deque[weakref.ref[Tensor]] = collections.deque(
            maxlen=KEPT_TENSORS
        )
        self.dataset_of: dict[int, int] = {}  # each iterator's dataset
        self.epoch_of: dict[int, int] = {}  # each iterator's batches an epoch, where known
        # the updates before which each iterator's batches were zeroed
        self.zeroed_by: collections.Counter[int | None] = collections.Counter()
        # the datasets an iterator of more than one batch fed an update from
        self.long: set[int | None] = set()
        # the loaders (dataset, sampler) any update applied a batch of, and each iterator's
        self.fed: set[tuple[int, int] | None] = set()
        self.loader_of: dict[int, tuple[int, int]] = {}
        self.done: set[int] = set()  # the iterators whose pass ended
        self.begun_at: dict[int, int] = {}  # the updates made when each iterator's pass began
        # the tensors themselves, the latest fetched (cast targets: _cast): a pass over the
        # data before training keeps no more than these alive
        self.batch_tensors: collections.deque[Tensor] = collections.deque(maxlen=KEPT_TENSORS)
        self.clip_bounds: dict[int, float] = {}  # param id -> clip_grad_value_'s bound, in
        # this update (the least, clipped twice)
        self.clipped: set[int] = set()  # params clipped in this update: before, the first's
        self.norm_clipped = False  # clip_grad_norm_ was called in this update
        self.unscaled = False  # a loss scaler unscaled in this update
        self.scaled_clip = False  # torch's clipping changed them before that unscale_
        self.changed: set[int] = set()  # params whose gradients torch's clipping changed

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
