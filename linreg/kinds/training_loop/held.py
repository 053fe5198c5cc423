"""The model held still: Dropout at p = 0 (attention's and an RNN's between layers too) and
batch norms in eval mode while the audit runs the loop, so no row's output depends on
another's; everything put back afterwards. And its params held still through each optimizer
step (zero_lr, hold_still): every lr at 0, or a group's params put back where it has none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import MethodType

import torch
from torch import Tensor, nn

# torch has no public base class for its batch norms nor for its dropouts: the private ones
# are what BatchNorm1d/2d/3d, SyncBatchNorm and the lazy ones, and Dropout, Dropout1d/2d/3d,
# AlphaDropout and FeatureAlphaDropout all derive from
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd


def _stays_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return module


_HELD: list[Callable[[], None]] = []  # what puts each held model back, in order


def held_still(model: nn.Module) -> nn.Module:
    """Set the model's Dropout modules to p = 0 (and the dropout nn.MultiheadAttention and an
    RNN keep as a number) and hold its batch norms in eval mode.

    `models_restored()` puts every model held still in its block back as it was (Dropout's p,
    the batch norms' mode, each parameter's .grad and requires_grad, which a loop that freezes
    a backbone changes): a factory may hand out the user's model.
    """
    undo: list[Callable[[], None]] = [
        functools.partial(setattr, p, "grad", None if p.grad is None else p.grad.clone())
        for p in model.parameters()
    ]
    undo += [
        functools.partial(setattr, p, "requires_grad", p.requires_grad) for p in model.parameters()
    ]
    for m in model.modules():
        if isinstance(m, _DropoutNd):
            undo.append(functools.partial(setattr, m, "p", m.p))
            m.p = 0.0
        elif isinstance(m, (nn.MultiheadAttention, nn.RNNBase)) and m.dropout:
            # a dropout kept as a number, not a module (attention weights', between an RNN's
            # layers): nn.TransformerEncoderLayer's attention drops 0.1 by default
            undo.append(functools.partial(setattr, m, "dropout", m.dropout))
            m.dropout = 0.0
        elif isinstance(m, _BatchNorm):
            undo.append(functools.partial(_release, m, m.training))
            m.eval()
            m.train = MethodType(_stays_in_eval, m)  # type: ignore[method-assign]

    def restore() -> None:
        for step in reversed(undo):
            step()

    _HELD.append(restore)
    return model


@contextmanager
def models_restored() -> Iterator[None]:
    """Put every model held still in the block back as it was, the latest first, on leaving it;
    those an enclosing audit held stay as it holds them (an audit inside an audited loop)."""
    mark = len(_HELD)
    try:
        yield
    finally:
        while len(_HELD) > mark:
            _HELD.pop()()


def _release(module: nn.Module, training: bool) -> None:
    module.__dict__.pop("train", None)
    module.train(training)


def zero_lr(opt: torch.optim.Optimizer) -> list[tuple[Tensor, Tensor]]:
    """Hold every param group's lr at 0 (a tensor lr filled in place), whatever a scheduler set.
    A group with no number for its lr (an optimizer of the code's own whose step size is named
    otherwise, `eta`; Adafactor's relative step, lr=None) cannot be held so: its params and
    their values are returned, for hold_still to put back as the step returns."""
    kept = []
    for group in opt.param_groups:
        lr = group.get("lr")
        if isinstance(lr, Tensor):
            lr.fill_(0.0)
        elif isinstance(lr, int | float) and not isinstance(lr, bool):
            group["lr"] = 0.0
        else:
            kept += [(p, p.detach().clone()) for p in group["params"]]
    return kept


def hold_still(kept: list[tuple[Tensor, Tensor]]) -> None:
    """Put back the values of params a step moved whose lr could not be held at 0 (zero_lr)."""
    with torch.no_grad():
        for p, value in kept:
            p.copy_(value)
