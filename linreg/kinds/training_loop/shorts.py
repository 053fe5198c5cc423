"""A short last batch the loop left untrained, read from what its forwards were fed: one fed
and never reached by a backward() (`dropped_shorts`), one fed to no forward (`unfed_short`),
and one a DataLoader of the loop's own made and the loop skipped (`skipped_own_shorts`: a
hand-written drop_last). short-last-batch's (pitfalls/short_last_batch.py).
"""

from __future__ import annotations

from torch import Tensor

from linreg.kinds.training_loop.calls import Call, memory_of, storage_of
from linreg.kinds.training_loop.ledger import Observed


def dropped_shorts(seen: Observed) -> int:
    """Return the updates that hold a forward no backward() reached of a short last batch the
    audit's loader made in a pass that trained (the batch, or a view of it: a batch smaller
    than batch_size skipped after its forward), where such batches are all the run's forwards
    no backward() reached (others: backward() on every k-th batch, the weights' to name). An
    epoch's last update never steps one: it shows where an update followed, and not at all
    on a loop handed no loader of the audit's."""
    shorts = {storage_of(t) for batch in seen.shorts for t in batch} - {None}

    def short(call: Call) -> bool:
        return memory_of(call) in shorts

    unreached = [[short(step.calls[i]) for i in step.unreached] for step in seen.steps]
    if not shorts or not all(all(marks) for marks in unreached):
        return 0
    return sum(bool(marks) for marks in unreached)


def unfed_short(seen: Observed) -> bool:
    """Return True if a short last batch of a pass that trained went through no forward (none
    was fed its tensors or a view of them): a loop that fetches ahead feeds it later, one that
    casts or augments it feeds new tensors (then its forwards alone tell: ShortFetches)."""
    fed = {memory_of(call) for call in seen.calls}
    return any(({storage_of(t) for t in batch} - {None}).isdisjoint(fed) for batch in seen.shorts)


def skipped_own_shorts(seen: Observed) -> int:
    """Return the epochs whose short last batch a DataLoader the loop made itself (over the
    audit's dataset) made and the loop fed to no forward, then trained on: a hand-written
    drop_last (steps_per_epoch = len(dataset) // batch_size). Judged only on a pass whose
    every other batch was fed as it was made (a loop that casts or augments feeds new
    tensors: not told) and after which the model ran again (a budget or an early stop that
    broke off there skipped nothing)."""
    fed = {memory_of(call) for call in seen.calls} - {None}
    last_forward = max((call.clock for call in seen.calls), default=0)
    passes: dict[int, dict[int, list[tuple[int, Tensor]]]] = {}  # pass -> clock -> batch
    for memory, (t, source, clock) in seen.held.items():
        if source is not None and source > 0:
            passes.setdefault(source, {}).setdefault(clock, []).append((memory, t))
    if seen.fed >= sum(seen.pass_rows.get(source, 0) for source in passes):
        return 0  # every row drawn was fed (a short batch carried into the next epoch's
        # first, concatenated: new tensors)
    skipped = 0
    for source, batches in passes.items():
        made = sorted(batches)
        if source not in seen.ended or len(made) < 2:
            continue
        last = batches[made[-1]]
        rows = max((t.shape[0] for _, t in last if t.ndim), default=0)
        if not 0 < rows < seen.pass_batch.get(source, 1) or made[-1] >= last_forward:
            continue
        if any(m in fed for m, _ in last):
            continue
        if all(any(m in fed for m, _ in batches[c]) for c in made[:-1]):
            skipped += 1
    return skipped
