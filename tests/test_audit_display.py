"""The audit's Report for people: HTML and Markdown tables, and a picture of the failing steps."""

from __future__ import annotations

import functools
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from linreg import audit
from linreg.cli import main
from tests import loops_as_written as L

NOMINAL = {"model": L.TinyClassifier, "example": L.dict_example, "accumulation_steps": 2}


@pytest.fixture(scope="module")
def failing() -> audit.Report:
    return audit.training_loop(L.dict_train_nominal, max_examples=10, drop_last=True, **NOMINAL)


@pytest.fixture(scope="module")
def passing() -> audit.Report:
    return audit.training_loop(L.dict_train, max_examples=10, drop_last=True, **NOMINAL)


class Rows(HTMLParser):
    """The table's rows, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def test_a_reports_html_has_a_row_per_property_with_its_verdict_failures_first(
    failing: audit.Report, passing: audit.Report
) -> None:
    for report in (failing, passing):
        parser = Rows()
        parser.feed(report._repr_html_())
        head, *rows = parser.rows
        assert head == ["pitfall", "property", "verdict", "why", "counterexample"]
        assert sorted((r[0], r[1]) for r in rows) == sorted(
            (r.pitfall, r.property) for r in report.results
        )
        verdicts = {(r[0], r[1]): r[2] for r in rows}
        marks = {"fail": "✗ FAIL", "pass": "✓ pass", "skip": "- skip"}
        assert all(verdicts[(r.pitfall, r.property)] == marks[r.verdict] for r in report.results)
        order = [r[2] for r in rows]
        assert order == sorted(order, key=lambda v: ("FAIL" not in v, "pass" not in v))
    parser = Rows()
    parser.feed(failing._repr_html_())
    assert parser.rows[1][0] == "short-last-batch" and "0.5 times" in parser.rows[1][3]


def test_a_reports_markdown_is_a_table_of_the_same_rows(failing: audit.Report) -> None:
    text = failing._repr_markdown_()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(failing.results)
    assert rows[0].startswith("| `short-last-batch` |") and "✗ FAIL" in rows[0]


def test_the_picture_plots_the_ratios_the_report_states(
    failing: audit.Report, tmp_path: Path
) -> None:
    path = tmp_path / "steps.png"
    fig = failing.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (result,) = failing.failures
    (ax,) = fig.axes
    drawn = [float(y) for y in ax.lines[1].get_ydata()]  # lines[0] is the 1.0 reference
    stated = re.search(r"per step: \[([^\]]*)\]", result.message)
    assert stated is not None
    assert [float(v) for v in stated.group(1).split(", ")] == pytest.approx(drawn, rel=1e-2)
    assert drawn == pytest.approx([math.nan if v is None else v for v in result.measured["ratios"]])
    failing_steps = ax.collections[0].get_offsets()[:, 0].tolist()
    assert failing_steps == [j + 1 for j in result.measured["failing"]]
    assert result.measured["batching"] in ax.get_title()


def test_a_failing_update_with_no_one_ratio_is_marked_apart_not_on_the_correct_line() -> None:
    """A review's misreading: the watch's update 3 of examples/train_script_undivided.py, its
    micro-batches' means added up over [4, 2] rows (no one multiple of the correct gradient),
    was circled as a failing step on the correct 1.0 line."""
    measured = {"ratios": [2.0, 2.0, None, 2.0], "failing": [0, 1, 2, 3], "batching": "b"}
    result = audit.Result("mean-vs-sum", "p", "fail", "m", None, 4, measured)
    report = audit.Report("t", "watch", {}, (result,), 0.0)
    (ax,) = report.plot().axes
    circled, crossed = (c.get_offsets()[:, :].tolist() for c in ax.collections)
    assert circled == [[1, 2.0], [2, 2.0], [4, 2.0]]
    assert [x for x, _ in crossed] == [3]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "failing step, no one multiple of the correct gradient" in labels


def test_a_passing_report_has_nothing_to_draw(passing: audit.Report) -> None:
    with pytest.raises(ValueError, match="nothing to draw"):
        passing.plot()


def test_audit_plot_refuses_a_missing_folder_before_any_work_and_notes_a_passing_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "training-loop", "linreg.kinds.training_loop:fit"]
    argv += ["--model", "linreg.kinds.training_loop:mlp"]
    argv += ["--example", "examples.mlp_classifier:sample", "--max-examples", "5", "-q"]
    with pytest.raises(SystemExit) as missing:
        main([*argv, "--plot", str(tmp_path / "no" / "such.png")])
    assert missing.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    # a passing audit has nothing to draw: a note, and the audit's own exit code
    assert main([*argv, "--plot", str(tmp_path / "steps.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to draw" in err[0] and "no picture written" in err[0], err
    assert not (tmp_path / "steps.png").exists()


def test_audit_plot_never_hides_a_pitfalls_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "iterator", "tests.realworld:floor_iter", "--max-examples", "5", "-q"]
    assert main([*argv, "--plot", str(tmp_path / "steps.png")]) == 1  # nothing drawn: a note
    assert "no picture written" in capsys.readouterr().err
    (tmp_path / "taken.png").mkdir()  # a folder where the picture should go: it cannot be written
    loop = ["audit", "loop", "examples.d2l_style:train", "--max-examples", "5", "-q"]
    assert main([*loop, "--plot", str(tmp_path / "taken.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("--plot: could not write"), err


@pytest.mark.parametrize(
    "kind, target, options",
    [
        ("loop", "examples.d2l_style:train", {}),
        ("loss", "torch.nn.functional:mse_loss", {"reduction": "mean"}),  # scale 1, not 0.5
    ],
)
def test_the_picture_of_another_kind_shows_what_the_property_compared(
    kind: str, target: str, options: dict[str, Any]
) -> None:
    from linreg.kinds.options import resolve

    report = audit.audit(kind, resolve(target), max_examples=10, **options)
    fig = report.plot()
    drawn = [r for r in report.failures if r.measured]
    assert drawn and len(fig.axes) == len(drawn)
    for ax, r in zip(fig.axes, drawn, strict=True):
        expected, got = ax.lines[0].get_ydata().tolist(), ax.lines[1].get_ydata().tolist()
        assert expected == pytest.approx(r.measured["expected"])
        assert got == pytest.approx(r.measured["got"])
        assert r.measured["compared"] in ax.get_title()


@pytest.fixture(scope="module")
def weighed() -> audit.Report:
    return audit.training_loop(
        L.front_weighted, model=L.LogSoftmaxNet, example=L.vector_example, max_examples=15
    )


def front_weights(rows: list[int]) -> list[float]:
    """Directly: the weight front_weighted puts on each distinct row of one batch (the first
    half of the batch twice), summed over its copies, in order of first use."""
    weight = [2.0 if i < (len(rows) + 1) // 2 else 1.0 for i in range(len(rows))]
    distinct = list(dict.fromkeys(rows))
    return [
        sum(w for r, w in zip(rows, weight, strict=True) if r == d) / sum(weight) for d in distinct
    ]


def test_an_update_that_weighs_its_rows_wrong_shows_its_weights_on_their_gradients(
    weighed: audit.Report,
) -> None:
    (failure,) = weighed.failures
    example = failure.counterexample
    assert example["batch_size"] >= len(example["rows"]), example  # one step: its rows
    weights = failure.measured["weights"]
    assert weights["applied"] == pytest.approx(front_weights(example["rows"]), rel=1e-4)
    copies = [example["rows"].count(d) for d in dict.fromkeys(example["rows"])]
    assert weights["correct"] == pytest.approx([c / len(example["rows"]) for c in copies])
    assert "as weights on its distinct rows' own gradients" in failure.message
    assert (
        "weighs the rows of its one micro-batch unequally: it matches no known" in failure.message
    )


def test_the_picture_draws_the_failing_updates_weights_beside_the_correct_ones(
    weighed: audit.Report,
) -> None:
    fig = weighed.plot()
    (failure,) = weighed.failures
    # its one step applied no multiple of the correct gradient: the weights alone are drawn
    (bars,) = fig.axes
    correct, applied = bars.containers
    assert [b.get_height() for b in applied] == pytest.approx(
        failure.measured["weights"]["applied"]
    )
    assert [b.get_height() for b in correct] == pytest.approx(
        failure.measured["weights"]["correct"]
    )


def test_the_readmes_ledger_example_weighs_its_rows_as_the_readme_says() -> None:
    from examples import mlp_classifier as mlp

    report = audit.training_loop(mlp.fit_in_chunks, model=mlp.Net, example=mlp.sample)
    (failure,) = report.failures
    assert failure.pitfall == "micro-batch-accumulation"
    weights = failure.measured["weights"]
    assert weights["rows"] == [2, 1]
    assert weights["applied"] == pytest.approx([0.5, 0.5], rel=1e-4)
    assert weights["correct"] == pytest.approx([2 / 3, 1 / 3])


def test_a_target_bound_with_functools_partial_is_named_by_its_function_and_what_it_fixed() -> None:
    loop = functools.partial(L.dict_train, device="cpu")
    report = audit.training_loop(loop, max_examples=3, drop_last=True, **NOMINAL)
    assert report.target == "tests.loops_as_written:dict_train(device='cpu')", report.target
