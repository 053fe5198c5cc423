"""Calling backward twice through one graph: the RuntimeError, and when it does not come."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from linreg import accumulate, checks, data, loss, model, optim, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.config import TrainConfig, bind, mirrors
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS, ObjectiveOptions, run_loop
from linreg.kinds.runs import book_run, params_like
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

SECOND_TIME = "Trying to backward through the graph a second time"

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


@mirrors(accumulate.train_full_batch, num_epochs=1)
def train_concat_backward_every_batch(*args: Any, **kwargs: Any) -> train.TrainResult:
    """Mistake: the seed's 2nd attempt: backward every batch through a loss kept from the 1st."""
    a = bind(train_concat_backward_every_batch, *args, **kwargs)
    c = TrainConfig.of(a)
    features, labels = a["features"], a["labels"]
    w, b = train.prepare(features, labels, a["params"], c.generator, leaves=True)
    result = train.TrainResult(w, b)
    for _ in range(c.num_epochs):
        count = 1
        l = None
        for X, y in data.data_iter(c.batch_size, features, labels, generator=c.generator):
            count += 1
            if l is None:
                l = loss.squared_loss(model.linreg(X, w, b), y)
            else:
                torch.cat((l, loss.squared_loss(model.linreg(X, w, b), y)), dim=0)
            l.sum().backward()  # type: ignore[no-untyped-call]  # the 2nd time through the 1st batch's freed graph: RuntimeError
            optim.sgd([w, b], c.lr, c.batch_size * count)
            result.num_steps += 1
    return result


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def completes(target: Target, run: dict[str, Any]) -> None:
    """The loop runs all its epochs over several batches without raising; its params are finite."""
    got = run_loop(target, run)
    if not all(bool(torch.isfinite(p).all()) for p in got):  # the loop's own error, no pitfall
        raise checks.LoopRaised(
            f"the loop's params are not finite after it ran on finite data at a stable lr: "
            f"{[p.tolist() for p in got]} (a nan or inf in its loss or gradients?)"
        )


def _runs(options: ObjectiveOptions) -> SearchStrategy[dict[str, Any]]:
    from linreg.testing import strategies as sts

    return sts.loop_runs(dtype=options.dtype)


def _book() -> dict[str, Any]:
    X, y = _kit.book(NUM_EXAMPLES, torch.float32)
    return {
        **book_run(NUM_EXAMPLES, BATCH_SIZE),
        "features": X,
        "labels": y,
        "params": params_like(X, 0),
    }


PROPERTIES = (
    Property(
        name="the loop runs all its epochs over several batches without raising",
        kind="loop",
        check=completes,
        examples=_runs,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(Variant(train_concat_backward_every_batch, None, "loop"),),
        book=_book,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Backpropagate twice with and without retain_graph, through a graph that saves nothing."""
    X, y = _kit.book(NUM_EXAMPLES)
    w, b = model.init_params(2, generator=_kit.gen(), dtype=X.dtype)
    l = ((X @ w + b - y) ** 2 / 2).sum()
    l.backward()  # type: ignore[no-untyped-call]
    error = ""
    try:
        l.backward()  # type: ignore[no-untyped-call]
    except RuntimeError as e:
        error = str(e)
    once = torch.autograd.grad(((X @ w + b - y) ** 2 / 2).sum(), w)[0]
    w.grad = None
    l = ((X @ w + b - y) ** 2 / 2).sum()
    l.backward(retain_graph=True)  # type: ignore[no-untyped-call]
    l.backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None
    doubled = float((w.grad / once).mean())
    v = torch.zeros(2, requires_grad=True)
    lin = (v + 1).sum()
    lin.backward()
    lin.backward()  # saves nothing: no error
    seed_error = ""
    try:
        train_concat_backward_every_batch(X, y, batch_size=BATCH_SIZE)
    except RuntimeError as e:
        seed_error = str(e)
    ok = (
        SECOND_TIME in error
        and math.isclose(doubled, 2.0, rel_tol=1e-12)
        and v.grad is not None
        and bool((v.grad == 2).all())
        and SECOND_TIME in seed_error
    )
    return Evidence(
        id="backward-twice",
        expected=(
            "a second backward through the squared loss raises; with retain_graph the grads "
            "double; "
            "(w + 1).sum() backpropagates twice; the seed's 2nd attempt raises at batch 2"
        ),
        observed=(
            f"RuntimeError: {error.split('(')[0].strip()}; retain_graph grad ratio {doubled:.12g}; "
            f"(w + 1).sum() twice: grad {v.grad.tolist() if v.grad is not None else None}; seed's "
            f"loop: {'RuntimeError' if seed_error else 'no error'}"
        ),
        ok=ok,
        figures={"error": error, "retain_graph_ratio": doubled},
    )


PITFALL = Pitfall(
    id="backward-twice",
    title="Calling backward twice through one graph",
    explanation=(
        "backward() frees the tensors the graph saved. A second backward through the same "
        "graph raises 'Trying to backward through the graph a second time' when it needs a freed "
        "saved tensor, as the squared loss does; with retain_graph=True it succeeds and the grads "
        "double; a graph that saves nothing ((w + 1).sum()) never raises and just accumulates. "
        "The seed's second attempt keeps the first batch's loss across batches and calls "
        "backward every batch: it raises at the second batch."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=7,
)
