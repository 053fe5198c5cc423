"""An update's losses as terms: a micro-batch's loss calls, those of one term together
(term_of: a loss function's, or, where one function's losses are on several heads, a head's:
on_heads; or, where they are on two datasets' batches reduced each its own way, a dataset's:
on_sources; both splits); whether they are terms weighed each its own way (of_several), and
whether each micro-batch's are one pooled mean (is_pooled); whether each micro-batch's calls
are a sequence's steps, each on other elements of one target (steps).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from linreg.kinds.watched.heads import Piece
from linreg.kinds.watched.records import LossCall, MicroBatch

# per function split into terms: {} where by head (on_heads), else each dataset's number
Split = Mapping[str, Mapping[int | None, int]]


def terms_of(mb: MicroBatch, split: Split) -> list[list[LossCall]]:
    """Return a micro-batch's loss calls, those of one term together (term_of): a loss per row
    or per step added up is one term (its sum); losses of different functions are each a term
    of their own (a multi-task loss: mse + 0.5 * cross_entropy), as they are where each task's
    loss goes through its own backward() (a head per task on a shared trunk)."""
    by: dict[str, list[LossCall]] = {}
    for c in mb.losses:
        by.setdefault(term_of(c, split), []).append(c)
    return list(by.values())


def of_several(micro: list[MicroBatch], calls: list[list[LossCall]], split: Split) -> bool:
    """Return whether the calls are terms weighed each its own way, not one mean: more than a
    term a micro-batch, or of several functions (or heads: split)."""
    return len(calls) > len(micro) or len({term_of(c[0], split) for c in calls}) > 1


def is_pooled(micro: list[MicroBatch], calls: list[list[LossCall]], split: Split) -> bool:
    """Return whether terms that are tasks of one function on heads of their own (split) are
    to be read first as one mean of all their rows (tasks pooled into one mean on purpose,
    where the update applied it): where the tasks' counts differ, and the calls would be one
    mean but for their heads. (Where the counts are equal, so is the average of the tasks'
    means: an update of a nominal divisor, read as terms, shows it beside the others.)"""
    tasks: defaultdict[str, float] = defaultdict(float)  # each term's count
    for c in calls:
        tasks[term_of(c[0], split)] += sum(x.count for x in c)
    by_function = [c for mb in micro for c in terms_of(mb, {})]
    return len(set(tasks.values())) > 1 and not of_several(micro, by_function, {})


def on_heads(micro: list[MicroBatch]) -> set[str]:
    """Return the loss functions whose calls in the micro-batches reached two heads or more
    (graphs.head: the params nearest their input): tasks of one function, a regression per
    head on a shared trunk, each the mean of its own rows, not one mean over both tasks' rows.
    Two sources pooled through stems of their own into one head, or a mixture of experts
    routed by its rows, end on one head: one objective."""
    reach: dict[str, dict[int, set[int]]] = {}  # per function, per head: the params reached
    read: dict[int, set[Piece | None]] = {}  # per head: the pieces of an output read
    for mb in micro:
        for c in mb.losses:
            if c.head:
                reach.setdefault(c.name, {}).setdefault(c.head, set()).update(c.grads)
                read.setdefault(c.head, set()).add(c.piece)
    # tasks each reach a param another does not (its head), or read columns of one output that
    # another does not (heads.Head.apart); where two heads' losses reach the same params and
    # read the same, one objective's losses end on each (a contrastive loss's two
    # directions, each its own matmul, on the same two towers)
    return {
        name
        for name, heads in reach.items()
        if len(heads) > 1
        and len({(frozenset(r), frozenset(read[h])) for h, r in heads.items()}) == len(heads)
    }


def on_sources(micro: list[MicroBatch]) -> dict[str, dict[int | None, int]]:
    """Return the loss functions whose calls in the micro-batches are on the batches of two
    datasets or more, reduced each its own way (a labelled batch's mean beside an unlabelled
    batch's confident pseudo-labels summed and divided by that batch's rows: FixMatch's), each
    with its datasets numbered in the order met: an objective each, each a term; where each
    dataset's are reduced alike (two domains' means added), one objective, as before."""
    found: dict[str, dict[int | None, set[str]]] = {}
    for mb in micro:
        for c in mb.losses:
            found.setdefault(c.name, {}).setdefault(c.source, set()).add(c.reduction)
    return {
        name: {source: n for n, source in enumerate(by, 1)}
        for name, by in found.items()
        if len(by) > 1 and None not in by and len({frozenset(r) for r in by.values()}) > 1
    }


def splits(micro: list[MicroBatch]) -> dict[str, dict[int | None, int]]:
    """Return the functions whose calls are terms apart: by head (on_heads: {}), else by
    dataset (on_sources: each one's number)."""
    return {**on_sources(micro), **{name: {} for name in on_heads(micro)}}


def term_of(c: LossCall, split: Split) -> str:
    """Return the term a loss call is of: its function's, and its head's where the update's
    calls of that function reached several (on_heads), or its dataset's where they are on
    several datasets' batches reduced unlike (on_sources)."""
    by = split.get(c.name)
    if by:
        return f"{c.name or 'loss'} (dataset {by.get(c.source, 0)})"
    return f"{c.name or 'loss'} (head {c.head})" if by is not None and c.head else c.name


def steps(micro: list[MicroBatch]) -> bool:
    """Return whether each micro-batch's losses are two or more calls of one function on its
    fetched batch, each on another piece of one target tensor (a loss per step of a sequence,
    `loss += criterion(out_t, y[:, t])`, each step's prediction a tensor of its own): not one
    target twice (two views of the images on their labels), nor targets of their own (a
    contrastive loss's arange), nor columns of one output (a loss per target column)."""
    return bool(micro) and all(
        len(mb.losses) > 1
        and len({c.name for c in mb.losses}) == 1
        and all(c.from_batch and c.target is not None and c.target[0] != -1 for c in mb.losses)
        and len({c.target[0] for c in mb.losses if c.target}) == 1
        # (other elements each: not one target reshaped, y beside y.unsqueeze(1))
        and len({c.target[1] for c in mb.losses if c.target}) == len(mb.losses)
        # (each step's prediction its own: columns of one output, out[:, k] on y[:, k], are
        # targets of one objective, each target's loss added)
        and not any(c.shared for c in mb.losses)
        for mb in micro
    )
