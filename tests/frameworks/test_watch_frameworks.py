"""The frameworks' behaviours measured in this folder, reproduced by watching scripts that use
them, unchanged (python -m linreg watch; tests/watch_scripts/): accelerate's documented
accumulation loop and Lightning's Trainer with accumulate_grad_batches=2 pass when every window
is full, and fail short-last-batch when the epoch's last window holds one batch of two (each
measured directly at [1.0, 0.5] in test_accelerate.py and test_lightning.py). A Fabric loop with
`no_backward_sync` passes, and each twin with one line of Fabric's documented loop fails: the
mean losses summed (mean-vs-sum, 2x) and windows counted from batch 0, whose first holds one
batch (short-last-batch, 0.5x; the [1.0, 2.0] of the documented loop is measured directly in
tests/test_audit_updates.py). transformers' Trainer on padded rows passes with a model whose loss
divides by num_items_in_batch (Llama), names a mean of micro-batch means when the Trainer stops
passing the count, and names GPT2LMHeadModel's labels counted before its shift."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from linreg.audit import watch_script
from linreg.audit.watcher import watch
from tests.test_watch import twin_of

SCRIPTS = Path(__file__).parent.parent / "watch_scripts"


@pytest.mark.parametrize("framework", ["accelerate", "pytorch_lightning"])
def test_watching_a_framework_script_passes_full_windows_and_names_a_short_last_one(
    framework: str, tmp_path: Path
) -> None:
    pytest.importorskip(framework)
    script = str(
        SCRIPTS / ("accelerate_accum.py" if framework == "accelerate" else "lightning_accum.py")
    )
    full = watch_script(script, ["--rows", "8"])  # batches of 2, windows of 2: all full
    assert full.ok, str(full)
    # accelerate fetches a batch ahead: its DataLoader runs out before the epoch's last batch
    # is handed on, which is no end of the epoch inside its last window
    assert "both sides of an epoch's end" not in (full.note or ""), str(full)
    if framework == "accelerate":  # its loop divides each micro-batch's loss by the count
        line = "loss = F.cross_entropy(model(inputs), targets)"
        summed = twin_of(tmp_path, Path(script), line, line[:-1] + ', reduction="sum")')
        # windows of 4 batches of 2 rows: 2 times the mean, a micro-batch's rows (not the 4
        # micro-batches' means added up, undivided)
        args = ["--rows", "16", "--gradient-accumulation-steps", "4"]
        report = watch_script(str(summed), args)
        assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
        assert "applied 2 times the mean: it sums each micro-batch's" in str(report), str(report)
    short = watch_script(script, ["--rows", "10"])  # 5 batches: the last window holds one
    assert [r.pitfall for r in short.failures] == ["short-last-batch"], str(short)
    assert "applied 0.5 times the mean" in short.failures[0].message


@pytest.mark.parametrize(
    "line, bug, why",
    [
        (
            "with accelerator.accumulate(model):",
            "if True:  # accumulate() left out",
            "outside `with accelerator.accumulate(model):`",
        ),
        (
            "accelerator.backward(loss)",
            "accelerator.backward(loss / args.gradient_accumulation_steps)",
            "divides it by gradient_accumulation_steps=3 already",
        ),
    ],
    ids=["accumulate() left out", "divided again"],
)
def test_watching_accelerate_names_a_loss_divided_by_the_count_with_no_window_or_twice(
    line: str, bug: str, why: str, tmp_path: Path
) -> None:
    """Accelerator.backward divides every loss by gradient_accumulation_steps. Left out of
    accumulate(), the loop steps every batch at 1 / 3 of its mean (measured in
    test_accelerate.py); divided by the count again inside it, each window applies 1 / 3. Both
    passed as a constant of the loss's own (review 30's s2b); they are mean-vs-sum, and the
    documented loop on the same 12 rows in windows of 3 batches of 2 passes."""
    pytest.importorskip("accelerate")
    script = SCRIPTS / "accelerate_accum.py"
    args = ["--rows", "12", "--gradient-accumulation-steps", "3"]
    assert watch_script(str(script), args).ok
    # an epoch of one batch, fewer than the count, cuts every window short: accelerate's own
    # nominal count there, not a step outside accumulate() (code review cr23)
    one = watch_script(str(script), ["--rows", "2", "--gradient-accumulation-steps", "3"])
    assert "outside" not in str(one), str(one)
    report = watch_script(str(twin_of(tmp_path, script, line, bug)), args)
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "applied 0.3333 times the mean" in report.failures[0].message, str(report)
    assert why in report.failures[0].message, str(report)


def test_watching_accelerate_reads_short_epochs_and_a_halved_loss_by_the_count_it_divides(
    tmp_path: Path,
) -> None:
    """Code review cr24: an epoch of 2 batches at k = 3 still shows a step outside
    accumulate() (1 micro-batch at 1/3, where the documented loop steps 2 at 2/3); a halved
    loss at k = 2 whose epoch's last window holds one batch (accelerate's own nominal count,
    0.5 of the 0.5) is short-last-batch alone, not a sum growing with the rows."""
    pytest.importorskip("accelerate")
    script = SCRIPTS / "accelerate_accum.py"
    outside = twin_of(
        tmp_path, script, "with accelerator.accumulate(model):", "if True:  # accumulate() left out"
    )
    report = watch_script(str(outside), ["--rows", "4", "--gradient-accumulation-steps", "3"])
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "outside `with accelerator.accumulate(model):`" in str(report), str(report)
    line = "loss = F.cross_entropy(model(inputs), targets)"
    halved = twin_of(tmp_path, script, line, "loss = 0.5 * F.cross_entropy(model(inputs), targets)")
    report = watch_script(str(halved), ["--rows", "10"])
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    # (its skip said data of no multiple of the batch size would tell, where a short window,
    # accelerate's own count on it, was read and tells nothing: review 33)
    (scale,) = [r for r in report.results if r.pitfall == "mean-vs-sum"]
    assert scale.verdict == "skip" and "the shorter ones read tell nothing" in scale.message


def test_watching_lightning_names_a_loss_divided_by_accumulate_grad_batches_again(
    tmp_path: Path,
) -> None:
    """A training_step that divides its loss by accumulate_grad_batches, which Lightning's
    automatic optimization divides by already: every full window applies 1 / k of its mean,
    and the epoch's short last window 1 / k of Lightning's own nominal third (measured in
    test_lightning.py: [1/3, 1/9] at k = 3). It passed as a constant of the loss's own,
    naming only the short window (review 30's s1b); each cause now has its name. At k = 2 a
    halved loss (0.5 * F.mse_loss) applies the same 1 / k and passes (code review cr23), so
    the division again is named from k = 3."""
    pytest.importorskip("pytorch_lightning")
    script = SCRIPTS / "lightning_accum.py"
    line = "return F.cross_entropy(self.net(x), y)"
    twin = twin_of(tmp_path, script, line, line + " / self.trainer.accumulate_grad_batches")
    full = watch_script(str(twin), ["--rows", "12", "--accumulate-grad-batches", "3"])
    assert [r.pitfall for r in full.failures] == ["mean-vs-sum"], str(full)
    assert "where Lightning's accumulate_grad_batches=3 divides it already" in str(full)
    short = watch_script(str(twin), ["--rows", "14", "--accumulate-grad-batches", "3"])
    assert [r.pitfall for r in short.failures] == ["short-last-batch", "mean-vs-sum"], str(short)
    assert "its own division by the count again undone, applied 0.3333 times" in str(short)
    halved = twin_of(tmp_path, script, line, "return 0.5 * F.cross_entropy(self.net(x), y)")
    report = watch_script(str(halved), ["--rows", "8"])
    assert report.ok, str(report)
    assert "1 / the count Lightning's accumulate_grad_batches=2" in (report.note or "")


def test_watching_accelerate_names_a_loss_divided_again_outside_accumulate_with_both_causes(
    tmp_path: Path,
) -> None:
    """Outside accumulate() and divided by the count again: every batch's step applies
    1 / k^2 of its mean (1/9 at k = 3), which neither rule named alone, so it exited 0 (code
    review cr29's P1). The code's own division is read, so both causes are named."""
    pytest.importorskip("accelerate")
    script = SCRIPTS / "accelerate_accum.py"
    outside = twin_of(
        tmp_path, script, "with accelerator.accumulate(model):", "if True:  # accumulate() left out"
    )
    twice = twin_of(
        tmp_path,
        outside,
        "accelerator.backward(loss)",
        "accelerator.backward(loss / accelerator.gradient_accumulation_steps)",
    )
    report = watch_script(str(twice), ["--rows", "12", "--gradient-accumulation-steps", "3"])
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    message = report.failures[0].message
    assert "applied 0.1111 times the mean" in message, str(report)
    assert "outside `with accelerator.accumulate(model):`" in message, str(report)
    assert "divides each loss by the count again itself" in message, str(report)


@pytest.mark.parametrize("framework", ["accelerate", "lightning"])
def test_watching_a_loss_divided_by_the_count_again_at_two_is_named_from_its_division(
    framework: str, tmp_path: Path
) -> None:
    """At k = 2, 1 / k is a halved loss's too (0.5 * loss), so a loss divided by the count
    again inside accelerate's accumulate() or Lightning's accumulation exited 0 (review 33:
    measured 0.5 of the mean on every update), its note saying no known mistake names 0.5.
    The division itself is read now: loss / k below the framework's own division by k is
    named; 0.5 * loss still passes, its note saying it is 1 / the count."""
    if framework == "accelerate":
        pytest.importorskip("accelerate")
        script, rows = SCRIPTS / "accelerate_accum.py", "12"
        line = "accelerator.backward(loss)"
        again = "accelerator.backward(loss / accelerator.gradient_accumulation_steps)"
        said = "divides it by gradient_accumulation_steps=2 already"
    else:
        pytest.importorskip("pytorch_lightning")
        script, rows = SCRIPTS / "lightning_accum.py", "8"
        line = "return F.cross_entropy(self.net(x), y)"
        again = line + " / self.trainer.accumulate_grad_batches"
        said = "where Lightning's accumulate_grad_batches=2 divides it already"
    report = watch_script(str(twin_of(tmp_path, script, line, again)), ["--rows", rows])
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "applied 0.5 times the mean" in report.failures[0].message, str(report)
    assert said in report.failures[0].message, str(report)


@pytest.mark.parametrize("k", [2, 3])
def test_watching_a_trainers_compute_loss_divided_by_the_count_names_the_trainers_division(
    k: int, tmp_path: Path
) -> None:
    """transformers' Trainer divides a loss its model did not scale by num_items_in_batch by
    the window's count of batches itself, in training_step (its accelerator divides by 1), so
    a custom compute_loss that divides by gradient_accumulation_steps too applies 1 / k of the
    mean (measured directly in test_hf_trainer.py): it exited 0, its 1 / k read as the loss's
    own constant (code review cr29's P2). The Trainer's division is read now, as accelerate's."""
    pytest.importorskip("transformers")
    script = SCRIPTS / "hf_trainer_regress.py"
    args = ["--output-dir", str(tmp_path / "out"), "--gradient-accumulation-steps", str(k)]
    report = watch_script(str(script), args)
    assert report.ok and not report.error, str(report)
    line = '        loss = F.mse_loss(pred, inputs["y"])'
    again = line + " / self.args.gradient_accumulation_steps"
    report = watch_script(str(twin_of(tmp_path, script, line, again)), args)
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    said = f"transformers' Trainer divides it by gradient_accumulation_steps={k} already"
    assert said in report.failures[0].message, str(report)


@pytest.mark.parametrize(
    ("local", "accepts", "items", "func", "divides"),
    [
        ({"loss_is_scaled_for_ga": False}, True, 8, None, True),  # its own word, where it has one
        ({"loss_is_scaled_for_ga": True}, False, None, None, False),
        ({}, False, None, None, True),  # older: a model without loss kwargs, no loss function
        ({}, True, 8, None, False),  # the model divides by num_items_in_batch
        ({}, True, None, None, True),  # no count passed: the Trainer divides
        ({}, False, None, len, False),  # a compute_loss_func scales it
    ],
)
def test_the_trainers_own_division_is_read_from_its_training_step_whatever_its_version(
    local: dict[str, object], accepts: bool, items: int | None, func: object, divides: bool
) -> None:
    """transformers 4.57 has no local loss_is_scaled_for_ga in training_step (code review
    cr32): its test, of the model's loss kwargs and a compute_loss_func, is read instead."""
    from types import SimpleNamespace

    from linreg.kinds.watched.divided import _trainer_divides

    trainer = SimpleNamespace(model_accepts_loss_kwargs=accepts, compute_loss_func=func)
    frame = SimpleNamespace(
        f_code=SimpleNamespace(co_name="training_step"),
        f_globals={"__name__": "transformers.trainer"},
        f_locals={"self": trainer, "num_items_in_batch": items, **local},
    )
    assert _trainer_divides(frame) is divides
    outside = SimpleNamespace(**{**vars(frame), "f_globals": {"__name__": "my_trainer"}})
    assert not _trainer_divides(outside)


def _distilled_in_accelerate(again: bool) -> None:
    """A student distilled from a frozen teacher inside accelerate's accumulate(), k = 3, its
    loss 0.5 * cross-entropy + 0.5 * KL (T = 2); again: the loss divided by the count too."""
    from accelerate import Accelerator

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(72, 10, generator=gen), torch.randint(0, 4, (72,), generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
        student = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))
    teacher.requires_grad_(False)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=3)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    student, optimizer, loader = accelerator.prepare(student, optimizer, loader)
    for xb, yb in loader:
        with accelerator.accumulate(student):
            logits = student(xb)
            soft = F.softmax(teacher(xb) / 2, -1)
            kl = F.kl_div(F.log_softmax(logits / 2, -1), soft, reduction="batchmean") * 4
            loss = 0.5 * F.cross_entropy(logits, yb) + 0.5 * kl
            accelerator.backward(loss / 3 if again else loss)
            optimizer.step()
            optimizer.zero_grad()


def test_watching_a_distillation_divided_by_the_count_again_inside_accumulate_names_it() -> None:
    """Beside a KL term on the teacher's outputs, the cross-entropy's scale is the code's
    coefficient, so (ce + kl) / k inside accumulate() exited 0 (held-out review 35: measured
    1 / k of the mean). The division by k seen twice on the way to the root names it, from
    k = 3 (at 2, (ce + kl) / 2 is the mean of two terms too)."""
    pytest.importorskip("accelerate")
    with watch(steps=6) as reports:
        _distilled_in_accelerate(again=False)
    assert reports[0].ok and not reports[0].error, str(reports[0])
    with watch(steps=6) as reports:
        _distilled_in_accelerate(again=True)
    report = reports[0]
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "by the accumulation count 3 itself" in report.failures[0].message, str(report)


def test_watching_a_fabric_script_passes_and_each_one_line_twin_names_its_pitfall(
    tmp_path: Path,
) -> None:
    pytest.importorskip("lightning_fabric")
    script = SCRIPTS / "fabric_accum.py"
    report = watch_script(str(script))
    assert report.ok, str(report)
    twins = [
        ("fabric.backward(loss / k)", "fabric.backward(loss)", "mean-vs-sum", "2 times"),
        (
            "is_accumulating = (iteration + 1) % k != 0",
            "is_accumulating = iteration % k != 0",
            "short-last-batch",
            "0.5 times",
        ),
    ]
    for line, bug, pitfall, factor in twins:
        report = watch_script(str(twin_of(tmp_path, script, line, bug)))
        assert [r.pitfall for r in report.failures] == [pitfall], str(report)
        assert f"applied {factor} the mean" in report.failures[0].message, str(report)


def test_watching_a_trainer_script_passes_and_names_a_mean_of_means_and_an_over_count(
    tmp_path: Path,
) -> None:
    # the behaviours test_hf_trainer.py measures directly, seen on a script with padded rows
    pytest.importorskip("transformers")
    script = SCRIPTS / "hf_trainer_lm.py"
    out = ["--output-dir", str(tmp_path / "out")]
    report = watch_script(str(script), out)
    assert report.ok, str(report)
    clipped = watch_script(str(script), [*out, "--max-grad-norm", "0.01"])  # clips every update
    assert clipped.ok and "terms of one objective" not in (clipped.note or ""), str(clipped)
    verdicts = {r.pitfall: r.verdict for r in clipped.results}
    assert verdicts.pop("label-shape") == "skip", str(clipped)  # cross-entropy: no broadcast
    assert verdicts.pop("clip-before-unscale") == "skip", str(clipped)  # no loss scaler
    assert set(verdicts.values()) == {"pass"}, str(clipped)  # each other one judged
    line = "    trainer.train()"  # the Trainer no longer passes num_items_in_batch to the model
    twin = twin_of(tmp_path, script, line, "    trainer.model_accepts_loss_kwargs = False\n" + line)
    report = watch_script(str(twin), out)
    assert [r.pitfall for r in report.failures] == ["micro-batch-accumulation"], str(report)
    report = watch_script(str(script), [*out, "--model", "gpt2"])
    assert [r.pitfall for r in report.failures] == ["mean-vs-sum"], str(report)
    assert "before the causal shift drops it" in report.failures[0].message, str(report)


def test_watching_a_manual_optimization_module_reads_its_own_window(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_lightning")
    script = SCRIPTS / "lightning_manual.py"
    report = watch_script(str(script))  # 10 rows, windows of 2 batches of 2: the last short
    assert report.ok, str(report)
    assert "then ended the code" in (report.note or ""), str(report)  # its epoch's end seen
    line = 'loss = F.cross_entropy(self.net(x), y, reduction="sum") / rows'
    twin = twin_of(tmp_path, script, line, "loss = F.cross_entropy(self.net(x), y) / self.window")
    report = watch_script(str(twin))
    assert [r.pitfall for r in report.failures] == ["short-last-batch"], str(report)
    assert "applied 0.5 times the mean" in report.failures[0].message, str(report)
