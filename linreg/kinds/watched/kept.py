"""What is kept of watched training code once each update is closed (closing.py's `close`):
the update as numbers, no gradient kept (`Update`), a micro-batch's term of one function
(`Column`), and the run (`Watched`); records.py holds what is read while an update is open."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from linreg.kinds.watched.records import MicroBatch


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
    # a GradScaler scaled its micro-batches' losses (by more than 1) and nothing unscaled their
    # gradients, neither torch's unscale_ nor the code's own division by the scale: its scale
    # (the most), else 0: the optimizer stepped on them as they were (optimizer.step() where
    # scaler.step was meant)
    # backward() left its params gradients all 0, which the steps found as left (a loss
    # weighed by 0 in this update: a warm-up from 0), not None (no gradient reached them)
    zeros: bool = False
    bypassed: float = 0.0
    # where a backward() reached losses of 2+ functions (a multi-task loss, mse + 0.5 *
    # cross_entropy): the inner products are over each micro-batch's term (its losses of one
    # function), not each micro-batch
    columns: tuple[Column, ...] = ()
    calls: int = 1  # the most loss calls a micro-batch's backward() reached (one term: heads'
    # means added, ce(out) + ce(aux), each a micro-batch's)
    # every micro-batch's calls (two or more, of one function) each on other elements of one
    # fetched target tensor and a prediction of its own: a loss per step of a sequence,
    # loss += ce(out_t, y[:, t]) (terms.steps)
    steps: bool = False
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
    # the other counts each call of it may divide by (LossCall.others), summed, where every
    # call has them: a term may be read under one (watch_counts.terms_meant)
    others: tuple[tuple[str, float], ...] = ()


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
    by_hand: int = 0  # backward() calls that reached a loss written by hand, read (by_hand.py)
    # those that reached one on rows no DataLoader fetched (a generator of the code's own,
    # slices of a tensor): not read, its batch unseen
    unbatched: int = 0
    strays: int = 0  # losses on fetched batches a backward() skipped within a pass: the code
    # computes losses it never trains on (a log), so those at an epoch's end tell nothing
    unrestored: list[str] = field(default_factory=list)  # what could not be put back, and why
    # the first loss call a backward() reached whose predictions and labels broadcast into
    # more entries than either holds (labels.broadcast): label-shape's
    broadcast: str = ""
    values: int = 0  # the calls of those losses of values a backward() reached
