"""What watched training code did: the losses it computed (`LossCall`), each backward() as a
micro-batch of them (`MicroBatch`), each update as it is read (`Open`) and as the numbers kept
of it (`Update`, `close`), and the run (`Watched`); and how an autograd graph is read (its
leaves, its nodes, a loss's count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

_INDEXED = ("cross_entropy", "nll_loss")  # class-index targets: -100 and class weights count


class Enough(BaseException):
    """Raised from the step hook once the updates asked for were seen: ends the code cleanly."""


@dataclass
class LossCall:
    """One loss the code computed with grad on: its output, its per-element gradients, and the
    count its mean divides by."""

    node: Any  # the loss output's grad_fn: a backward() reaches it or not
    grads: dict[int, Tensor]  # per parameter (id): the gradient of the summed per-element loss
    count: float  # rows, elements or targets (not -100, class-weighted) a mean divides by


@dataclass
class MicroBatch:
    """One backward(): the losses it reached."""

    losses: list[LossCall]

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

    @property
    def fed(self) -> bool:
        """Return True if any backward() fed the update."""
        return bool(self.counts) or self.blind > 0


def close(update: Open) -> Update:
    """Return an update's numbers, read param by param in float64 (no vector of every param at
    once is built: an update costs a few of one param's gradients at a time)."""
    m = len(update.micro)
    gram = torch.zeros(m, m, dtype=torch.float64)
    sa, sb = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    aa = bb = ab = 0.0
    carried = applied_any = False
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
        a_a = float(a @ a)
        aa += a_a
        bb += a_a if same else float(b @ b)
        ab += a_a if same else float(a @ b)
        if m:
            s = torch.stack([_vec(_sum_of(mb, p), p) for mb in update.micro])
            gram += s @ s.T
            s_a = s @ a
            sa += s_a
            sb += s_a if same else s @ b
    counts = [mb.count for mb in update.micro]
    return Update(counts, gram, sa, sb, aa, bb, ab, carried, applied_any, update.blind)


def _vec(t: Tensor | None, p: Tensor) -> Tensor:
    if t is None:
        return torch.zeros(p.numel(), dtype=torch.float64)
    return t.detach().reshape(-1).double()


def _sum_of(mb: MicroBatch, p: Tensor) -> Tensor | None:
    parts = [c.grads[id(p)] for c in mb.losses if id(p) in c.grads]
    return torch.stack(parts).sum(0) if parts else None


@dataclass
class Watched:
    """What the watched code did: its updates, and the micro-batches after the last."""

    updates: list[Update] = field(default_factory=list)
    leftover: list[MicroBatch] = field(default_factory=list)
    ended: bool = False  # the watcher ended the code once it had the updates asked for
    lrs: dict[int, list[Any]] = field(default_factory=dict)  # each optimizer's lrs, as set


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
    return leaves(call.node)


def graph(roots: list[Any]) -> set[int]:
    """Return the ids of every autograd node under the roots."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        stack += [m for m, _ in n.next_functions]
    return seen


def count_of(name: str, per: Tensor, args: Any, kwargs: Any) -> float:
    """Return what the loss's mean divides by: class-index targets not ignored (weighted by
    their class weight), else every element."""
    if name in _INDEXED:
        target = kwargs.get("target", args[1] if len(args) > 1 else None)
        if isinstance(target, Tensor) and not target.is_floating_point():
            ignore = kwargs.get("ignore_index", -100)
            kept = target != ignore
            weight = kwargs.get("weight")
            if isinstance(weight, Tensor):
                return float(weight[target[kept]].sum())
            return float(kept.sum())
    return float(per.numel())
