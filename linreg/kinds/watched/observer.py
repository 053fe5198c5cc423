"""What the watcher does at each of torch's seams (seams.py): reads a loss the code computed,
notes which losses each backward() reached and what .grad held, closes an update when the
optimizers step (or ends the code), and puts back what the watched steps changed."""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data.dataloader import _BaseDataLoaderIter

from linreg import checks
from linreg.kinds.training_loop.calls import autocast_now, tensors_in
from linreg.kinds.training_loop.labels import BROADCASTING, compared
from linreg.kinds.training_loop.watcher import zero_lr
from linreg.kinds.watched.clips import ClipHooks
from linreg.kinds.watched.records import (
    Enough,
    LossCall,
    MicroBatch,
    Open,
    Update,
    Watched,
    close,
    count_of,
    graph,
    leaves,
    leaves_of,
    reduced_whole,
    unread,
)

# with no --steps: the updates watched at most when no epoch ends (get_batch() loops drawing
# at random, an epoch longer than this): the code is ended there and the note says so
MOST = 64
# losses computed with grad on that no backward() has reached yet, kept at most (an evaluation
# with grad on computes many: each holds its graph)
PENDING = 1024
# an epoch of known length up to this many batches is watched to its end (its last, short
# update is what short-last-batch reads)
LONGEST = 2048
# the fetched tensors kept to tell a cast target (y.float(), y.to(device)) as a batch's
KEPT_TENSORS = 64
# the fetched storages whose origin is remembered before those freed are forgotten
ORIGINS = 4096

# the losses read whose target is a distribution, never a batch's labels (a teacher's outputs,
# soft labels): their weight is solved for, as a penalty's, and never judged
SOLVED = ("kl_div",)


def _weighed(call: LossCall, counts: Tensor, grad: Tensor) -> None:
    """Note whether a reduction="none" loss's elements were all weighed alike (LossCall.alike)
    by what the backward() brought them: those whose loss is not 0 (an ignored target's, a
    padded position's, has no gradient to weigh, whatever a mask gives it)."""
    g = grad.detach().flatten()[counts.flatten()]
    if g.numel() > 1 and not torch.allclose(g, g[:1].expand_as(g), rtol=1e-5, atol=0.0):
        call.alike = False


def tolerance_of(params: list[Tensor]) -> float:
    """Return an update's relative tolerance: the audit's, for its least precise param."""
    return max((checks.tolerance(p.dtype, steps=True) for p in params), default=1e-4)


def _lr_values(opt: torch.optim.Optimizer) -> list[Any]:
    """Return each param group's lr as it is now (a tensor lr copied: zero_lr fills it)."""
    return [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"] for g in opt.param_groups]


def _precision(predictions: Any) -> float:
    """Return the tolerance of the predictions a loss was called on, or of the autocast it ran
    under (0.0: neither), where it is lower than float32's: a forward under torch.autocast
    computes in bfloat16 or float16 whatever its params' dtype (the labels' dtype is theirs)."""
    dtypes = []
    if isinstance(predictions, Tensor) and predictions.is_floating_point():
        dtypes.append(predictions.dtype)
    now = autocast_now()
    if now is not None:
        dtypes.append(now[1])
    return max((checks.tolerance(d, steps=True) for d in dtypes), default=0.0)


class Observer(ClipHooks):
    """What the watched code did so far, and what to put back after (the clip and loss-scaler
    hooks' part: ClipHooks)."""

    def __init__(self, steps: int | None) -> None:
        self.steps, self.seen = steps, Watched()
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
        self.dataset_of: dict[int, int] = {}  # each iterator's dataset
        self.epoch_of: dict[int, int] = {}  # each iterator's batches an epoch, where known
        # the updates before which each iterator's batches were zeroed
        self.zeroed_by: collections.Counter[int | None] = collections.Counter()
        # the datasets an iterator of more than one batch fed an update from
        self.long: set[int | None] = set()
        self.fed: set[int | None] = set()  # the datasets any update applied a batch of
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

    # --- losses ---------------------------------------------------------------------------
    def loss(self, name: str, fn: Callable[..., Tensor], args: Any, kwargs: Any, out: Any) -> None:
        """Read a loss the code computed with grad on: repeated per element on the same input,
        its summed per-element loss differentiated through the code's own graph. What cannot be
        read (legacy arguments, a graph that allows no second pass: reentrant checkpointing) is
        left unread, never raised into the code: a backward() that reaches it is not judged."""
        if self.busy or not isinstance(out, Tensor) or out.grad_fn is None:
            return
        self.busy = True
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
            given = bound.arguments
            if out.ndim != 0 and given.get("reduction") != "none":
                return
            self.precision = max(self.precision, _precision(given.get("input")))
            self._read_last(given.get("target"))
            if name in BROADCASTING:  # label-shape's, where a backward() reaches it
                compared(name, given.get("input"), given.get("target"), out, self.seen)
            if given.get("size_average") is not None or given.get("reduce") is not None:
                return  # the legacy arguments: not read
            reduction = given.get("reduction", "mean")
            by_code = reduction == "none"
            if by_code:  # the code reduces it (l.mean(), l.sum() / n): read as a summed
                per, reduction = out, "sum"  # loss's, its coefficient the code's (reduced_whole)
            else:
                given["reduction"] = "none"
                both = (given.get("input"), given.get("target"))
                if name in BROADCASTING and all(isinstance(t, Tensor) for t in both):
                    # the shapes it broadcasts made equal first: the same elements, and no
                    # second warning of torch's (the code's own call gave it)
                    equal = torch.broadcast_tensors(*both)  # type: ignore[no-untyped-call]
                    per = fn(**{**given, "input": equal[0], "target": equal[1]})
                else:
                    per = fn(*bound.args, **bound.kwargs)
            under = leaves(per.grad_fn)
            grads = torch.autograd.grad(per.sum(), under, retain_graph=True, allow_unused=True)
            for p in under:  # its .grad as the watch found it, put back after
                if id(p) not in self.found:
                    self.found[id(p)] = (p, None if p.grad is None else p.grad.detach().clone())
            del self.pending[:-PENDING]  # losses no backward() reached: the latest
            fetched_by, fetched_from = self._fetched(given.get("target"))
            self.pending.append(
                LossCall(
                    out.grad_fn,
                    {id(p): g.detach() for p, g in zip(under, grads, strict=True) if g is not None},
                    count_of(name, per, given),
                    # a KL term's target is a distribution (a teacher's, soft labels): its
                    # weight is solved for, never judged, as a penalty's
                    name not in SOLVED and self._from_batch(given.get("target")),
                    _view(given.get("target")),
                    under,
                    _constant(given.get("target")),
                    name,
                    reduction,
                    by_code,
                    elements=out.numel(),
                    backwards=self.backwards,
                    fetched_by=fetched_by,
                    fetched_from=fetched_from,
                )
            )
            if by_code:  # the weight each element gets from the backward() that reaches it
                weighed = functools.partial(_weighed, self.pending[-1], out.detach() != 0)
                out.register_hook(weighed)  # type: ignore[no-untyped-call]
        except Exception:
            return
        finally:
            self.busy = False

    def _fetched(self, target: Any) -> tuple[int | None, int | None]:
        """Return the iterator that fetched a target's batch and its dataset (else the last
        to fetch one's)."""
        memory = _storage(target)
        last = (self.iterator, self.source)
        if memory is None:
            return last
        if memory in self.fetchers:
            return self.fetchers[memory]
        origin = self.origins.get(memory)
        alive = None if origin is None else origin[0]()
        return last if origin is None or _storage(alive) != memory else origin[1]

    def _from_batch(self, target: Any) -> bool:
        """Return whether a target is a fetched batch's: a view of its tensors, rows of one cast
        or moved (y.float(), y.to(device): a new storage, the batch's values), or the samples'
        own tensors stacked (a list of dicts, each sample's boxes: detectron2's)."""
        if _storage(target) in self.batched:
            return True
        return isinstance(target, Tensor) and (
            any(_cast(target, f) for f in self.batch_tensors)
            or _stacked(target, self.batch_tensors)
        )

    def ran_out(
        self, now: bool = False, at: tuple[int, int] | None = None, fresh: bool = False
    ) -> None:
        """Note an epoch's end: a DataLoader ran out (now), or a pass whose last batch was
        fetched is over: `at` (iterator, dataset) fetches again, a new pass begins (fresh:
        over any loader; zipped loaders end together), or the watch ends (at=None)."""
        over = [
            (it, data)
            for it, data in self.last_fetched.items()
            if at is None or fresh or at[0] == it or at[1] == data
        ]
        for it, _ in over:
            del self.last_fetched[it]
        if at is not None and not fresh and self._ahead(at, now, over):
            over = [(it, data) for it, data in over if it != at[0]]
            now = False
        ended = {it for it, _ in over} | ({at[0]} if now and at is not None else set())
        self.done |= ended
        self.ahead -= ended
        for it in ended:  # their last batches are not held past their passes (an evaluation
            self.unread_last.pop(it, None)  # pass's each N steps, never read by a loss)
        # an epoch's end is a training pass's: one during which a backward() ran (a validation
        # pass under no_grad, every N steps, mid-epoch, is none, over any dataset)
        ran = now and (at is None or self._trained_in(at[0]))
        if ran or any(self._trained_in(it) for it, _ in over):
            if not self.seen.updates or any(self.dataset_of.get(it) in self.fed for it in ended):
                self.ends.append(len(self.seen.updates))
            # (a validation pass with grad on, after the last backward(), is another's)
            # (zipped loaders' passes end one by one: each adds its own)
            trained = {it for it in ended if self._trained_in(it)}
            held = {id(c) for c in self.at_end}
            self.at_end += [
                c
                for c in self.pending
                if c.from_batch
                and c.backwards == self.backwards
                and c.fetched_by in trained
                and id(c) not in held
            ]
            if self.micro and not self.straddles:  # the open window runs on
                self.straddles, self.held_at_end = True, len(self.micro)

    def _ahead(self, at: tuple[int, int], now: bool, over: list[tuple[int, int]]) -> bool:
        """Return True, the pass's end put off, where a training pass (at: iterator, dataset)
        ran out (now), or asked past its last batch, before any loss read that batch: a
        wrapper that fetches ahead (accelerate's) still hands it on, so the pass ends at the
        next fetch of another pass, or at the watch's end."""
        it, data = at
        if it not in self.ahead and (it not in self.unread_last or not self._trained_in(it)):
            return False  # (a pass no backward() ran in, an evaluation's, ends no epoch)
        if not now and all(i != it for i, _ in over):
            return False
        self.unread_last.pop(it, None)
        self.ahead.add(it)
        self.last_fetched[it] = data
        return True

    def _trained_before(self, it: int | None) -> bool:
        """Return whether a backward() before the one under way ran in an iterator's pass."""
        return it is not None and self.backwards - 1 > self.began.get(it, -1)

    def _trained_in(self, it: int) -> bool:
        """Return whether a backward() ran since an iterator's pass began (or, for one whose
        start was not seen, at all)."""
        return self.backwards > self.began.get(it, -1)

    def fetch(self, batch: Any, at: tuple[int, int], epoch: int | None, yielded: int) -> None:
        """Count a batch a DataLoader's iterator (`at`: iterator, dataset) yielded, the
        `yielded`th of an epoch of `epoch` batches (None: not known), and keep its tensors'
        storages. An epoch of a known length up to LONGEST batches is watched to its end
        (updates <= batches); its last batch fetched, the pass ends at the next fetch (a
        fetcher that knows the length never asks past it: Lightning's)."""
        self.source, self.iterator = at[1], at[0]
        if yielded <= 1:  # a pass's first batch: its backward() calls are counted from here
            self.began[at[0]] = self.backwards
            self.begun_at[at[0]] = len(self.seen.updates)
        if epoch is not None and yielded >= epoch:
            self.last_fetched[at[0]] = at[1]
        self.yields[at[0]] = yielded
        self.dataset_of[at[0]] = at[1]
        if epoch is not None:
            self.epoch_of[at[0]] = epoch
        if epoch is not None and self.longest < epoch + 1 <= LONGEST + 1:
            self.longest = epoch + 1
        self.fetched += 1
        self.all_fetched += 1
        with contextlib.suppress(Exception):  # a tensor without storage: nothing kept
            fetched = tensors_in([batch], {})
            memories = {t.untyped_storage().data_ptr() for t in fetched}
            self.batched |= memories
            self.fetchers.update(dict.fromkeys(memories, at))
            if len(self.origins) > ORIGINS:  # those freed since: their memory is anyone's
                self.origins = {m: o for m, o in self.origins.items() if o[0]() is not None}
            self.origins.update(
                {t.untyped_storage().data_ptr(): (weakref.ref(t), at) for t in fetched}
            )
            self.batch_tensors.extend(fetched)
            self.unread_last[at[0]] = fetched

    def _read_last(self, target: Any) -> None:
        """Note that a loss read a target of an iterator's last batch fetched (a view of it):
        that batch was handed on. (Not its values: a batch's few class labels may equal the
        next one's; a target cast or moved only puts off the end of its pass, _ahead.)"""
        if not isinstance(target, Tensor) or not self.unread_last:
            return
        memory = _storage(target)
        for it, fetched in list(self.unread_last.items()):
            if any(_storage(t) == memory for t in fetched):
                del self.unread_last[it]

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
        if self.first and not self.seen.updates:  # no torch optimizer has stepped yet
            self.before_any += 1
            if self.before_any > MOST and self.moved():
                raise Enough  # updates made by hand: nothing the watch can read, ended here
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
        if any(c.by_code and c.elements == 1 for c in matched):  # one element: its weight
            nodes = [t.grad_fn for t in roots if t.grad_fn is not None]  # looks like a
            for c in matched:  # coefficient, so what uses it tells (reduced_whole)
                if c.by_code and c.elements == 1 and not reduced_whole(nodes, c.node):
                    c.alike = False
        self.open = None  # the update before is closed: its gradients are let go
        if len(self.micro) > self.cut and self._reset():  # the code zeroed .grad since the
            self.cut, self.carried = len(self.micro), {}  # last backward(): those are let go
        if self.carried is None:  # the update's first backward()
            self.fresh, self.prior, self.carried = set(), {}, {}
        for p in (p for c in matched for p in leaves_of(c)):  # what .grad holds as the
            if id(p) not in self.carried:  # update's first backward() to reach it begins (a
                # second model's loss, after the first's: its optimizer's zero_grad forgotten)
                self.carried[id(p)] = None if p.grad is None else p.grad.detach().clone()
        self.busy = True
        try:
            run()
        finally:
            self.busy = False
        # rows the code weighs itself (a mask, a class weight, a focal term) are not read
        reached = [c for c in matched if c.alike]
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
        for c in matched:  # reached: its graph is let go
            c.node = None
        if reached:
            epoch = min(  # the batches an epoch of the passes its losses' targets came from
                (self.epoch_of[c.fetched_by] for c in reached if c.fetched_by in self.epoch_of),
                default=None,
            )
            self.micro.append(MicroBatch(reached, self.source, shared, divided, epoch))
            self.all_micro += 1
        else:
            self.blind += 1

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

    # --- updates --------------------------------------------------------------------------
    def before(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.depth += 1
        if id(opt) not in self.seen.lrs:  # its state as the watch found it, put back after
            self.states.append((opt, copy.deepcopy(opt.state_dict())))
            self.seen.lrs[id(opt)] = [g["lr"] for g in opt.param_groups]  # a tensor: the same
            self.lr_values[id(opt)] = _lr_values(opt)  # object, and its value
        # the code's lrs, given back after the step: a checkpoint the code saves, or a
        # scheduler that reads them, sees its own, not the watch's 0
        self.held[id(opt)] = _lr_values(opt)
        zero_lr(opt)

    def after(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Close an update: the steps of several optimizers with nothing fed between them are
        one (one for the embeddings, one for the rest); a step fed nothing that applies nothing
        (a flush after an epoch that ended on a full window) is none; one fed nothing that
        applies a gradient is recorded: the same micro-batches move the params twice."""
        self.depth = max(self.depth - 1, 0)
        for group, lr in zip(opt.param_groups, self.held.pop(id(opt), []), strict=False):
            if isinstance(group["lr"], Tensor) and isinstance(lr, Tensor):
                group["lr"].copy_(lr)
            else:
                group["lr"] = lr
        if self.depth:  # the inner step of a wrapper optimizer: its outer step is the update
            return
        params = [p for g in opt.param_groups for p in g["params"]]
        fed = bool(self.micro or self.blind)
        last = self.open
        if not fed and last is not None and {id(p) for p in params} - {id(p) for p in last.params}:
            last.params += params  # another optimizer of the same update: read it again
            last.optimizers.append(id(opt))
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
        own = _iterators(kept)
        streams = self.stepping | own
        self.fed |= {self.dataset_of.get(it) for it in own if it is not None}
        # micro-batches zeroed before the update's own are let go, but a probe's: of an
        # iterator no update applied a batch of, that yielded one (a fixed batch taken once,
        # or a fresh iterator's first each time), beside a stream's batches (an iterator that
        # yielded more, fed an update before, or a later pass over a dataset one that yielded
        # more fed an update from: one-batch iterators on every side, next(iter(loader)) each
        # micro-batch, are no probe's), or one whose iterator's batch was zeroed before an
        # update before (a fixed probe's, taken once: fresh ones come from new iterators);
        # so is a whole pass over data no update applied, run between two steps (a gradient
        # probe over a loader of its own)
        idle = {
            it
            for it, n in self.yields.items()
            if it not in streams
            and (
                n <= 1
                or (
                    it in self.done  # (not replayed: itertools.cycle, a listed loader)
                    and self.begun_at.get(it) == len(self.seen.updates)
                    and self.dataset_of.get(it) not in self.fed
                )
            )
        }
        stream = all(
            it is not None
            and (
                it in self.stepping
                or self.yields.get(it, 0) > 1
                or self.dataset_of.get(it) in self.long
            )
            for it in own
        )
        self.long |= {
            self.dataset_of.get(it) for it in own if it is not None and self.yields.get(it, 0) > 1
        }
        let_go = [
            mb
            for mb in zeroed
            if not (
                _aside(mb, idle) and (stream or all(self.zeroed_by[it] for it in _iterators([mb])))
            )
        ]
        self.zeroed_by.update({it for mb in zeroed for it in _iterators([mb])})
        self.seen.probed += self.cut - len(let_go)
        self.stepping = streams
        update = Open([], {}, {}, {}, kept, self.blind, self.terms(kept))
        # crossed: an epoch ended while it was open, and the code zeroed no micro-batch fed
        # after that end (the left-over window zeroed at the next epoch's start, not zeroing
        # inside every window whose windows cross epochs)
        update.dropped = len(let_go)
        update.crossed = self.straddles and self.cut <= self.held_at_end
        loaders = _loaders(kept)
        update.dropped_counts = tuple(mb.count for mb in let_go if _loaders([mb]) & loaders)
        update.clip_bounds, update.norm_clipped = self.clip_bounds, self.norm_clipped
        update.unscaled, update.scaled_clip = self.unscaled, self.scaled_clip
        update.redone = _targets(let_go) <= _targets(kept)  # the same targets again
        update.foreign = _sources(let_go).isdisjoint(_sources(kept))  # another loader's
        update.params, update.optimizers = params, [id(opt)]
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
            self.seen.ended = True
            raise Enough

    def _closed(
        self, update: Open, params: list[Tensor], carried: dict[int, Tensor | None]
    ) -> Update:
        """Read what the steps applied to params and close the update; one that cannot be
        read is unread (not judged), never an error raised into the code's step."""
        try:
            self._read(update, params, carried)
            closed = close(update, max(tolerance_of(update.params), self.precision))
        except Exception:
            closed = unread(tolerance_of(update.params))
        return replace(closed, unscaled=update.unscaled, scaled_clip=update.scaled_clip)

    def _read(self, update: Open, params: list[Tensor], carried: dict[int, Tensor | None]) -> None:
        for p in params:
            key = id(p)
            update.applied[key] = None if p.grad is None else p.grad.detach().clone()
            raw = self.raw[key] if key in self.fresh else update.applied[key]
            update.before[key] = self.prior.get(key, raw)
            update.carried[key] = carried.get(key)

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

    def terms(self, micro: list[MicroBatch]) -> bool:
        """Return whether the update's micro-batches are terms of one objective rather than
        batches of data: a backward() on a graph an earlier one retained (each task's loss on
        one forward); micro-batches each of one label for all its rows, not the same label (a
        GAN's real and fake); or more backward() calls than the DataLoader batches fetched,
        some on targets no batch held (chunks of a fetched batch are views of it, and stay
        micro-batches)."""
        calls = [c for mb in micro for c in mb.losses]
        if any(mb.retained for mb in micro):  # a backward() on a graph an earlier one kept
            return True  # (retain_graph=True): each task's loss on one forward, not a batch
        labels = [c.constant for c in calls]
        made = not all(c.from_batch for c in calls)  # a target the code made (torch.ones(b))
        if len(micro) > 1 and None not in labels and len(set(labels)) > 1 and made:
            return True  # each micro-batch one label for all its rows, not the same: a GAN's
            # (where every target is a fetched batch's, batches of one label each are data)
        more = 0 < self.all_fetched < self.all_micro  # than batches, since the start
        return more and 0 < self.fetched < len(micro) and made

    def past_an_epoch(self, made: int) -> bool:
        """Return True once an update follows an epoch's end that updates preceded (a loop that
        lists its loader before training runs it out first: its next end counts)."""
        return any(0 < e < made for e in self.ends)

    def dropped(self) -> None:
        """Let go of the micro-batches of a step the loss scaler skipped (inf or nan)."""
        self._anew()
        self.seen.skipped += 1

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


def _same_kind(t: Tensor, u: Tensor) -> bool:
    return t.shape == u.shape and t.dtype == u.dtype and t.device == u.device


def _same(t: Tensor, u: Tensor) -> bool:
    return _same_kind(t, u) and torch.equal(t, u)


def length(it: _BaseDataLoaderIter) -> int | None:
    """Return the batches of the epoch a DataLoader's iterator runs, None where not known."""
    try:
        return len(it)
    except Exception:  # an IterableDataset without a length
        return None


def _sources(micro: list[MicroBatch]) -> set[int | None]:
    return {mb.source for mb in micro}


def _iterators(micro: list[MicroBatch]) -> set[int | None]:
    """Return the iterators that fetched the targets the micro-batches' losses were called on."""
    return {c.fetched_by for mb in micro for c in mb.losses}


def _aside(mb: MicroBatch, idle: set[int]) -> bool:
    """Return True if every target a micro-batch's losses read was fetched by an iterator that
    is no stream (idle: none of its batches an update applied, and it yielded one batch, or
    ran a whole pass between two steps): a probe's batch, its gradient read, then zeroed
    before the step."""
    its = _iterators([mb])
    return bool(its) and its <= idle


def _loaders(micro: list[MicroBatch]) -> set[int | None]:
    """Return the datasets whose loaders fetched the targets the micro-batches' losses were
    called on (a validation loader's pass between a batch and its loss is not the batch's)."""
    return {c.fetched_from for mb in micro for c in mb.losses}


def _targets(micro: list[MicroBatch]) -> set[tuple[Any, ...]]:
    """Return the views of the targets the micro-batches' losses were called on."""
    return {c.target for mb in micro for c in mb.losses if c.target is not None}


def _storage(t: Any) -> int | None:
    """Return the address of a tensor's storage (its views share it), None if not a tensor."""
    return t.untyped_storage().data_ptr() if isinstance(t, Tensor) else None


def _cast(t: Tensor, fetched: Tensor) -> bool:
    """Return whether t holds rows of a fetched tensor, cast or moved: the fetched rows at one
    of the offsets a split into chunks of len(t) rows starts at, equal to t in t's dtype and
    on its device, and t equal to them in theirs (a cast that loses nothing: 0.37 cast to an
    integer 0 is not the label 0), each row reshaped alike too (y.float().unsqueeze(1), as a
    binary cross-entropy takes labels)."""
    n, rows = (t.shape[0], fetched.shape[0]) if t.ndim and fetched.ndim else (0, 0)
    if not 0 < n <= rows or t.shape[1:].numel() != fetched.shape[1:].numel():
        return False
    if t.shape[1:] != fetched.shape[1:]:  # each row's elements in another shape
        t, fetched = t.reshape(n, -1), fetched.reshape(rows, -1)
    with torch.no_grad():
        values = fetched.detach().to(device=t.device, dtype=t.dtype)
        back = t.detach().to(device=fetched.device, dtype=fetched.dtype)
        starts = {*range(0, rows - n + 1, n), rows - n}
        return any(
            torch.equal(values[i : i + n], t) and torch.equal(fetched[i : i + n], back)
            for i in starts
        )


def _stacked(t: Tensor, fetched: Iterable[Tensor]) -> bool:
    """Return whether each row of t (rows of one or more elements: a label per sample is too
    easily equal to another's) is one of the fetched tensors, of its shape and dtype, by value:
    the samples' tensors stacked by the code (torch.stack([d["boxes"] for d in batch]))."""
    if t.ndim < 2 or not t.shape[0]:
        return False
    with torch.no_grad():
        own = [f for f in fetched if f.shape == t.shape[1:] and f.dtype == t.dtype]
        return len(own) >= t.shape[0] and all(
            any(torch.equal(row, f.to(row.device)) for f in own) for row in t.detach()
        )


def _view(t: Any) -> tuple[Any, ...] | None:
    """Return what tells one tensor's elements from another's: its storage, offset, shape and
    strides (chunks and slices of one batch share a storage, not a view)."""
    if not isinstance(t, Tensor):
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


def _constant(t: Any) -> float | None:
    """Return the one value of a target of two or more equal elements, else None."""
    if not isinstance(t, Tensor) or t.numel() < 2 or t.is_sparse:
        return None
    flat = t.detach().reshape(-1)
    return float(flat[0]) if bool((flat == flat[0]).all()) else None
