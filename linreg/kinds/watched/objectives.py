"""Which of an update's micro-batches are one objective (`objectives`): terms on the same rows
(a batch's target again, at the same params: an adversarial half beside the clean one), and
turns of zipped loaders (a batch of each of two or more datasets, each backward()ed apart),
each joined into one micro-batch, as their losses in one backward() would be; and whether an
update's micro-batches are terms of one objective rather than batches of data (`are_terms`:
each task's loss on one retained forward, a GAN's real and fake)."""

from __future__ import annotations

from dataclasses import replace

from linreg.kinds.watched.records import LossCall, MicroBatch
from linreg.kinds.watched.terms import splits, term_of

__all__ = ["are_terms", "objectives"]


def objectives(micro: list[MicroBatch], stepped: set[int]) -> list[MicroBatch]:
    """Return the micro-batches, those that are terms of one objective on the same rows joined
    into one, as their losses in one backward() are: a batch's target again, the same tensor
    unchanged after the same fetch, at the same params (an adversarial half beside the clean
    one, each backward()ed apart). Their weights are the objective's (0.3 clean, 0.7
    adversarial), not an accumulation window's; chunks of one batch (other rows), a buffer
    refilled, batches of another fetch, SAM's second pass (at params it moved) and another
    model's loss (no stepped param shared) stay micro-batches."""
    out: list[MicroBatch] = []
    for mb in micro:
        if out and _again(out[-1], mb, stepped):
            out[-1] = _joined([out[-1], mb])
        else:
            out.append(mb)
    return _zipped(out, stepped)


def _zipped(micro: list[MicroBatch], stepped: set[int]) -> list[MicroBatch]:
    """Return an update's micro-batches in turns of zipped loaders, each turn joined into one:
    where they are consecutive turns of one batch each of the same two or more datasets,
    each its own DataLoader's (two domains, a replay memory beside the task's data, each
    loss backward()ed apart: one objective's terms, as in one backward(); a window of such
    turns, a window of joined turns), every loss on its batch's target, at the stepped params
    the first reached, some of them shared. Else as they are: more batches of one loader than
    of another (two task batches beside one memory batch) are a window of micro-batches."""
    found = [{c.found for c in mb.losses} for mb in micro]
    if any(len(f) != 1 or None in f for f in found):
        return micro
    fetches = [f for each in found for f in each if f is not None]
    width = len({dataset for _, dataset in fetches})
    if width < 2 or len(micro) % width:
        return micro
    turns = [range(at, at + width) for at in range(0, len(micro), width)]
    if any(len({fetches[i][k] for i in turn}) < width for turn in turns for k in (0, 1)):
        return micro  # (each turn: every dataset once, each batch its own iterator's)
    calls = [c for mb in micro for c in mb.losses]
    if not all(c.same is not None and c.from_batch for c in calls):
        return micro
    if not all(
        any(_shared(a, b, stepped) for a in micro[0].losses for b in mb.losses) for mb in micro
    ):
        return micro
    return [_joined([micro[i] for i in turn]) for turn in turns]


def _joined(group: list[MicroBatch]) -> MicroBatch:
    """Return micro-batches as one: the first's, holding every one's losses, retained where
    any one's graph was."""
    return replace(
        group[0],
        losses=[c for mb in group for c in mb.losses],
        retained=any(mb.retained for mb in group),
    )


def _again(group: MicroBatch, mb: MicroBatch, stepped: set[int]) -> bool:
    """Return whether every loss of mb is on a target a loss of group was on (_target), at
    the same stepped params, some of them shared (not another model's)."""
    targets = [(was, _target(was)) for was in group.losses]
    return bool(mb.losses) and all(
        (mine := _target(c)) is not None
        and any(mine == t and _shared(was, c, stepped) for was, t in targets)
        for c in mb.losses
    )


def _target(c: LossCall) -> tuple[int, int, int | None, int] | None:
    """Return a loss call's target as it was: the tensor (its id, while alive: a view or an
    address alone may be a freed one's), its version (a buffer refilled in place), and the
    fetch it came after (a constant the code or dataset hands out for every batch); None
    where it is no fetched batch's or is gone."""
    if c.same is None or not c.from_batch:
        return None
    target = c.same[0]()
    return None if target is None else (id(target), c.same[1], c.fetched_by, c.fetched_at)


def _shared(a: LossCall, b: LossCall, stepped: set[int]) -> bool:
    """Return whether two loss calls reached stepped params in common, each as it was for
    both (its version and its elements' sum: SAM's ascent through .data keeps the version)."""
    assert a.same is not None and b.same is not None
    was, now = a.same[2], b.same[2]
    shared = was.keys() & now.keys() & stepped
    return bool(shared) and all(was[i] == now[i] for i in shared)


def are_terms(micro: list[MicroBatch], fetched: int, more: bool) -> bool:
    """Return whether the update's micro-batches are terms of one objective rather than
    batches of data, where their losses are of one function on one head (of several, or
    on several heads, each function's, or head's, are a term read on its own:
    terms.terms_of): a backward() on a graph an earlier one
    retained (each task's loss on one forward); micro-batches each of one label for all
    its rows, not the same label, not each after a batch of one stream of its own (a GAN's
    real and fake); or more backward() calls than the DataLoader batches fetched for the
    update (fetched), some on targets no batch held (chunks of a fetched batch are views
    of it, and stay micro-batches); more: more backward() calls than batches since the start."""
    calls = [c for mb in micro for c in mb.losses]
    split = splits(micro)  # one function's losses on several heads: tasks (or datasets)
    if len({term_of(c, split) for c in calls}) > 1:  # losses of several functions (or
        return False  # heads): each a term of its own, read apart (terms.terms_of; a
        # distillation's KL term on a target the code made, its weight the code's; its
        # cross-entropy, judged, on one forward's retained graph too: held-out review 34)
    if any(mb.retained for mb in micro):  # a backward() on a graph an earlier one kept
        return True  # (retain_graph=True): each task's loss on one forward, not a batch
    labels = [c.constant for c in calls]
    made = not all(c.from_batch for c in calls)  # a target the code made (torch.ones(b))
    drawn = {mb.drawn for mb in micro}  # batches of one stream, each its own fetch
    iterators = {it for it, _ in drawn}
    stream = len(drawn) == len(micro) and len(iterators) == 1 and None not in iterators
    if len(micro) > 1 and None not in labels and len(set(labels)) > 1 and made and not stream:
        return True  # each micro-batch one label for all its rows, not the same: a GAN's
        # (where every target is a fetched batch's, or each micro-batch came after a batch
        # of one stream, smoothed labels of a batch of one class each, batches of one
        # label are data)
    return more and 0 < fetched < len(micro) and made
