"""What watched training code did: the losses it computed (`LossCall`), each backward() as a
micro-batch of them (`MicroBatch`), each update as it is read (`Open`) and as the numbers kept
of it (`Update`, closing.py's `close`), and the run (`Watched`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from linreg.kinds.watched.heads import Piece


class Enough(BaseException):
    """Raised from the step hook once the updates asked for were seen: ends the code cleanly.
    A framework that logs what ended its run (Ignite's engine) prints this message."""

    def __init__(self, *args: object) -> None:  # copied and pickled with its message
        super().__init__(*(args or ("linreg watch has seen what it needs and ends the run here",)))


@dataclass
class LossCall:
    """One loss the code computed with grad on: its output, its per-element gradients, and the
    count its mean divides by."""

    node: Any  # the loss output's grad_fn: a backward() reaches it or not (then let go: a
    # graph held past its backward() would keep autograd's accumulators, and their shapes)
    grads: dict[int, Tensor]  # per parameter (id): the gradient of the summed per-element loss
    count: float  # rows, elements or targets (not -100, class-weighted) a mean divides by
    from_batch: bool = True  # its target is (a view of) a tensor a DataLoader yielded
    target: tuple[Any, ...] | None = None  # its target's view: the same targets share it
    under: list[Tensor] = field(default_factory=list)  # the leaves that require grad under it
    constant: float | None = None  # the one value of a target of 2+ equal elements (a GAN's
    # "real" or "fake" label), else None
    name: str = ""  # the loss function's (cross_entropy, mse_loss, ...)
    reduction: str = "mean"  # as the code called it
    by_code: bool = False  # called with reduction="none": the code reduces its output
    # (by_code) every element weighed alike by what reached it from the backward() (a sum or
    # mean of any dims; not a mask or weights of the code's), and how many it has
    alike: bool = True
    elements: int = 0
    backwards: int = 0  # the backward() calls watched before it was computed
    fetched_by: int | None = None  # the DataLoader iterator that fetched its target's batch
    fetched_from: int | None = None  # the dataset of that DataLoader
    # (else the last to fetch one before it: a target cast or stacked from a batch's)
    # the iterator and dataset whose batch its target is, found (a view of it, or its rows
    # cast or moved), else None
    found: tuple[int, int] | None = None
    fetched_at: int = 0  # the batches that iterator had yielded as the loss was computed
    # its head's number (0: none found): losses of one function on two heads are two tasks
    # (terms.term_of); numbered as a backward() reaches it (heads.number), so a loss none
    # reaches (an evaluation's with grad on) numbers none
    head: int = 0
    nearest: frozenset[int] = frozenset()  # the params nearest its input (heads.head)
    piece: Piece | None = None  # the columns of its head's output it read (heads.piece)
    source: int | None = None  # the dataset whose batch its target is (_source), else the
    # last loader's to fetch (a target no batch holds: y standardized)
    # the numbers it was multiplied or divided by on its way to the root of the backward() that
    # reached it, through sums alone (graphs.weighed; None: something else, or unknown)
    weights: tuple[float, ...] | None = None
    # its per-element loss (the watch's own call), until the backward() that reaches it takes
    # its gradients (loss_gradients.take); then None, grads holding them
    per: Tensor | None = None
    # a loss the code reduces itself (reduction="sum" or "none"): the other counts it may
    # divide by (its class-weighted targets' own count: "targets"; its fetched batch's
    # samples, each several elements: "rows"), the one it meant read from the run
    # (watch_counts)
    others: dict[str, float] = field(default_factory=dict)
    # which target, as it was, at which params: the target tensor itself (a weak reference:
    # a view or address alone may be a freed one's, or a buffer the code refills), its
    # version, and per leaf under it (id) its version and its elements' sum (SAM's ascent
    # moves the params, in place or through .data, which keeps the version), as it was
    # computed: a backward() on the same again is a term of one objective (objectives.py)
    same: tuple[Any, int, dict[int, tuple[int, float]]] | None = None
    # the prediction it was called on (a weak reference): calls of one function on one
    # prediction, each on a target of its own, weighed by numbers, are one loss (mixed.py)
    predicted: Any = None
    # (by_code, two or more elements) its output, held till the backward() that reaches it
    # reads a mask of the code's on it (masks.py); the elements its mean counts (class-index
    # targets not ignored; None where class weights weigh them); those the mask keeps, once
    # read; and whether the watch's own pass through it is under way (its hook waits)
    output: Tensor | None = None
    counted: Tensor | None = None
    kept: Tensor | None = None
    taking: bool = False


@dataclass
class MicroBatch:
    """One backward(): the losses it reached."""

    losses: list[LossCall]
    source: int | None = None  # the dataset of the DataLoader batch fetched last before it
    retained: bool = False  # its backward() ran on a graph an earlier one retained
    # the framework whose backward() divided its loss by its accumulation count, and that
    # count (accelerate's Accelerator.backward: loss / gradient_accumulation_steps)
    divided: tuple[str, int] = ("", 1)
    epoch: int | None = None  # the batches an epoch of its DataLoader's pass holds, if known
    # its first loss's iterator and the batches it had yielded then (LossCall.fetched_at):
    # batches of one stream each come after a fetch of their own; a GAN's real and fake terms
    # after one (or after another loader's: latent codes from a loader of their own)
    drawn: tuple[int | None, int] = (None, 0)
    # the code divided its loss by the framework's count too, before the framework's own
    # division (the divisions by it between the loss and backward()'s root: 2 or more)
    again: bool = False

    @property
    def count(self) -> float:
        return sum(c.count for c in self.losses)

    def count_by(self, key: str) -> float:
        """Return its count where each loss divides by its count `key` (LossCall.others)."""
        return sum(c.others.get(key, c.count) for c in self.losses)


@dataclass
class Open:
    """An update as it is read: the params its optimizers stepped and, per param, what the steps
    applied, what the last backward() left (unscaled where it was) and what .grad held before
    the update's first backward(); the micro-batches that fed it."""

    params: list[Tensor]
    applied: dict[int, Tensor | None]
    before: dict[int, Tensor | None]
    carried: dict[int, Tensor | None]
    micro: list[MicroBatch]
    blind: int = 0  # backward() calls that reached no loss the watcher read
    terms: bool = False  # more backward() calls than DataLoader batches, not all on them
    fetched: int = 0  # the DataLoader batches fetched since the update before
    dropped: int = 0  # micro-batches before the code zeroed .grad: let go, not stepped
    # the counts (rows or targets) of those whose targets the loaders of the kept ones'
    # fetched, in turn
    dropped_counts: tuple[float, ...] = ()
    redone: bool = True  # those were on the targets of the ones kept (SAM, an attack, a closure)
    foreign: bool = False  # those came from another loader than the ones kept
    crossed: bool = False  # an epoch ended while it was open
    before_end: int = 0  # then: its micro-batches fed before that end
    clip_bounds: dict[int, float] = field(default_factory=dict)  # param id -> the bound
    # clip_grad_value_ clamped it to, where the code clipped so
    norm_clipped: bool = False  # clip_grad_norm_ was called in it
    optimizers: list[int] = field(default_factory=list)  # the ids of those that stepped it
    stepped: list[set[int]] = field(default_factory=list)  # each one's params (ids), in turn
    unscaled: bool = False  # a loss scaler unscaled its gradients (GradScaler.unscale_)
    scaled_clip: bool = False  # torch's clipping changed them before that unscale_


@dataclass(frozen=True)
class Update:
    """One update, kept as numbers (no gradient is kept): its micro-batches' counts and the
    inner products of their summed-loss gradients S_i, of what it applied beyond what .grad held
    (A), and of that before any clipping (B)."""

    counts: list[float]
    gram: Tensor  # <S_i, S_j>, float64
    sa: Tensor  # <S_i, A>
    sb: Tensor  # <S_i, B>
    aa: float
    bb: float
    ab: float
    carried: bool  # .grad held a gradient as the update's first backward() began
    applied_any: bool  # the steps had a non-zero gradient to apply
    blind: int = 0
    right: bool = False  # it applied the mean of its rows, or a clipping of it (then no gram)
    clipped: bool = False
    tol: float = 1e-4  # the relative tolerance of its params' dtype
    terms: bool = False  # its micro-batches are terms of one objective (a GAN's real and fake)
    dropped: int = 0  # micro-batches the code zeroed before the step (not among counts)
    # the counts (rows or targets) of those whose targets the loaders of the kept ones'
    # fetched, in turn
    dropped_counts: tuple[float, ...] = ()
    redone: bool = True  # those were on the targets of the ones kept
    foreign: bool = False  # those came from another loader than the ones kept
    crossed: bool = False  # an epoch ended while it was open
    before_end: int = 0  # then: its micro-batches fed before that end
    unreadable: bool = False  # its gradients could not be taken apart (sparse ones): not read
    nonfinite: bool = False  # (unreadable) they were not finite (NaN or inf): not read
    unscaled: bool = False  # a loss scaler unscaled its gradients (GradScaler.unscale_)
    scaled_clip: bool = False  # torch's clipping changed them before that unscale_: the
    # clip's bound held the still-scaled gradient (clip-before-unscale)
    # where a backward() reached losses of 2+ functions (a multi-task loss, mse + 0.5 *
    # cross_entropy): the inner products are over each micro-batch's term (its losses of one
    # function), not each micro-batch
    columns: tuple[Column, ...] = ()
    calls: int = 1  # the most loss calls a micro-batch's backward() reached (one term: heads'
    # means added, ce(out) + ce(aux), each a micro-batch's)
    norm_clipped: bool = False  # clip_grad_norm_ was called in it: a factor below 1 can clip
    # every loss its backward() calls reached had a target of one row (a micro-batch of one
    # row): its count is that row's elements, which a loss's own constant may equal
    one_row: bool = False
    divided: tuple[str, int] = ("", 1)  # the framework, and the count it divided every
    # micro-batch's loss by in its backward()
    again: bool = False  # the code divided every micro-batch's loss by that count too
    epoch: int | None = None  # the fewest batches an epoch of its micro-batches' passes holds
    norm: float = 0.0  # |what it applied|, where it applied what it held before (let through)
    # |what it applied| and |before|, where it applied a factor below 1 of what it held before
    # with no clip_grad_norm_ called: a clip by hand, or a division (watch_readings.by_hand)
    hand: float = 0.0
    hand_before: float = 0.0
    hand_ok: bool = False  # by_hand found it a clip by hand: read before it (_a_clipping)
    # where its params' run let a right update through ("shown") or clipped every one
    # ("blind"): a clip by hand may follow a division of .grad the watcher does not see
    # (fairseq's multiply_grads), so a clip of the correct update is right too
    hand_unseen: str = ""
    group: int = 0  # the params its optimizers stepped (their ids' hash): a clip is theirs
    elsewhere: bool = False  # its optimizers stepped params no loss of it reached (_elsewhere)
    # params none of its losses reached that applied a gradient beside those they did (a
    # learnable weight of its losses): set aside, not read (apart.set_aside)
    aside: int = 0
    # its optimizers (their ids' hash): each set's updates are read apart (a GAN's D and G)
    optimizers: int = 0
    # the inner products of PENALTIES, the gradients a penalty on the params gives (L2: the
    # params, L1: their signs; on the weights, or on the rest): <Q_k, Q_l>, <S_i, Q_k>,
    # <Q_k, A>, <Q_k, B>; None where the update applied its rows' mean (right)
    penalty: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
    zeroed: int = 0  # params backward() gave a gradient that the code zeroed whole before it
    # where its losses reached disjoint sets of the params stepped (two models, each its own
    # loss and optimizer, both stepped after both backward() calls): each set's update, read
    # on its own losses' rows (close)
    parts: tuple[Update, ...] = ()
    # its micro-batches' counts where their losses divide by another count (LossCall.others),
    # per key; and, where it applied the mean (right), the count that mean divided by
    others: tuple[tuple[str, tuple[float, ...]], ...] = ()
    right_total: float = 0.0

    @property
    def fed(self) -> bool:
        """Return True if any backward() fed the update."""
        return bool(self.counts) or self.blind > 0


@dataclass(frozen=True)
class Column:
    """One term of a micro-batch whose backward() reached losses of several functions: its
    calls of one function."""

    term: str  # its function: cross_entropy, mse_loss
    count: float
    from_batch: bool
    reduction: str  # "mean": one call, whose function took the mean itself; "sum": its calls
    # all summed; "": calls of its function added up (a loss per row or per step)
    calls: int = 1
    plain: bool = False  # every call of it reached its root times no number, through sums
    # alone (LossCall.weights: a Python 1.0 is none): the code weighed it by nothing
    # the numbers that weighed each call of it times its target's rows, where that is one
    # number for all (sum / len(y): 1; sum / len(y) / k: 1 / k), else None
    per_row: float | None = None


@dataclass
class Watched:
    """What the watched code did: its updates, and the micro-batches after the last."""

    updates: list[Update] = field(default_factory=list)
    leftover: list[MicroBatch] = field(default_factory=list)
    ended: bool = False  # the watcher ended the code once it had the updates asked for
    caught: int = 0  # the times the code caught that end and went on (Steps.halted)
    reached: bool = False  # an end reached the watch: the code caught none for good
    skipped: int = 0  # steps a loss scaler skipped (inf or nan): their micro-batches let go
    # micro-batches of a probe's batch (of a pass that is no stream) zeroed before a step
    probed: int = 0
    lrs: dict[int, list[Any]] = field(default_factory=dict)  # each optimizer's lrs, as set
    moved: bool = False  # params moved, yet no torch optimizer stepped: an update by hand
    crossed: int = 0  # updates whose micro-batches came from both sides of an epoch's end
    capped: bool = False  # ended at the most updates watched by default, no epoch's end seen
    whole: bool = False  # ended by default after an epoch's end (of any pass that trained)
    ran_out: bool = False  # the data ran out (an epoch's end) with micro-batches left unstepped
    # losses on a training pass's batches, computed after its last backward(), that the first
    # backward() after the pass's end (reaching others) did not reach: rows never applied
    unreached: int = 0
    strays: int = 0  # losses on fetched batches a backward() skipped within a pass: the code
    # computes losses it never trains on (a log), so those at an epoch's end tell nothing
    unrestored: list[str] = field(default_factory=list)  # what could not be put back, and why
    # the first loss call a backward() reached whose predictions and labels broadcast into
    # more entries than either holds (labels.broadcast): label-shape's
    broadcast: str = ""
    values: int = 0  # the calls of those losses of values a backward() reached
