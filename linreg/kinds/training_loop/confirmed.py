"""Whether the loss a row's reference is taken under is the loop's: the loop run on one row
at a time (its first update alone), each of its gradients set beside the guessed loss's.
Confirmed to a scale the loop applies to every row alike (a missing division by the
micro-batches, a loss scaler's scale left in), the guess stands; else each row's reference is
the loop's own gradient on that row (or, where its step added to .grad what backward() left,
weight decay by hand, the guess plus that addition), and the report says why.
"""

from __future__ import annotations

import math

from torch import Tensor

from linreg.checks import CheckFailed
from linreg.kinds.base import Target
from linreg.kinds.training_loop.batching import Batching, count_of
from linreg.kinds.training_loop.labels import RowLoss, with_held_labels
from linreg.kinds.training_loop.ledger import Step, one_update
from linreg.kinds.training_loop.measure import clipping, factor, near, tolerance
from linreg.kinds.training_loop.one_run import run_at_zero_lr
from linreg.kinds.training_loop.row_gradients import Reference, named, row_gradient
from linreg.kinds.training_loop.rows import labels_of, loss_of
from linreg.kinds.training_loop.settings import options_of, reduced

_CACHE: dict[tuple[int, int, str | None], tuple[Target, Reference | None]] = {}

ANY = math.inf  # the factor of a row the guess and the loop both give no gradient on
NO_LABELS = "its example names no labels (labels, y, ...) to guess its loss by"
UNREPLAYABLE = "what it calls steps itself and cannot be replayed on one row"


def confirmed(
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
    targets = 1 if y is None else y.numel()  # each row's labels (tokens), for _as_used
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
        # on n rows, or a few more where it stepped nothing (a loop that zips its loader with
        # a schedule one short never steps on an epoch of one batch)
        for rows in range(n, n + 3):
            model, seen = run_at_zero_lr(
                target, Batching((kind,) * rows, 1, 1, seed), one_update, masks=False
            )
            if seen.steps:
                break
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
        used = _as_used(step, per, readings[0], tol, targets)
        own[call.row_keys[0]] = used if added is None else added
        if step.live is not None:  # what it froze there, each row's own reference lacks
            live = step.live if live is None else live * step.live
        if y is None or guess is None:
            factors.append(None)
            continue
        try:
            guessed = row_gradient(model, call, 0, guessed_loss or named(loss_of, y))
        except CheckFailed:
            raise  # the model's own loss, carried on one row and not on another
        except Exception:  # the guess fits no output of this model's (a tuple, a dict of heads)
            factors.append(None)
            continue
        # on the params it stepped, and trained there (not frozen in its backward())
        mask = (1.0 if seen.trained is None else seen.trained) * (
            1.0 if step.live is None else step.live
        )
        if not bool((guessed * mask).any()) and not any(bool((g * mask).any()) for g in readings):
            factors.append(ANY)  # 0 beside 0: any scale (the other kind of row's tells)
            continue
        found = [factor(g * mask, guessed * mask, tol) for g in readings]
        matching = [f for f in found if f is not None and near(f, 1.0, tol)]
        factors.append(matching[0] if matching else found[0])
        if added is not None and reduced(target) == "mean":  # the guess, and what the step
            beside[call.row_keys[0]] = guessed + (added - readings[0])  # added (its decay)
    if ANY in factors:  # a kind of row with no gradient, under both: the other's tells (on
        told = [f for f in factors if f != ANY]  # none, the guess and the loop agree: 1)
        factors = told * 2 if told else [1.0, 1.0]
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
    if not bool(applied.any()) and not bool(before.any()):  # nothing left, nothing added (a
        return None  # row that meets a hinge's margin, a dead ReLU's output on its target)
    if factor(applied, before, tol) is not None or clipping(applied, before, tol):
        return None
    return applied


def _as_used(step: Step, per: int, before: Tensor, tol: float, targets: int) -> Tensor:
    """Return a one-row step's gradient as the loop's own reference for that row, over per: as
    the loop handed it on (to torch's first clip, else to the step) where it divided what
    backward() left by a count of the update's targets, rows of `targets` labels each (from
    its rows to all their labels: fairseq's multiply_grads by 1 / its tokens, counted after a
    causal shift or without padding too): the rows of a longer update are divided alike.
    Else as backward() left it (before): for rows of one label, a division by any number but
    their count (a world size in one process, an accumulation count divided by twice) is
    the loop's scale, and a factor below 1 of no count a clip by hand."""
    handed = step.clip_found[0] if step.clip_found else step.applied
    f = None if handed is None else factor(handed / per, before, tol)
    if handed is None or f is None or not 0 < f < 1 or targets < 2:
        return before
    n = 1 / f
    whole = near(n, round(n), tol) and step.rows <= round(n) <= step.rows * targets
    return handed / per if whole else before


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
