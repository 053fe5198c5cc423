"""The pytest plugin, run for real with pytester: --pitfalls-audit KIND=MODULE:NAME[,options]."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# pytester's in-process runs forget the modules each run imported. torch._dynamo, which the first
# optimizer a process builds imports, registers torch operator libraries and raises when imported
# a second time in one process: import it here, before any run, so that no run imports it.
import torch._dynamo  # noqa: F401

from linreg import audit
from tests import test_audit_one_cause_one_name as adversarial

pytest_plugins = ["pytester"]

STEPS = """
import torch


def good(params, lr, batch_size):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad / batch_size
            p.grad.zero_()


def rebinds(params, lr, batch_size):
    with torch.no_grad():
        for p in params:
            p = p - lr * p.grad / batch_size
            p.grad.zero_()


def data_step(params, lr, batch_size):
    for p in params:
        p.data -= lr * p.grad / batch_size
"""


@pytest.fixture
def steps(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(mysteps=STEPS)
    # in process, linreg is imported before the inner run loads the plugin: not rewritable
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    return pytester


def test_pitfalls_plugin_collects_one_item_per_property_and_reports_verdicts(
    steps: pytest.Pytester,
) -> None:
    result = steps.runpytest(
        "--pitfalls-audit",
        "update-step=mysteps:good",
        "--pitfalls-audit",
        "update-step=mysteps:rebinds",
        "-p",
        "no:cacheprovider",
        "-v",
    )
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_pitfalls_audit?update-step=mysteps:good??rebinding: the step changes*PASSED*",
            "*test_pitfalls_audit?update-step=mysteps:rebinds??rebinding: *FAILED*",
            "*rebinding: the step changes the caller's tensors in place to p - lr * grad / B",
            "the update step raised AttributeError: *; the caller's params did not change",
            "counterexample: {'params': *",
        ]
    )


def test_pitfalls_plugin_takes_the_audits_options_and_skips_what_does_not_apply(
    steps: pytest.Pytester,
) -> None:
    result = steps.runpytest(
        "--pitfalls-audit",
        "update-step=mysteps:data_step,zeroes_grad=false",
        "-p",
        "no:cacheprovider",
        "-rs",
    )
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*zeroes_grad=False: the loop zeroes the grads*"])


def test_pitfalls_plugin_takes_the_audits_own_keywords(steps: pytest.Pytester) -> None:
    spec = "update-step=mysteps:good,max_examples=3,seed=5,shrink=false"
    steps.runpytest("--pitfalls-audit", spec, "-p", "no:cacheprovider").assert_outcomes(passed=3)


EXITS = """
import sys


def loss(y_hat, y):
    if y_hat.shape[0] > 2:
        sys.exit(0)
    return 3 * (y_hat - y.reshape(y_hat.shape)) ** 2 / 2
"""


def test_pitfalls_plugin_code_that_exits_is_one_failure_never_a_pass(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(exits=EXITS)
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    result = pytester.runpytest("--pitfalls-audit", "loss=exits:loss", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*the target raised SystemExit(0)*"])


GRAD_OFF = """
import torch


def loss(y_hat, y):
    out = (y_hat - y.reshape(y_hat.shape)) ** 2 / 2
    torch.set_grad_enabled(False)  # then off for the whole process: the audit gives it back
    return out
"""

USERS_TEST = """
import torch


def test_grad_mode_is_on_as_torch_starts():
    assert torch.is_grad_enabled()
"""


def test_pitfalls_plugin_code_that_turns_grad_mode_off_leaves_the_users_tests_alone(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(gradoff=GRAD_OFF, test_users_own=USERS_TEST)
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    result = pytester.runpytest("--pitfalls-audit", "loss=gradoff:loss", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)  # the user's own test, and the loss's two properties


def test_pitfalls_plugin_items_are_selected_by_k_pitfalls(steps: pytest.Pytester) -> None:
    spec = ["--pitfalls-audit", "update-step=mysteps:good", "-p", "no:cacheprovider"]
    steps.runpytest(*spec, "-k", "pitfalls").assert_outcomes(passed=3)
    steps.runpytest(*spec, "-k", "not pitfalls").assert_outcomes(deselected=3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("step=mysteps:good", "expected KIND=MODULE:NAME with KIND in iterator, update-step, "),
        ("update-step=nosuch:good", "cannot import 'nosuch': ModuleNotFoundError"),
        ("update-step=mysteps:good,drop_last=true", "unknown option 'drop_last=true' for upd"),
        ("update-step=mysteps:good,zeroes_grad=maybe", "zeroes_grad: expected true or false, got "),
        ("loss=mysteps:good", "mysteps:good does not take (y_hat, y): missing a required "),
        ("update-step=mysteps:good,max_examples=0", "max_examples: expected a positive int, "),
        ("update-step=mysteps:good,seed=-1", "seed: expected an int >= 0, got '-1'"),
    ],
    ids=["kind", "import", "option", "value", "signature", "max_examples", "seed"],
)
def test_pitfalls_plugin_refuses_a_bad_spec_before_running_anything(
    steps: pytest.Pytester, spec: str, message: str
) -> None:
    result = steps.runpytest("--pitfalls-audit", spec, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--pitfalls-audit {spec}: {message}*"])


LOOPS = """
import torch
from torch import nn


def net():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


sample = (torch.tensor([0.5, -1.0, 2.0]), 1)


def fit(model, loader, optimizer, *, num_epochs):
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            optimizer.step()


def fit_summed(model, loader, optimizer, *, num_epochs):
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), y, reduction="sum").backward()
            optimizer.step()


def fit_smoothed(model, loader, optimizer, *, num_epochs):
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), y, label_smoothing=0.1).backward()
            optimizer.step()
"""


def test_pitfalls_plugin_audits_a_training_loop_with_its_model_and_example(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(myloops=LOOPS)
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    given = "model=myloops:net,example=myloops:sample,accumulation_steps=1"
    result = pytester.runpytest(
        "--pitfalls-audit",
        f"training-loop=myloops:fit,{given}",
        "--pitfalls-audit",
        f"training-loop=myloops:fit_summed,{given}",
        "-p",
        "no:cacheprovider",
        "-v",
    )
    # fit passes all 8; fit_summed fails mean-vs-sum and passes the other 7, each judged on its
    # own (grad-zeroing, short-last-batch and micro-batch-accumulation relative to the summed
    # loss's scale: fewer rows, less gradient, is that one mistake's)
    result.assert_outcomes(passed=15, failed=1, skipped=0)
    result.stdout.fnmatch_lines(["*training-loop=myloops:fit_summed*mean-vs-sum: *FAILED*"])


DICT_LOOPS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, input_ids, labels):
        logits = self.out(self.emb(input_ids).mean(1))
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def sample():
    return {"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor(1)}


def train(model, train_dataloader, max_steps, gradient_accumulation_steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step, batches = 0, iter(train_dataloader)
    while step < max_steps:
        for _ in range(gradient_accumulation_steps):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(train_dataloader)
                batch = next(batches)
            (model(**batch.to("cpu"))["loss"] / gradient_accumulation_steps).backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
"""


def test_pitfalls_plugin_audits_a_step_budget_loop_on_dict_batches(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(dictloops=DICT_LOOPS)
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    result = pytester.runpytest(
        "--pitfalls-audit",
        "training-loop=dictloops:train,model=dictloops:Net,example=dictloops:sample,"
        "accumulation_steps=2,drop_last=true",
        "-p",
        "no:cacheprovider",
        "-v",
    )
    result.assert_outcomes(passed=8)  # every training-loop property


SHARED_LOOPS = """
import torch
from torch import nn

CALLS = []  # one entry per call of a loop below


def net():
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))


torch.manual_seed(0)
THE_NET = net()  # a factory that hands out one model: the user's own


def the_net():
    return THE_NET


sample = (torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5]))


def fit(model, loader, optimizer, *, num_epochs):
    CALLS.append("fit")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()
            optimizer.step()


def fit_by_hand(model, loader, optimizer, *, num_epochs):
    CALLS.append("fit_by_hand")
    for _ in range(num_epochs):
        for X, y in loader:
            optimizer.zero_grad()
            ((model(X) - y) ** 2).mean().backward()
            optimizer.step()
"""


def _imported(pytester: pytest.Pytester, name: str, text: str) -> Any:
    """Write the module `name` and import it here: the in-process runs then use this one."""
    pytester.makepyfile(**{name: text})
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    pytester.syspathinsert()
    return importlib.import_module(name)


def test_pitfalls_plugin_items_of_one_audit_run_the_loop_as_often_as_the_audit_does(
    pytester: pytest.Pytester,
) -> None:
    loops = _imported(pytester, "sharedloops", SHARED_LOOPS)
    result = pytester.runpytest(
        "--pitfalls-audit",
        "training-loop=sharedloops:fit,model=sharedloops:net,example=sharedloops:sample,"
        "max_examples=10",
        "--pitfalls-audit",
        "training-loop=sharedloops:fit,model=sharedloops:the_net,example=sharedloops:sample,"
        "max_examples=10",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=16)
    by_the_plugin = len(loops.CALLS)
    del loops.CALLS[:]
    for model in (loops.net, loops.the_net):
        report = audit.training_loop(loops.fit, model=model, example=loops.sample, max_examples=10)
        assert report.ok, str(report)
    # the items of one spec are one audit: each run made once, read by every property (where
    # the factory hands out new models; each property running its own would call it more)
    assert by_the_plugin == len(loops.CALLS), (by_the_plugin, len(loops.CALLS))
    # the model the factory handed out is put back as it was when the items end
    dropout = loops.THE_NET[2]
    assert loops.THE_NET.training and dropout.p == 0.5 and "train" not in vars(loops.THE_NET)


def test_pitfalls_plugin_a_property_that_held_on_nothing_it_reads_is_skipped_not_passed(
    pytester: pytest.Pytester,
) -> None:
    _imported(pytester, "sharedloops", SHARED_LOOPS)
    spec = "training-loop=sharedloops:fit_by_hand,model=sharedloops:net,example=sharedloops:sample"
    result = pytester.runpytest("--pitfalls-audit", spec, "-p", "no:cacheprovider", "-rs")
    # a squared error written by hand is no loss the audit reads: label-shape judged nothing
    # (as the audit's Report says), the other 7 properties pass
    result.assert_outcomes(passed=7, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*not judged: no backward() reached a loss of values*"])


# a finder that refuses torch and Hypothesis: a run that imports either fails on it
_WITHOUT = """
import sys

class Refused:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "hypothesis"):
            raise ImportError(f"{name} refused: this run must not import it")

sys.meta_path.insert(0, Refused())
"""


@pytest.mark.parametrize("args", [["--help"], ["test_plain.py", "-q"]], ids=["help", "a run"])
def test_pitfalls_plugin_loaded_by_any_pytest_run_imports_neither_torch_nor_hypothesis(
    tmp_path: Path, args: list[str]
) -> None:
    # the plugin loads (its entry point) in every pytest run where linreg is installed, of
    # any project: its help lists the kinds, and a run that audits nothing collects nothing
    # of it; neither may cost that run an import of torch, nor need Hypothesis
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    code = _WITHOUT + (
        "import pytest\n"
        f"code = pytest.main({args!r} + ['-p', 'no:cacheprovider', '-p', 'no:hypothesispytest'])\n"
        "assert 'linreg.testing.plugin' in sys.modules, 'the plugin was not loaded'\n"
        "sys.exit(int(code))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert ("training-loop" in run.stdout) if args == ["--help"] else ("1 passed" in run.stdout)


def test_pitfalls_plugin_an_audit_that_could_judge_no_step_is_an_error_not_a_pass(
    pytester: pytest.Pytester,
) -> None:
    # FGSM adversarial training: every step trains on rows the loop made from the batch's
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    where = "tests.test_audit_one_cause_one_name"
    spec = f"training-loop={where}:fgsm,model={where}:Student,example={where}:labelled"
    result = pytester.runpytest(
        "--pitfalls-audit", f"{spec},max_examples=10", "-p", "no:cacheprovider"
    )
    # as linreg.audit says: no step of any run could be judged, an error (no pass, exit 1)
    report = audit.training_loop(
        adversarial.fgsm, model=adversarial.Student, example=adversarial.labelled, max_examples=10
    )
    assert report.error.startswith("no step of any run could be judged"), str(report)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 1 and "failed" not in outcomes, outcomes
    result.stdout.fnmatch_lines([f"*{spec}*: no step of any run could be judged*"])


def test_pitfalls_plugin_says_what_limits_the_verdicts_as_the_audits_report_does(
    pytester: pytest.Pytester,
) -> None:
    # a label-smoothed cross-entropy is no loss the audit guesses: each row's reference is the
    # loop's own gradient on that row, which the Report's note says; the plugin says it too
    loops = _imported(pytester, "myloops", LOOPS)
    spec = "training-loop=myloops:fit_smoothed,model=myloops:net,example=myloops:sample"
    args = ("--pitfalls-audit", f"{spec},max_examples=10", "-p", "no:cacheprovider")
    result = pytester.runpytest(*args)
    report = audit.training_loop(
        loops.fit_smoothed, model=loops.net, example=loops.sample, max_examples=10
    )
    assert report.ok and report.note.startswith("each row's reference was"), str(report)
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*linreg-pitfalls audit notes*", f"{spec},*: {report.note}"])
    # on the last item's teardown report: what xdist hands its controller, which then says it
    runs = pytester.inline_run(*args)
    carried = [
        text
        for rep in runs.getreports("pytest_runtest_logreport")
        if rep.when == "teardown"
        for name, text in rep.user_properties
        if name == "linreg-pitfalls note"
    ]
    assert carried == [f"{spec},max_examples=10: {report.note}"], carried
