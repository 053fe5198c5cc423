"""The update needs torch.no_grad(): in grad mode it raises, or records itself in the graph."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from linreg import checks, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.kinds.runs import book_run, copy_params
from linreg.kinds.update_step import STEPS
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def sgd_without_no_grad(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: the update without `with torch.no_grad():`: in-place on a leaf in grad mode."""
    for param in params:
        param -= lr * param.grad / batch_size  # type: ignore[operator]
        param.grad.zero_()  # type: ignore[union-attr]


def sgd_out_of_place_in_grad_mode(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: `params[i] = param - lr * param.grad / batch_size` in grad mode: a graph grows."""
    for i, param in enumerate(params):
        params[i] = param - lr * param.grad / batch_size  # type: ignore[operator]


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------

Steps = tuple[dict[str, Any], int]  # a run, and how many steps to take


def stays_leaves(target: Target, example: Steps) -> None:
    """Steps called as the trainer calls them (grad mode, or its no_grad) keep params leaves."""
    run, steps = example
    X, y = run["features"], run["labels"]
    params = list(copy_params(run["params"]))
    mode = torch.no_grad if target.options.under_no_grad else contextlib.nullcontext
    for k in range(1, steps + 1):
        ((X @ params[0] + params[1] - y) ** 2 / 2).sum().backward()
        try:
            with mode():
                target.fn(params, run["lr"], len(X))
        except RuntimeError as e:
            if LEAF_ERROR not in str(e):
                return  # another error: the rebinding property judges it
            raise checks.CheckFailed(
                f"step {k} raised RuntimeError: {LEAF_ERROR}: in grad mode the update must run "
                "inside torch.no_grad() (or say under_no_grad=True if the trainer wraps it)"
            ) from e
        except Exception:
            return  # not this pitfall's error: judged by the rebinding property
        try:
            checks.check_params_are_leaves(params)
        except checks.CheckFailed as e:
            raise checks.CheckFailed(
                f"after step {k}: {e}: the update was recorded in the graph (an out-of-place "
                "update in grad mode)"
            ) from e
        if not target.options.zeroes_grad:
            for p in params:
                p.grad = None  # the caller's loop zeroes


def _steps(options: Options) -> SearchStrategy[Steps]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    return st.tuples(sts.runs(max_n=30), st.integers(1, 20))


def _book() -> Steps:
    return book_run(BATCH_SIZE, BATCH_SIZE), 3


PROPERTIES = (
    Property(
        name="steps called in grad mode (or under the trainer's no_grad) keep the params leaves",
        kind="update-step",
        check=stays_leaves,
        examples=_steps,
        holds_for=STEPS,
        refuted_by=(
            Variant(sgd_without_no_grad, "optim.sgd", "update-step"),
            Variant(sgd_out_of_place_in_grad_mode, "optim.sgd", "update-step"),
        ),
        book=_book,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Show the leaf error, the leaves after a whole run, and the out-of-place grad_fn."""
    error = ""
    try:
        sgd_without_no_grad(_kit.params_with_grads(), 0.03, BATCH_SIZE)
    except RuntimeError as e:
        error = str(e)
    X, y = _kit.book(NUM_EXAMPLES, torch.float32)
    result = train.train(X, y, generator=_kit.gen())
    leaves = all(p.is_leaf and p.grad_fn is None for p in (result.w, result.b))
    params = _kit.params_with_grads()
    sgd_out_of_place_in_grad_mode(params, 0.03, BATCH_SIZE)
    grad_fn = type(params[0].grad_fn).__name__ if params[0].grad_fn is not None else None
    ok = "leaf Variable that requires grad" in error and leaves and grad_fn is not None
    return Evidence(
        id="no-grad-update",
        expected=(
            "without no_grad the in-place update raises the leaf RuntimeError; with it the params "
            f"stay leaves after {result.num_steps} steps; out of place in grad mode they get a "
            "grad_fn"
        ),
        observed=(
            f"RuntimeError: {error.splitlines()[0] if error else 'none'}; leaves after "
            f"{result.num_steps} steps: {leaves}; out-of-place grad_fn: {grad_fn}"
        ),
        ok=ok,
        figures={"error": error, "leaves_after_training": leaves, "out_of_place_grad_fn": grad_fn},
    )


PITFALL = Pitfall(
    id="no-grad-update",
    title="The update needs torch.no_grad()",
    explanation=(
        "w and b are leaves that require grad. In grad mode, an in-place update of a leaf raises "
        "'a leaf Variable that requires grad is being used in an in-place operation', and an "
        "out-of-place update records the update in the graph, so the params stop being leaves "
        "and the graph grows with every step. Fix: update under torch.no_grad(); the params "
        "stay leaves with no grad_fn after any number of steps."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=4,
)
