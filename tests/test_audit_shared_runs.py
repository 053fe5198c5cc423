"""One audit's runs shared by its properties: each run made once, judged by every property.

The training-loop kind's eight properties draw one strategy, so each draws the same batchings,
and a run the first property made is read by the others. What is shared must be what a fresh
run gives: the models stay held still while later properties read them, an audit inside an
audited loop keeps its own, a factory that hands out one model shares nothing, and a full
scope falls back to running again.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import torch
from torch import nn

from linreg import audit
from linreg.audit import runner
from linreg.kinds.training_loop import fit, shared
from linreg.kinds.training_loop.batching import Batching

SAMPLE = (torch.tensor([0.5, -1.0, 0.25, 2.0]), torch.tensor(2))


def dropout_net() -> nn.Module:
    """A classifier whose Dropout, at p = 0.5 as built, makes any reference taken on it after
    it was put back random: a shared run's model must stay held until the audit ends."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def counting(runs: Counter[Batching]) -> Any:
    def loop(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        runs[_batching_of(loader, num_epochs)] += 1
        fit(model, loader, optimizer, num_epochs=num_epochs)

    return loop


def _batching_of(loader: Any, num_epochs: int) -> tuple[Any, ...]:
    rows = tuple(int(y) for _, y in loader.dataset)  # the example's label, or the contrast's
    return (rows, loader.batch_size, num_epochs, torch.initial_seed())


def test_an_audit_runs_each_batching_once_for_all_its_properties() -> None:
    runs: Counter[Any] = Counter()
    report = audit.training_loop(counting(runs), model=dropout_net, example=SAMPLE)
    assert report.ok, str(report)
    judged = sum(r.examples for r in report.results)
    assert len(report.results) == 8 and judged >= 8 * 25, str(report)  # each judged its own
    # each property drew the same batchings: ~30 runs (and the references' runs of one row
    # per seed, the probe's), where each property running its own would make ~240
    assert sum(runs.values()) < judged / 3, runs


def test_a_factory_that_hands_out_one_model_shares_nothing_and_still_passes() -> None:
    torch.manual_seed(0)
    the_model = dropout_net()
    p = next(m for m in the_model.modules() if isinstance(m, nn.Dropout))
    runs: Counter[Any] = Counter()
    report = audit.training_loop(counting(runs), model=lambda: the_model, example=SAMPLE)
    assert report.ok, str(report)
    assert sum(runs.values()) > sum(r.examples for r in report.results) / 2, runs  # run again
    assert p.p == 0.5 and the_model.training  # put back as it was


def test_an_audit_inside_an_audited_loop_puts_its_own_models_back_when_it_ends() -> None:
    built: list[nn.Module] = []
    after_inner: list[set[float]] = []

    def inner_net() -> nn.Module:
        built.append(dropout_net())
        return built[-1]

    def audits_inside(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
        # once, past the probe (9 rows, outside the audit's scope): an inner audit, then the
        # p of every model it built
        if not after_inner and len(loader.dataset) != 9:
            inner = audit.training_loop(fit, model=inner_net, example=SAMPLE)
            assert inner.ok, str(inner)
            after_inner.append({m.p for net in built for m in net.modules() if _dropout(m)})
        fit(model, loader, optimizer, num_epochs=num_epochs)

    report = audit.training_loop(audits_inside, model=dropout_net, example=SAMPLE, max_examples=3)
    assert report.ok, str(report)
    assert after_inner == [{0.5}]  # the inner audit ended: its models as built, not held


def _dropout(module: nn.Module) -> bool:
    return isinstance(module, nn.Dropout)


def test_a_full_scope_makes_and_judges_runs_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "KEEP_BYTES", 4_000)  # a few runs' worth, then none kept
    runs: Counter[Any] = Counter()
    report = audit.training_loop(counting(runs), model=dropout_net, example=SAMPLE)
    assert report.ok, str(report)
    assert sum(runs.values()) > sum(r.examples for r in report.results) / 2, runs
    assert not shared.sharing()  # outside an audit, nothing is kept


def test_outside_an_audit_a_property_runs_its_loop_for_itself() -> None:
    runs: Counter[Any] = Counter()
    target = runner.target_for("training-loop", counting(runs), model=dropout_net, example=SAMPLE)
    prop = next(p for p in runner.properties("training-loop") if p.pitfall == "mean-vs-sum")
    runs.clear()
    for _ in range(2):
        assert runner.run_property(prop, target, max_examples=5).verdict == "pass"
    assert all(count >= 2 for count in runs.values()), runs  # nothing kept between them


def summed(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Twin: the batch's summed cross-entropy at the mean's lr."""
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y, reduction="sum").backward()
            optimizer.step()


def plain(model: nn.Module, loader: Any, optimizer: Any, num_epochs: int) -> None:
    fit(model, loader, optimizer, num_epochs=num_epochs)


@pytest.mark.parametrize("loop", [plain, summed])
def test_each_propertys_verdict_in_an_audit_is_the_one_it_gives_run_alone(
    loop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The properties after the first that passed check the examples Hypothesis offered it,
    outside Hypothesis (audit/offered.py), and run through Hypothesis only to shrink a failure:
    each verdict, its number of examples and its counterexample are those the property gives
    when it runs alone, through Hypothesis, on the same seed."""
    replayed: list[bool] = []
    pass_ = runner.Offered.pass_

    def spied(self: runner.Offered, test: Any, limit: int) -> bool:
        replayed.append(pass_(self, test, limit))
        return replayed[-1]

    monkeypatch.setattr(runner.Offered, "pass_", spied)
    target = runner.target_for("training-loop", loop, model=dropout_net, example=SAMPLE)
    report = runner.run(target, max_examples=12)
    judged = [r for r in report.results if not r.message.startswith("not judged")]
    assert len(judged) >= 6, str(report)
    props = {p.name: p for p in runner.properties("training-loop")}
    for result in judged:
        alone = runner.run_property(props[result.property], target, max_examples=12)
        got = (result.verdict, result.examples, result.counterexample)
        assert got == (alone.verdict, alone.examples, alone.counterexample), (result, alone)
    assert sum(replayed) >= len(judged) - 2, replayed  # the others checked outside Hypothesis
    if loop is summed:
        assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
        assert not all(replayed)  # the failure found in the replay was run again, and shrunk


def test_properties_run_one_by_one_as_one_audit_keep_another_threads_audit_waiting() -> None:
    # the plugin's items of one --pitfalls-audit share one audit's scope between them: an
    # audit in another thread meanwhile would run inside it (its models held, then put back,
    # with this audit's), so it waits for the block's end, as it waits for any audit's
    target = audit.target_for("training-loop", fit, model=dropout_net, example=SAMPLE)
    first, *rest = audit.properties("training-loop")
    events: list[str] = []
    started = threading.Event()

    def another() -> None:
        started.set()
        report = audit.training_loop(fit, model=dropout_net, example=SAMPLE, max_examples=3)
        events.append(f"the other audit ended, ok={report.ok}")

    with audit.one_audit(target) as one:
        events.append(one.run(first, max_examples=3).verdict)
        thread = threading.Thread(target=another)
        thread.start()
        started.wait(10)
        thread.join(timeout=1.0)  # its audit of 3 examples a property takes a tenth of that
        events.append(one.run(rest[0], max_examples=3).verdict)
    thread.join(timeout=60)
    assert events == ["pass", "pass", "the other audit ended, ok=True"]
