"""The frameworks' behaviours measured in this folder, reproduced by watching scripts that use
them, unchanged (python -m linreg watch; tests/watch_scripts/): accelerate's documented
accumulation loop and Lightning's Trainer with accumulate_grad_batches=2 pass when every window
is full, and fail short-last-batch when the epoch's last window holds one batch of two (each
measured directly at [1.0, 0.5] in test_accelerate.py and test_lightning.py). A Fabric loop with
`no_backward_sync` passes, and each twin with one line of Fabric's documented loop fails: the
mean losses summed (mean-vs-sum, 2x) and windows counted from batch 0, whose first holds one
batch (short-last-batch, 0.5x; the [1.0, 2.0] of the documented loop is measured directly in
tests/test_audit_updates.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from linreg.audit import watch_script
from tests.test_watch import twin_of

SCRIPTS = Path(__file__).parent.parent / "watch_scripts"


@pytest.mark.parametrize("framework", ["accelerate", "pytorch_lightning"])
def test_watching_a_framework_script_passes_full_windows_and_names_a_short_last_one(
    framework: str,
) -> None:
    pytest.importorskip(framework)
    script = str(
        SCRIPTS / ("accelerate_accum.py" if framework == "accelerate" else "lightning_accum.py")
    )
    full = watch_script(script, ["--rows", "8"])  # batches of 2, windows of 2: all full
    assert full.ok, str(full)
    short = watch_script(script, ["--rows", "10"])  # 5 batches: the last window holds one
    assert [r.pitfall for r in short.failures] == ["short-last-batch"], str(short)
    assert "applied 0.5 times the mean" in short.failures[0].message


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
