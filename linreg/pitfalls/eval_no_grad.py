"""Evaluate under torch.no_grad(): in grad mode the result keeps a graph and what it saved."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, loss, model, train
from linreg._book import NUM_EXAMPLES
from linreg.kinds.late import late
from linreg.kinds.runs import book_run
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variant -----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def full_loss_with_grad(features: Tensor, labels: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Mistake: evaluating the full-data loss in grad mode: it keeps a graph and its residual."""
    return loss.squared_loss(model.linreg(features, w, b), labels).mean()


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def holds_no_graph(target: Target, run: dict[str, Any]) -> None:
    """The evaluation's result has no grad_fn: no graph, nothing saved, stays alive."""
    X, y = run["features"], run["labels"]
    w, b = run["params"]
    checks.check_no_graph(lambda: target.fn(X, y, w, b), [X, y, w, b])


def full_loss_detached(features: Tensor, labels: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Evaluate in grad mode, then detach: the graph is freed with the intermediate result."""
    return loss.squared_loss(model.linreg(features, w, b), labels).mean().detach()


def _runs(options: Options) -> SearchStrategy[dict[str, Any]]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    return st.sampled_from([torch.float32, torch.float64]).flatmap(
        lambda dtype: sts.runs(dtype=dtype)
    )


PROPERTIES = (
    Property(
        name="the evaluation's result holds no graph",
        kind="evaluation",
        check=holds_no_graph,
        examples=_runs,
        holds_for=(
            Target(late("train.full_loss"), "evaluation", name="full_loss"),
            Target(full_loss_detached, "evaluation"),
        ),
        refuted_by=(Variant(full_loss_with_grad, "train.full_loss", "evaluation"),),
        book=partial(book_run, NUM_EXAMPLES, 10),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Count what autograd saves for the full-data loss in grad mode and under no_grad."""
    n = NUM_EXAMPLES
    X, y = _kit.book(n, torch.float32)
    w, b = model.init_params(2, generator=_kit.gen())
    held = {}
    for fn in (full_loss_with_grad, train.full_loss):
        _, saved = checks.saved_for_backward(partial(fn, X, y, w, b), [X, y, w, b])
        held[fn.__name__] = {"saved_tensors": saved.count, "bytes_beyond_inputs": saved.new_nbytes}
    ok = held["full_loss_with_grad"] == {"saved_tensors": 2, "bytes_beyond_inputs": 4 * n} and held[
        "full_loss"
    ] == {"saved_tensors": 0, "bytes_beyond_inputs": 0}
    g, m = held["full_loss_with_grad"], held["full_loss"]
    return Evidence(
        id="eval-no-grad",
        expected=(
            f"in grad mode the full-data loss saves X and the ({n}, 1) residual: {4 * n} bytes "
            "beyond "
            "the inputs in float32; under no_grad nothing"
        ),
        observed=(
            f"grad mode: {g['saved_tensors']} tensors saved, {g['bytes_beyond_inputs']} bytes; "
            f"no_grad: {m['saved_tensors']} tensors, {m['bytes_beyond_inputs']} bytes"
        ),
        ok=ok,
        figures=held,
    )


PITFALL = Pitfall(
    id="eval-no-grad",
    title="Evaluate under torch.no_grad()",
    explanation=(
        "A loss computed in grad mode records a graph and keeps the tensors its backward would "
        "need: for the full-data loss, X (the input itself) and the (n, 1) residual, 4n bytes in "
        "float32, held until the result is freed. Under no_grad the result has no grad_fn and "
        "nothing is saved."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=10,
)
