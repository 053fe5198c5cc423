"""Labels of shape (n,) against predictions of shape (n, 1): a silent (n, n) broadcast."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer

from linreg import checks, model, optim, train
from linreg._book import NUM_EXAMPLES, TRUE_W
from linreg.config import TrainConfig
from linreg.kinds.guards import guarded
from linreg.kinds.late import late
from linreg.kinds.loss import LossOptions
from linreg.kinds.training_loop import (
    LINEAR,
    TRAINING_LOOPS,
    Batching,
    describe,
    labels_of,
    options_of,
    run_at_zero_lr,
)
from linreg.kinds.training_loop.shared import tallied, tally
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Pitfall, Property, Target, Variant
from linreg.pitfalls.mean_vs_sum import book_mean_loss, book_predictions

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


def squared_loss_no_reshape(y_hat: Tensor, y: Tensor) -> Tensor:
    """Mistake: `(y_hat - y) ** 2 / 2` without the reshape: (n, 1) - (n,) broadcasts to (n, n)."""
    return (y_hat - y) ** 2 / 2


def mean_loss_no_reshape(y_hat: Tensor, y: Tensor) -> Tensor:
    """Mistake: `((y_hat - y) ** 2 / 2).mean()`: right for (n, 1) labels, wrong for (n,)."""
    return ((y_hat - y) ** 2 / 2).mean()


def mse_loss_no_reshape(y_hat: Tensor, y: Tensor) -> Tensor:
    """Mistake: `nn.MSELoss()(y_hat, y)` with y of shape (n,): it warns, then broadcasts."""
    return F.mse_loss(y_hat, y)


def loop_flat_labels(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: labels of shape (n,), as a dataset of 1-D targets holds them, against
    predictions of shape (n, 1): nn.MSELoss warns, then broadcasts."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            F.mse_loss(model(X), y.reshape(-1)).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def flat_labels_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, config: TrainConfig) -> None:
    """Mistake: a loop fed labels of shape (n,) whose loss does not reshape them."""
    squared_loss_no_reshape(model.linreg(X, w, b), y.reshape(-1)).sum().backward()  # type: ignore[no-untyped-call]
    optim.sgd([w, b], config.lr, X.shape[0])


# pragma: no mutate end
# --- the property ----------------------------------------------------------------------------


def flat_labels_agree(target: Target, case: dict[str, Tensor]) -> None:
    """Labels of shape (n,) give the same loss as labels of shape (n, 1)."""
    y_hat, y = case["y_hat"], case["y"]
    n = len(y)
    with guarded("the loss"):
        column = target.fn(y_hat, y).detach()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            flat = target.fn(y_hat, y.reshape(-1)).detach()
        except Exception:
            return  # refusing labels of shape (n,) is safe: training cannot go on silently
    said = "".join(f" (torch warned: {w.message})" for w in caught[:1])
    if flat.numel() != column.numel():
        raise checks.CheckFailed(
            f"labels of shape ({n},) give a loss of shape {tuple(flat.shape)}, labels ({n}, 1) "
            f"give {tuple(column.shape)}: (y_hat - y) broadcast ({n}, 1) against ({n},); "
            f"reshape y to y_hat's shape{said}"
        )
    tol = checks.tolerance(column.dtype)
    if not torch.allclose(flat.reshape(column.shape), column, rtol=tol, atol=tol):
        raise checks.CheckFailed(
            f"labels of shape ({n},) give the loss {flat.reshape(-1)[:4].tolist()}, labels "
            f"({n}, 1) give {column.reshape(-1)[:4].tolist()}: (y_hat - y) broadcast to ({n}, "
            f"{n}) before the reduction; reshape y to y_hat's shape{said}"
        )


# what a broadcast loss does to training, and the fix: the audit's verdict and the watch's
PULLED = (
    "each row's prediction is pulled toward the mean of the batch's labels, not its own: "
    "reshape the labels to the predictions' shape (y.view_as(y_hat)), or squeeze the predictions"
)


def trains_on_like_shapes(target: Target, batching: Batching) -> None:
    """No loss the loop trains on (torch's losses of values, called with grad) broadcasts its
    predictions against labels of another shape into more entries than either holds."""
    _, seen = run_at_zero_lr(target, batching)  # (the run alone: no reference is needed)
    tally(batching, values=seen.values)
    if seen.broadcast:
        raise checks.CheckFailed(
            f"on {describe(batching, options_of(target))}: {seen.broadcast} (the audit's "
            f"labels are all one value, which hides it in the gradient); {PULLED}",
            {"broadcast": seen.broadcast},
        )


def _read_none(target: Target) -> str | None:
    """Return why an audit's runs judged nothing of label-shape: labels that are values (a
    class's index cannot be compared with a prediction of another shape: cross-entropy
    raises), and no loss of values read."""
    y = labels_of(options_of(target).example)
    if y is None or not y.is_floating_point() or tallied("values"):
        return None
    return (
        "not judged: no backward() reached a loss of values (F.mse_loss, F.l1_loss, "
        "F.smooth_l1_loss, F.huber_loss, or the nn modules that call them): a squared error "
        "written by hand, or one imported by name before the audit ran, is not read"
    )


def _checks_flat_labels(options: LossOptions) -> str | None:
    return None if options.flat_labels else "flat_labels=False: the labels are always (n, 1)"


PROPERTIES = (
    Property(
        name="labels of shape (n,) give the same loss as labels of shape (n, 1)",
        kind="loss",
        check=flat_labels_agree,
        examples=_kit.drawn("predictions"),
        holds_for=(
            Target(late("loss.squared_loss"), "loss", name="squared_loss"),
            Target(
                book_mean_loss, "loss", LossOptions(reduction="mean"), "squared_loss(...).mean()"
            ),
        ),
        refuted_by=(
            Variant(squared_loss_no_reshape, "loss.squared_loss", "loss"),
            Variant(mean_loss_no_reshape, None, "loss", LossOptions(reduction="mean")),
            Variant(mse_loss_no_reshape, None, "loss", LossOptions(reduction="mean", scale=1.0)),
        ),
        book=book_predictions,
        applies=_checks_flat_labels,
    ),
    Property(
        name="no loss the loop trains on broadcasts predictions against labels of another shape",
        kind="training-loop",
        check=trains_on_like_shapes,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(Variant(loop_flat_labels, None, "training-loop", LINEAR),),
        book=lambda: Batching((0,) * 6, 2, 2, 0),
        unjudged=_read_none,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def demo() -> Evidence:
    """Show the (n, n) broadcast and where training on it ends."""
    n = NUM_EXAMPLES
    X, y = _kit.book(n)
    flat = y.reshape(-1)  # (n,)
    shape = tuple(squared_loss_no_reshape(X[:, :1], flat).shape)
    right = train.train(X, flat, generator=_kit.gen())
    wrong = train.fit(X, flat, TrainConfig(generator=_kit.gen()), flat_labels_step)
    ws = {
        k: [round(v, 4) for v in r.w.detach().reshape(-1).tolist()]
        for k, r in (("with reshape", right), ("without reshape", wrong))
    }
    err = float((wrong.w.detach().reshape(-1) - torch.tensor(TRUE_W).double()).abs().max())
    ok = shape == (n, n) and err > 1.0 and right.losses[-1] < 1e-3
    return Evidence(
        id="label-shape",
        expected=(
            f"(y_hat - y) with y_hat ({n}, 1) and y ({n},) is ({n}, {n}); training on it ends far "
            "from true_w = [2, -3.4]"
        ),
        observed=(
            f"shape {shape}; final w with reshape {ws['with reshape']}, "
            f"without {ws['without reshape']}"
        ),
        ok=ok,
        figures={"broadcast_shape": list(shape), "final_w": ws},
        curves={"with reshape": right.losses, "without reshape": wrong.losses},
    )


PITFALL = Pitfall(
    id="label-shape",
    title="Labels of shape (n,) against predictions of shape (n, 1)",
    explanation=(
        "(y_hat - y) with y_hat (n, 1) and y (n,) broadcasts silently to an (n, n) matrix: every "
        "prediction is compared with every label and training converges to a wrong answer. "
        "squared_loss reshapes y to y_hat's shape first; nn.MSELoss warns instead."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=9,
    plots=True,
)
