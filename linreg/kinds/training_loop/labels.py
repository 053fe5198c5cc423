"""Each row's labels, and the targets its loss counts: read from what the forward was fed, or,
where the loop took them out of the batch before the forward (`labels = batch.pop("labels")`,
its loss computed outside the model), from the rows the audit handed out.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from linreg.kinds.base import Target
from linreg.kinds.training_loop.calls import Call
from linreg.kinds.training_loop.rows import (
    IGNORE_INDEX,
    LABEL_KEYS,
    held_labels,
    label_key,
    padded,
)
from linreg.kinds.training_loop.settings import options_of

RowLoss = Callable[[Any, Tensor | None], Tensor]  # (one row's output, its token labels)

# the losses of values, which broadcast predictions against labels of another shape (torch
# warns, then goes on): the audit's hooks and the watch read each call (broadcast)
BROADCASTING = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")


class Reads(Protocol):
    """What the audit's and the watch's records keep of the losses of values (compared)."""

    values: int  # the calls a backward() reached
    broadcast: str  # the first of those that broadcast, in words ("": none)


def compared(name: str, input: Any, target: Any, out: Any, seen: Reads) -> None:
    """Count a call of a loss of values once a backward() reaches its output, and keep the
    first that broadcast (broadcast): a metric logged with grad, which no backward() reaches,
    trains nothing."""
    if not (isinstance(out, Tensor) and out.requires_grad):
        return
    said = broadcast(name, input, target)

    def reached(grad: Tensor) -> None:
        seen.values += 1
        if said and not seen.broadcast:
            seen.broadcast = said

    out.register_hook(reached)  # type: ignore[no-untyped-call]


def broadcast(name: str, input: Any, target: Any) -> str:
    """Return, for a call with grad of a loss of values, how its two tensors of different ranks
    broadcast into more entries than either holds ("" where they do not): predictions (n, 1)
    against labels (n,), either way round, compare every prediction with every label, (n, n).
    Tensors of one rank broadcast on purpose (a set's pairwise loss) are not this mistake."""
    if not (isinstance(input, Tensor) and isinstance(target, Tensor)):
        return ""
    if input.ndim == target.ndim or not (input.requires_grad or target.requires_grad):
        return ""
    try:
        shape = torch.broadcast_shapes(input.shape, target.shape)  # type: ignore[no-untyped-call]
    except RuntimeError:
        return ""  # torch raises on its own
    if shape.numel() <= max(input.numel(), target.numel()):
        return ""
    return (
        f"F.{name} compared tensors of shapes {tuple(input.shape)} and {tuple(target.shape)}: "
        f"they broadcast to {tuple(shape)}, every prediction against every label"
    )


def with_held_labels(target: Target, model: nn.Module, calls: Sequence[Call]) -> list[Call]:
    """Return the calls, each forward fed without its batch's labels given them back: fed to a
    replay where the model's forward takes them, else for the loss alone."""
    example = options_of(target).example
    if isinstance(example, Mapping):
        label, feeds = label_key(example), _takes(model, label_key(example))
    else:  # (x, y) padded: y fed by position is named, else held for the loss alone
        label, feeds = (_label_param(model) if padded(example[1]) else None), False
    out = []
    for call in calls:
        named = _labels_named(model, label, call) if call.method == "forward" else None
        if named is not None:  # fed by position: named, so that each row's are read as its own
            out.append(named)
            continue
        held = held_labels(example, call.args, call.kwargs, call.rows)
        out.append(replace(call, given=held, feeds_given=feeds) if held else call)
    return out


def _labels_named(model: nn.Module, name: str | None, call: Call) -> Call | None:
    """Return the call with its positional arguments from the labels on fed by name, as the
    forward binds them (`model(input_ids, attention_mask, labels)`), its rows keeping their
    keys (each what the row was fed, in order); None where the labels were not fed so."""
    try:
        names = list(inspect.signature(model.forward).bind_partial(*call.args).arguments)
    except (TypeError, ValueError):
        return None
    if name is None or name not in names or len(names) != len(call.args):
        return None
    at = names.index(name)
    moved = dict(zip(names[at:], call.args[at:], strict=True))
    named = replace(call, args=call.args[:at], kwargs={**moved, **call.kwargs})
    named.__dict__["row_keys"] = call.row_keys  # (a cached property: the row's own bytes)
    return named


def _label_param(model: nn.Module) -> str:
    """Return the name the model's forward takes labels by (the first of LABEL_KEYS it has;
    else LABEL_KEYS' first, the name labels held apart are given)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return LABEL_KEYS[0]
    return next((k for k in LABEL_KEYS if k in params), LABEL_KEYS[0])


def _takes(model: nn.Module, name: str | None) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def token_labels(call: Call, i: int) -> tuple[str, Tensor] | None:
    """Return the keyword and the value of a row's token labels (ndim >= 1), fed or held."""
    _, kwargs = call.row(i)
    kwargs = {**call.held(i), **kwargs}
    for name in LABEL_KEYS:
        value = kwargs.get(name)
        if isinstance(value, Tensor) and value.ndim >= 2 and not value.is_floating_point():
            return name, value
    return None


def counted(
    model: nn.Module, call: Call, i: int, labels: tuple[str, Tensor], row_loss: RowLoss
) -> float:
    """Return how many of a row's targets its loss counts: those whose loss alone is defined.

    One forward pass per labelled target, all others set to IGNORE_INDEX: a loss that shifts
    its labels (a causal LM's) drops the first, and its loss on that one alone is not a number.
    """
    name, value = labels
    args, kwargs = call.row(i)
    n = 0
    with torch.no_grad():
        for position in (value != IGNORE_INDEX).nonzero().tolist():
            alone = torch.full_like(value, IGNORE_INDEX)
            alone[tuple(position)] = value[tuple(position)]
            fed = {**kwargs, name: alone} if name in kwargs else kwargs
            loss = row_loss(call.replay(model, args, fed), alone)
            n += bool(torch.isfinite(loss)) and bool(loss != 0)
    return float(n)
