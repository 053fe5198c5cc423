"""What watched training code did: the losses it computed (`LossCall`), each backward() as a
micro-batch of them (`MicroBatch`), and each update as it is read (`Open`); kept.py holds the
numbers kept of it once closed (`Update`, closing.py's `close`) and the run (`Watched`).
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
    # the tensor its prediction is of (a view's base, weakly), and whether a loss before it,
    # no backward() between, was on a prediction of the same: columns of one output (out[:, k])
    of: Any = None
    shared: bool = False
    # (by_code, two or more elements) its output, held till the backward() that reaches it
    # reads a mask of the code's on it (masks.py); the elements its mean counts (class-index
    # targets not ignored; None where class weights weigh them); those the mask keeps, once
    # read; and whether the watch's own pass through it is under way (its hook waits)
    output: Tensor | None = None
    counted: Tensor | None = None
    kept: Tensor | None = None
    taking: bool = False
    # where the code took each sample's mean of its kept elements (per_sample.py): each
    # element's sample's count, by which what the backward() brings it is weighed alike
    per_sample: Tensor | None = None
    # a loss written by hand (by_hand.py): its sign the code's, read from what the backward()
    # brings its elements (`-logp.gather(1, y).mean()` negates the likelihood after its mean)
    signed: bool = False
    # its output (weakly): one let go unreached (a metric logged with grad, `.item()`) can no
    # longer be backward()ed
    out: Any = None


PER_BATCH = frozenset({"picked"})  # counts of the batch's samples: one batch's, not a call's


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
    scaled: float = 0.0  # its backward()'s root a GradScaler's product: the scale (else 0)

    @property
    def count(self) -> float:
        return sum(c.count for c in self.losses)

    def count_by(self, key: str) -> float:
        """Return its count where each loss divides by its count `key` (LossCall.others): the
        batch's samples once where that count is theirs ("picked": each call on their rows
        holds all of them, a loss per image added up too)."""
        return counted_by(key, self.losses)


def counted_by(key: str, calls: list[LossCall]) -> float:
    """Return the calls' count where each divides by its count `key`: added up, but the
    batch's samples ("picked") once (PER_BATCH)."""
    counts = [c.others.get(key, c.count) for c in calls]
    return max(counts, default=0.0) if key in PER_BATCH else sum(counts)


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
