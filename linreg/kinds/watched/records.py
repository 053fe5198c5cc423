"""What watched training code did: the losses it computed (`LossCall`), each backward() as a
micro-batch of them (`MicroBatch`), each update and what fed it (`Update`), and the run
(`Watched`); and how an autograd graph is read (its leaves, its nodes, a loss's count).
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
class Update:
    """One update: the optimizer steps with no backward() between them, and what fed it."""

    params: list[Tensor]
    applied: Tensor | None  # every param's .grad as the steps used it, flat
    before_clipping: Tensor | None  # as the last backward() left it (unscaled where it was)
    carried: Tensor | None  # what .grad held as the update's first backward() began
    micro: list[MicroBatch]
    blind: int = 0  # backward() calls that reached no loss the watcher read

    def grad_of(self, mb: MicroBatch) -> Tensor:
        """Return a micro-batch's gradient of its summed per-element losses, flat."""
        return flat([_sum_of(mb, p) for p in self.params], self.params)


def _sum_of(mb: MicroBatch, p: Tensor) -> Tensor | None:
    parts = [c.grads[id(p)] for c in mb.losses if id(p) in c.grads]
    return torch.stack(parts).sum(0) if parts else None


def flat(grads: list[Tensor | None], params: list[Tensor]) -> Tensor:
    """Return the grads as one float64 vector, None as zeros."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
            for g, p in zip(grads, params, strict=True)
        ]
    )


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
