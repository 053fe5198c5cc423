"""The benchmark report's gate: it fails on a broken invariant, never on an absolute time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report


def data(no_grad: float = 0.9, analytic: float = 0.15, grad_bytes: int = 4000) -> dict[str, Any]:
    """A run of one eval group and one train group; times are per round, paired."""
    rounds = 20
    evals = {
        "n": 1000,
        "d": 2,
        "device": "cpu",
        "base": "grad",
        "saved_bytes_beyond_inputs": {"grad": grad_bytes, "no_grad": 0, "inference_mode": 0},
        # a machine that drifts 3x over the run: the paired ratio must not care
        "times": {
            "grad": [1e-4 * (1 + 2 * r / rounds) for r in range(rounds)],
            "no_grad": [no_grad * 1e-4 * (1 + 2 * r / rounds) for r in range(rounds)],
            "inference_mode": [0.8e-4 * (1 + 2 * r / rounds) for r in range(rounds)],
        },
    }
    train = {
        "device": "cpu",
        "base": "book loop",
        "times": {
            "book loop": [0.1] * rounds,
            "linreg.train(autograd)": [0.08] * rounds,
            "linreg.train(analytic)": [analytic * 0.1] * rounds,
        },
    }
    return {
        "machine_info": {"cpu": {"brand_raw": "test"}, "cpu_count": 2},
        "datetime": "now",
        "version": "5",
        "benchmarks": [
            {"name": "eval", "group": "eval n=1e+03 d=2 cpu", "extra_info": evals},
            {"name": "train", "group": "train default cpu", "extra_info": train},
        ],
    }


def test_paired_ratios_cancel_a_drifting_machine(tmp_path: Path) -> None:
    path, failures = report.write_report(data(), tmp_path)
    assert failures == []
    text = path.read_text()
    assert "| cpu | 1,000 | 2 |" in text and "0.900 [0.900, 0.900]" in text
    assert "| linreg.train(autograd) vs book loop | 1.25x [1.25, 1.25] | >= 1.1x | met |" in text
    assert text.count("Gate: every invariant held.") == 1


@pytest.mark.parametrize(
    ("kwargs", "failure"),
    [
        ({"no_grad": 1.05}, "no_grad slower than grad mode at n = 1e3, d = 2 (cpu)"),
        ({"grad_bytes": 4001}, "bytes held at n = 1000, d = 2"),
        ({"analytic": 0.25}, "linreg.train(analytic) is 4.00x book loop on cpu, below 5.0x"),
    ],
    ids=["no_grad", "bytes", "analytic"],
)
def test_the_gate_fails_on_a_broken_invariant(
    tmp_path: Path, kwargs: dict[str, Any], failure: str
) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    (out / "benchmarks.json").write_text(json.dumps(data(**kwargs)))
    assert report.main([str(out / "benchmarks.json")]) == 1
    _, failures = report.write_report(data(**kwargs), out)
    assert len(failures) == 1 and failures[0].startswith(failure)
