"""The command line: `python -m linreg train`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from typing import Any

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


def test_train_that_diverges_exits_1_naming_the_step_and_the_stable_lr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "--lr", "5"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "epoch 1, loss nan"
    assert err == (
        "python -m linreg train: the run diverged: the params were no longer finite after step "
        "62 (epoch 1); lr = 5 is above 2 / lambda_max(A^T A / n) = 1.815, the largest stable lr "
        "for full-batch gradient descent on this data\n"
    )
    assert main(["train", "--lr", "5", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)  # strict JSON: no bare NaN
    assert report["losses"] == [None] and report["w"] == [None, None]
    assert report["diverged"] == {
        "step": 62,
        "epoch": 1,
        "stable_bound": pytest.approx(1.8154, abs=1e-3),
    }
    assert err.startswith("python -m linreg train: the run diverged")


# (argv, the one line on stderr): each names the option and what it expected.
TRAIN = "python -m linreg train: error: argument "
PITFALLS = "python -m linreg pitfalls: error: "
AUDIT = "python -m linreg audit: error: "
BAD_OPTIONS = [
    (["train", "-n", "0"], TRAIN + "-n/--num-examples: expected a positive int, got '0'"),
    (["train", "-n", "1.5"], TRAIN + "-n/--num-examples: expected a positive int, got '1.5'"),
    (["train", "-b", "0"], TRAIN + "-b/--batch-size: expected a positive int, got '0'"),
    (
        ["train", "--seed", str(2**64)],
        TRAIN + f"--seed: expected an int from 0 to 2**64 - 2, got '{2**64}'",
    ),
    (["train", "-b", "x"], TRAIN + "-b/--batch-size: expected a positive int, got 'x'"),
    (["train", "--lr", "0"], TRAIN + "--lr: expected a finite number > 0, got '0'"),
    (["train", "--lr", "-1"], TRAIN + "--lr: expected a finite number > 0, got '-1'"),
    (["train", "--lr", "nan"], TRAIN + "--lr: expected a finite number > 0, got 'nan'"),
    (["train", "--lr", "inf"], TRAIN + "--lr: expected a finite number > 0, got 'inf'"),
    (["train", "--lr", "x"], TRAIN + "--lr: expected a finite number > 0, got 'x'"),
    (["train", "-e", "-2"], TRAIN + "-e/--epochs: expected an int >= 0, got '-2'"),
    (["train", "-e", "x"], TRAIN + "-e/--epochs: expected an int >= 0, got 'x'"),
    (["train", "--seed", "-1"], TRAIN + "--seed: expected an int from 0 to 2**64 - 2, got '-1'"),
    (["train", "--seed", "x"], TRAIN + "--seed: expected an int from 0 to 2**64 - 2, got 'x'"),
    (
        ["train", "--grad", "numeric"],
        TRAIN + "--grad: invalid choice: 'numeric' (choose from 'autograd', 'analytic')",
    ),
    (
        ["train", "--dtype", "float16"],
        TRAIN + "--dtype: invalid choice: 'float16' (choose from 'float32', 'float64')",
    ),
    # the command's own error, as its others are (it was "python -m linreg: error: ...")
    (["train", "--drop-last", "yes"], "python -m linreg train: error: unrecognized arguments: yes"),
    (["train", "--bogus"], "python -m linreg train: error: unrecognized arguments: --bogus"),
    (
        ["fly"],
        "python -m linreg: error: argument COMMAND: invalid choice: 'fly' "
        "(choose from 'train', 'pitfalls', 'audit', 'watch')",
    ),
    ([], "python -m linreg: error: the following arguments are required: COMMAND"),
    (["pitfalls", "--only", "nope"], PITFALLS + "unknown pitfall id 'nope'; choose from "),
    (["pitfalls", "--only"], PITFALLS + "argument --only: expected one argument"),
    (
        ["pitfalls", "--json", "--markdown"],
        PITFALLS + "argument --markdown: not allowed with argument --json",
    ),
    (
        ["pitfalls", "--plot", "out.svg"],
        PITFALLS + "--plot writes a PNG: give a FILE.png, got 'out.svg'",
    ),
    (["pitfalls", "--bogus"], PITFALLS + "unrecognized arguments: --bogus"),
    # before the command, the top level's (it raised AttributeError, no command's parser)
    (["--bogus", "audit"], "python -m linreg: error: unrecognized arguments: --bogus"),
    (
        ["audit", "loss", "linreg.loss:squared_loss", "--bogus"],
        AUDIT + "unrecognized arguments: --bogus",
    ),
    (
        ["pitfalls", "--plot", "no/such/folder/out.png"],
        PITFALLS + "--plot: the folder 'no/such/folder' does not exist",
    ),
    (
        ["pitfalls", "--plot", "out.png", "--only", "eval-no-grad"],
        PITFALLS + "--plot: none of the chosen pitfalls draws loss curves (those that do: "
        "mean-vs-sum, grad-zeroing, once-per-epoch, label-shape, shuffled-apart, stable-lr)",
    ),
    (
        ["audit", "step", "linreg.optim:sgd"],
        AUDIT + "argument KIND: invalid choice: 'step' (choose from 'iterator', 'update-step', "
        "'loss', 'loop', 'epoch-loss', 'training-loop', 'hf-trainer', 'lightning')",
    ),
    (["audit", "loss"], AUDIT + "the following arguments are required: MODULE:NAME"),
    (["audit", "loss", "linreg.loss"], AUDIT + "expected MODULE:NAME, got 'linreg.loss'"),
    (
        ["audit", "loss", "nosuch:f"],
        AUDIT + "cannot import 'nosuch': ModuleNotFoundError: No module named 'nosuch'",
    ),
    (["audit", "loss", "linreg.loss:nope"], AUDIT + "'linreg.loss' has no attribute 'nope'"),
    (
        ["audit", "loss", "linreg._book:TRUE_B"],
        AUDIT + "linreg._book:TRUE_B is not callable: it is a float",
    ),
    (
        ["audit", "loss", "linreg.optim:sgd"],
        AUDIT + "linreg.optim:sgd does not take (y_hat, y): missing a required argument: "
        "'batch_size'",
    ),
    (
        ["audit", "loop", "linreg.optim:sgd"],
        AUDIT + "linreg.optim:sgd: a loop must take fn(features, labels, params, *, lr, "
        "batch_size, num_epochs): multiple values for argument 'lr'",
    ),
    (
        ["audit", "loss", "linreg.loss:squared_loss", "--drop-last"],
        AUDIT + "--drop-last does not apply to loss",
    ),
    (
        ["audit", "iterator", "linreg.data:data_iter", "--reduction", "mean"],
        AUDIT + "--reduction does not apply to iterator",
    ),
    (
        ["audit", "loss", "linreg.loss:squared_loss", "--scale", "0"],
        AUDIT + "argument --scale: expected a finite number > 0, got '0'",
    ),
    (
        ["audit", "loss", "linreg.loss:squared_loss", "--max-examples", "0"],
        AUDIT + "argument --max-examples: expected a positive int, got '0'",
    ),
    (  # a float, but none a time limit can be (the review's: "expected a float, got '-5'")
        ["audit", "loss", "linreg.loss:squared_loss", "--timeout", "-5"],
        AUDIT + "argument --timeout: expected a finite number > 0, got '-5'",
    ),
    (
        [
            "audit",
            "loss",
            "linreg.loss:squared_loss",
            "--model",
            "linreg.kinds.training_loop:mlp",
        ],
        AUDIT + "--model does not apply to loss",
    ),
    (
        [
            "audit",
            "training-loop",
            "linreg.kinds.training_loop:fit",
            "--model",
            "linreg.kinds.training_loop:mlp",
        ],
        AUDIT + "training-loop needs --example MODULE:NAME",
    ),
    (
        [
            "audit",
            "training-loop",
            "linreg.kinds.training_loop:fit",
            "--model",
            "linreg.kinds.training_loop:nothing",
            "--example",
            "examples.mlp_classifier:sample",
        ],
        AUDIT + "--model: 'linreg.kinds.training_loop' has no attribute 'nothing'",
    ),
    (
        [
            "audit",
            "training-loop",
            "linreg.kinds.training_loop:fit",
            "--model",
            "linreg.kinds.training_loop:mlp",
            "--example",
            "linreg.kinds.training_loop:SIGNATURE",
        ],
        AUDIT + "the example must be one (x, y) sample or a dict of tensors, got str",
    ),
    (
        [
            "audit",
            "training-loop",
            "linreg.kinds.training_loop:fit",
            "--model",
            "linreg.kinds.training_loop:mlp",
            "--example",
            "examples.mlp_classifier:sample",
            "--reduction",
            "none",
        ],
        AUDIT
        + "argument --reduction: invalid choice for training-loop: 'none' (choose from 'mean', "
        "'sum')",
    ),
]


# ids say "report" for "pitfalls", so that -k pitfalls selects only the pitfalls suite
@pytest.mark.parametrize(
    ("argv", "line"),
    BAD_OPTIONS,
    ids=[" ".join(a).replace("pitfalls", "report") for a, _ in BAD_OPTIONS],
)
def test_bad_options_exit_2_with_one_line_naming_the_option(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    if line.endswith("choose from "):  # then the ids of the catalogue, in order
        from linreg.pitfalls import CATALOGUE

        line += ", ".join(p.id for p in CATALOGUE)
    assert err == line + " (see --help)\n"


def test_a_bad_option_ends_the_process_with_status_2_and_nothing_on_stdout() -> None:
    # torch made unimportable: a usage error of `train` is answered without it (at once)
    no_torch = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv[0] = 'linreg'; "
        "runpy.run_module('linreg', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", no_torch, "train", "-b", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == TRAIN + "-b/--batch-size: expected a positive int, got '0' (see --help)\n"


def test_a_run_whose_data_cannot_fit_in_memory_is_refused_before_it_allocates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["train", "-n", str(10**11)])  # about 2.5 TiB of data
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m linreg train: error: -n/--num-examples: 100000000000 rows")
    assert "more than this machine has free" in err


@pytest.mark.heavy
@pytest.mark.parametrize(
    "when", ["during import torch", "during the run", "during the run, from a terminal"]
)
def test_ctrl_c_ends_the_command_with_one_line_and_status_130_leaving_nothing_running(
    when: str,
) -> None:
    import os
    import signal
    import time
    from pathlib import Path

    proc = subprocess.Popen(  # a session of its own: its group is it and the ranks it starts
        [sys.executable, "-m", "linreg", "pitfalls"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    if when.startswith("during the run"):  # its progress goes to stderr: wait for the first
        while "[1/" not in proc.stderr.readline():
            pass
    else:  # until torch's library is being loaded (Linux shows it; elsewhere, a moment)
        maps = Path(f"/proc/{proc.pid}/maps")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and maps.exists() and "torch" not in maps.read_text():
            time.sleep(0.01)
        if not maps.exists():
            time.sleep(0.5)
    if when.endswith("terminal"):  # a terminal sends it to the whole group: the DDP ranks too
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    with proc.stderr:
        err = proc.stderr.read()
    # 130, or killed by SIGINT as Python does when a Ctrl-C inside an import's C code left it
    # flagged: the shell shows 130 for both
    assert proc.wait(timeout=120) in (130, -signal.SIGINT), err
    assert err.splitlines()[-1] == "python -m linreg: interrupted (Ctrl-C)"
    assert "Traceback" not in err
    # no rank outlives it (gloo would hold one in a collective for its 30 s timeout)
    left = True
    for _ in range(100):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            left = False
            break
        time.sleep(0.05)
    assert not left, "a process of its group is still running"


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


# --- python -m linreg pitfalls ----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_report() -> tuple[int, dict[str, object]]:
    """One full run of the report as JSON, in this process, shared by the tests below."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["pitfalls", "--json", "-q"])
    return code, json.loads(out.getvalue())


def _readme_json_row(command: str) -> str:
    """The README's `--json` row of a command's options table (the first after its text)."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index(f"`python -m linreg {command}` runs") :]
    return next(line for line in section.splitlines() if line.startswith("| `--json` |"))


def test_readme_names_every_key_of_the_reports_json() -> None:
    # the schema requires every key and allows no other, and the report is validated against
    # it below: its keys are the report's, read without running the report a second time
    from linreg.pitfalls._render import SCHEMA

    row = set(re.findall(r"[a-z_]+", _readme_json_row("pitfalls")))
    pitfall = SCHEMA["properties"]["pitfalls"]["items"]
    assert set(SCHEMA["required"]) == set(SCHEMA["properties"])
    assert set(pitfall["required"]) == set(pitfall["properties"])
    assert set(SCHEMA["required"]) - row == set() and set(pitfall["required"]) - row == set()


def test_readme_names_every_key_of_trains_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--json", "-e", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) - set(re.findall(r"[a-z_]+", _readme_json_row("train"))) == set()


@pytest.mark.heavy
def test_report_json_matches_its_schema_and_every_pitfall_behaves(
    full_report: tuple[int, dict[str, Any]],
) -> None:
    import jsonschema

    from linreg.pitfalls import BY_ID, CATALOGUE
    from linreg.pitfalls._render import SCHEMA

    code, report = full_report
    jsonschema.validate(report, SCHEMA)
    assert [p["id"] for p in report["pitfalls"]] == [p.id for p in CATALOGUE]
    # --plot checks before any work which pitfalls draw curves: their flag must say so
    assert {p["id"] for p in report["pitfalls"] if p["curves"]} == {
        p.id for p in CATALOGUE if BY_ID[p.id].plots
    }
    failing = [(p["id"], p["observed"]) for p in report["pitfalls"] if not p["ok"]]
    assert failing == [] and report["ok"] is True and code == 0


def test_report_json_of_a_skipped_pitfall_says_why_and_keeps_to_the_schema() -> None:
    import jsonschema

    from linreg.pitfalls import _live, _render

    skipped = _live.Evidence(
        id="ddp-sum", expected="", observed="", ok=True, skipped="gloo is unavailable"
    )
    report = _render.to_json([_live.Shown(skipped, 0.0)])
    jsonschema.validate(report, _render.SCHEMA)
    assert report["pitfalls"][0]["skipped"] == "gloo is unavailable"
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.validate({**report, "extra": 1}, _render.SCHEMA)


def test_report_markdown_has_a_section_per_pitfall(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["pitfalls", "--markdown", "-q", "--only", "rebinding", "--only", "eval-no-grad"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("# The pitfalls, shown live")
    sections = [line for line in out.splitlines() if line.startswith("## ")]
    assert sections == [
        "## In place (-=) versus rebinding (param = param - ...) (`rebinding`)",
        "## Evaluate under torch.no_grad() (`eval-no-grad`)",
    ]
    assert "- observed: grad mode: 2 tensors saved, 4000 bytes" in out


def test_report_only_runs_one_and_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pitfalls", "--only", "backward-twice"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == "[1/1] backward-twice ..."
    assert "\x1b[" not in captured.out  # no colour when stdout is not a terminal
    assert captured.out.splitlines()[-1].startswith("1 of 1 pitfalls behaved as documented")


def test_report_list_names_every_pitfall(capsys: pytest.CaptureFixture[str]) -> None:
    from linreg.pitfalls import CATALOGUE

    assert main(["pitfalls", "--list"]) == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert ids == [p.id for p in CATALOGUE]


def test_report_exit_code_is_1_when_a_pitfall_does_not_behave_as_documented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # If linreg's own sgd rebound instead of updating in place, the demonstration would see the
    # caller's w unchanged under sgd too, and the command must say so.
    from linreg import pitfalls

    with pitfalls.swap("optim.sgd", pitfalls.sgd_rebinding):
        assert main(["pitfalls", "-q", "--only", "rebinding"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_report_a_crashing_demonstration_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from linreg.pitfalls import _live

    def broken() -> _live.Evidence:
        raise RuntimeError("torch changed")

    monkeypatch.setitem(_live.DEMOS, "rebinding", broken)
    assert main(["pitfalls", "-q", "--only", "rebinding", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["pitfalls"][0]["observed"] == "raised RuntimeError: torch changed"


def test_report_plot_writes_a_png(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    assert main(["pitfalls", "-q", "--only", "grad-zeroing", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_lists_the_kinds_as_the_registry_has_them() -> None:
    from pathlib import Path

    from linreg.kinds import KINDS
    from linreg.pitfalls._render import kinds_markdown

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert kinds_markdown() in readme
    listed = re.findall(r"^\| `([a-z-]+)` \| `fn\(", readme, re.M)
    assert listed == list(KINDS)


def test_audit_help_and_the_plugin_list_exactly_the_registrys_kinds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from linreg.kinds import KINDS
    from linreg.testing import plugin

    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    out = capsys.readouterr().out
    assert ", ".join(KINDS) + ": see above" in " ".join(out.split())
    assert all(f"{k.name} {k.signature}" in " ".join(out.split()) for k in KINDS.values())
    with pytest.raises(ValueError, match="with KIND in " + ", ".join(KINDS) + "$"):
        plugin.parse("nokind=linreg.optim:sgd")


def test_options_of_one_name_share_their_flag_and_the_kind_of_value_in_every_kind() -> None:
    """One --flag means one thing on the command line and in the plugin, whatever the kind."""
    from linreg.kinds import KINDS
    from linreg.kinds.options import CHOICES, FLAG, IMPORT, number_of

    def meaning(f: Any) -> tuple[str, str]:
        if f.metadata.get(IMPORT):
            value = "MODULE:NAME"
        elif f.metadata.get(CHOICES) is not None:
            value = "a choice"
        elif isinstance(f.default, bool):
            value = "true/false"
        else:
            number = number_of(f)
            value = number.__name__ if number is not None else "text"
        return f.metadata[FLAG], value

    seen: dict[str, dict[tuple[str, str], list[str]]] = {}
    for kind in KINDS.values():
        for f in kind.options.fields():
            seen.setdefault(f.name, {}).setdefault(meaning(f), []).append(kind.name)
    assert {name: m for name, m in seen.items() if len(m) > 1} == {}
    assert seen["timeout"] == {("--timeout", "float"): list(KINDS)}  # every kind ends


def test_readme_lists_the_catalogue_as_generated() -> None:
    from pathlib import Path

    from linreg.pitfalls._render import catalogue_markdown

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert catalogue_markdown() in readme


# --- python -m linreg audit -------------------------------------------------------------------


def test_audit_exits_0_when_every_property_holds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "update-step", "linreg.optim:sgd", "--max-examples", "5", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "audit of update-step linreg.optim:sgd (zeroes_grad=True, under_no_grad=False, "
        "divides_by_batch_size=True, timeout=None): 0 failed, 3 passed, 0 skipped in "
    )
    assert [line.split()[:2] for line in out[1:]] == [
        ["pass", "rebinding"],
        ["pass", "no-grad-update"],
        ["pass", "grad-zeroing"],
    ]


def test_audit_exits_1_naming_the_pitfall_and_its_counterexample(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["audit", "loss", "linreg.pitfalls:squared_loss_no_reshape", "--max-examples", "5"]
    assert main([*argv, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "auditing loss linreg.pitfalls:squared_loss_no_reshape ...\n"
    report = json.loads(captured.out)
    assert report["target"] == "linreg.pitfalls:squared_loss_no_reshape"  # as the user wrote it
    (failure,) = [r for r in report["results"] if r["verdict"] == "fail"]
    assert failure["pitfall"] == "label-shape"
    assert failure["counterexample"] == {"y_hat": [[0.0], [0.0]], "y": [[0.0], [0.0]]}
    assert failure["message"].startswith("labels of shape (2,) give a loss of shape (2, 2)")


def test_audit_takes_each_kinds_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "audit",
                "loop",
                "linreg.accumulate:train_full_batch",
                "--full-batch",
                "--dtype",
                "float64",
                "--max-examples",
                "3",
                "-q",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["options"] == {
        "objective": "book",
        "full_batch": True,
        "drop_last": False,
        "dtype": "float64",
        "timeout": None,
    }
    assert {r["pitfall"]: r["verdict"] for r in report["results"]}["short-last-batch"] == "skip"


def test_audit_imports_the_target_from_the_current_directory(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mystep.py").write_text(
        "def sgd(params, lr, batch_size):\n"
        "    for p in params:\n"
        "        p.data -= lr * p.grad / batch_size\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    argv = ["audit", "update-step", "mystep:sgd", "--no-zeroes-grad", "--max-examples", "5", "-q"]
    assert main(argv) == 0
    assert "0 failed, 2 passed, 1 skipped" in capsys.readouterr().out


def _readme_audits() -> list[str]:
    """Each `$ python -m linreg audit ...` the README shows, with the output it shows."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```console\n(\$ python -m linreg (?:audit|watch) .*?)```", readme, re.S)
    return [b for block in blocks for b in re.split(r"\n(?=\$ )", block.strip())]


README_AUDITS = _readme_audits()


def test_readme_shows_eight_audits_and_two_watches() -> None:
    assert [t.split()[4] for t in README_AUDITS].count("audit") == 8
    assert [t.split()[4] for t in README_AUDITS].count("watch") == 2


# one test per command shown: each is a whole audit, and the workers share them out
@pytest.mark.parametrize(
    "shown",
    README_AUDITS,
    ids=[t.split("\n")[0].removeprefix("$ python -m linreg ") for t in README_AUDITS],
)
def test_readme_shows_the_audits_real_output(
    shown: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).parent.parent / "examples")
    # the output an unhurried machine prints: under load (a review's runs beside the suite)
    # the audit's time budget passed over some examples and said so, a timed test's flake
    monkeypatch.setattr("linreg.audit.budget.BUDGET", math.inf)
    seconds = re.compile(r" in \d+\.\d s$", re.M)
    from tests.regen_readme import quiet

    command, *lines = shown.splitlines()
    main(quiet(command))
    got = capsys.readouterr().out.rstrip("\n")
    assert seconds.sub(" in _ s", got) == seconds.sub(" in _ s", "\n".join(lines))


CRASHING_LOOP = """
import torch
from torch import nn


def net():
    return nn.Linear(2, 3)


def sample():
    return torch.tensor([0.5, -1.0]), 2


def fit(model, loader, optimizer, num_epochs):
    for _ in range(num_epochs):
        losses = []
        for X, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(X), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        print(torch.stack(losses[1:]).mean())  # an epoch of one batch: an empty stack
"""


def test_audit_reports_a_loop_that_raises_as_an_error_with_exit_1(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    (tmp_path / "crashing.py").write_text(CRASHING_LOOP)
    monkeypatch.chdir(tmp_path)
    given = ["--model", "crashing:net", "--example", "crashing:sample", "--max-examples", "10"]
    assert main(["audit", "training-loop", "crashing:fit", *given, "--json", "-q"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["error"].startswith("the loop raised RuntimeError: stack expects")
    assert "crashing.py:" in out["error"] and "torch.stack(losses[1:])" in out["error"]
    assert all(r["verdict"] != "fail" for r in out["results"])


@pytest.mark.parametrize(
    "kind, module, extra",
    [
        ("lightning", "pytorch_lightning", "lightning"),
        ("hf-trainer", "transformers", "transformers"),
    ],
)
def test_a_framework_audit_without_its_framework_names_the_extra_to_install(
    kind: str, module: str, extra: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here (tox -e frameworks tests the audit itself)")
    argv = ["audit", kind, "linreg.kinds.training_loop:mlp"]
    argv += ["--example", "examples.mlp_classifier:sample"]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pip install 'linreg-pitfalls[{extra}]'" in err[0], err


def test_a_reader_that_leaves_early_ends_the_command_quietly_with_its_own_exit_code() -> None:
    """A review's traceback: `python -m linreg pitfalls --list | head -1` printed a
    BrokenPipeError traceback and exited 1 (so did train, audit and watch, and a --plot after
    the report was never written). The reader of stdout is gone before the command prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "linreg", "pitfalls", "--list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone long before the command has imported torch and printed
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    # no stdout at all (>&-, sys.stdout None): the code review's AttributeError on its write;
    # train flushes stdout itself, which crashed too
    closed = subprocess.run(
        [sys.executable, "-m", "linreg", "train"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr
