"""MSELoss(reduction='sum') needs lr / B, with B the actual batch size."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer

from linreg import checks, concise, model, train
from linreg._book import BATCH_SIZE, NUM_EXAMPLES, UNEVEN_NUM_EXAMPLES
from linreg.config import TrainConfig, bind, mirrors
from linreg.kinds.guards import guarded
from linreg.kinds.late import late
from linreg.kinds.loop import FULL_BATCH_LOOPS, LOOPS, LoopOptions
from linreg.kinds.loss import LossOptions
from linreg.kinds.runs import book_run, trajectory
from linreg.kinds.training_loop import (
    LINEAR,
    NO_KNOWN,
    TRAINING_LOOPS,
    Batching,
    Judged,
    Step,
    Wanted,
    compare,
    count_of,
    full_rows,
    loss_of,
    near,
    options_of,
    reduced,
    unequal_weights,
    unreferenced,
)
from linreg.kinds.twin_rows import TwinRows, follows_the_closed_form
from linreg.pitfalls import _kit
from linreg.pitfalls._kit import Evidence, Options, Pitfall, Property, Target, Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

# --- the wrong variants ----------------------------------------------------------------------
# pragma: no mutate start (a negative control stays wrong: docs/mutation.md)


@mirrors(concise.train_concise)
def train_concise_sum_nominal_lr(*args: Any, **kwargs: Any) -> train.TrainResult:
    """Mistake: `MSELoss(reduction='sum')` with `SGD(lr=lr / batch_size)`: nominal, not actual."""
    a = bind(train_concise_sum_nominal_lr, *args, **kwargs)
    c = TrainConfig.of(a)
    lr = c.lr / c.batch_size if a["reduction"] == "sum" else c.lr
    return concise.run(
        a["features"], a["labels"], c, a["params"], a["reduction"], a["loader"], lambda _: lr
    )


@mirrors(concise.train_concise, reduction="sum")
def train_concise_sum_at_mean_lr(*args: Any, **kwargs: Any) -> train.TrainResult:
    """Mistake: `MSELoss(reduction='sum')` with the mean's `SGD(lr=lr)`: B times every step."""
    a = bind(train_concise_sum_at_mean_lr, *args, **kwargs)
    c = TrainConfig.of(a)
    return concise.run(
        a["features"], a["labels"], c, a["params"], a["reduction"], a["loader"], None
    )


def mse_sum_used_as_mean(y_hat: Tensor, y: Tensor) -> Tensor:
    """Mistake: `nn.MSELoss(reduction='sum')` put where the mean was, at the mean's lr."""
    return F.mse_loss(y_hat, y, reduction="sum")


def loop_sum_at_mean_lr(
    model: nn.Module, loader: Iterable[Any], optimizer: Optimizer, *, num_epochs: int
) -> None:
    """Mistake: `loss.sum()` (or reduction='sum') with the lr tuned for the mean."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_of(model(X), y, "sum").backward()  # type: ignore[no-untyped-call]
            optimizer.step()


# pragma: no mutate end
# --- the properties --------------------------------------------------------------------------


def sum_follows_mean(target: Target, run: dict[str, Any]) -> None:
    """MSELoss(sum) at lr / B_actual follows MSELoss(mean) at lr, step for step."""
    summed = trajectory(target, run, reduction="sum")
    mean = trajectory(Target(concise.train_concise, "concise"), run, reduction="mean")
    checks.check_same_trajectory(summed, mean)


def loss_matches(target: Target, case: dict[str, Tensor]) -> None:
    """With labels (n, 1), the loss and its gradient are scale * (y_hat - y)^2, reduced."""
    c = target.options
    y_hat, y = case["y_hat"].detach().clone().requires_grad_(), case["y"]
    with guarded("the loss"):
        checks.check_loss_per_example(target.fn, y_hat, y, reduction=c.reduction, scale=c.scale)
        got = target.fn(y_hat, y)
    if not got.requires_grad:
        raise checks.CheckFailed("the loss has no grad_fn: backward() cannot train through it")
    per_example = c.scale * F.mse_loss(y_hat, y, reduction="none")
    want = per_example if c.reduction == "none" else getattr(per_example, c.reduction)()
    (g,) = torch.autograd.grad(got.sum(), y_hat)
    (e,) = torch.autograd.grad(want.sum(), y_hat)
    try:
        checks.check_grads_close([g], [e])
    except checks.CheckFailed as err:
        raise checks.CheckFailed(f"the gradient with respect to y_hat: {err}") from err


def _one_batch(options: Options) -> SearchStrategy[TwinRows]:
    from hypothesis import strategies as st

    from linreg.testing import strategies as sts

    return sts.twin_rows(sizes=st.integers(2, 8).map(lambda b: (b, b)))


def _book_step() -> TwinRows:
    return TwinRows.book(BATCH_SIZE)


def book_predictions() -> dict[str, Tensor]:
    """Return one batch of the book's predictions (from its init) and labels."""
    X, y = _kit.book(BATCH_SIZE)
    w, b = model.init_params(2, generator=_kit.gen(), dtype=X.dtype)
    return {"y_hat": (X @ w + b).detach(), "y": y}


def book_mean_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    """The mean of the book's squared_loss: what `l.mean()` trains on."""
    mean: Tensor = late("loss.squared_loss")(y_hat, y).mean()
    return mean


# nn.MSELoss() is the oracle for labels of (n, 1); for (n,) it is a wrong variant (label-shape)
MEAN_MSE = LossOptions(reduction="mean", scale=1.0, flat_labels=False)


def applies_the_rows_mean(target: Target, batching: Batching) -> None:
    """A full step applies the mean of its rows' gradients (their sum for reduction=sum): on
    identical rows, one row's (B rows'). On two kinds of rows, a step that weighs its rows
    unequally is micro-batch-accumulation's; its scale, where it has one, is judged here."""
    k = count_of(options_of(target), batching)
    mean = reduced(target) == "mean"

    def explain(j: int, v: Judged, steps: list[Step]) -> str:
        step = steps[j]
        s = v.ratio
        rows, parts = step.rows, len(step.sizes)
        if s is None and rows > 1 and len(set(step.row_keys)) == 1 and not step.unreached:
            return (
                f"{NO_KNOWN}: on {rows} identical rows it applied neither one row's gradient "
                "nor a multiple of it, so part of its loss grows with the rows and part does "
                "not (a term with reduction='sum' beside a mean, or a penalty on the params "
                "beside a summed loss?)"
            )
        if s is None:
            return NO_KNOWN
        if s >= 1024 and math.isclose(math.log2(s), round(math.log2(s)), abs_tol=1e-6):
            return (
                f"steps with a loss scaler's scaled gradients ({s:.0f} = the scaler's scale): "
                "after scaler.scale(loss).backward() call scaler.step(optimizer), not "
                "optimizer.step(), or unscale_ first"
            )
        if mean and parts > 1 and near(s, parts, v.tol):
            return (
                f"adds up its {parts} micro-batches' mean losses without dividing by their "
                f"number (accumulation_steps={k}): every step applies {parts} times the mean"
            )
        if mean and rows > 1 and near(s, rows, v.tol):
            return (
                f"sums the loss over the step's {rows} rows (loss.sum(), reduction='sum') where "
                "a mean was declared: at the mean's lr every step is that many times too big"
            )
        if mean and step.sizes[0] > 1 and near(s, step.sizes[0], v.tol):
            return f"sums the loss over each batch's {step.sizes[0]} rows where a mean was declared"
        if not mean and near(s * rows, 1, v.tol):
            return "averages over the step's rows where reduction='sum' was declared"
        return NO_KNOWN

    def first_full(j: int, steps: list[Step]) -> bool:
        """Return True for the run's first full step (full_rows: a first window may be short)."""
        full = full_rows(target, batching, steps)
        return steps[j].rows == full and all(s.rows != full for s in steps[:j])

    # on identical rows a sum of two means and a step on top of the one before's gradient read
    # alike; what .grad held is seen (Step.carried), so the second is grad-zeroing's alone
    def excused(j: int, verdicts: Sequence[Judged | None], run: Wanted, by: float | None) -> bool:
        v = verdicts[j]  # its own part right, on top of what .grad held: grad-zeroing's
        return v is not None and (
            v.stale
            or (v.carried and v.own is not None and near(v.own, 1, v.tol))
            or unequal_weights(v, batching)  # no scale to read: micro-batch-accumulation's
            # micro-batches no backward() reached weigh 0, and its ratio names no mistake of
            # the reduction: micro-batch-accumulation's
            or (bool(run.seen.steps[j].unreached) and explain(j, v, run.seen.steps) == NO_KNOWN)
        )

    compare(target, batching, first_full, explain, excused=excused)


PROPERTIES = (
    Property(
        name="MSELoss(sum) at lr / B_actual follows MSELoss(mean) at lr step for step",
        kind="concise",
        check=sum_follows_mean,
        examples=_kit.drawn("runs"),
        holds_for=(Target(late("concise.train_concise"), "concise", name="train_concise"),),
        refuted_by=(Variant(train_concise_sum_nominal_lr, "concise.train_concise", "concise"),),
        book=lambda: book_run(UNEVEN_NUM_EXAMPLES, BATCH_SIZE),
    ),
    Property(
        name="one step on a batch of identical rows is the declared objective's mean step",
        kind="loop",
        check=follows_the_closed_form,
        examples=_one_batch,
        holds_for=LOOPS + FULL_BATCH_LOOPS,
        refuted_by=(
            Variant(train_concise_sum_at_mean_lr, None, "loop", LoopOptions(objective="mse")),
        ),
        book=_book_step,
        requires=("backward-twice", "rebinding"),
    ),
    Property(
        name="with labels (n, 1) the loss and its gradient are scale * (y_hat - y)^2, reduced",
        kind="loss",
        check=loss_matches,
        examples=_kit.drawn("predictions"),
        holds_for=(
            Target(late("loss.squared_loss"), "loss", name="squared_loss"),
            Target(
                book_mean_loss, "loss", LossOptions(reduction="mean"), "squared_loss(...).mean()"
            ),
            Target(nn.MSELoss(), "loss", MEAN_MSE, "nn.MSELoss()", oracle=True),
            Target(
                nn.MSELoss(reduction="sum"),
                "loss",
                LossOptions(reduction="sum", scale=1.0, flat_labels=False),
                "nn.MSELoss(reduction='sum')",
                oracle=True,
            ),
        ),
        refuted_by=(Variant(mse_sum_used_as_mean, None, "loss", MEAN_MSE),),
        book=book_predictions,
    ),
    Property(
        name="a full step applies the mean of its rows' gradients, not their sum",
        kind="training-loop",
        check=applies_the_rows_mean,
        examples=_kit.training_runs,
        holds_for=TRAINING_LOOPS,
        refuted_by=(Variant(loop_sum_at_mean_lr, None, "training-loop", LINEAR),),
        book=lambda: Batching((0,) * 4, 4, 1, 0),
        requires=("non-leaf-params",),
        unjudged=unreferenced,
    ),
)

# --- the demonstration -----------------------------------------------------------------------


def _unscaled(X32: Tensor, y32: Tensor) -> tuple[dict[str, list[float]], dict[str, int | None]]:
    """Run the sum at the mean's lr for B = 10, 50, 100: each run's losses, its first inf step.

    In float32, as the book trains: there the divergence reaches inf.
    """
    unscaled: dict[str, list[float]] = {}
    first_inf: dict[str, int | None] = {}
    for batch in (10, 50, 100):
        key = f"sum, lr 0.03, B={batch}"
        first_inf[key] = None

        def watch(step: int, w: Tensor, b: Tensor, key: str = key) -> None:
            # the full-data sum loss after this step, in float32 as the book computes it
            if first_inf[key] is None and math.isinf(float(((X32 @ w + b - y32) ** 2).sum())):
                first_inf[key] = step

        unscaled[key] = train_concise_sum_at_mean_lr(
            X32,
            y32,
            lr=0.03,
            batch_size=batch,
            generator=_kit.gen(),
            reduction="sum",
            params=model.init_params(2, generator=_kit.gen(1)),
            on_step=watch,
        ).losses
    return unscaled, first_inf


def demo() -> Evidence:
    """Compare sum and mean trajectories, the loss ratio, and unscaled sums at large B."""
    n = UNEVEN_NUM_EXAMPLES
    X, y = _kit.book(n)
    mean = _kit.trajectory(concise.train_concise, X, y, 0.03)
    summed = _kit.trajectory(concise.train_concise, X, y, 0.03, reduction="sum")
    nominal = _kit.trajectory(train_concise_sum_nominal_lr, X, y, 0.03, reduction="sum")
    gaps = {"lr/B_actual": _kit.gap(summed, mean), "lr/B_nominal": _kit.gap(nominal, mean)}
    Xn, yn = _kit.book(NUM_EXAMPLES)
    ratio = float(F.mse_loss(Xn[:, :1], yn, reduction="sum") / F.mse_loss(Xn[:, :1], yn))
    X32, y32 = _kit.book(NUM_EXAMPLES, torch.float32)
    unscaled, first_inf = _unscaled(X32, y32)
    scaled = concise.train_concise(
        X32,
        y32,
        batch_size=BATCH_SIZE,
        generator=_kit.gen(),
        reduction="sum",
        params=model.init_params(2, generator=_kit.gen(1)),
    ).losses
    finals = {k: v[-1] for k, v in unscaled.items()}
    ok = (
        gaps["lr/B_actual"] < 1e-12 < gaps["lr/B_nominal"]
        and math.isclose(ratio, NUM_EXAMPLES, rel_tol=1e-12)
        and all(not (v < 100 * scaled[-1]) for k, v in finals.items() if "B=10" not in k)
    )
    return Evidence(
        id="mean-vs-sum",
        expected=(
            f"sum at lr/B_actual follows mean at lr to 1e-12 (n={n}); at lr/B_nominal it does not; "
            f"sum loss = {NUM_EXAMPLES} x mean loss; unscaled sum ends >= 100x worse for B = 50, "
            "100"
        ),
        observed=f"gap to mean: lr/B_actual {gaps['lr/B_actual']:.1e}, lr/B_nominal "
        f"{gaps['lr/B_nominal']:.1e}; sum/mean = {ratio:.6f}; final sum losses: "
        + ", ".join(f"B={k.rsplit('=', 1)[1]} {v:.4g}" for k, v in finals.items())
        + f" (lr/B: {scaled[-1]:.4g}); the sum loss first overflows to inf at step: "
        + ", ".join(f"B={k.rsplit('=', 1)[1]} {v}" for k, v in first_inf.items()),
        ok=ok,
        figures={
            "gap_to_mean": gaps,
            "sum_over_mean": ratio,
            "final_sum_loss_unscaled": finals,
            "final_sum_loss_scaled": scaled[-1],
            "first_non_finite_step": first_inf,
        },
        curves={**unscaled, "sum, lr 0.03 / B, B=10": scaled},
    )


PITFALL = Pitfall(
    id="mean-vs-sum",
    title="MSELoss(reduction='sum') needs lr / B, with B the actual batch size",
    explanation=(
        "The gradient of a summed loss is B times the gradient of the mean, so SGD on the sum "
        "at lr / B follows exactly the trajectory of SGD on the mean at lr; B must be the ACTUAL "
        "size of each batch, or the short last batch steps too far. The full-data loss reported "
        "with sum is n times the mean (the seed's '1000x' for n = 1000). Unscaled, the sum "
        "diverges for large batches."
    ),
    properties=PROPERTIES,
    demo=demo,
    order=5,
    plots=True,
)
