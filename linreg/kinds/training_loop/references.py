"""What each update should have applied: every row's own gradient at the parameters the loop
holds (its lr is 0), under the loss the user names, else the model's own where its output
carries one, else the labels' usual one (row_gradients.py): a guess, confirmed against the
loop on one row at a time (confirmed.py). Where the guess is wrong, each row's reference is
the loop's own gradient on that row, and the report says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

from torch import Tensor, nn

from linreg.checks import LoopRaised
from linreg.kinds.base import Target
from linreg.kinds.training_loop.calls import Call
from linreg.kinds.training_loop.confirmed import NO_LABELS, confirmed
from linreg.kinds.training_loop.labels import RowLoss, counted, token_labels, with_held_labels
from linreg.kinds.training_loop.ledger import Observed
from linreg.kinds.training_loop.row_gradients import (
    Reference,
    guesses,
    named,
    own_row_loss,
    row_gradient,
    row_loss_for,
)
from linreg.kinds.training_loop.rows import IGNORE_INDEX, firsts, labels_of, padding
from linreg.kinds.training_loop.settings import options_of


def references(target: Target, model: nn.Module, seen: Observed, seed: int) -> Reference | None:
    """Return each row's own gradient, for every row the run fed; None if it fed none; on the
    params the run's optimizers stepped alone."""
    try:
        ref = _references(target, model, seen, seed)
    except (AssertionError, LoopRaised):  # a verdict (CheckFailed), or the audit's own
        raise
    except Exception as e:  # the model's forward, replayed on one row alone, raised
        raise LoopRaised(
            f"the model's forward raised {type(e).__name__} when fed one row of its batch "
            f"alone, for that row's own gradient ({str(e)[:200]}): a forward that takes a "
            "batch-sized state of its own (an RNN's (layers, batch, hidden) state) cannot be "
            "split into rows; audit a model whose rows are independent (the state made inside "
            "its forward, or None)"
        ) from None
    if ref is None:
        return ref
    made = _padding(target, seen)
    if made:
        ref = replace(ref, padding=made)
    if seen.trained is None:
        return ref
    return replace(ref, grads={key: g * seen.trained for key, g in ref.grads.items()})


def _padding(target: Target, seen: Observed) -> frozenset[bytes]:
    """Return the rows (by key) the loop made to fill a short batch up to a full one's
    (rows.padding): it trains on none of them, so a correct update weighs each 0."""
    data = firsts(options_of(target).example, (0, 1)) or []
    return frozenset(
        call.row_keys[i]
        for call in seen.calls
        if call.drawn in seen.draws
        for i in padding(call, seen.draws[call.drawn].rows, data)
    )


def _references(target: Target, model: nn.Module, seen: Observed, seed: int) -> Reference | None:
    """Return each row's own gradient, for every row the run fed; None if it fed none."""
    calls = with_held_labels(target, model, seen.calls)
    if not calls:
        return None
    if not calls[0].replayable:
        return confirmed(target, None, seed)
    row_loss, source = row_loss_for(target, model, calls[0])
    if row_loss is own_row_loss and calls[0].given:  # the loop's loss is its own: the model's
        source = "the model's own loss on the labels its batch held (popped before the forward)"
        relative = confirmed(target, source, seed, own_row_loss)
        if relative is not None:
            return _counted(relative, model, calls, own_row_loss) if relative.added else relative
    if row_loss is None:
        y = labels_of(options_of(target).example)
        if y is None:  # a dict example that names no labels: no loss to guess by them
            return confirmed(target, None, seed, unguessed=NO_LABELS)
        tokens = token_labels(calls[0], 0) is not None
        tried = guesses(y, tokens)
        if not tokens and y.ndim >= 1 and not y.is_floating_point():
            # a row of class labels fed apart from the input (a tagger's (ids, tags)): the
            # token losses on the example's labels, batched as one row
            tried += [(name, named(loss, y)) for name, loss in guesses(y, True)]
        for i, (name, guess) in enumerate(tried):
            last = i == len(tried) - 1  # its reason names every guess: "not A nor B"
            said = " nor ".join(n for n, _ in tried) if last else name
            relative = confirmed(target, said, seed, guess)
            if relative is not None and relative.added:
                return _counted(relative, model, calls, guess)
            if relative is None:
                row_loss = guess
                source = f"{name} (the labels' usual loss, confirmed against the loop on one row)"
                break
        else:  # no guess is the loop's loss: each row's reference is the loop's own
            return _own_labelled(relative, calls) if relative is not None else None
    assert row_loss is not None
    grads: dict[bytes, Tensor] = {}
    with _thawed(model, seen.live_params):
        for call in calls:
            for i, key in enumerate(call.row_keys):
                if key not in grads:
                    grads[key] = row_gradient(model, call, i, row_loss)
    ref = _counted(Reference(grads, f"{source} on that row alone"), model, calls, row_loss)
    if ref.weights is None:
        return ref
    return replace(ref, source=f"{ref.source}, weighed by the targets it counts")


def _counted(ref: Reference, model: nn.Module, calls: list[Call], row_loss: RowLoss) -> Reference:
    """Return the references weighed by the targets each row counts under row_loss (rows of
    token labels; others as they are)."""
    weights: dict[bytes, float] = {}
    for call in calls:
        for i, key in enumerate(call.row_keys):
            labels = token_labels(call, i)
            if key not in weights and labels is not None:
                weights[key] = counted(model, call, i, labels, row_loss)
    return replace(ref, weights=weights, labelled=_labelled(calls)) if weights else ref


def _labelled(calls: list[Call]) -> dict[bytes, float]:
    """Return each row's count of token labels that are not IGNORE_INDEX (rows of token
    labels; {} where none holds any)."""
    return {
        key: float((labels[1] != IGNORE_INDEX).sum())
        for call in calls
        for i, key in enumerate(call.row_keys)
        if (labels := token_labels(call, i)) is not None
    }


def _own_labelled(ref: Reference, calls: list[Call]) -> Reference:
    """Return the loop's own references with each row's count of labelled targets, where its
    rows hold token labels: whether a step weighs them by those (a token mean) or alike (a
    mean of each row's mean) is its loss's, not seen (micro_batch_accumulation's
    _unlike_targets)."""
    labelled = _labelled(calls)
    return replace(ref, labelled=labelled) if labelled else ref


@contextlib.contextmanager
def _thawed(model: nn.Module, live: frozenset[int]) -> Iterator[None]:
    """Let the params (by position) some step found unfrozen require grad while the rows'
    gradients are taken, as they were put back after: a backbone the loop froze again after
    training it has a gradient in the steps that trained it (Step.live masks the others)."""
    thawed = [p for i, p in enumerate(model.parameters()) if i in live and not p.requires_grad]
    try:
        for p in thawed:
            p.requires_grad_(True)
        yield
    finally:
        for p in thawed:
            p.requires_grad_(False)
