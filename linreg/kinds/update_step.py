"""The update-step kind: `fn(params, lr, batch_size)` updates params in place (the book's `sgd`).

Its properties hand it leaf params with their grads set and compare the params after the step
with p - lr * grad / B; torch's `optim.SGD` at lr / B is the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from linreg import _kind_names as names
from linreg import _validate
from linreg.kinds.base import Kind, Target, binds
from linreg.kinds.late import late
from linreg.kinds.options import Options, option, timeout_option

SIGNATURE = "fn(params, lr, batch_size)"


@dataclass(frozen=True)
class UpdateStepOptions(Options):
    """What an update step promises beyond its signature."""

    zeroes_grad: bool = option(
        True,
        "the loop zeroes the grads, not the step (by default the step zeroes them or sets "
        "them to None)",
        flag="--no-zeroes-grad",
        check=_validate.flag,
    )
    under_no_grad: bool = option(
        False,
        "the trainer calls it inside torch.no_grad()",
        flag="--under-no-grad",
        check=_validate.flag,
    )
    divides_by_batch_size: bool = option(
        True,
        "it takes p - lr * grad (a step for the gradient of a mean loss), not p - lr * grad / B",
        flag="--no-divide",
        check=_validate.flag,
    )
    timeout: float | None = timeout_option("the update step")


def build(fn: Callable[..., Any], options: UpdateStepOptions) -> Callable[..., Any]:
    """Return fn once it takes (params, lr, batch_size)."""
    binds(fn, SIGNATURE, [], 0.1, 1)
    return fn


class Update(NamedTuple):
    """An update step's arguments: leaf params with grads set, the lr and the batch size."""

    params: list[Tensor]
    lr: float
    batch_size: int


def fresh(update: Update) -> Update:
    """Return a copy of an update whose params (and their grads) are new tensors."""
    params = []
    for p in update.params:
        q = p.detach().clone().requires_grad_()
        q.grad = None if p.grad is None else p.grad.clone()
        params.append(q)
    return Update(params, update.lr, update.batch_size)


def sgd_via_optim_sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Take the step with torch's optim.SGD at lr / B, then optimizer.zero_grad() (to None)."""
    trainer = torch.optim.SGD(params, lr=lr / batch_size)
    trainer.step()
    trainer.zero_grad()


STEPS = (
    Target(late("optim.sgd"), "update-step", UpdateStepOptions(), "sgd"),
    Target(sgd_via_optim_sgd, "update-step", UpdateStepOptions(), oracle=True),  # torch's
)

KIND = Kind(
    name=names.UPDATE_STEP,
    signature=SIGNATURE,
    summary="an update step (the book's sgd): p - lr * grad / B, in place",
    options=UpdateStepOptions,
    build=build,
    calls="the update step",
    doc="A grad of zeros or None counts as zeroed.",
)
