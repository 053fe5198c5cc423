"""What watched training code did: the losses it computed (`LossCall`), each backward() as a
micro-batch of them (`MicroBatch`), each update as it is read (`Open`) and as the numbers kept
of it (`Update`, `close`), and the run (`Watched`); and how an autograd graph is read (its
leaves, its nodes, a loss's count).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

_INDEXED = ("cross_entropy", "nll_loss")  # class-index targets: -100 and class weights count


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

    @property
    def count(self) -> float:
        return sum(c.count for c in self.losses)


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
    dropped: int = 0  # micro-batches before the code zeroed .grad: let go, not stepped
    # the counts (rows or targets) of those whose targets the loaders of the kept ones'
    # fetched, in turn
    dropped_counts: tuple[float, ...] = ()
    redone: bool = True  # those were on the targets of the ones kept (SAM, an attack, a closure)
    foreign: bool = False  # those came from another loader than the ones kept
    crossed: bool = False  # an epoch ended while it was open
    clip_bounds: dict[int, float] = field(default_factory=dict)  # param id -> the bound
    # clip_grad_value_ clamped it to, where the code clipped so
    norm_clipped: bool = False  # clip_grad_norm_ was called in it
    optimizers: list[int] = field(default_factory=list)  # the ids of those that stepped it
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
    unreadable: bool = False  # its gradients could not be taken apart (sparse ones): not read
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


def _terms(mb: MicroBatch) -> list[list[LossCall]]:
    """Return a micro-batch's loss calls, those of one function together: a loss per row or
    per step added up is one term (its sum); losses of different functions are each a term of
    their own (a multi-task loss: mse + 0.5 * cross_entropy)."""
    by: dict[str, list[LossCall]] = {}
    for c in mb.losses:
        by.setdefault(c.name, []).append(c)
    return list(by.values())


def close(update: Open, tol: float) -> Update:
    """Return an update's numbers (_close); where its losses reached disjoint sets of the
    params stepped, each set's too (parts): two models' losses are two objectives, each the
    mean of its own rows, not one over the rows of both."""
    whole = _close(update, tol)
    apart = [] if update.blind or whole.elsewhere else _apart(update)
    if len(apart) < 2:
        return whole
    return replace(
        whole, parts=tuple(_close(replace(update, params=ps, micro=ms), tol) for ps, ms in apart)
    )


def _apart(update: Open) -> list[tuple[list[Tensor], list[MicroBatch]]]:
    """Return the update's params and micro-batches split by the params its losses reached:
    losses that reach a param in common are one objective's (a shared trunk, micro-batches of
    one model); one set of params per objective, each with its losses alone. One set (no
    split) where a loss reached no param stepped, or a param no loss reached applied a
    gradient (a penalty by hand: whose it is is not seen)."""
    stepped = {id(p): p for p in update.params}
    calls = [c for mb in update.micro for c in mb.losses]
    sets: list[set[int]] = []  # the params each objective's losses reached
    for c in calls:
        reached = stepped.keys() & c.grads.keys()
        if not reached:
            return []
        joined = [s for s in sets if not s.isdisjoint(reached)]
        sets = [s for s in sets if s.isdisjoint(reached)] + [reached.union(*joined)]
    unreached = stepped.keys() - set().union(*sets)
    if len(sets) < 2 or any(
        (g := update.applied.get(key)) is not None and bool(g.any()) for key in unreached
    ):
        return []
    out = []
    for s in sets:
        micro = [
            replace(mb, losses=mine)
            for mb in update.micro
            if (mine := [c for c in mb.losses if not s.isdisjoint(c.grads)])
        ]
        out.append(([p for key, p in stepped.items() if key in s], micro))
    return out


def _close(update: Open, tol: float) -> Update:
    """Return an update's numbers, read param by param (no vector of every param at once is
    built): first whether it applied the mean of its rows (or a clipping of it) to the relative
    tolerance tol, directly; where not, the float64 inner products its weights are solved from."""
    value_clipped = bool(update.clip_bounds) and _clamped(update, tol)
    if value_clipped:  # elementwise, no factor of it: read before clipping, as it was meant
        update = replace(update, applied=dict(update.before))
    counts = [mb.count for mb in update.micro]
    optimizers = hash(tuple(sorted(update.optimizers)))
    if counts and _elsewhere(update):  # its optimizers stepped params no loss reached
        none = torch.zeros(0, dtype=torch.float64)
        empty = (none, none, none, 0.0, 0.0, 0.0, False, False, update.blind)
        return Update(counts, *empty, tol=tol, elsewhere=True, optimizers=optimizers)
    calls = [c for mb in update.micro for c in _terms(mb)]  # each micro-batch's, per function
    several = len(calls) > len(update.micro)  # terms weighed each its own way: not one mean
    group = hash(tuple(sorted(id(p) for p in update.params)))
    if counts and not update.blind and not several:
        right, through = _right(update, sum(counts), tol)
        if right is not None:
            none = torch.zeros(0, dtype=torch.float64)
            return Update(
                counts, none, none, none, 0.0, 0.0, 0.0, False, True, 0, True,
                right or value_clipped, tol,
                terms=update.terms, dropped=update.dropped, redone=update.redone,
                dropped_counts=update.dropped_counts, foreign=update.foreign,
                crossed=update.crossed,
                calls=max(len(mb.losses) for mb in update.micro),
                norm=0.0 if right or value_clipped else through, group=group,
                optimizers=optimizers,
            )  # fmt: skip
    m = len(calls) if several else len(update.micro)
    gram = torch.zeros(m, m, dtype=torch.float64)
    sa, sb = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    qq = torch.zeros(PENALTIES, PENALTIES, dtype=torch.float64)
    sq = torch.zeros(m, PENALTIES, dtype=torch.float64)
    qa, qb = (
        torch.zeros(PENALTIES, dtype=torch.float64),
        torch.zeros(PENALTIES, dtype=torch.float64),
    )
    aa = bb = ab = 0.0
    carried = applied_any = False
    zeroed = 0
    for p in update.params:
        key = id(p)
        got, before, held = update.applied.get(key), update.before.get(key), update.carried.get(key)
        a = _vec(got, p)
        applied_any = applied_any or bool(a.any())
        held_any = held is not None and bool(held.any())
        carried = carried or held_any
        if held_any:
            a = a - _vec(held, p)
        # before clipping: most updates clip nothing, and it is what they applied
        same = before is None or before is got or (got is not None and torch.equal(before, got))
        b = a if same else _vec(before, p) - (_vec(held, p) if held_any else 0.0)
        zeroed += not same and bool(b.any()) and not a.any()
        a_a = float(a @ a)
        aa += a_a
        bb += a_a if same else float(b @ b)
        ab += a_a if same else float(a @ b)
        penalized = _penalties(p)
        if penalized is not None:  # (into its rows of the PENALTIES)
            at, q = penalized
            qq[at.unsqueeze(1), at] += q @ q.T
            q_a = q @ a
            qa[at] += q_a
            qb[at] += q_a if same else q @ b
        if m:
            if several:
                s = torch.stack([_vec(_sum_of(MicroBatch(c), p), p) for c in calls])
            else:
                s = torch.stack([_vec(_sum_of(mb, p), p) for mb in update.micro])
            gram += s @ s.T
            s_a = s @ a
            sa += s_a
            sb += s_a if same else s @ b
            if penalized is not None:
                sq[:, at] += s @ q.T
    columns = tuple(
        Column(
            c[0].name or "loss",
            sum(x.count for x in c),
            all(x.from_batch for x in c),
            "mean" if len(c) == 1 and c[0].reduction == "mean"
            else "sum" if all(x.reduction == "sum" for x in c) else "",
            len(c),
        )
        for c in calls
    ) if several else ()  # fmt: skip
    norm, hand, hand_before = _scaled(aa, bb, ab, tol, value_clipped or update.norm_clipped)
    return Update(
        counts, gram, sa, sb, aa, bb, ab, carried, applied_any, update.blind,
        clipped=value_clipped, tol=tol, terms=update.terms, dropped=update.dropped,
        dropped_counts=update.dropped_counts, redone=update.redone, crossed=update.crossed,
        foreign=update.foreign, columns=columns,
        calls=max((len(mb.losses) for mb in update.micro), default=1),
        norm_clipped=update.norm_clipped, group=group, norm=norm, hand=hand,
        optimizers=optimizers,
        hand_before=hand_before, one_row=_one_row(update.micro), penalty=(qq, sq, qa, qb),
        zeroed=zeroed, divided=_divided(update.micro),
        epoch=min((mb.epoch for mb in update.micro if mb.epoch is not None), default=None),
    )  # fmt: skip


PENALTIES = 4  # the penalties on the params an update is read beside (_penalties)


def _penalties(p: Tensor) -> tuple[Tensor, Tensor] | None:
    """Return the gradients of the penalties an update may hold beside its losses on one param,
    and which of the PENALTIES they are: L2's (the param) and L1's (its sign), each on the
    weights (2+ dims: rows 0 and 2) or on the rest (biases, norms' scales: rows 1 and 3),
    apart: d2l's penalty on w alone, or one on every param (up to its coefficient, the code's:
    weight decay added to .grad by hand too). None for a frozen param: none reaches it."""
    if not p.requires_grad:
        return None
    value = p.detach().reshape(-1).double()
    rest = int(p.ndim < 2)
    return torch.tensor([rest, 2 + rest]), torch.stack([value, value.sign()])


def _elsewhere(update: Open) -> bool:
    """Return True if the update's optimizers stepped params none of which any loss its
    micro-batches reached has, and none of which holds a gradient: an optimizer built over
    another model (one made again after it, a copy), so the model trained never moves."""
    reached = {key for mb in update.micro for c in mb.losses for key in c.grads}
    return reached.isdisjoint(map(id, update.params)) and not any(
        g is not None and bool(g.any()) for g in update.applied.values()
    )


def _divided(micro: list[MicroBatch]) -> tuple[str, int]:
    """Return the framework whose backward() divided every micro-batch's loss by one count,
    and that count (("", 1): none, or not the same for all)."""
    counts = {mb.divided for mb in micro}
    return counts.pop() if len(counts) == 1 else ("", 1)


def _one_row(micro: list[MicroBatch]) -> bool:
    """Return whether every loss the micro-batches reached had a target of one row (its leading
    size 1): each micro-batch's count is then one row's elements, and a loss summed over a
    row's outputs, its own constant, applies that many times the mean, as a sum would."""
    return bool(micro) and all(
        c.target is not None and len(c.target[2]) >= 1 and c.target[2][0] == 1
        for mb in micro
        for c in mb.losses
    )


def _scaled(
    aa: float, bb: float, ab: float, tol: float, clipped: bool
) -> tuple[float, float, float]:
    """Return |what an update applied| where it applied what it held before (let through),
    and that and |before| where it applied a factor below 1 of it with no clip of torch's by
    norm (a clip by hand, or a division), from its inner products: (norm, hand, hand_before)."""
    if aa <= 0 or clipped:
        return 0.0, 0.0, 0.0
    s, same = scaled_by(aa, bb, ab, tol)
    if same:
        return math.sqrt(aa), 0.0, 0.0
    if s is not None and 0 < s < 1 - tol:
        return 0.0, math.sqrt(aa), math.sqrt(bb)
    return 0.0, 0.0, 0.0


def scaled_by(aa: float, bb: float, ab: float, tol: float) -> tuple[float | None, bool]:
    """Return, from the inner products of what an update applied (A) and what it held before
    (B), the s with A = s B (None: none, to the tolerance relative to |A|) and whether A is
    B as it was."""
    if bb <= 0:
        return None, False
    s = ab / bb
    scaled = aa - 2 * s * ab + s * s * bb  # |A - s B|^2
    same = aa - 2 * ab + bb  # |A - B|^2
    return (s if scaled <= tol**2 * aa else None), same <= tol**2 * aa


def unread(tol: float) -> Update:
    """Return an update that could not be read (its gradients of a kind the watcher cannot
    take apart): fed, not judged."""
    none = torch.zeros(0, dtype=torch.float64)
    return Update(
        [], none.reshape(0, 0), none, none, 0.0, 0.0, 0.0, False, True, 1, tol=tol, unreadable=True
    )


def _right(update: Open, total: float, tol: float) -> tuple[bool | None, float]:
    """Return whether the update applied its rows' mean as it is (False) or clipped (True),
    compared element by element in the gradients' dtype; None where it did neither (or found
    a gradient in .grad: that is judged on its own; or applied a factor below 1 of it with no
    clip_grad_norm_ called: a clip by hand, or a division, watch_readings.by_hand tells).
    Beside it: |what it applied|, where it was right as it is."""
    rows = []  # per param: what it applied, what backward() left, the mean of its rows
    aw = ww = aa = 0.0
    for p in update.params:
        key = id(p)
        held = update.carried.get(key)
        if held is not None and bool(held.any()):
            return None, 0.0
        grads = [g for g in (_sum_of(mb, p) for mb in update.micro) if g is not None]
        w = (torch.stack(grads).sum(0) if len(grads) > 1 else grads[0]) / total if grads else None
        a = update.applied.get(key)
        rows.append((a, update.before.get(key), w))
        d = a if w is None else -w if a is None else a - w
        if d is not None:
            aw += _dot(d, d)
        ww += 0.0 if w is None else _dot(w, w)
        aa += 0.0 if a is None else _dot(a, a)
    if aw <= tol**2 * max(ww, aa):
        return False, math.sqrt(aa)
    bw = bb = ab = 0.0  # before clipping: right, and what it applied a factor of it
    for a, b, w in rows:
        b = a if b is None else b
        if b is None:
            continue
        d = b if w is None else b - w
        bw, bb = bw + _dot(d, d), bb + _dot(b, b)
        ab += 0.0 if a is None else _dot(a, b)
    if bb == 0 or bw > tol**2 * max(ww, bb):
        return None, 0.0
    s = ab / bb
    off = sum(_dot(a - s * b, a - s * b) for a, b, _ in rows if a is not None and b is not None)
    if not (0 < s <= 1 + tol and off <= tol**2 * aa) or (s < 1 - tol and not update.norm_clipped):
        return None, 0.0
    return True, 0.0


def _clamped(update: Open, tol: float) -> bool:
    """Return whether what each param's step applied is what .grad held before
    clip_grad_value_, clamped to [-bound, bound] for the params it clipped (each its own
    bound), as it was for the others, all times one factor in (0, 1] (1: the code's value clips
    and nothing more; below 1: clipped by norm after, where clip_grad_norm_ was called)."""
    pairs = []
    for p in update.params:
        got, before = update.applied.get(id(p)), update.before.get(id(p))
        if got is None or before is None:
            if got is not before:
                return False
            continue
        bound = update.clip_bounds.get(id(p))
        want = before if bound is None else before.clamp(-bound, bound)
        pairs.append((got, want, max(update.clip_bounds.values()) if bound is None else bound))
    ww = sum(_dot(w, w) for _, w, _ in pairs)
    f = sum(_dot(g, w) for g, w, _ in pairs) / ww if ww > 0 else 1.0  # the norm clip's factor
    if not update.norm_clipped:  # no clip_grad_norm_: a factor is the code's own (a division
        f = 1.0  # it made on .grad after the clip), not a clipping
    elif not 0 < f <= 1 + tol:
        return False
    return all(
        torch.allclose(got, f * want, rtol=tol, atol=tol * max(f * bound, 1e-12))
        for got, want, bound in pairs
    )


def _dot(x: Tensor, y: Tensor) -> float:
    return float(torch.dot(x.reshape(-1), y.reshape(-1)))


def _vec(t: Tensor | None, p: Tensor) -> Tensor:
    if t is None:
        return torch.zeros(p.numel(), dtype=torch.float64)
    t = t.detach()
    return (t.to_dense() if t.is_sparse else t).reshape(-1).double()  # SparseAdam's grads


def _sum_of(mb: MicroBatch, p: Tensor) -> Tensor | None:
    parts = [c.grads[id(p)] for c in mb.losses if id(p) in c.grads]
    return torch.stack(parts).sum(0) if parts else None


@dataclass
class Watched:
    """What the watched code did: its updates, and the micro-batches after the last."""

    updates: list[Update] = field(default_factory=list)
    leftover: list[MicroBatch] = field(default_factory=list)
    ended: bool = False  # the watcher ended the code once it had the updates asked for
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


def leaves(node: Any) -> list[Tensor]:
    """Return the leaf tensors that require grad under an autograd node, in a fixed order."""
    out: dict[int, Tensor] = {}
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        variable = getattr(n, "variable", None)
        if isinstance(variable, Tensor):
            out.setdefault(id(variable), variable)
        stack += [m for m, _ in n.next_functions]
    return list(out.values())


def leaves_of(call: LossCall) -> list[Tensor]:
    return call.under


def _nodes(roots: list[Any]) -> Iterator[Any]:
    """Yield every autograd node under the roots, once each."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        stack += [m for m, _ in n.next_functions]


def graph(roots: list[Any], accumulators: bool = True) -> set[int]:
    """Return the ids of every autograd node under the roots; accumulators=False leaves out
    the leaves' own nodes (AccumulateGrad), which every graph on the same params shares."""
    return {id(n) for n in _nodes(roots) if accumulators or not hasattr(n, "variable")}


# what a per-element loss may pass through on its way to a sum or a mean of all its elements
_RESHAPES = ("View", "UnsafeView", "ReshapeAlias", "Permute", "Transpose", "T", "Squeeze",
             "Unsqueeze", "Clone")  # fmt: skip
_WHOLE = ("SumBackward0", "MeanBackward0", "SumBackward1", "MeanBackward1")


def reduced_whole(roots: list[Any], node: Any) -> bool:
    """Return whether every use of a node's output under the roots is a sum or a mean (over
    any dims, through reshapes): `l.mean()`, `l.sum() / n`, `l.mean(0)`; not a weight of the
    code's (`l * w`), which, on an output of one element, looks like a coefficient."""
    users: dict[int, list[Any]] = {}
    for n in _nodes(roots):
        for m, _ in n.next_functions:
            if m is not None:
                users.setdefault(id(m), []).append(n)

    def whole(n: Any, depth: int) -> bool:
        found = users.get(id(n), [])
        return bool(found) and all(
            type(u).__name__ in _WHOLE
            or (
                type(u).__name__.rstrip("0123456789").removesuffix("Backward") in _RESHAPES
                and depth < 8
                and whole(u, depth + 1)
            )
            for u in found
        )

    return whole(node, 0)


def count_of(name: str, per: Tensor, given: dict[str, Any]) -> float:
    """Return what the loss's mean divides by: class-index targets not ignored (weighted by
    their class weight), else every element; `given` is the call's arguments by name."""
    target = given.get("target")
    if name in _INDEXED and isinstance(target, Tensor) and not target.is_floating_point():
        kept = target != given.get("ignore_index", -100)
        weight = given.get("weight")
        if isinstance(weight, Tensor):
            return float(weight[target[kept]].sum())
        return float(kept.sum())
    return float(per.numel())
