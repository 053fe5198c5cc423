"""Measure what a framework's steps apply, independently of the audit.

Each step's applied gradient is read after it (a global optimizer step post-hook: frameworks
run forward and backward inside `optimizer.step(closure)`), with the lr held at 0 so the
parameters stay put, and compared with the gradient of one mean loss over exactly the rows (or
tokens) the step consumed, computed by autograd on the untouched model: the ratio
<applied, correct> / <correct, correct>, and the cosine between them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)


def flat(grads: list[Tensor | None], params: list[nn.Parameter]) -> Tensor:
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1).double()
            for g, p in zip(grads, params, strict=True)
        ]
    )


@contextmanager
def applied_gradients(model: nn.Module) -> Iterator[list[Tensor]]:
    """Yield the list every step's applied gradient is appended to; lr held at 0."""
    params = list(model.parameters())
    seen: list[Tensor] = []

    def zero_lr(opt: torch.optim.Optimizer, *_: Any) -> None:
        for group in opt.param_groups:
            group["lr"] = 0.0

    def read(opt: torch.optim.Optimizer, *_: Any) -> None:
        seen.append(flat([p.grad for p in params], params))

    hooks = [register_optimizer_step_pre_hook(zero_lr), register_optimizer_step_post_hook(read)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def correct_gradient(model: nn.Module, loss: Callable[[nn.Module], Tensor]) -> Tensor:
    """Return the gradient of loss(model) on a copy of the model, as one float64 vector."""
    twin = copy.deepcopy(model)
    params = [p.requires_grad_(True) for p in twin.parameters()]  # as a framework left them
    with torch.enable_grad():
        grads = torch.autograd.grad(loss(twin), params, allow_unused=True)
    return flat(list(grads), params)


def ratio(applied: Tensor, correct: Tensor) -> float:
    return float(applied @ correct / (correct @ correct))


def cosine(applied: Tensor, correct: Tensor) -> float:
    return float(applied @ correct / (applied.norm() * correct.norm()))
