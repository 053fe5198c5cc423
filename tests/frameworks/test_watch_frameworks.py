"""The frameworks' behaviours measured in this folder, reproduced by watching scripts that use
them, unchanged (python -m linreg watch; tests/watch_scripts/): accelerate's documented
accumulation loop and Lightning's Trainer with accumulate_grad_batches=2 pass when every window
is full, and fail short-last-batch when the epoch's last window holds one batch of two (each
measured directly at [1.0, 0.5] in test_accelerate.py and test_lightning.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from linreg.audit import watch_script

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
