"""What the watcher reads of each loss the code computes (LossReader, the Observer's): its
per-element gradients, the count its mean divides by, and whether its target is a fetched
batch's and which loader fetched it (targets.py). The state it reads and writes is the
Observer's (observed.py).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from linreg import checks
from linreg.kinds.training_loop.calls import autocast_now
from linreg.kinds.training_loop.labels import BROADCASTING, compared
from linreg.kinds.watched.graphs import Leaves, count_of, counted, not_ignored
from linreg.kinds.watched.heads import Head, head, piece
from linreg.kinds.watched.kept import Watched
from linreg.kinds.watched.loss_gradients import deferred, gradients
from linreg.kinds.watched.records import LossCall
from linreg.kinds.watched.targets import Targets, constant_of, same_of, view_of

# losses computed with grad on that no backward() has reached yet, kept at most (an evaluation
# with grad on computes many: each holds its graph)
PENDING = 1024
# the losses read whose target is a distribution, never a batch's labels (a teacher's outputs,
# soft labels): their weight is solved for, as a penalty's, and never judged
SOLVED = ("kl_div",)


class LossReader(Targets):
    """The Observer's reading of losses (where each one's target came from: Targets,
    targets.py); the attributes it reads and writes are the Observer's (set in
    Observed.__init__, observed.py)."""

    seen: Watched
    busy: bool
    precision: float
    pending: list[LossCall]
    keep_grads: Callable[[list[Tensor]], None]  # (PutBack's)
    backwards: int
    yields: dict[int, int]
    heads: dict[int, Head]
    leaves: Leaves

    def loss(self, name: str, fn: Callable[..., Tensor], args: Any, kwargs: Any, out: Any) -> None:
        """Read a loss the code computed with grad on: repeated per element on the same input,
        its summed per-element loss differentiated through the code's own graph. What cannot be
        read (legacy arguments, a graph that allows no second pass: reentrant checkpointing) is
        left unread, never raised into the code: a backward() that reaches it is not judged."""
        if self.busy or not isinstance(out, Tensor) or out.grad_fn is None:
            return
        self.busy = True
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
            given = bound.arguments
            if out.ndim != 0 and given.get("reduction") != "none":
                return
            self.precision = max(self.precision, precision(given.get("input")))
            self._read_last(given.get("target"))
            if name in BROADCASTING:  # label-shape's, where a backward() reaches it
                compared(name, given.get("input"), given.get("target"), out, self.seen)
            if given.get("size_average") is not None or given.get("reduce") is not None:
                return  # the legacy arguments: not read
            reduction = given.get("reduction", "mean")
            by_code = reduction == "none"
            if by_code:  # the code reduces it (l.mean(), l.sum() / n): read as a summed
                per, reduction = out, "sum"  # loss's, its coefficient the code's (reduced_whole)
            else:
                given["reduction"] = "none"
                both = (given.get("input"), given.get("target"))
                if name in BROADCASTING and all(isinstance(t, Tensor) for t in both):
                    # the shapes it broadcasts made equal first: the same elements, and no
                    # second warning of torch's (the code's own call gave it)
                    equal = torch.broadcast_tensors(*both)  # type: ignore[no-untyped-call]
                    per = fn(**{**given, "input": equal[0], "target": equal[1]})
                else:
                    per = fn(*bound.args, **bound.kwargs)
            under = self.leaves(out.grad_fn)  # (the same as under per: the code's nodes, held)
            # taken as a backward() reaches it (loss_gradients), or now; now where the code
            # reduces it: the hook below reads what that backward() brings its elements
            later = not by_code and deferred(given.get("input"), under)
            grads = {} if later else gradients(per, under)
            self.keep_grads(under)  # its .grad as the watch found it, put back after
            del self.pending[:-PENDING]  # losses no backward() reached: the latest
            predicted = given.get("input")
            nearest = head(predicted.grad_fn) if isinstance(predicted, Tensor) else frozenset()
            fetched_by, fetched_from = self._fetched(given.get("target"))
            # a mean of class-weighted targets divides by their weights' sum (torch's own); a
            # loss the code reduces itself, by a count of its own: that, its targets, or its
            # batch's rows (a sum over tokens / the sentences), read as it did (watch_counts)
            targets, weighted = count_of(name, per, given)
            own = reduction != "mean"
            count = targets if weighted is None else weighted
            others = {}
            if own and weighted is not None:
                others["targets"] = targets
            rows = self._rows(given.get("target")) if own else None
            if rows and per.numel() > rows and per.numel() % rows == 0:
                others["rows"] = float(rows)
            positives = _positives(name, given) if own else None
            chosen = self._picked_from(given.get("target"))
            if own and chosen is not None:  # rows a mask picked (a detector's boxes at its
                # positive anchors): a sum over them / the batch's images, or / its positives
                samples = self.rows.get(chosen.fetched.untyped_storage().data_ptr())
                if samples is not None and samples > 1:
                    others["picked"] = float(samples)
                if positives is None:
                    positives = chosen.rows
            if positives is not None:  # (a sum over the batch's positive labels, or objects)
                others["positives"] = float(max(1, positives))
            # a KL term's target is a distribution (a teacher's, soft labels): its weight is
            # solved for, never judged, as a penalty's
            from_batch = name not in SOLVED and self._from_batch(given.get("target"), chosen)
            # the tensor its prediction is of: a view's base (columns of one output share it)
            base = predicted if isinstance(predicted, Tensor) else None
            base = base if base is None or base._base is None else base._base
            found = self._found(given.get("target"), chosen)
            self.pending.append(
                LossCall(
                    out.grad_fn,
                    grads,
                    count,
                    from_batch,
                    view_of(given.get("target")),
                    under,
                    constant_of(given.get("target")),
                    name,
                    reduction,
                    by_code,
                    elements=out.numel(),
                    backwards=self.backwards,
                    fetched_by=fetched_by,
                    fetched_from=fetched_from,
                    fetched_at=0 if fetched_by is None else self.yields.get(fetched_by, 0),
                    nearest=nearest,
                    piece=piece(predicted),
                    # where no batch holds its target (y - mu) / sd), the last to fetch
                    source=(None if found is None else found[1]) or fetched_from,
                    found=found,
                    per=per if later else None,
                    others={k: n for k, n in others.items() if n != count},
                    # (objectives.py reads it on a fetched batch's target alone)
                    same=same_of(given.get("target"), under) if from_batch else None,
                    predicted=weakref.ref(predicted) if isinstance(predicted, Tensor) else None,
                    of=None if base is None else weakref.ref(base),
                    # (told while both are alive: an address alone may be a freed one's)
                    shared=base is not None
                    and any(c.of is not None and c.of() is base for c in self.pending),
                    out=weakref.ref(out),
                    # (a mask of the code's on it read as a backward() reaches it: masks.py)
                    output=out if by_code and out.numel() > 1 else None,
                    counted=counted(name, out, given) if by_code and out.numel() > 1 else None,
                )
            )
            if by_code:  # the weight each element gets from the backward() that reaches it
                # (the call weakly: it holds its output, whose hook this is, and a cycle
                # through a tensor's hooks is one the collector never frees)
                call = weakref.ref(self.pending[-1])
                weighed = functools.partial(weighed_alike, call, out.detach() != 0)
                out.register_hook(weighed)  # type: ignore[no-untyped-call]
        except Exception:
            return
        finally:
            self.busy = False


def weighed_alike(held: weakref.ref[LossCall], counts: Tensor, grad: Tensor) -> None:
    """Note whether a reduction="none" loss's elements were all weighed alike (LossCall.alike)
    by what the backward() brought them: those whose loss is not 0 (an ignored target's, a
    padded position's, has no gradient to weigh, whatever a mask gives it); where a mask of the
    code's was read on it (masks.py), those it keeps, and every other one weighed 0."""
    call = held()
    if call is None or call.taking:  # let go, or the watch's own pass through it (masks.py)
        return
    g = grad.detach()
    if call.kept is not None:
        kept = call.kept.to(g.device)
        if kept.shape != g.shape or bool(g[~kept].any()):
            call.alike = False
            return
        counts = counts & kept
        if call.per_sample is not None:  # (each sample's mean: weighed alike times its count)
            g = g * call.per_sample.to(g)
    w = g.flatten()[counts.flatten()]
    if call.signed and w.numel() and bool((w < 0).all()):  # (its loss the negation: -ll)
        call.grads = {k: -v for k, v in call.grads.items()}
        w = -w
    if w.numel() > 1 and not torch.allclose(w, w[:1].expand_as(w), rtol=1e-5, atol=0.0):
        call.alike = False
    elif w.numel() and not bool(w.any()):  # a weight of 0 on each (every row's loss clamped
        call.alike = False  # at a cap, l.clamp(max=1)): nothing to weigh, not read


def precision(predictions: Any) -> float:
    """Return the tolerance of the predictions a loss was called on, or of the autocast it ran
    under (0.0: neither), where it is lower than float32's: a forward under torch.autocast
    computes in bfloat16 or float16 whatever its params' dtype (the labels' dtype is theirs).
    Predictions cast up or viewed after such a forward (`logits.float()`, the loss outside
    the autocast block) are read as the dtype they were computed in (_computed_in)."""
    dtypes = []
    if isinstance(predictions, Tensor) and predictions.is_floating_point():
        dtypes.append(predictions.dtype)
        dtypes += _computed_in(predictions.grad_fn)
    now = autocast_now()
    if now is not None:
        dtypes.append(now[1])
    return max((checks.tolerance(d, steps=True) for d in dtypes), default=0.0)


# the nodes that copy or view their input: what stands between a forward and its predictions
# cast (`.float()`, `.to(torch.float32)`) and reshaped for the loss
_CAST_OR_VIEW = ("ToCopyBackward0", "ViewBackward0", "UnsafeViewBackward0",
                 "ReshapeAliasBackward0", "TransposeBackward0", "PermuteBackward0",
                 "SqueezeBackward0", "SqueezeBackward1", "UnsqueezeBackward0", "CloneBackward0",
                 "SliceBackward0", "SelectBackward0")  # fmt: skip


def _computed_in(node: Any, most: int = 16) -> list[torch.dtype]:
    """Return the dtypes of the nodes behind predictions through copies and views alone (at
    most `most`): the first other node's is the dtype the forward computed them in."""
    dtypes = []
    for _ in range(most):
        if node is None or not node.next_functions:
            break
        node = node.next_functions[0][0]
        try:
            dtypes += [m.dtype for m in node._input_metadata if m.dtype.is_floating_point]
        except Exception:  # (a node of no metadata: an extension's)
            break
        if type(node).__name__ not in _CAST_OR_VIEW:
            break
    return dtypes


def _positives(name: str, given: dict[str, Any]) -> float | None:
    """Return a target's count of positive labels, at least 1 (what a detector's or a
    multi-label loss's sum is divided by: RetinaNet's num_pos clamped at 1), where the target
    is floating, of two elements or more, each 0 or 1; or its class indices of a class other
    than 0, the background's (SSD's num_fg: a classification summed over its anchors and
    divided by the objects among them), its ignore_index aside; else None."""
    target = given.get("target")
    if not isinstance(target, Tensor) or target.numel() < 2:
        return None
    t = target.detach()
    if not t.is_floating_point():
        kept = not_ignored(name, given)  # (class indices: cross_entropy's, nll_loss's)
        return None if kept is None else max(1.0, float((kept & (t != 0)).sum()))
    if not bool(((t == 0) | (t == 1)).all()):
        return None
    return max(1.0, float(t.sum()))
