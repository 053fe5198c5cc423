"""Each row's own gradient (a Reference, by what the row was fed) and the loss it is taken
under: the loss the user names, else the model's own where its output carries one, else the
labels' usual one (cross-entropy for class labels, token cross-entropy for token labels, MSE
for values), a guess that confirmed.py checks against the loop on one row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from linreg.checks import CheckFailed
from linreg.kinds.base import Target
from linreg.kinds.training_loop.calls import Call
from linreg.kinds.training_loop.labels import RowLoss, token_labels
from linreg.kinds.training_loop.ledger import flat
from linreg.kinds.training_loop.outputs import own_loss, prediction
from linreg.kinds.training_loop.rows import IGNORE_INDEX, labels_of, loss_of
from linreg.kinds.training_loop.settings import options_of


@dataclass(frozen=True)
class Reference:
    """Each row's own gradient, by what the row was fed, and where it comes from (in words)."""

    grads: dict[bytes, Tensor]
    source: str
    weights: dict[bytes, float] | None = None  # the targets each row counts (None: one each)
    labelled: dict[bytes, float] | None = None  # its labels that are not IGNORE_INDEX
    own: str = ""  # why each row's is the loop's own gradient on it ("": it is not)
    live: Tensor | None = None  # the params those were taken on (None: every one; others 0)
    # the guessed loss's gradients plus what the loop's step added on one row, where its
    # backward() gave that loss's gradient and the step more (weight decay added to .grad):
    # each row's targets are counted by that loss (_counted)
    added: bool = False
    # rows the loop made to fill a short batch up to a full one's (rows.padding): it trains on
    # none of them, so each weighs 0
    padding: frozenset[bytes] = frozenset()

    def weight(self, key: bytes) -> float:
        """Return what a row weighs in a mean: the targets it counts (1 where not counted), 0
        for a row of padding."""
        if key in self.padding:
            return 0.0
        return 1.0 if self.weights is None else self.weights.get(key, 1.0)


def row_gradient(model: nn.Module, call: Call, i: int, row_loss: RowLoss) -> Tensor:
    """Return the gradient of the loss on row i of a call alone, as one float64 vector."""
    params = list(model.parameters())
    trained = [p for p in params if p.requires_grad]
    args, kwargs = call.row(i)
    model.train()
    with torch.enable_grad():
        labels = token_labels(call, i)
        loss = row_loss(call.replay(model, args, kwargs), None if labels is None else labels[1])
        grads = torch.autograd.grad(loss, trained, allow_unused=True)
    by_param = dict(zip(map(id, trained), grads, strict=True))
    vector = flat([by_param.get(id(p)) for p in params], params)
    assert vector is not None
    return vector


def named(loss: Callable[[Any, Tensor], Tensor], y: Tensor) -> RowLoss:
    """Return a row's loss from a loss (output, y): on the row's own token labels where it is
    fed some, else on the example's labels, batched as one row."""
    return lambda output, labels: loss(output, y.unsqueeze(0) if labels is None else labels)


def row_loss_for(target: Target, model: nn.Module, call: Call) -> tuple[RowLoss | None, str]:
    """Return the loss of one row's output and its name; None where the guess must be confirmed."""
    c = options_of(target)
    y = labels_of(c.example)
    if c.loss is not None:
        if y is None:
            raise CheckFailed("loss= needs labels: the dict example names none (labels, y, ...)")
        return named(c.loss, y), f"the named loss {getattr(c.loss, '__name__', c.loss)!r}"
    args, kwargs = call.row(0)
    with torch.no_grad():
        output = call.replay(model, args, kwargs)
    if own_loss(output) is not None:
        return own_row_loss, "the model's own loss"
    return None, "cross-entropy" if y is not None and not y.is_floating_point() else "MSE"


def guesses(y: Tensor, tokens: bool) -> list[tuple[str, RowLoss]]:
    """Return the losses a loop that computes its own most likely uses, by its labels: for token
    labels, cross-entropy over the tokens a causal LM predicts (each position's next), then over
    every position (a tagger's); otherwise cross-entropy for class labels, MSE for values."""
    if tokens:
        return [
            ("token cross-entropy after a causal shift", _token_loss(1)),
            ("token cross-entropy", _token_loss(0)),
        ]
    if y.is_floating_point():
        return [("MSE", named(loss_of, y))]
    # a dense map of class labels marks the pixels it does not count with a label of its own
    # (a segmentation's 255, some codebases' -1), which cross-entropy is told to ignore
    ignored = [v for v in IGNORED if bool((y == v).any())]
    return [("cross-entropy", named(loss_of, y))] + [
        (f"cross-entropy with ignore_index={v}", named(partial(_ignoring, v), y)) for v in ignored
    ]


IGNORED = (255, -1)  # the labels besides -100 (cross-entropy's default) that loops ignore


def _ignoring(value: int, y_hat: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(y_hat, y, ignore_index=value)


def _token_loss(shift: int) -> RowLoss:
    def loss(output: Any, labels: Tensor | None) -> Tensor:
        logits = prediction(output, 1)
        if logits is None or labels is None or logits.ndim != labels.ndim + 1:
            raise ValueError("no logits of one row's tokens to compare")
        kept = logits.shape[1] - shift
        return nn.functional.cross_entropy(
            logits[:, :kept].flatten(0, -2),
            labels[:, shift:].flatten(),
            ignore_index=IGNORE_INDEX,
        )

    return loss


def own_row_loss(output: Any, labels: Tensor | None = None) -> Tensor:
    loss = own_loss(output)
    if loss is None:
        raise CheckFailed("the model's output carried its loss on one row, not on another")
    return loss
