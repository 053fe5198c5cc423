"""An audit's Report, in all its forms: text, JSON-ready dict, HTML, Markdown and a picture.

`Result` is one property's verdict; `Report` every verdict on one target, with `describe()` (the
text), `to_dict()` (what `--json` prints), `_repr_html_`/`_repr_markdown_` (a notebook shows
them) and `plot()`.

`report_html` is one table, a row per property (pitfall, property, verdict, why, counterexample),
failures first and marked in words as well as in a tint that reads on a light and a dark
theme. `plot_report` draws what each failing property measured: for a training loop, the
applied gradient as a multiple of the correct one at every step, 1.0 marked, the failing steps
highlighted, the batching in the title; for the other kinds, the values the property compared
(a loop's trained [w, b] against the closed form, a loss, an update step's params) beside the
expected ones. It uses matplotlib's Figure, not pyplot, so it leaves no global figure behind.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import math
from typing import Any, Literal

from linreg._plain import plain
from linreg.checks import CheckFailed

__all__ = ["Report", "Result", "Verdict", "plot_report", "report_html", "report_markdown"]

Verdict = Literal["pass", "fail", "skip"]


@dataclasses.dataclass(frozen=True)
class Result:
    """One property's verdict on the target."""

    pitfall: str  # the catalogue id
    property: str  # what the property states
    verdict: Verdict
    message: str = ""  # why it failed, or why it was skipped
    counterexample: Any = None  # the smallest failing input Hypothesis found, as plain data
    examples: int = 0  # how many examples ran
    measured: Any = None  # what the failing example measured, as plain data (Report.plot)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Report:
    """Every applicable property's verdict on one target."""

    target: str
    kind: str
    options: dict[str, Any]
    results: tuple[Result, ...]
    seconds: float
    error: str = ""  # the target itself raised: what, where, and on which example
    error_example: Any = None
    note: str = ""  # how the audit ran where it differs from the defaults (examples it cut)

    @property
    def ok(self) -> bool:
        """Return True when no property failed and the target did not raise."""
        return not self.error and all(r.verdict != "fail" for r in self.results)

    @property
    def failures(self) -> tuple[Result, ...]:
        """Return the results that failed."""
        return tuple(r for r in self.results if r.verdict == "fail")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "target": self.target,
            "kind": self.kind,
            "options": plain(self.options),
            "ok": self.ok,
            "seconds": self.seconds,
            "error": self.error or None,
            "error_example": self.error_example,
            "note": self.note or None,
            "results": [r.to_dict() for r in self.results],
        }

    def raise_for_failures(self) -> None:
        """Raise CheckFailed naming each failed pitfall, if any failed."""
        if not self.ok:
            raise CheckFailed(self.describe(only_failures=True))

    def describe(self, *, only_failures: bool = False) -> str:
        """Return the report as text: a summary line, then one block per property."""
        counts = {v: sum(r.verdict == v for r in self.results) for v in ("fail", "pass", "skip")}
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        lines = [
            (
                f"watch of {self.target}"
                if self.kind == "watch"
                else f"audit of {self.kind} {self.target}"
            )
            + (f" ({options})" if options else "")
            + ": "
            f"{counts['fail']} failed, {counts['pass']} passed, {counts['skip']} skipped "
            f"in {self.seconds:.1f} s"
        ]
        if self.note:
            lines.append(f"  note: {self.note}")
        if self.error:
            lines.append(f"  ERROR {self.error}")
            if self.error_example is not None:
                lines.append(f"       on: {_short(self.error_example)}")
        for r in self.results:
            if only_failures and r.verdict != "fail":
                continue
            mark = {"fail": "FAIL", "pass": "pass", "skip": "skip"}[r.verdict]
            unit = "update" if self.kind == "watch" else "example"  # watch: what it judged
            tail = f" ({r.examples} {unit}{'s' if r.examples != 1 else ''})"
            tail = tail if r.verdict == "pass" else ""
            lines.append(f"  {mark} {r.pitfall:<16} {r.property}{tail}")
            if r.message:
                lines.append(f"       {'why' if r.verdict == 'fail' else 'reason'}: {r.message}")
            if r.verdict == "fail" and r.counterexample is not None:
                lines.append(f"       counterexample: {_short(r.counterexample)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def _repr_html_(self) -> str:
        """Return the report as one HTML table, failures first (Jupyter shows it)."""
        return report_html(self)

    def _repr_markdown_(self) -> str:
        """Return the report as a Markdown table, for front ends without HTML."""
        return report_markdown(self)

    def plot(self, path: str | None = None) -> Any:
        """Draw what each failing property measured; save a PNG at path; return the Figure.

        For a training loop: each step's applied gradient as a multiple of the correct one,
        1.0 marked and the failing steps highlighted, and where the failing step weighed its
        rows wrong, its weight on each distinct row's own gradient beside a correct loop's;
        for the other kinds, the values the
        property compared beside the expected ones. Needs matplotlib (the plot extra); raises
        ValueError when no failure measured anything to draw.
        """
        return plot_report(self, path)


def _short(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, allow_nan=False)
    return text if len(text) <= limit else text[: limit - 5] + " ...}"


MARK = {"fail": "✗ FAIL", "pass": "✓ pass", "skip": "- skip"}
TINT = {
    "fail": "rgba(214, 39, 40, 0.18)",
    "pass": "transparent",
    "skip": "rgba(127, 127, 127, 0.12)",
}


def _ordered(report: Report) -> list[Result]:
    return sorted(report.results, key=lambda r: {"fail": 0, "pass": 1, "skip": 2}[r.verdict])


def _counterexample(r: Result) -> str:
    return "" if r.verdict != "fail" or r.counterexample is None else json.dumps(r.counterexample)


def summary(report: Report) -> str:
    """Return the report's first line: what was audited and the counts."""
    return report.describe().splitlines()[0]


def report_html(report: Report) -> str:
    """Return the report as one HTML table, failures first."""
    cell = 'style="border: 1px solid rgba(127,127,127,0.4); padding: 4px 8px; text-align: left"'
    rows = []
    if report.error:
        rows.append(
            f'<tr style="background: {TINT["fail"]}"><td {cell}>the target</td>'
            f"<td {cell}>ran to the end</td><td {cell}><b>ERROR</b></td>"
            f"<td {cell}>{html.escape(report.error)}</td>"
            f"<td {cell}><code>{html.escape(json.dumps(report.error_example))}</code></td></tr>"
        )
    for r in _ordered(report):
        verdict = f"<b>{MARK[r.verdict]}</b>" if r.verdict == "fail" else MARK[r.verdict]
        rows.append(
            f'<tr style="background: {TINT[r.verdict]}">'
            f"<td {cell}><code>{html.escape(r.pitfall)}</code></td>"
            f"<td {cell}>{html.escape(r.property)}</td><td {cell}>{verdict}</td>"
            f"<td {cell}>{html.escape(r.message)}</td>"
            f"<td {cell}><code>{html.escape(_counterexample(r))}</code></td></tr>"
        )
    head = "".join(
        f"<th {cell}>{h}</th>" for h in ("pitfall", "property", "verdict", "why", "counterexample")
    )
    return (
        f'<div class="linreg-report"><p>{html.escape(summary(report))}</p>'
        f'<table style="border-collapse: collapse"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(report: Report) -> str:
    """Return the report as a Markdown table, failures first."""
    lines = [f"**{_md(summary(report))}**", ""]
    if report.error:
        lines += [f"**ERROR** {_md(report.error)}", ""]
    lines += [
        "| pitfall | property | verdict | why | counterexample |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in _ordered(report):
        example = _counterexample(r)
        lines.append(
            f"| `{r.pitfall}` | {_md(r.property)} | {MARK[r.verdict]} | {_md(r.message)} | "
            + (f"`{_md(example)}`" if example else "")
            + " |"
        )
    return "\n".join(lines)


def drawable(report: Report) -> list[Result]:
    """Return the failing results that measured something to draw: a ratio per step, or the
    values a property compared with the expected ones."""
    return [
        r
        for r in report.results
        if r.verdict == "fail"
        and isinstance(r.measured, dict)
        and (r.measured.get("ratios") or r.measured.get("expected"))
    ]


def _compared(ax: Any, r: Result) -> None:
    """Draw the values a property got beside the ones it expected, component by component."""
    got, want = r.measured["got"], r.measured["expected"]
    xs = list(range(len(want)))
    ax.plot(xs, want, "o", color="tab:green", markersize=9, label="expected", fillstyle="none")
    ax.plot(xs[: len(got)], got, "x", color="tab:red", markersize=8, label="got")
    ax.set_xticks(xs)
    ax.set_xlabel("component")
    ax.set_title(f"{r.pitfall}: {r.measured.get('compared', '')}", fontsize=9)
    ax.legend(fontsize=7, loc="best")


def _weights(r: Result) -> dict[str, Any] | None:
    """Return the failing update's weights on two or more distinct rows, if it measured them."""
    weights = r.measured.get("weights") if isinstance(r.measured, dict) else None
    return weights if isinstance(weights, dict) and len(weights.get("rows", [])) > 1 else None


def _panels(r: Result) -> int:
    """Return the panels a failure draws: its weights, and its ratios where one is a number."""
    if not _weights(r):
        return 1
    return 2 if any(v is not None for v in r.measured.get("ratios", [])) else 1


def _weighed(ax: Any, r: Result) -> None:
    """Draw the failing update's weight on each distinct row's own gradient beside a correct
    loop's: the ledger's coefficients."""
    weights = _weights(r)
    assert weights is not None
    xs = list(range(len(weights["rows"])))
    ax.bar([x - 0.2 for x in xs], weights["correct"], 0.4, color="tab:green", label="correct")
    ax.bar([x + 0.2 for x in xs], weights["applied"], 0.4, color="tab:red", label="applied")
    copies = ["1 copy" if n == 1 else f"{n} copies" for n in weights["rows"]]
    ax.set_xticks(xs, [f"row {x + 1} ({c})" for x, c in enumerate(copies)])
    ax.set_ylabel("weight on its gradient")
    step = r.measured["failing"][0] + 1
    ax.set_title(f"{r.pitfall}: step {step}'s weights on its rows' own gradients", fontsize=9)
    ax.legend(fontsize=7, loc="best")


def _picture() -> type[Any]:
    """Return a matplotlib Figure that a notebook shows as a PNG (without pyplot's backend)."""
    from matplotlib.figure import Figure

    class Picture(Figure):
        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return Picture


def plot_report(report: Report, path: str | None = None) -> Any:
    """Draw each failing property's ratio per step; save a PNG at path; return the Figure."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            "Report.plot needs matplotlib: pip install 'linreg-pitfalls[plot]'"
        ) from None
    panels = drawable(report)
    if not panels:
        raise ValueError(
            f"nothing to draw: no failing property of this {report.kind} audit measured "
            "values to draw (a passing audit has none)"
        )
    rows = sum(_panels(r) for r in panels)
    fig = _picture()(figsize=(7, 2.6 * rows), layout="constrained")
    axes = iter(fig.subplots(rows, 1, squeeze=False)[:, 0])
    for r in panels:
        ax = next(axes)
        if not r.measured.get("ratios"):
            _compared(ax, r)
            continue
        if _weights(r):
            if _panels(r) == 1:  # no step's gradient was a multiple of the correct one
                _weighed(ax, r)
                continue
            _weighed(next(axes), r)
        ratios = [math.nan if v is None else float(v) for v in r.measured["ratios"]]
        steps = list(range(1, len(ratios) + 1))
        ax.axhline(1.0, color="tab:green", linewidth=1, linestyle="--", label="correct (1.0)")
        ax.plot(steps, ratios, marker="o", color="tab:blue", label="applied / correct")
        failing = [j for j in r.measured.get("failing", []) if j < len(ratios)]
        scaled = [j for j in failing if math.isfinite(ratios[j])]
        ax.scatter(
            [steps[j] for j in scaled], [ratios[j] for j in scaled],
            s=120, facecolors="none", edgecolors="tab:red", linewidths=2, zorder=3,
            label="failing step",
        )  # fmt: skip
        unscaled = [j for j in failing if not math.isfinite(ratios[j])]
        if unscaled:  # no one multiple of the correct gradient: marked on its step, no ratio
            ax.scatter(
                [steps[j] for j in unscaled], [1.0] * len(unscaled),
                marker="x", s=80, color="tab:red", linewidths=2, zorder=3,
                label="failing step, no one multiple of the correct gradient",
            )  # fmt: skip
        ax.set_xticks(steps)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("applied / correct gradient")
        ax.set_title(f"{r.pitfall}: {r.measured.get('batching', '')}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{report.kind} audit of {report.target}", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
