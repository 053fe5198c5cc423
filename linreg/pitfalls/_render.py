"""Render the pitfalls report: a terminal table, JSON, Markdown, or a PNG of loss curves."""

from __future__ import annotations

import math
import platform
import textwrap
from collections.abc import Sequence
from typing import Any

import torch

from linreg._plain import plain
from linreg.pitfalls import BY_ID, CATALOGUE
from linreg.pitfalls._live import Evidence, Shown


def environment() -> str:
    """Return the line naming the torch and Python versions the report ran on."""
    return f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}"


def table(runs: Sequence[Shown], *, colour: bool = False) -> str:
    """Return a readable terminal table: one block per pitfall, verdict first."""

    def mark(e: Evidence) -> str:
        text, code = ("skip", 33) if e.skipped else ("ok  ", 32) if e.ok else ("FAIL", 31)
        return f"\033[{code}m{text}\033[0m" if colour else text

    lines = [f"linreg pitfalls on {environment()}", ""]
    for run in runs:
        e = run.evidence
        lines.append(f"{mark(e)} {e.id:<26} {BY_ID[e.id].title} [{run.seconds:.2f} s]")
        rows = (
            [("skipped", e.skipped)]
            if e.skipped
            else [("expected", e.expected), ("observed", e.observed)]
        )
        for label, text in rows + [("property", line) for line in properties(e)]:
            wrapped = textwrap.wrap(
                text, 92, initial_indent=f"     {label}: ", subsequent_indent=" " * 15
            )
            lines.extend(wrapped)
    bad = [r.evidence.id for r in runs if not r.evidence.ok]
    skipped = [r.evidence.id for r in runs if r.evidence.skipped]
    total = sum(r.seconds for r in runs)
    lines += [
        "",
        f"{len(runs) - len(bad) - len(skipped)} of {len(runs)} pitfalls behaved as documented "
        f"in {total:.1f} s"
        + (f"; not: {', '.join(bad)}" if bad else "")
        + (f"; skipped here: {', '.join(skipped)}" if skipped else ""),
    ]
    return "\n".join(lines)


def properties(e: Evidence) -> list[str]:
    """Return one line per property checked on the book's example: where it held, where not."""
    out: dict[str, dict[str, list[str]]] = {}
    for row in e.properties:
        verdicts = out.setdefault(row["property"], {"holds": [], "refuted": [], "wrong": []})
        key = "wrong" if not row["ok"] else row["expected"]
        verdicts[key].append(row["target"] + (f" ({row['message']})" if key == "wrong" else ""))
    lines = []
    for name, v in out.items():
        parts = [f"holds for {', '.join(v['holds'])}"] if v["holds"] else []
        parts += [f"refuted for {', '.join(v['refuted'])}"] if v["refuted"] else []
        parts += [f"NOT AS EXPECTED for {', '.join(v['wrong'])}"] if v["wrong"] else []
        lines.append(f"{name}: {'; '.join(parts)}")
    return lines


def to_json(runs: Sequence[Shown]) -> dict[str, Any]:
    """Return the report as a JSON-ready dict (see SCHEMA)."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "ok": all(r.evidence.ok for r in runs),
        "seconds": sum(r.seconds for r in runs),
        "pitfalls": [
            {
                "id": r.evidence.id,
                "title": BY_ID[r.evidence.id].title,
                "ok": r.evidence.ok,
                "expected": r.evidence.expected,
                "observed": r.evidence.observed,
                "seconds": r.seconds,
                "figures": plain(r.evidence.figures),
                "curves": plain(r.evidence.curves),
                "skipped": r.evidence.skipped,
                "properties": r.evidence.properties,
                "variants": [v.name for v in BY_ID[r.evidence.id].variants],
            }
            for r in runs
        ],
    }


# Strict both ways (every key required, no other key allowed), so that a test validating
# to_json's output catches a field added to one and not the other.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["torch", "python", "ok", "seconds", "pitfalls"],
    "properties": {
        "torch": {"type": "string"},
        "python": {"type": "string"},
        "ok": {"type": "boolean"},
        "seconds": {"type": "number", "minimum": 0},
        "pitfalls": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "id",
                    "title",
                    "ok",
                    "expected",
                    "observed",
                    "seconds",
                    "figures",
                    "curves",
                    "skipped",
                    "properties",
                    "variants",
                ],
                "properties": {
                    "id": {"enum": [p.id for p in CATALOGUE]},
                    "title": {"type": "string"},
                    "ok": {"type": "boolean"},
                    "expected": {"type": "string"},
                    "observed": {"type": "string"},
                    "seconds": {"type": "number", "minimum": 0},
                    "figures": {"type": "object"},
                    "curves": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": ["number", "null"]},  # null: not finite
                        },
                    },
                    "skipped": {"type": ["string", "null"]},
                    "properties": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["property", "target", "expected", "held", "ok", "message"],
                            "properties": {
                                "property": {"type": "string"},
                                "target": {"type": "string"},
                                "expected": {"enum": ["holds", "refuted"]},
                                "held": {"type": "boolean"},
                                "ok": {"type": "boolean"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "variants": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def catalogue_markdown() -> str:
    """Return the catalogue as a Markdown table: id, pitfall, wrong variants."""
    rows = ["| id | pitfall | wrong variants |", "| --- | --- | --- |"]
    rows += [
        f"| `{p.id}` | {p.title} | " + ", ".join(f"`{v.name}`" for v in p.variants) + " |"
        for p in CATALOGUE
    ]
    return "\n".join(rows)


def kinds_markdown() -> str:
    """Return the registry of kinds as a Markdown table: kind, function, properties, options."""
    from linreg.kinds import KINDS

    rows = [
        "| kind | your function | what is checked (pitfall) | options |",
        "| --- | --- | --- | --- |",
    ]
    for kind in KINDS.values():
        checked = "; ".join(
            f"{p.name} (`{p.pitfall}`)"
            for pitfall in CATALOGUE
            for p in pitfall.properties
            if p.kind == kind.name
        ) or (f"as `{kind.judged_as}`" if kind.judged_as else "")
        options = ", ".join(f"`{f.name}`" for f in kind.options.fields())
        rows.append(
            f"| `{kind.name}` | `{kind.signature}`: {kind.summary} | {checked} | {options} |"
        )
    return "\n".join(rows)


def markdown(runs: Sequence[Shown]) -> str:
    """Return the report as Markdown: the catalogue, then each pitfall with its evidence."""
    parts = [f"# The pitfalls, shown live\n\nRan on {environment()}.\n", catalogue_markdown()]
    for run in runs:
        e, p = run.evidence, BY_ID[run.evidence.id]
        variants = "\n".join(f"- `{v.name}`: {v.mistake}" for v in p.variants)
        parts.append(
            f"## {p.title} (`{p.id}`)\n\n{p.explanation}\n\nWrong variants:\n\n"
            f"{variants}\n\n- expected: {e.expected}\n- observed: {e.observed}\n"
            + "".join(f"- property: {line}\n" for line in properties(e))
            + f"- verdict: {'as documented' if e.ok else 'NOT as documented'}"
        )
    return "\n\n".join(parts) + "\n"


def plot(runs: Sequence[Shown], path: str) -> int:
    """Draw each pitfall's loss curves (correct vs wrong) into one PNG; return the panel count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_curves = [r.evidence for r in runs if r.evidence.curves]
    if not with_curves:
        raise ValueError("none of the chosen pitfalls has loss curves to plot")
    cols = min(2, len(with_curves))
    rows = math.ceil(len(with_curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
    for ax, e in zip(axes.flat, with_curves, strict=False):
        for label, values in e.curves.items():
            ys = [v if math.isfinite(v) else math.nan for v in values]
            ax.plot(range(1, len(ys) + 1), ys, marker="o" if len(ys) < 20 else None, label=label)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(BY_ID[e.id].title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("full-data loss")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(with_curves) :]:
        ax.set_visible(False)
    fig.suptitle(f"linreg pitfalls: correct vs wrong ({environment()})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(with_curves)
