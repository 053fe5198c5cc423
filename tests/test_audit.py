"""linreg.audit on code written as people write it: zero false alarms, and each buggy twin
named by its pitfall. Then the Report itself, and what the audit refuses to audit."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from linreg import audit, checks, data, loss, optim, train
from tests import realworld as rw

FAST = {"max_examples": 10}

CORRECT = [
    ("iterator", rw.d2l_data_iter, {}),
    ("iterator", rw.randperm_iter, {}),
    ("iterator", rw.loader_iter, {}),
    ("iterator", rw.loader_iter_drop_last, {"drop_last": True}),
    ("iterator", data.data_iter, {"drop_last": True}),  # takes drop_last: it is passed on
    ("update-step", rw.d2l_sgd, {}),
    ("update-step", rw.data_sgd, {"zeroes_grad": False}),
    ("update-step", rw.data_sub_sgd, {}),
    (
        "update-step",
        rw.class_step,
        {"under_no_grad": True, "divides_by_batch_size": False, "zeroes_grad": False},
    ),
    ("update-step", rw.optim_step, {}),
    ("loss", rw.d2l_squared_loss, {}),
    ("loss", rw.mean_half_loss, {"reduction": "mean"}),
    ("loss", rw.view_as_mse, {"reduction": "mean", "scale": 1.0}),
    ("loss", nn.MSELoss(), {"reduction": "mean", "scale": 1.0, "flat_labels": False}),
    ("loss", nn.MSELoss(reduction="sum"), {"reduction": "sum", "scale": 1.0, "flat_labels": False}),
    ("loop", rw.d2l_loop, {}),
    ("loop", rw.torch_loop, {"objective": "mse"}),
    ("loop", rw.full_batch_loop, {"objective": "mse", "full_batch": True}),
    ("loop", rw.trainer_loop, {}),
    ("loop", rw.manual_none_loop, {"objective": "mse"}),
    ("loop", rw.manual_none_loop, {"objective": "mse", "dtype": torch.float64}),
    ("loop", rw.data_loop, {}),
    ("loop", train.train, {}),
    ("iterator", rw.loader_iter, {"reused": True}),  # a DataLoader can be iterated again
    ("epoch-loss", rw.d2l_epoch, {}),
    ("epoch-loss", rw.item_epoch, {}),
    ("epoch-loss", train.train_epoch, {"dtype": torch.float64}),
]

TWINS = [
    ("iterator", rw.ordered_iter, {}, "uneven-batches"),
    ("iterator", rw.floor_iter, {}, "uneven-batches"),
    ("iterator", rw.apart_iter, {}, "shuffled-apart"),
    ("iterator", rw.d2l_data_iter, {"reused": True}, "exhausted-generator"),
    ("update-step", rw.rebinding_sgd, {}, "rebinding"),
    ("update-step", rw.grad_mode_sgd, {}, "no-grad-update"),
    ("update-step", rw.unzeroed_sgd, {}, "grad-zeroing"),
    (  # the class-based step, called in grad mode by a trainer that forgot its no_grad
        "update-step",
        rw.class_step,
        {"divides_by_batch_size": False, "zeroes_grad": False},
        "no-grad-update",
    ),
    ("loss", rw.mean_loss_no_reshape, {"reduction": "mean"}, "label-shape"),
    ("loss", nn.MSELoss(), {"reduction": "mean", "scale": 1.0}, "label-shape"),
    ("loss", rw.summed_as_mean, {"reduction": "mean", "scale": 1.0}, "mean-vs-sum"),
    ("loss", rw.no_half, {}, "mean-vs-sum"),
    ("loss", rw.detached_loss, {"reduction": "mean", "scale": 1.0}, "mean-vs-sum"),
    ("loop", rw.d2l_loop_nominal, {}, "short-last-batch"),
    ("loop", rw.torch_loop_sum, {"objective": "mse"}, "mean-vs-sum"),
    ("loop", rw.full_batch_loop_unzeroed, {"objective": "mse", "full_batch": True}, "grad-zeroing"),
    ("loop", rw.manual_none_loop_forgets, {"objective": "mse"}, "grad-zeroing"),
    ("loop", rw.copies_loop, {}, "rebinding"),
    ("loop", rw.torch_loop, {}, "mean-vs-sum"),  # right loop, wrong objective declared
    ("loop", rw.stored_loop, {}, "exhausted-generator"),
    ("loop", rw.ordered_loop, {}, "sorted-data"),
    ("loop", rw.full_batch_summed, {"full_batch": True}, "stable-lr"),
    ("epoch-loss", rw.tensor_epoch, {}, "running-loss-graph"),
    ("epoch-loss", rw.mean_of_means_epoch, {}, "epoch-mean-of-means"),
]


def name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


@pytest.mark.parametrize(
    ("kind", "fn", "options"),
    CORRECT,
    ids=[f"{k}-{name(f)}-{'-'.join(f'{a}={b}' for a, b in o.items())}" for k, f, o in CORRECT],
)
def test_correct_code_passes_every_applicable_property(kind: str, fn: Any, options: Any) -> None:
    report = audit.audit(kind, fn, **options, **FAST)
    assert report.ok, str(report)
    assert any(r.verdict == "pass" for r in report.results)


@pytest.mark.parametrize(
    ("kind", "fn", "options", "pitfall"),
    TWINS,
    ids=[f"{k}-{name(f)}-{p}" for k, f, _, p in TWINS],
)
def test_each_buggy_twin_fails_naming_its_pitfall(
    kind: str, fn: Any, options: Any, pitfall: str
) -> None:
    report = audit.audit(kind, fn, **options, **FAST, shrink=False)
    assert pitfall in {r.pitfall for r in report.failures}, str(report)


def test_the_books_nominal_divisor_is_one_failure_not_three() -> None:
    """exhausted-generator and zero-init drew uneven batches too, and failed on the same short
    batch's step (the README's book loop showed three failures for one cause): they are
    judged on full batches, which the divisor does not touch."""
    report = audit.audit("loop", rw.d2l_loop_nominal, **FAST)
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)


def test_a_failure_reads_at_a_glance_with_a_shrunk_plain_counterexample() -> None:
    report = audit.update_step(rw.rebinding_sgd, seed=0, **FAST)
    text = str(report)
    assert text.splitlines()[0].startswith(
        "audit of update-step tests.realworld:rebinding_sgd (zeroes_grad=True, "
        "under_no_grad=False, divides_by_batch_size=True, timeout=None): 1 failed, 2 passed, 0 "
        "skipped in "
    )
    assert "  FAIL rebinding        the step changes the caller's tensors in place" in text
    (failure,) = report.failures
    assert "did not change" in failure.message
    assert set(failure.counterexample) == {"params", "lr", "batch_size"}
    assert failure.counterexample["params"][0] == {"value": [[0.0]], "grad": [[0.0]]}  # shrunk
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["ok"] is False and as_json["kind"] == "update-step"
    assert [r["verdict"] for r in as_json["results"]] == ["fail", "pass", "pass"]
    with pytest.raises(checks.CheckFailed) as info:
        report.raise_for_failures()
    assert "FAIL rebinding" in str(info.value) and "pass " not in str(info.value)


def test_a_property_that_does_not_apply_is_skipped_with_its_reason() -> None:
    report = audit.update_step(rw.data_sgd, zeroes_grad=False, **FAST)
    (skip,) = [r for r in report.results if r.verdict == "skip"]
    assert skip.pitfall == "grad-zeroing"
    assert skip.message == "zeroes_grad=False: the loop zeroes the grads"
    audit.update_step(optim.sgd, **FAST).raise_for_failures()  # nothing to raise


def test_properties_resting_on_a_failed_one_are_not_judged() -> None:
    report = audit.loop(rw.copies_loop, **FAST, shrink=False)
    verdicts = {(r.pitfall, r.verdict) for r in report.results}
    assert ("rebinding", "fail") in verdicts
    for r in report.results:
        if r.pitfall in ("short-last-batch", "mean-vs-sum", "grad-zeroing"):
            assert r.verdict == "skip" and r.message.startswith("not judged: the rebinding")


def test_the_same_seed_gives_the_same_report() -> None:
    a, b = (audit.loss(rw.no_half, seed=3, **FAST).to_dict() for _ in range(2))
    del a["seconds"], b["seconds"]
    assert a == b


def test_the_audit_refuses_what_it_cannot_audit() -> None:
    with pytest.raises(audit.TargetError, match=r"^the target must be callable, got int$"):
        audit.loss(3)  # type: ignore[arg-type]
    with pytest.raises(
        audit.TargetError,
        match=r"^linreg.loss:squared_loss does not take \(params, lr, batch_size\): ",
    ):
        audit.update_step(loss.squared_loss)
    with pytest.raises(audit.TargetError, match=r"a loop must take fn\(features, labels, params"):
        audit.loop(rw.d2l_sgd)
    with pytest.raises(
        ValueError, match=r"^reduction must be 'none' or 'mean' or 'sum', got 'avg'"
    ):
        audit.loss(loss.squared_loss, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^drop_last must be True or False, got str 'yes'"):
        audit.iterator(data.data_iter, drop_last="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_examples must be a positive int, got 0"):
        audit.loss(loss.squared_loss, max_examples=0)
    with pytest.raises(
        TypeError, match=r"^dtype must be a floating torch\.dtype, got torch\.int64"
    ):
        audit.loop(train.train, dtype=torch.int64)


def test_a_loop_returning_something_else_is_told_what_to_return() -> None:
    def returns_a_float(features: Any, labels: Any, params: Any, **kw: Any) -> float:
        return 0.0

    report = audit.loop(returns_a_float, **FAST, shrink=False)
    (failure,) = report.failures
    assert failure.pitfall == "backward-twice"
    assert failure.message.startswith("the loop returned float: expected None (params trained")


def test_importing_linreg_needs_no_hypothesis() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import linreg, linreg.checks, linreg.pitfalls, linreg.pitfalls._live\n"
        "import linreg.testing.plugin\n"
        "try:\n    import linreg.audit\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "linreg.audit: this needs Hypothesis: pip install 'linreg-pitfalls[test]' (or hypothesis)"
    )


def test_one_conversion_to_strict_json_writes_non_finite_numbers_as_null() -> None:
    import json
    import math

    import torch

    from linreg._plain import plain
    from linreg.pitfalls._render import SCHEMA

    value = {"x": math.inf, "t": torch.tensor([1.0, math.nan]), "n": [-math.inf, 2]}
    assert plain(value) == {"x": None, "t": [1.0, None], "n": [None, 2]}
    json.dumps(plain(value), allow_nan=False)  # strict: raises on a NaN or an inf left in
    curves = SCHEMA["properties"]["pitfalls"]["items"]["properties"]["curves"]
    assert curves["additionalProperties"]["items"]["type"] == ["number", "null"]
