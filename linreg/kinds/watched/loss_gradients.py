"""Each read loss's gradients (per parameter: the gradient of its summed per-element loss),
taken as the backward() that reaches it begins, through the code's graph before that
backward() frees it, where holding its per-element loss till then costs less memory than its
gradients would (`deferred`: a small model's, not a vocabulary's logits); else at once.

What an update is read in is each term's gradients summed over its calls in a micro-batch
(closing.py: a loss per time step added up is one term), never one call's alone. So the calls
of one function on one head (on one dataset's batch, reduced alike: a term of its own where
another dataset's are reduced otherwise, terms.on_sources) that one backward() reaches are
taken in one pass, as their sum:
one at a time, each a pass through the graph below it, which the later ones share, a sequence
model's loss per time step cost the square of the sequence's length. The sum is held by the
first call to reach each param; the others hold zeros (a view of one), so each call keeps the
params it reached (`grads`' keys, which tell objectives and heads apart). A param frozen since
the loss (a GAN's discriminator, for the generator's backward()) gets none, as from the code's
own backward().
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from linreg.kinds.watched.records import LossCall


def deferred(predicted: Any, under: list[Tensor]) -> bool:
    """Return whether a loss's gradients are to be taken as the backward() that reaches it
    begins, its per-element loss held till then, not now: where what that holds (the watch's
    own call's saved tensors: the size of its input, or twice it, as a cross-entropy's
    log-probabilities, or an input and its target) is less than the gradients it would hold
    instead, those of the params under it. A loss of a vocabulary's logits on a small model
    is read now, at a pass each, as it always was."""
    size = predicted.numel() if isinstance(predicted, Tensor) else 0
    return 2 * size <= sum(p.numel() for p in under)


def take(calls: Iterable[LossCall]) -> list[LossCall]:
    """Take the gradients of the calls still holding their per-element loss (LossCall.per),
    those of one function and head (one dataset's batch, reduced alike) together, then let it
    go; return those whose gradients
    could not be taken (to be left unread)."""
    groups: dict[tuple[str, int, int | None, str], list[LossCall]] = {}
    for c in calls:  # (and of one dataset's batch, reduced alike: terms.on_sources)
        if c.per is not None:
            groups.setdefault((c.name, c.head, c.source, c.reduction), []).append(c)
    failed = []
    for group in groups.values():
        if len(group) == 1 or not _together(group):
            failed += [c for c in group if not _alone(c)]
        for c in group:
            c.per = None
    return failed


def _alone(call: LossCall) -> bool:
    """Take one call's gradients; return whether they could be taken."""
    assert call.per is not None
    try:
        call.grads = gradients(call.per, call.under)
    except Exception:
        return False
    return True


def gradients(per: Tensor, under: list[Tensor]) -> dict[int, Tensor]:
    """Return the gradient of a per-element loss's sum by each leaf under it (by id) that it
    reaches, through a graph kept for the code's own backward()."""
    trained = [p for p in under if p.requires_grad]  # (one frozen since: it gets none)
    grads = torch.autograd.grad(per.sum(), trained, retain_graph=True, allow_unused=True)
    return {id(p): g.detach() for p, g in zip(trained, grads, strict=True) if g is not None}


def _together(group: list[LossCall]) -> bool:
    """Take the calls' gradients summed, in one pass; return whether they could be (not
    where a gradient is sparse: an embedding's, which zeros beside it would not sum with)."""
    sums = [c.per.sum() for c in group if c.per is not None]
    try:
        total = sums[0]
        for s in sums[1:]:
            total = total + s
        held = gradients(total, list({id(p): p for c in group for p in c.under}.values()))
    except Exception:
        return False
    if any(g.is_sparse for g in held.values()):
        return False
    reached = set(held)
    for c in group:  # the first call to reach a param holds the sum, the others zeros
        c.grads = {}
        for p in c.under:
            if id(p) in held:
                c.grads[id(p)] = held.pop(id(p))
            elif id(p) in reached:
                c.grads[id(p)] = torch.zeros((), dtype=p.dtype, device=p.device).expand(p.shape)
    return True
