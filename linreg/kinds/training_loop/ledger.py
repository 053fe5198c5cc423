"""What the loop did, as records: each update's gradients read at each stage and the forward
passes that fed it (a Step; each forward pass a Call, calls.py), and the whole run (Observed).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, NamedTuple

import torch
from torch import Tensor

from linreg.kinds.training_loop.calls import Call


class Draw(NamedTuple):
    """One draw of the audit's data: the rows of the batch it drew (0: a dataset's row, drawn
    one at a time), and the functions that made it (the loop's, or an evaluation's of its
    own)."""

    rows: int
    by: frozenset[CodeType]


@dataclass
class Step:
    """One optimizer step: its gradients read at each stage (as backward() left them, as a
    loss scaler unscaled them, as each of torch's clips found them, as the step used them),
    what it found in .grad, and the forward passes that fed it."""

    applied: Tensor | None  # the gradients as the step used them (after it: closures)
    raw: Tensor | None  # as backward() left them
    unscaled: Tensor | None  # raw, divided by a loss scaler's scale where the loop unscaled
    calls: list[Call]
    scale: float | None = None  # the loss scaler's scale when the loop unscaled, else None
    carried: Tensor | None = None  # what .grad held as the step's first backward() began
    # the calls (by position) whose output no backward() reached: their rows, counted in the
    # step's, weigh nothing in what it applied
    unreached: tuple[int, ...] = ()
    # the gradients as each call of torch.nn.utils' clipping in the update found them (after
    # any division of .grad the loop made itself; a norm logged first, then the clip), in turn
    clip_found: tuple[Tensor, ...] = ()
    clip_covered: tuple[Tensor, ...] = ()  # the params each of those calls clipped (1.0 each)
    # 1.0 for each entry of a param that required grad at the step, 0.0 for one frozen then
    # (None: none was): a backbone frozen for the first epoch trains nothing there
    live: Tensor | None = None
    # the loop zeroed .grad between two backward() calls of the update, outside a step: the
    # forwards fed before weigh 0 (zero_grad inside an accumulation window)
    zeroed: bool = False

    def keep(self, mask: Tensor) -> None:
        """Keep the gradients of the params mask holds (1.0) alone, the others read as 0."""
        self.applied, self.raw, self.unscaled, self.carried = (
            None if g is None else g * mask
            for g in (self.applied, self.raw, self.unscaled, self.carried)
        )
        self.clip_found = tuple(g * mask for g in self.clip_found)
        # a param no optimizer steps reads as clipped by every call: it is 0 in each
        self.clip_covered = tuple(c * mask + (1 - mask) for c in self.clip_covered)

    @property
    def before_clipping(self) -> Tensor | None:
        """Return the gradient before any clipping: what backward() left, divided by the loss
        scaler's scale where the loop unscaled (a clip of the still-scaled gradient, before
        unscale_, shows as unscaled differing from this)."""
        if self.scale is None or self.raw is None:
            return self.unscaled
        return self.raw / self.scale

    @property
    def unclipped(self) -> list[Tensor]:
        """Return what the step's gradient may have been before a clip: as torch's clipping
        found it (its last call first), as the loss scaler unscaled it, as backward() left it
        over the scale."""
        later = [g for g in (self.unscaled, self.before_clipping) if g is not None]
        return [*reversed(self.clip_found), *later]

    @property
    def clips_apart(self) -> bool:
        """Return True if a call of torch's clipping clipped some of the params alone."""
        return self.applied is not None and not all(bool(m.all()) for m in self.clip_covered)

    @property
    def clipped_apart(self) -> Tensor | None:
        """Return the gradient before torch's clipping where its calls clipped parts of the
        params apart (a backbone alone, each optimizer's own): each param as the first call that
        clipped it found it, the others as applied; None where no call clipped a part alone."""
        if self.applied is None or not self.clips_apart:
            return None
        before = self.applied.clone()
        for found, covered in zip(self.clip_found[::-1], self.clip_covered[::-1], strict=True):
            before = torch.where(covered.bool(), found, before)
        return before

    @property
    def rows(self) -> int:
        """Return the number of the data's rows fed to the model for this step."""
        return sum(self.sizes)

    @property
    def sizes(self) -> list[int]:
        """Return the data's rows of each forward pass (micro-batch) of the step (not those the
        loop made to pad a short batch: Call.padded)."""
        return [c.rows - c.padded for c in self.calls]

    @property
    def row_keys(self) -> list[bytes]:
        """Return the key of every row fed for this step, in order."""
        return [key for call in self.calls for key in call.row_keys]


@dataclass
class Observed:
    """What the loop did: its optimizer steps, the forward passes after the last, whether a
    parameter moved though the lr was held at 0."""

    steps: list[Step] = field(default_factory=list)
    leftover: list[Call] = field(default_factory=list)  # fed to the model, never stepped
    moved: bool = False
    fed: int = 0  # rows fed to the model with grad enabled, in all
    stepped_at: list[float] = field(default_factory=list)  # time.perf_counter() at each step
    overran: bool = False  # ended by the audit past four updates a row it was handed
    # the last update's optimizer stepped every param with a gradient: no other optimizer's
    # step is to join that update (the audit may end the run there)
    whole: bool = False
    # 1.0 for each entry of a param some optimizer stepped, 0.0 for one none did (None: all
    # were): the steps' gradients, and their references, read on those alone
    trained: Tensor | None = None
    stepped_params: frozenset[int] = frozenset()  # the params (by position) any optimizer stepped
    live_params: frozenset[int] = frozenset()  # those (by position) some step found unfrozen
    forwards: int = 0  # forward passes of the model, in any mode
    transformed: int = 0  # forwards fed tensors under torch.func's transforms (vmap, grad)
    empty_steps: int = 0  # optimizer steps fed nothing that applied nothing (a flush's)
    # steps of optimizers over params that are not the model's, none with a gradient (an
    # optimizer built over a copy of the model: an EMA's)
    foreign_empty: int = 0
    skipped_short: int = 0  # epochs whose short last batch the loop fetched and never forwarded
    # the first loss call a backward() reached that broadcast its predictions against labels
    # of another shape into more entries than either holds, in words ("": none did)
    broadcast: str = ""
    values: int = 0  # the calls of those losses of values a backward() reached
    train_rows: int = 0  # rows the loop fetched from the audit's loader in passes that trained
    drawn: int = 0  # the rows of the audit's data drawn during the run (Call.drawn)
    draws: dict[int, Draw] = field(default_factory=dict)  # each, by the rows drawn once made
    # the passes over a DataLoader the draws were made in, numbered as they began (weakly
    # kept: an iterator's memory, once it is freed, may be a later pass's)
    passes: weakref.WeakKeyDictionary[object, int] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    began: int = 0  # the passes begun so far (each one's number)
    drawing: object | None = None  # the pass making its next batch now (hooks.watching)
    ended: set[int] = field(default_factory=set)  # the passes that drew their last batch
    pass_rows: dict[int, int] = field(default_factory=dict)  # the rows each pass drew
    pass_batch: dict[int, int] = field(default_factory=dict)  # each pass's batch size
    pass_length: dict[int, int | None] = field(default_factory=dict)  # its batches (None: ?)
    # the sampler each pass drew its indices from: one DataLoader's passes share it
    pass_sampler: dict[int, object] = field(default_factory=dict)
    handed: int = 0  # the rows of the data the audit handed the loop
    # the order of what the loop did, counted: each batch a pass made, each pass's end, each
    # forward recorded (Call.clock) and each backward() move it on by one; each pass's
    # events (its batches and its end), by their counts
    clock: int = 0
    pass_events: dict[int, list[int]] = field(default_factory=dict)
    pass_ends: set[int] = field(default_factory=set)  # the events that were a pass's end
    backward_at: int = 0  # the event that was the latest backward() (its gradients' arrival)
    # where each batch the loop was handed came from, by its memory: the pass over a
    # DataLoader that made it, or None (a row or batch read outside any: dataset[0],
    # get_batch()), and when a pass made it (its clock; 0 outside any); its first tensor
    # kept alive, so that no other batch takes that memory
    held: dict[int, tuple[Tensor, int | None, int]] = field(default_factory=dict)
    # the tensors of the short last batches the audit's loader made in passes that trained,
    # one list a batch (kept alive: the memory of one tells a forward of that batch, or of a
    # view of it; a forward of none of a batch's fed it none)
    shorts: list[list[Tensor]] = field(default_factory=list)

    @property
    def calls(self) -> list[Call]:
        """Return every forward pass the run fed, the steps' and the left-over ones, in order."""
        return [call for step in self.steps for call in step.calls] + self.leftover


def blind_steps(seen: Observed) -> bool:
    """Return True if a run stepped an optimizer with nothing to apply at every step, having
    fed the model only with grad off (a forward under no_grad, its output then made to
    require grad): steps that can never move the params, not a flush after full windows."""
    return not seen.steps and not seen.fed and seen.empty_steps > 0 and seen.forwards > 0


def flat_loss(step: Step) -> bool:
    """Return True if every backward() of the step reached each forward's output and left
    every gradient 0: the loss has none there (by its making, torch.round on the output; or
    on those rows, a batch-hard triplet loss on rows of one label), no gradient the loop
    lost after (zero_grad() after backward(); a loss on a detached output reaches none)."""
    return (
        bool(step.calls)
        and not step.unreached
        and step.raw is not None
        and not bool(step.raw.any())
    )


def one_update(seen: Observed) -> bool:
    """Return True once a run made an update that no other optimizer's step may still join:
    a run that reads its first update alone can end there (run_at_zero_lr's enough)."""
    return bool(seen.steps) and seen.whole


def flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor | None:
    """Return the grads as one float64 vector (None as zeros), or None if every one is None."""
    if all(g is None for g in grads):
        return None
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def mask(flags: Sequence[bool], params: Sequence[Tensor], device: Any = None) -> Tensor:
    """Return a float64 vector laid out as flat's: 1.0 over each param flagged, 0.0 elsewhere."""
    return torch.cat(
        [
            torch.full((p.numel(),), float(k), dtype=torch.float64, device=device)
            for k, p in zip(flags, params, strict=True)
        ]
    )


def not_finite(seen: Observed) -> str:
    """Return where the loop's gradients first stop being finite, or ""."""
    for j, step in enumerate(seen.steps):
        for what, g in (
            ("as backward() left them", step.raw),
            ("as the step applied them", step.applied),
        ):
            if g is not None and not bool(torch.isfinite(g).all()):
                kind = "nan" if bool(torch.isnan(g).any()) else "inf"
                return (
                    f"the gradients {what} at optimizer step {j + 1} are not finite ({kind}): "
                    "a loss of nan or inf on these rows (a log of 0, a division by 0?), or an "
                    "overflow"
                )
    return ""
