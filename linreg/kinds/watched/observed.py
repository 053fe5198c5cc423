"""What the watcher holds between torch's seams (Observed, the Observer's state: each field
said once, here; the Observer's parts, steps.py, clips.py, losses.py, passes.py and
restore.py, each declare those they read and write)."""

from __future__ import annotations

import collections
import weakref
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.by_hand import Noted
from linreg.kinds.watched.graphs import Leaves
from linreg.kinds.watched.heads import Head
from linreg.kinds.watched.kept import Watched
from linreg.kinds.watched.records import LossCall, MicroBatch, Open

# with no --steps: the updates watched at most when no epoch ends (get_batch() loops drawing
# at random, an epoch longer than this): the code is ended there and the note says so
MOST = 64
# the fetched tensors kept to tell a cast target (y.float(), y.to(device)) as a batch's
KEPT_TENSORS = 64


class Observed:
    """What the watched code did so far, and what to put back after."""

    def __init__(self, steps: int | None) -> None:
        self.steps, self.seen = steps, Watched()
        self.ended_on: int | None = None
        # the updates made when a DataLoader's pass over data an update applied (or before any
        # update) ran out: an epoch's end, which ends the watch (a probe loader's pass between
        # two steps ends none)
        self.ends: list[int] = []
        self.pending: list[LossCall] = []  # losses computed, no backward() has reached yet
        # the whole sums and means taken since, each a loss written by hand maybe (by_hand.py)
        self.hand: list[weakref.ref[Noted]] = []
        self.calling = 0  # torch loss functions' calls under way (their own sums are theirs)
        self.read_torch = False  # a backward() reached a torch loss the watcher read
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
        self.still: dict[int, list[tuple[Tensor, Tensor]]] = {}  # its params zero_lr held
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
        # the tensors themselves, the latest fetched (cast targets: batch_values.cast): a pass
        # over the data before training keeps no more than these alive
        self.batch_tensors: collections.deque[Tensor] = collections.deque(maxlen=KEPT_TENSORS)
        self.clip_bounds: dict[int, float] = {}  # param id -> clip_grad_value_'s bound, in
        # this update (the least, clipped twice)
        self.clipped: set[int] = set()  # params clipped in this update: before, the first's
        self.norm_clipped = False  # clip_grad_norm_ was called in this update
        self.unscaled = False  # a loss scaler unscaled in this update
        self.scaled_clip = False  # torch's clipping changed them before that unscale_
        self.changed: set[int] = set()  # params whose gradients torch's clipping changed
