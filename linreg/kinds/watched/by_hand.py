"""A loss written by hand (HandReader, the Observer's): `((pred - y) ** 2).mean()`, d2l's
`squared_loss(y_hat, y).sum() / n`, `-logp.gather(1, y[:, None]).mean()`, which calls no torch
loss function. Each whole sum or mean (Tensor.sum, Tensor.mean, torch.sum, torch.mean, over
every dim) the code takes with grad on, outside a torch loss's own call, is noted with its
input; where a backward() reaches no loss the watcher read (and none was read, nor waits on a
batch: a run on torch losses, where such a sum is a penalty) and exactly one such input, one of
the rows of the batch fetched last (its first dim that batch's samples), each element's loss
a number not 0, that input is read as a loss with reduction="none" the code reduces itself:
its elements' gradients, the count its mean divides by (every element; its rows beside where
each row has several), and whether the backward() weighs them alike. Its target is not seen
(the difference to the labels is taken by the code); where it is a difference of predictions
and labels, label-shape reads the shapes it took (hand_graph.compared).

A sum of a penalty on params by hand beside it (`lam * sum(w.pow(2).sum() for w in ...)`:
an elementwise function of params of its shape alone) is no loss: a term it does not read,
as beside a torch loss. Not read, left as before: two such inputs reached (a penalty of the
batch's activations beside the loss, a reduction inside the forward), an input of another
length than the batch's (but a token batch flattened, its samples times their tokens, or one
fewer each), and one holding a loss of 0 (a hinge's
elements, a mask's the code made: whose mean may count those kept or all, the data does not
tell). A mask the batch's data tells (masks.py's reading: the batch's own flag of known
targets, padding), multiplied, indexed, filled or taken by torch.where, is read as on a torch
loss: its count the kept elements, every element the known mistake's (`(l * m).mean()`).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor

from linreg.kinds.watched.graphs import Leaves, graph
from linreg.kinds.watched.hand_graph import compared, flattened, masked, masks, of_a_param, on_rows
from linreg.kinds.watched.kept import Watched
from linreg.kinds.watched.losses import precision, weighed_alike
from linreg.kinds.watched.records import LossCall
from linreg.kinds.watched.targets import same_of

# the name a loss written by hand is read under (LossCall.name)
HAND = "a loss written by hand"
# the whole reductions noted since the last backward(), kept at most (an evaluation with grad
# on takes many: each holds its input's graph)
HELD = 16
# where each is noted, in the metadata of its sum's node
KEY = "linreg.watch.by_hand"


class Noted:
    """A whole sum or mean the code took with grad on: its input (held by the sum's own node,
    so by the graph: an evaluation's, never backward()ed, is freed with it) and what was known
    then: the samples of the batch fetched last, the loader (iterator, dataset, yields), the
    tolerance of its dtype, the backward() calls before it."""

    def __init__(self, per: Tensor, out: Tensor, fetched: Tensor | None,
                 at: tuple[int | None, int | None, int], tolerance: float,
                 backwards: int, rows: int | None) -> None:  # fmt: skip
        self.per: Tensor | None = per
        self.node = id(per.grad_fn)
        out.grad_fn.metadata[KEY] = self  # type: ignore[union-attr, index]
        self.rows, self.at, self.tolerance, self.backwards = rows, at, tolerance, backwards
        # that batch's tensor (weakly): backward() calls on it again, at the same params (a
        # WGAN critic's real, fake and penalty terms, each its own), are one objective's
        self.fetched = None if fetched is None else weakref.ref(fetched)


class HandReader:
    """The Observer's reading of losses written by hand; the attributes it reads and writes are
    the Observer's (set in Observed.__init__, observed.py)."""

    busy: bool
    calling: int
    read_torch: bool
    pending: list[LossCall]
    hand: list[weakref.ref[Noted]]
    backwards: int
    precision: float
    keep_grads: Callable[[list[Tensor]], None]  # (PutBack's)
    leaves: Leaves
    iterator: int | None
    source: int | None
    yields: dict[int, int]
    rows: dict[int, int]
    samples: Any  # collections.deque[weakref.ref[Tensor]]
    _fetched_now: Callable[[], list[Tensor]]
    seen: Watched

    def reduced(self, per: Any, out: Tensor) -> None:
        """Note a whole sum or mean (out, of one element) the code took of `per` with grad on,
        outside a torch loss's call and the watch's own."""
        if self.busy or self.calling or not isinstance(per, Tensor) or per.grad_fn is None:
            return
        if per.ndim == 0 or out.grad_fn is None:
            return
        at = (self.iterator, self.source, self.yields.get(self.iterator or 0, 0))
        fetched = self._latest()
        rows = None if fetched is None else self.rows.get(fetched.untyped_storage().data_ptr())
        noted = Noted(per, out, fetched, at, precision(per), self.backwards, rows)
        self.hand.append(weakref.ref(noted))
        if len(self.hand) > HELD:
            self.let_go_hand(self.hand[:-HELD])

    def let_go_hand(self, noted: list[weakref.ref[Noted]] | None = None) -> None:
        """Let go of the inputs the reductions noted (all, as the watch ends: a graph the code
        keeps holds none of the watch's after it), and forget them."""
        for r in self.hand if noted is None else noted:
            if (n := r()) is not None:
                n.per = None
        self.hand = [] if noted is None else self.hand[len(noted) :]

    def _latest(self) -> Tensor | None:
        """Return a tensor of the batch fetched last, None where none is known."""
        for ref in reversed(self.samples):
            t: Tensor | None = ref()
            if t is not None:
                return t
        return None

    def by_hand(self, under: set[int], retained: bool = False) -> list[LossCall]:
        """Return, as a loss the code reduces itself, the one reduction noted since the last
        backward() that a backward() (the ids of its nodes: under; retained: it keeps its
        graph) reaches, where it is read (above); else none. Called where that backward()
        reached no loss the watcher read, before it runs: the hook that weighs its elements
        waits for it."""
        alive = [n for r in self.hand if (n := r()) is not None and n.per is not None]
        # (those it does not reach wait for a later backward(): a second head's, backward()ed
        # apart; each held by its graph alone, let go with it)
        self.hand = [weakref.ref(n) for n in alive if n.node not in under]
        # (a penalty on a param by hand, `lam * w.pow(2).sum()`, beside it: not the loss)
        reached = {
            id(n.per): (n, n.per)
            for n in alive
            if n.per is not None and n.node in under and not of_a_param(n.per)
        }
        for n in alive:  # (the graph this backward() frees holds none of them past it)
            if n.node in under:
                n.per = None
        # a run on torch losses (one read, or one on a batch still to be reached: its output
        # alive, and its graph not one this backward() frees, which no later backward() could
        # pass again; not a metric logged with grad): a sum by hand beside them is a term of
        # its own, a penalty, as it always was
        on_batch = any(
            c.from_batch
            and (c.out is None or c.out() is not None)
            and (retained or graph([c.node], accumulators=False).isdisjoint(under))
            for c in self.pending
        )
        if len(reached) != 1 or self.read_torch or on_batch:
            return []
        n, per = next(iter(reached.values()))
        assert per is not None
        # every element a loss of the batch's rows, or those a mask the data tells keeps
        count, every, first = float(per.numel()), per.numel(), per.shape[0]
        if not bool(per.detach().ne(0).all()) or masks(per):
            read = masked(per, self._fetched_now())
            if read is None:
                return []
            count, every, first = read
        if not n.rows:  # (no DataLoader's batch fetched: d2l's data_iter, X[i : i + n])
            self.seen.unbatched += not self.samples
            return []
        if not on_rows(per, n.rows):
            return []
        if first != n.rows and not flattened(first, n.rows, self._fetched_now()):
            return []
        self.busy = True
        try:
            under_it = self.leaves(per.grad_fn)
        finally:
            self.busy = False
        if not under_it:
            return []
        self.keep_grads(under_it)  # its .grad as the watch found it, put back after
        fetched = None if n.fetched is None else n.fetched()
        self.precision = max(self.precision, n.tolerance)
        fetched_by, fetched_from, fetched_at = n.at
        call = LossCall(
            per.grad_fn,
            {},
            count,
            True,
            # its targets, unseen, told by the batch they came with (the iterator's yields
            # then): in a view's shape (storage, offset, shape, stride), its rows first
            (-1, fetched_by, (n.rows,), (fetched_at,)),
            under_it,
            name=HAND,
            reduction="sum",
            by_code=True,
            elements=per.numel(),
            backwards=n.backwards,
            fetched_by=fetched_by,
            fetched_from=fetched_from,
            fetched_at=fetched_at,
            source=fetched_from,
            per=per,
            signed=True,
            others={"rows": float(n.rows)} if every > n.rows else {},
            # (its batch, as objectives.py reads a target: the same again is one objective's)
            same=None if fetched is None else same_of(fetched, under_it),
        )
        if count != per.numel():  # (every element, the mask aside: a known mistake's count)
            call.others["unmasked"] = float(every)
        # what the backward() brings each element: read as the code's own reduction's
        # (the call weakly, as losses.py's: its hook is on a tensor it holds)
        per.register_hook(functools.partial(weighed_alike, weakref.ref(call), per.detach() != 0))  # type: ignore[no-untyped-call]
        self.seen.by_hand += 1
        self._compared(per)
        return [call]

    def _compared(self, per: Tensor) -> None:
        """Count a loss by hand that is a difference of predictions and labels as a loss of
        values (label-shape's), and keep the first whose predictions (B, 1) or (B,) the labels
        broadcast to (B, B): every prediction against every label."""
        found = compared(per)
        if found is None:
            return
        self.seen.values += 1
        shape, own = found
        rows = math.prod(shape)
        if len(own) == 2 and own[0] == own[1] == rows > 1 and not self.seen.broadcast:
            self.seen.broadcast = (
                f"a loss written by hand compared predictions of shape {shape} with labels "
                f"that broadcast them to {own}, every prediction against every label"
            )
