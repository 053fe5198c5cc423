"""A running loss that keeps the graph: `total += l` holds every batch's graph alive."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, data, loss, model, optim, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.kinds.epoch_loss import EPOCHS, run_epoch
from linreg.kinds.loop import ObjectiveOptions
from linreg.kinds.runs import params_like
from linreg.kinds.watched.graphs import graph
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def train_epoch_running_tensor(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> Tensor:
    """Mistake: `total += l.sum()` with the tensor l: the total keeps every batch's graph."""
    w, b = params
    total: Tensor | float = 0.0
    for X, y in data.data_iter(batch_size, features, labels):
        l = loss.squared_loss(model.linreg(X, w, b), y)
        l.sum().backward()  # type: ignore[no-untyped-call]
        optim.sgd([w, b], lr, X.shape[0])
        total = total + l.sum()  # a tensor with a grad_fn: history accumulates
    return total / len(features)  # type: ignore[return-value]


def train_epoch_reports_in_grad_mode(
    features: Tensor, labels: Tensor, params: list[Tensor], *, lr: float, batch_size: int
) -> Tensor:
    """Mistake: the batch loss reported after the step, computed in grad mode and summed up."""
    w, b = params
    total = torch.zeros(())
    for X, y in data.data_iter(batch_size, features, labels):
        loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
        optim.sgd([w, b], lr, X.shape[0])
        total = total + loss.squared_loss(model.linreg(X, w, b), y).sum()  # never backpropagated
    return total / len(features)


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


class _Held:
    """What autograd keeps for a saved tensor: a weakly referable box, to count the living."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


def holds_no_graph(target: Target, run: dict[str, Any]) -> None:
    """The reported loss has no grad_fn, and nothing autograd saved in the epoch is still alive."""
    alive: weakref.WeakSet[_Held] = weakref.WeakSet()

    def pack(t: Tensor) -> _Held:
        held = _Held(t)
        alive.add(held)
        return held

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda held: held.tensor):
        reported = run_epoch(target, run)
    grad_fn = reported.grad_fn if isinstance(reported, Tensor) else None
    batches = -(-len(run["features"]) // run["batch_size"])
    if grad_fn is not None or alive:
        raise checks.CheckFailed(
            f"after an epoch of {batches} batches the reported loss "
            + (f"has a grad_fn ({type(grad_fn).__name__})" if grad_fn else "has no grad_fn")
            + f" and {len(alive)} tensors autograd saved are still alive: a running total of "
            "loss tensors keeps every batch's graph; add float(l) or l.item() instead"
        )
    del reported


def _runs(options: ObjectiveOptions) -> SearchStrategy[dict[str, Any]]:
    from linreg.testing import strategies as sts

    return sts.loop_runs(dtype=options.dtype).map(lambda r: {**r, "num_epochs": 1})


def _book() -> dict[str, Any]:
    X, y = _kit.book(NUM_EXAMPLES, torch.float32)
    return {
        "features": X,
        "labels": y,
        "params": params_like(X, 0),
        "lr": 0.03,
        "batch_size": BATCH_SIZE,
        "seed": 0,
        "num_epochs": 1,
    }


PROPERTIES = (
    Property(
        name="the reported loss holds no graph: no grad_fn, and no saved tensor left alive",
        kind="epoch-loss",
        check=holds_no_graph,
        examples=_runs,
        holds_for=EPOCHS,
        refuted_by=(
            Variant(train_epoch_running_tensor, None, "epoch-loss"),
            Variant(train_epoch_reports_in_grad_mode, None, "epoch-loss"),
        ),
        book=_book,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def _graph_size(t: object) -> int:
    """Count the autograd nodes reachable from t's grad_fn."""
    return len(graph([getattr(t, "grad_fn", None)]))


def demo() -> Evidence:
    """Count the graph nodes and live saved tensors each reported loss holds, by epoch size."""
    held: dict[str, dict[int, tuple[int, int]]] = {}
    for fn in (train.train_epoch, train_epoch_running_tensor, train_epoch_reports_in_grad_mode):
        held[fn.__name__] = {}
        for n in (100, NUM_EXAMPLES):
            X, y = _kit.book(n, torch.float32)
            run = {
                "features": X,
                "labels": y,
                "params": params_like(X, 0),
                "lr": 0.03,
                "batch_size": BATCH_SIZE,
                "seed": 0,
            }
            alive: weakref.WeakSet[_Held] = weakref.WeakSet()

            def pack(t: Tensor, alive: weakref.WeakSet[_Held] = alive) -> _Held:
                h = _Held(t)
                alive.add(h)
                return h

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.tensor):
                reported = run_epoch(Target(fn, "epoch-loss"), run)
            held[fn.__name__][n // BATCH_SIZE] = (_graph_size(reported), len(alive))
            del reported
    ok = (
        held["train_epoch"] == {10: (0, 0), 100: (0, 0)}
        and all(v[100][0] > 5 * v[10][0] > 0 for k, v in held.items() if k != "train_epoch")
        and held["train_epoch_reports_in_grad_mode"][100][1]
        > 5 * held["train_epoch_reports_in_grad_mode"][10][1]
        > 0
    )
    return Evidence(
        id="running-loss-graph",
        expected=(
            "a float running total holds nothing; `total += l` keeps a graph that grows with the "
            "number of batches, and a report computed in grad mode also keeps its saved tensors"
        ),
        observed="; ".join(
            f"{k}: " + ", ".join(f"{b} batches {g} nodes, {a} saved" for b, (g, a) in v.items())
            for k, v in held.items()
        ),
        ok=ok,
        figures={
            k: {str(b): {"graph_nodes": g, "saved_alive": a} for b, (g, a) in v.items()}
            for k, v in held.items()
        },
    )


PITFALL = Pitfall(
    id="running-loss-graph",
    title="A running loss that keeps the graph",
    explanation=(
        "`total += l` with the tensor l (PyTorch's FAQ: don't accumulate history across your "
        "training loop) builds one graph across the epoch: every batch's autograd nodes stay alive "
        "until the total is freed, and a loss recomputed for the report in grad mode keeps its "
        "saved tensors too. Fix: accumulate float(l) (or l.item()), as train_epoch does, or "
        "compute the report under torch.no_grad()."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=17,
)
