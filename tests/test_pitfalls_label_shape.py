"""The label shape in a whole training run: (n,) labels follow the same trajectory as (n, 1)."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from linreg import checks, loss, train
from linreg.config import TrainConfig
from linreg.kinds.runs import book_run, run_kwargs
from linreg.pitfalls import label_shape
from linreg.testing import strategies as sts
from tests.refute import refutes


@given(st.integers(1, 50).flatmap(lambda n: st.tuples(sts.datasets(n), sts.seeds)))
def test_pitfalls_squared_loss_of_flat_labels_is_per_example(args: Any) -> None:
    (X, y), seed = args
    w, b = sts.params_like(X, seed)
    checks.check_loss_per_example(lambda a, c: loss.squared_loss(a, c), X @ w + b, y.reshape(-1))


def flat_labels_train_alike(run: dict[str, Any], step: Any = None) -> None:
    """Training on labels (n,) follows the same trajectory as on labels (n, 1).

    With step, the run on labels (n,) takes that step (a loop that uses its labels as given).
    """
    trajectories = []
    for labels in (run["labels"], run["labels"].reshape(-1)):
        t = checks.Trajectory()
        kwargs = run_kwargs(run, on_step=t)
        if step is not None and labels.ndim == 1:
            train.fit(run["features"], labels, TrainConfig.of(kwargs), step, kwargs["params"])
        else:
            train.train(run["features"], labels, **kwargs)
        trajectories.append(t.steps)
    checks.check_same_trajectory(*trajectories, rtol=0, atol=0)


@given(sts.runs())
@example(book_run(1000, 10))
def test_pitfalls_training_on_flat_labels_follows_the_same_trajectory(run: dict[str, Any]) -> None:
    flat_labels_train_alike(run)


def test_pitfalls_training_without_reshape_is_refuted() -> None:
    run = refutes(sts.runs(), lambda r: flat_labels_train_alike(r, label_shape.flat_labels_step))
    assert run["batch_size"] >= 2
