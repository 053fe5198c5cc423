"""The command line: `python -m linreg train`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from linreg.cli import main


def test_train_prints_the_books_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert lines[3].startswith("error in estimating w: [")
    assert lines[4].startswith("error in estimating b: ")


@pytest.mark.parametrize("grad", ["autograd", "analytic"])
def test_train_json_reports_losses_and_errors_below_the_noise_floor(
    grad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--json", "--grad", grad]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["losses"]) == 3 and report["num_steps"] == 300
    assert max(abs(e) for e in [*report["w_error"], report["b_error"]]) < 3e-3
    assert report["config"]["grad"] == grad


def test_train_options_reach_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "train",
        "--json",
        "-n",
        "103",
        "-b",
        "10",
        "-e",
        "2",
        "--drop-last",
        "--lr",
        "0.05",
        "--dtype",
        "float64",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_steps"] == 2 * 10 and len(report["losses"]) == 2
    assert report["config"] == {
        "num_examples": 103,
        "batch_size": 10,
        "lr": 0.05,
        "epochs": 2,
        "seed": 3,
        "grad": "autograd",
        "drop_last": True,
        "dtype": "float64",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "-b", "0"],
        ["train", "--lr", "nan"],
        ["train", "--lr", "-1"],
        ["train", "-e", "-2"],
        ["train", "--grad", "numeric"],
        ["train", "-n", "x"],
        ["train", "--bogus"],
        ["fly"],
        [],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "linreg", *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "error:" in proc.stderr


def test_help_explains_each_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--num-examples",
        "--batch-size",
        "--lr",
        "--epochs",
        "--seed",
        "--grad",
        "--drop-last",
        "--dtype",
        "--json",
    ):
        assert option in out
