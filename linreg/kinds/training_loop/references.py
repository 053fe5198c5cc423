"""What each update should have applied: every row's own gradient at the parameters the loop
holds (its lr is 0), from the loss the user names, else the model's own where its output
carries one, else cross-entropy for class labels and mean squared error otherwise: a guess,
confirmed against the loop on one row at a time. Where the guess is wrong, each row's
reference is the loop's own gradient on that row, and the report says so.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from linreg.checks import CheckFailed, LoopRaised
from linreg.kinds.base import Target
from linreg.kinds.training_loop.batching import Batching, count_of
from linreg.kinds.training_loop.calls import Call
from linreg.kinds.training_loop.labels import RowLoss, counted, token_labels, with_held_labels
from linreg.kinds.training_loop.ledger import Observed, Step, flat, one_update
from linreg.kinds.training_loop.measure import clipping, factor, near, tolerance
from linreg.kinds.training_loop.one_run import run_at_zero_lr
from linreg.kinds.training_loop.outputs import own_loss, prediction
from linreg.kinds.training_loop.rows import IGNORE_INDEX, labels_of, loss_of
from linreg.kinds.training_loop.settings import options_of, reduced


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


def _named(loss: Callable[[Any, Tensor], Tensor], y: Tensor) -> RowLoss:
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
        return _named(c.loss, y), f"the named loss {getattr(c.loss, '__name__', c.loss)!r}"
    args, kwargs = call.row(0)
    with torch.no_grad():
        output = call.replay(model, args, kwargs)
    if own_loss(output) is not None:
        return _own, "the model's own loss"
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
    return [("cross-entropy" if not y.is_floating_point() else "MSE", _named(loss_of, y))]


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


def _own(output: Any, labels: Tensor | None = None) -> Tensor:
    loss = own_loss(output)
    if loss is None:
        raise CheckFailed("the model's output carried its loss on one row, not on another")
    return loss


_CACHE: dict[tuple[int, int, str | None], tuple[Target, Reference | None]] = {}


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
    if ref is None or seen.trained is None:
        return ref
    return replace(ref, grads={key: g * seen.trained for key, g in ref.grads.items()})


def _references(target: Target, model: nn.Module, seen: Observed, seed: int) -> Reference | None:
    """Return each row's own gradient, for every row the run fed; None if it fed none."""
    calls = with_held_labels(target, model, seen.calls)
    if not calls:
        return None
    if not calls[0].replayable:
        return _confirmed(target, None, seed)
    row_loss, source = row_loss_for(target, model, calls[0])
    if row_loss is _own and calls[0].given:  # the loop's loss is its own: confirm the model's
        source = "the model's own loss on the labels its batch held (popped before the forward)"
        relative = _confirmed(target, source, seed, _own)
        if relative is not None:
            return _counted(relative, model, calls, _own) if relative.added else relative
    if row_loss is None:
        y = labels_of(options_of(target).example)
        if y is None:  # a dict example that names no labels: no loss to guess by them
            return _confirmed(target, None, seed, unguessed=NO_LABELS)
        tried = guesses(y, token_labels(calls[0], 0) is not None)
        for i, (name, guess) in enumerate(tried):
            last = i == len(tried) - 1  # its reason names every guess: "not A nor B"
            said = " nor ".join(n for n, _ in tried) if last else name
            relative = _confirmed(target, said, seed, guess)
            if relative is not None and relative.added:
                return _counted(relative, model, calls, guess)
            if relative is None:
                row_loss = guess
                source = f"{name} (the labels' usual loss, confirmed against the loop on one row)"
                break
        else:  # no guess is the loop's loss: each row's reference is the loop's own
            return relative
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
    labelled: dict[bytes, float] = {}
    for call in calls:
        for i, key in enumerate(call.row_keys):
            labels = token_labels(call, i)
            if key not in weights and labels is not None:
                labelled[key] = float((labels[1] != IGNORE_INDEX).sum())
                weights[key] = counted(model, call, i, labels, row_loss)
    return replace(ref, weights=weights, labelled=labelled) if weights else ref


NO_LABELS = "its example names no labels (labels, y, ...) to guess its loss by"
UNREPLAYABLE = "what it calls steps itself and cannot be replayed on one row"


def _confirmed(
    target: Target,
    guess: str | None,
    seed: int,
    guessed_loss: RowLoss | None = None,
    unguessed: str = UNREPLAYABLE,
) -> Reference | None:
    """Return None if the guessed loss (the labels' usual one, or guessed_loss) is the loop's
    (to a scale the loop applies to every row, as a missing division by the micro-batches
    does), else the loop's own one-row references; those always where there is no guess (what
    the loop calls cannot be replayed)."""
    key = (id(target), seed, guess)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]
    c = options_of(target)
    y = labels_of(c.example)
    k = count_of(c)
    n = max(k, c.least_batches)  # a window of k rows; an epoch of as many batches as it needs
    own: dict[bytes, Tensor] = {}
    live: Tensor | None = None  # the params the one-row runs trained (None: every one)
    factors: list[float | None] = []
    tol = 0.0  # the runs' tolerance: in the lower precision of an autocast forward
    changed = False  # a one-row step applied more than backward() left (_added)
    beside: dict[bytes, Tensor] = {}  # the guessed loss's gradient plus that, per row
    for kind in (0, 1):
        # its first update is all that is read: the run ends there (a slow loop's work after
        # each update is not waited for), unless another optimizer's step may still join it
        model, seen = run_at_zero_lr(
            target, Batching((kind,) * n, 1, 1, seed), one_update, masks=False
        )
        step = seen.steps[0] if seen.steps else None
        if step is None or not step.calls or step.unscaled is None:
            raise CheckFailed(
                f"on {k} identical row(s) in batches of one the loop took "
                f"{len(seen.steps)} optimizer step(s) with a gradient: expected one"
            )
        per = step.rows if reduced(target) == "sum" else 1
        # as the loss scaler unscaled it, or, where something changed the still-scaled
        # gradient before unscale_ (a clip), as backward() left it over the scale, or as
        # clipping found it and the step used it: a loop that scales .grad itself before
        # its step (torchtune's scale_grads by 1 / the window's tokens) divides there, not in
        # its loss
        readings = [g / per for g in (step.unscaled, step.before_clipping) if g is not None]
        readings += [g / per for g in (*step.clip_found, step.applied) if g is not None]
        call = with_held_labels(target, model, step.calls[:1])[0]
        tol = max(tol, tolerance(model, step.calls))
        # what it applied beyond what backward() left by more than a scale or a clip (weight
        # decay added to .grad by hand, p.grad += wd * p): each row's reference is the
        # loop's own gradient as its step used it
        added = _added(step, readings[0], per, tol)
        changed = changed or added is not None
        own[call.row_keys[0]] = readings[0] if added is None else added
        if step.live is not None:  # what it froze there, each row's own reference lacks
            live = step.live if live is None else live * step.live
        if y is None or guess is None:
            factors.append(None)
            continue
        try:
            guessed = row_gradient(model, call, 0, guessed_loss or _named(loss_of, y))
        except CheckFailed:
            raise  # the model's own loss, carried on one row and not on another
        except Exception:  # the guess fits no output of this model's (a tuple, a dict of heads)
            factors.append(None)
            continue
        # on the params it stepped, and trained there (not frozen in its backward())
        mask = (1.0 if seen.trained is None else seen.trained) * (
            1.0 if step.live is None else step.live
        )
        found = [factor(g * mask, guessed * mask, tol) for g in readings]
        matching = [f for f in found if f is not None and near(f, 1.0, tol)]
        factors.append(matching[0] if matching else found[0])
        if added is not None and reduced(target) == "mean":  # the guess, and what the step
            beside[call.row_keys[0]] = guessed + (added - readings[0])  # added (its decay)
    confirmed = _one_known_scale(factors, k, tol) and not changed
    # where the loop changed .grad after backward(), the loss's own gradient plus that change
    # only where backward() gave the gradient as it is (a k the loop divides .grad by after
    # backward() is no addition): a scale of the loss (k micro-batches undivided) stays judged
    plus_added = (
        changed
        and len(beside) == len(own)
        and all(f is not None and near(f, 1.0, tol) for f in factors)
    )
    changes = "it changes .grad after backward() by more than a scale or a clip (weight decay "
    changes += "added to .grad by hand?): each row's reference is "
    if plus_added:
        own, source = beside, f"{guess} plus the loop's addition"
        why = f"{changes}{guess}'s gradient on it plus what the loop's step added on one row"
    else:
        source = "the loop itself"
        if changed:
            why = (
                f"{changes}its own step on that row, so a scale that every row shares is not judged"
            )
        elif guess is not None:
            why = (
                f"its loss is not {guess}{_times(factors, tol)}: name it with loss= to judge the "
                "scale of every step (a loss of the output and labels alone: one with a penalty "
                "on the params added is not one)"
            )
        else:
            why = f"{unguessed}, so a scale that every row shares is not judged"
    ref = (
        None
        if confirmed
        else Reference(
            own, f"{source} on that row alone ({why})", own=why, live=live, added=plus_added
        )
    )
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (target, ref)
    return ref


def _added(step: Step, before: Tensor, per: int, tol: float) -> Tensor | None:
    """Return what a one-row step applied (over per) where the loop changed .grad after
    backward() by more than a multiple or a clip of what it left, and no call of torch's
    clipping came between (None: it did not)."""
    if step.applied is None or step.clip_found:
        return None
    applied = step.applied / per
    if factor(applied, before, tol) is not None or clipping(applied, before, tol):
        return None
    return applied


def _times(factors: list[float | None], tol: float) -> str:
    """Return the one factor both kinds of rows give the loop's gradient over the guessed
    loss's, in words ("" if none): a whole number is what backward() called as many times
    through one graph gives."""
    a, b = factors
    if a is None or b is None or not near(a, b, tol) or a <= 0:
        return ""
    said = f", on one row {a:.4g} times its gradient"
    if round(a) >= 2 and near(a, round(a), tol):
        said += (
            f" (backward() called {round(a)} times through one graph, retain_graph=True, or a "
            f"loss summed over {round(a)} outputs?)"
        )
    return said


def _one_known_scale(factors: list[float | None], k: int, tol: float) -> bool:
    """Return True if both kinds of rows have one factor: 1, the k (or 1 / k) a loop that
    mishandles its k micro-batches applies to every row alike, or a loss scaler's scale (a
    power of two from 2^10) that a loop forgot to undo."""
    a, b = factors
    if a is None or b is None or not near(a, b, tol):
        return False
    known = [1.0] + ([float(k), 1 / k] if k > 1 else [])
    if any(near(a, s, tol) for s in known):
        return True
    return a >= 1024 and math.isclose(math.log2(a), round(math.log2(a)), abs_tol=1e-6)
