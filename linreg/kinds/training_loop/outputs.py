"""What a model's output holds, and whether its forward can be judged: the loss it carries
(`own_loss`), its batched prediction (`prediction`), and a forward that is still random or
mixes its rows refused (`check_model`), before any work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from linreg.kinds.training_loop.calls import Call


def own_loss(output: Any) -> Tensor | None:
    """Return the loss a model's output carries (a scalar, .loss, ["loss"], in a tuple)."""
    if isinstance(output, Tensor):
        return output if output.ndim == 0 and output.is_floating_point() else None
    if isinstance(output, Mapping):  # by key only: a dict's attributes may raise KeyError
        loss = output.get("loss")
        return own_loss(loss) if isinstance(loss, Tensor) else None
    loss = getattr(output, "loss", None)
    if isinstance(loss, Tensor):
        return own_loss(loss)
    if isinstance(output, (tuple, list)):
        found = [
            o for o in output if isinstance(o, Tensor) and o.ndim == 0 and o.is_floating_point()
        ]
        return found[-1] if found else None
    return None


def prediction(output: Any, rows: int) -> Tensor | None:
    """Return the batched tensor of a model's output (its logits), or None."""
    if isinstance(output, Tensor):
        return output if output.ndim > 0 and output.shape[0] == rows else None
    if isinstance(output, Mapping):
        output = list(output.values())
    elif not isinstance(output, (tuple, list)):
        logits = getattr(output, "logits", None)
        return prediction(logits, rows) if logits is not None else None
    return next((p for o in output if (p := prediction(o, rows)) is not None), None)


def check_model(model: nn.Module, calls: Sequence[Call]) -> None:
    """Raise TypeError if the model's forward is random, or its rows interact, on its batches."""
    call = next(
        (c for c in calls if c.rows > 1 and len(set(c.row_keys)) > 1 and c.replayable), None
    )
    if call is None:
        return
    model.train()
    with torch.no_grad():
        once = prediction(call.replay(model, call.args, call.kwargs), call.rows)
        if once is None:
            return  # an output the audit cannot compare: the steps are judged all the same
        # a few more passes: a random mask can repeat once by chance, not three times
        again = [
            prediction(call.replay(model, call.args, call.kwargs), call.rows) for _ in range(3)
        ]
        if not all(a is not None and torch.equal(once, a) for a in again):
            raise TypeError(
                "the model's forward is random in training mode (with its Dropout modules at "
                "p = 0): batchings cannot be compared; audit a factory of a deterministic model"
            )
        for i in range(call.rows):
            args, kwargs = call.row(i)
            alone = prediction(call.replay(model, args, kwargs), 1)
            if alone is None or not torch.allclose(once[i], alone[0], rtol=1e-5, atol=1e-6):
                raise TypeError(
                    "in training mode the model's output for one row depends on the other rows "
                    "of its batch (batch norms are held in eval mode; what else mixes rows?): "
                    "batchings cannot be compared"
                )
