"""Parameters that are not leaves: `torch.randn(..., requires_grad=True) * 0.01` never trains."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from linreg import checks, data, loss, model, optim, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES
from linreg.checks import CheckFailed
from linreg.kinds.guards import seeded
from linreg.kinds.late import late
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS
from linreg.kinds.training_loop import (
    CLASSIFIER,
    LINEAR,
    TRAINING_LOOPS,
    Batching,
    blind_steps,
    describe,
    loss_of,
    observe,
    options_of,
    wanted,
)
from linreg.kinds.twin_rows import TwinRows, run_twin_rows
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def init_params_not_leaves(
    num_inputs: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Mistake: `w = torch.randn(d, 1, requires_grad=True) * 0.01`: w is an op's output."""
    w = torch.randn(num_inputs, 1, generator=generator, dtype=dtype, requires_grad=True) * 0.01
    return w, torch.zeros(1, dtype=dtype, requires_grad=True)


def train_non_leaf_w(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Mistake: the step updates `w * 1` (an op's output), skipping None grads: w never moves."""
    for _ in range(num_epochs):
        for X, y in data.data_iter(batch_size, features, labels):
            w, b = params[0] * 1, params[1]  # w is not a leaf: backward leaves its .grad None
            loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                for p in (w, b):
                    if p.grad is not None:  # only b's is set
                        p -= lr * p.grad / len(X)
                        p.grad.zero_()


def loop_zero_grad_before_step(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: `loss.backward(); optimizer.zero_grad(); optimizer.step()`: every step is empty."""
    for _ in range(num_epochs):
        for X, y in loader:
            loss_of(model(X), y).backward()  # type: ignore[no-untyped-call]
            optimizer.zero_grad()
            optimizer.step()


def loop_detached_output(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: `loss_fn(model(X).detach(), y)`, then `loss.requires_grad_()` to quiet the error."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_of(model(X).detach(), y).requires_grad_().backward()  # type: ignore[no-untyped-call]
            optimizer.step()


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------

Init = tuple[int, int, dict[str, Any]]  # num_inputs, seed, a run on data with that many inputs


def start_as_leaves(target: Target, example: Init) -> None:
    """The initial params are leaves that require grad; one step gives each a grad and moves it."""
    d, seed, run = example
    w, b = target.fn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    checks.check_params_are_leaves([w, b])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when a non-leaf's .grad is read
        loss.squared_loss(model.linreg(run["features"], w, b), run["labels"]).sum().backward()  # type: ignore[no-untyped-call]
    before = [p.detach().clone() for p in (w, b)]
    for i, p in enumerate((w, b)):
        if p.grad is None:
            raise checks.CheckFailed(f"params[{i}].grad is None after backward()")
    optim.sgd([w, b], 0.03, len(run["features"]))
    for i, (p, old) in enumerate(zip((w, b), before, strict=True)):
        if torch.equal(p.detach(), old):
            raise checks.CheckFailed(f"params[{i}] did not move after one step")


def every_param_moves(target: Target, case: TwinRows) -> None:
    """On data where every weight has a gradient, each of w and b moves."""
    start = [p.detach().double().reshape(-1) for p in case.tensors(target.options.dtype)[2]]
    got = run_twin_rows(target, case)
    tol = checks.tolerance(target.options.dtype, steps=True)
    for name, p, s in zip(("w", "b"), got, start, strict=True):
        still = [i for i in range(len(p)) if abs(float(p[i] - s[i])) <= tol]
        if still:
            raise checks.CheckFailed(
                f"{name}{still} never moved from {[float(s[i]) for i in still]} though its "
                "gradient is not zero: a param made by an op (w = randn(...) * 0.01) is not a "
                "leaf, so backward() leaves its .grad None"
            )


def _inits(options: Options) -> SearchStrategy[Init]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    def with_data(d: int) -> SearchStrategy[Init]:
        runs = st.integers(1, 30).flatmap(lambda n: sts.datasets(n, d=d, noise=0.5))
        return st.tuples(
            st.just(d), sts.seeds, runs.map(lambda r: {"features": r[0], "labels": r[1]})
        )

    return st.integers(1, 4).flatmap(with_data)


def _moving(options: Options) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    sizes = st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n)))
    return sts.twin_rows(sizes=sizes, nonzero=True)


def _book_init() -> Init:
    X, y = _kit.book(BATCH_SIZE)
    return 2, 0, {"features": X, "labels": y}


def _book_loop() -> TwinRows:
    return TwinRows.book()


def every_step_has_a_gradient(target: Target, batching: Batching) -> None:
    """At every optimizer.step() some parameter has a non-zero gradient: the params can move."""
    seen = observe(target, batching)
    grads = [step.applied for step in seen.steps]
    if blind_steps(seen):
        raise CheckFailed(
            f"on {describe(batching, options_of(target))}: at each of its {seen.empty_steps} "
            "optimizer.step() calls every parameter's .grad was None or zero, and the model was "
            "fed only with grad off (a forward under torch.no_grad(), its output then made to "
            "require grad?): the steps cannot move the params"
        )
    if not grads and seen.fed and seen.foreign_empty:
        raise CheckFailed(
            f"on {describe(batching, options_of(target))} the loop fed the model and called "
            f"optimizer.step() {seen.foreign_empty} time(s), but no optimizer over the model's "
            "params ever stepped: the one it stepped holds other params, none with a gradient "
            "(an optimizer built over a copy of the model: an EMA's, or a model made again?), "
            "so the params never move"
        )
    if not grads and (seen.leftover or not seen.fed):
        return  # nothing fed, or rows fed and never stepped: short-last-batch's to name
    if not grads:
        raise CheckFailed(
            f"on {describe(batching, options_of(target))} the loop never called "
            "optimizer.step(): the params never move"
        )
    for j, g in enumerate(grads):
        if g is None or not bool(g.any()):
            if _right_to_be_flat(target, batching, j):
                continue
            raise CheckFailed(
                f"at optimizer.step() {j + 1} of {len(grads)} every parameter's .grad was "
                f"{'None' if g is None else 'zero'}: the step cannot move the params "
                "(zero_grad() between backward() and step()? a loss computed from a detached "
                "output?)"
            )


def _right_to_be_flat(target: Target, batching: Batching, j: int) -> bool:
    """Return True if step j applied nothing because its rows have no gradient: the correct
    gradient of its rows is 0 (a hinge loss whose margin they all meet; the loop may skip
    their backward()). A gradient lost after backward(), or a loss on a detached output, has
    a correct gradient that is not 0. Where each row's reference is the loop's own gradient
    on it, some row's must not be 0: a loss the loop weighs 0 (for an epoch) gives every row
    a reference of 0, which says nothing of the loss."""
    run = wanted(target, batching)
    if run.ref is None or j >= len(run.wants):
        return False
    if run.seen.steps[j].zeroed:  # it applied what its last backward() left, of rows with no
        return True  # gradient: those it zeroed before are grad-zeroing's, or short-last-batch's
    want = run.wants[j]
    return (
        want is not None
        and not bool(want.any())
        and (not run.ref.own or any(bool(g.any()) for g in run.ref.grads.values()))
    )


PROPERTIES = (
    Property(
        name="the initial params are leaves, and one step gives each a grad and moves it",
        kind="init",
        check=start_as_leaves,
        examples=_inits,
        holds_for=(Target(late("model.init_params"), "init", name="init_params"),),
        refuted_by=(Variant(init_params_not_leaves, "model.init_params", "init"),),
        book=_book_init,
    ),
    Property(
        name="on data where every weight has a gradient, each of w and b moves",
        kind="loop",
        check=every_param_moves,
        examples=_moving,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(Variant(train_non_leaf_w, None, "loop"),),
        book=_book_loop,
        requires=("backward-twice", "rebinding"),
    ),
    Property(
        name="at every optimizer.step() some parameter has a non-zero gradient",
        kind="training-loop",
        check=every_step_has_a_gradient,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(
            Variant(loop_zero_grad_before_step, None, "training-loop", LINEAR),
            Variant(loop_detached_output, None, "training-loop", CLASSIFIER),
        ),
        book=lambda: Batching((0,) * 5, 2, 1, 0),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Show the non-leaf, its missing grad, the book's sgd failing, a loop that trains b only."""
    X, y = _kit.book(NUM_EXAMPLES, torch.float32)
    w, b = init_params_not_leaves(2, generator=_kit.gen())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.squared_loss(model.linreg(X[:BATCH_SIZE], w, b), y[:BATCH_SIZE]).sum().backward()  # type: ignore[no-untyped-call]
        grad = w.grad
    warned = next((str(c.message).split(". ")[0] for c in caught), "no warning")
    error = ""
    try:
        # the book's sgd: param -= lr * param.grad / batch_size, with param.grad None
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w -= 0.03 * w.grad / BATCH_SIZE  # type: ignore[operator]
    except TypeError as e:
        error = str(e)
    params = list(model.init_params(2, generator=_kit.gen(1)))
    start = params[0].detach().clone()
    with seeded(0), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_non_leaf_w(X, y, params, lr=0.03, batch_size=BATCH_SIZE, num_epochs=3)
    w_moved = not torch.equal(start, params[0].detach())
    right = train.train(X, y, generator=_kit.gen())
    losses = {"leaf w": right.losses[-1], "non-leaf w": train.epoch_loss(X, y, *params)}
    ok = not w.is_leaf and grad is None and "NoneType" in error and not w_moved
    ok = ok and losses["non-leaf w"] > 100 * losses["leaf w"]
    return Evidence(
        id="non-leaf-params",
        expected=(
            "w = randn(..., requires_grad=True) * 0.01 is not a leaf: after backward its .grad is "
            "None (torch warns), the book's sgd raises TypeError, and a step that skips None grads "
            "trains b alone: the loss stays >= 100x the right run's"
        ),
        observed=(
            f"w is a leaf: {w.is_leaf}; w.grad after backward: {grad} ({warned}); the book's sgd: "
            f"TypeError: {error}; w moved in 3 epochs: {w_moved}; loss after 3 epochs: "
            f"{losses['leaf w']:.3g} (leaf w) vs {losses['non-leaf w']:.3g} (non-leaf w)"
        ),
        ok=ok,
        figures={"w_is_leaf": w.is_leaf, "w_moved": w_moved, "final_loss": losses},
    )


PITFALL = Pitfall(
    id="non-leaf-params",
    title="Parameters that are not leaves",
    explanation=(
        "`w = torch.normal(0, 0.01, (2, 1), requires_grad=True) * 1` or `torch.randn(d, 1, "
        "requires_grad=True) * 0.01` makes w the output of an op, not a leaf: backward() leaves "
        "its .grad None (torch warns), so an update through .grad raises or, where the step "
        "skips None grads, never happens. Fix: scale first, then ask for grads: "
        "`(0.01 * torch.randn(d, 1)).requires_grad_()`, as init_params does."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=16,
)
