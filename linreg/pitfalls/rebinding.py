"""In place (`param -= ...`) versus rebinding (`param = param - ...`): reaching the caller."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from linreg import checks, data, loss, model, optim
from linreg._book import BATCH_SIZE
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS
from linreg.kinds.twin_rows import TwinRows, run_twin_rows
from linreg.kinds.update_step import STEPS, Update, fresh
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def sgd_rebinding(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """Mistake: `param = param - lr * param.grad / batch_size` rebinds a local name."""
    with torch.no_grad():
        for param in params:
            param = param - lr * param.grad / batch_size  # type: ignore[operator]  # a new tensor
            param.grad.zero_()  # type: ignore[union-attr]  # None: AttributeError


def train_rebinding(
    features: Tensor,
    labels: Tensor,
    params: list[Tensor],
    *,
    lr: float,
    batch_size: int,
    num_epochs: int,
) -> None:
    """Mistake: `w = w - lr * w.grad / B` in the loop: it trains its own w, never the caller's."""
    w, b = params
    for _ in range(num_epochs):
        for X, y in data.data_iter(batch_size, features, labels):
            loss.squared_loss(model.linreg(X, w, b), y).sum().backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                w = w - lr * w.grad / len(X)  # type: ignore[operator]  # a new tensor, named w
                b = b - lr * b.grad / len(X)  # type: ignore[operator]
            w.requires_grad_()
            b.requires_grad_()


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def updates_in_place(target: Target, update: Update) -> None:
    """The step changes the caller's tensors in place to p - lr * grad / B (under no_grad)."""
    params, lr, batch_size = fresh(update)
    checks.check_update_in_place(
        target.fn,
        params,
        lr,
        batch_size,
        zeroes_grad=False,  # the grad-zeroing property's concern
        under_no_grad=True,  # the no-grad-update property's concern is grad mode
        divides_by_batch_size=target.options.divides_by_batch_size,
    )


def reaches_the_params(target: Target, case: TwinRows) -> None:
    """One step on data with a non-zero residual changes the params the caller gave."""
    params = case.tensors(target.options.dtype)[2]
    start = torch.cat([p.detach().double().reshape(-1) for p in params])
    got = torch.cat(run_twin_rows(target, case))
    if float((got - start).abs().max()) <= checks.tolerance(target.options.dtype, steps=True):
        raise checks.CheckFailed(
            f"after one step the params are unchanged, {start.tolist()}: the loop's updates "
            "never reach them (a rebound name, or a copy that is trained)"
        )


def _any_loop(options: Options) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    # one step: a loop whose updates reach the params moves them, whatever else it gets wrong
    return sts.twin_rows(sizes=st.integers(1, 12).map(lambda n: (n, n)))


def _book_update() -> Update:
    return Update(_kit.params_with_grads(), 0.03, BATCH_SIZE)


def _book_loop() -> TwinRows:
    return TwinRows.book()


PROPERTIES = (
    Property(
        name="the step changes the caller's tensors in place to p - lr * grad / B",
        kind="update-step",
        check=updates_in_place,
        examples=_kit.drawn("updates"),
        holds_for=STEPS,
        refuted_by=(Variant(sgd_rebinding, "optim.sgd", "update-step"),),
        book=_book_update,
    ),
    Property(
        name="one step on data with a non-zero residual changes the caller's params",
        kind="loop",
        check=reaches_the_params,
        examples=_any_loop,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(Variant(train_rebinding, None, "loop"),),
        book=_book_loop,
        requires=("backward-twice",),
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Show which update reaches the caller's w, and how -= differs for ints and tensors."""
    changed = {}
    error = ""
    for step in (optim.sgd, sgd_rebinding):
        params = _kit.params_with_grads()
        before = params[0].detach().clone()
        try:
            step(params, 0.03, BATCH_SIZE)
        except AttributeError as e:
            error = str(e)
        changed[step.__name__] = not torch.equal(before, params[0].detach())
    ints, tensors = [1, 2], [torch.tensor(1), torch.tensor(2)]
    for p in ints:
        p -= 4
    for t in tensors:
        t -= 4
    ok = (
        changed == {"sgd": True, "sgd_rebinding": False}
        and "zero_" in error
        and ints == [1, 2]
        and [int(t) for t in tensors] == [-3, -2]
    )
    return Evidence(
        id="rebinding",
        expected=(
            "sgd changes the caller's w; param = param - ... leaves it unchanged and the book's "
            "next "
            "line raises AttributeError; -= changes a list of tensors but not a list of ints"
        ),
        observed=(
            f"caller's w changed: sgd {changed['sgd']}, rebinding {changed['sgd_rebinding']}; "
            f"AttributeError: {error}; ints after -= 4: {ints}, tensors: "
            f"{[int(t) for t in tensors]}"
        ),
        ok=ok,
        figures={"changed": changed, "error": error},
    )


PITFALL = Pitfall(
    id="rebinding",
    title="In place (-=) versus rebinding (param = param - ...)",
    explanation=(
        "`param -= ...` calls Tensor.__isub__, which changes the tensor the caller holds. "
        "`param = param - ...` builds a new tensor and rebinds the loop's local name: the caller's "
        "w never changes, and the new tensor has no .grad, so the book's next line "
        "`param.grad.zero_()` raises AttributeError. Python ints behave the other way: `-=` on "
        "an int rebinds, because ints are immutable."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=3,
)
