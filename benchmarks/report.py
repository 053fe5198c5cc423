"""Turn pytest-benchmark's JSON into reports/benchmarks.md and charts, and gate on invariants.

Usage: python -m benchmarks.report [reports/benchmarks.json] [--out reports]

Every benchmark times what it compares interleaved, round by round (benchmarks.common
.interleave), and records each case's time per round. A ratio is paired: case / baseline
within one round, so a drift of the machine between rounds or between benchmarks moves both
and cancels. Reported: the median of the per-round ratios, with a 95% bootstrap interval over
those ratios (resample the rounds, take the median, 1000 times; the 2.5th and 97.5th
percentiles).

The gate: the command exits 1 when an invariant the report shows fails, never against an
absolute time: the graph holds exactly 4n bytes beyond the inputs (no_grad and
inference_mode none); the analytic loop is at least 5x the book's loop; no_grad is not slower
than grad mode at n = 1e3 (the median paired ratio is at most 1).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

RNG_SEED, RESAMPLES = 0, 1000
TARGETS = [  # (loop that must be faster, baseline, at least this many times faster, gated?)
    ("linreg.train(autograd)", "book loop", 1.1, False),
    ("linreg.train(analytic)", "book loop", 5.0, True),
]


def paired(times: dict[str, list[float]], case: str, base: str) -> tuple[float, float, float]:
    """Return the median of the per-round ratios case / base, and its 95% bootstrap interval."""
    ratios = np.asarray(times[case]) / np.asarray(times[base])
    rng = np.random.default_rng(RNG_SEED)
    medians = np.median(rng.choice(ratios, (RESAMPLES, len(ratios))), axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(np.median(ratios)), float(lo), float(hi)


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def machine(info: dict[str, Any]) -> str:
    cpu = info.get("cpu", {})
    text = (
        f"{cpu.get('brand_raw', info.get('processor', '?'))}, {info.get('cpu_count')} cores "
        f"({info.get('system')} {info.get('machine')}), torch {info.get('torch')}, "
        f"{info.get('torch_threads')} intra-op thread(s), Python {info.get('python_version')}"
    )
    if info.get("cuda_device"):
        text += f"; GPU: {info['cuda_device']} (CUDA {info.get('cuda_version')})"
    return text


def groups(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return each benchmark's extra_info by group: its per-round times and what it measured."""
    out = {}
    for bench in data["benchmarks"]:
        extra = bench["extra_info"]
        if "times" not in extra:
            raise ValueError(
                f"{bench['name']} has no per-round times: a report of an older version "
                "(these were not timed interleaved); rerun tox -e bench"
            )
        out[bench["group"]] = extra
    return out


def _median(values: list[float]) -> str:
    return fmt_time(float(np.median(values)))


def eval_section(g: dict[str, dict[str, Any]]) -> tuple[list[str], dict[Any, Any], list[str]]:
    lines = [
        "## Evaluation: the full-data loss in grad mode, under no_grad, under inference_mode",
        "",
        "Ratio = the mode's time / grad mode's, in the same round: the median over rounds, with "
        "a 95% bootstrap interval (below 1: the mode saves time). Bytes: what autograd saved "
        "for backward beyond the inputs, counted with saved-tensor hooks; on CUDA also "
        "torch.cuda.memory_allocated while the result is alive.",
        "Accounting: `mm` saves X (the input: no new memory), `pow` saves the (n, 1) residual: "
        "4n bytes in float32; nothing else is saved.",
        "",
        "| device | n | d | grad | no_grad | inference_mode | no_grad / grad [95% CI] | "
        "inference_mode / grad [95% CI] | bytes held (grad / no_grad / inference_mode) | 4n |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | --- | ---: |",
    ]
    series: dict[Any, list[tuple[int, float, float, float]]] = defaultdict(list)
    failures = []
    evals = sorted(
        (e for name, e in g.items() if name.startswith("eval")),
        key=lambda e: (e["device"], e["d"], e["n"]),
    )
    for e in evals:
        cells = []
        for mode in ("no_grad", "inference_mode"):
            r, lo, hi = paired(e["times"], mode, "grad")
            series[(e["device"], e["d"], mode)].append((e["n"], r, lo, hi))
            cells.append(f"{r:.3f} [{lo:.3f}, {hi:.3f}]")
            if mode == "no_grad" and e["n"] == 10**3 and not r <= 1.0:
                failures.append(
                    f"no_grad slower than grad mode at n = 1e3, d = {e['d']} ({e['device']}): "
                    f"median paired ratio {r:.3f}"
                )
        held = e["saved_bytes_beyond_inputs"]
        want = {"grad": 4 * e["n"], "no_grad": 0, "inference_mode": 0}
        if held != want:
            failures.append(f"bytes held at n = {e['n']}, d = {e['d']}: {held}, expected {want}")
        times = [_median(e["times"][m]) for m in ("grad", "no_grad", "inference_mode")]
        lines.append(
            f"| {e['device']} | {e['n']:,} | {e['d']} | {' | '.join(times)} | "
            f"{' | '.join(cells)} | {held['grad']:,} / {held['no_grad']:,} / "
            f"{held['inference_mode']:,} | {4 * e['n']:,} |"
        )
    return lines, series, failures


def update_section(g: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## The update step",
        "",
        "Ratio = the update's time / linreg's `sgd`'s, in the same round (below 1: faster).",
        "",
        "| device | elements | update | median per call | / sgd [95% CI] |",
        "| --- | ---: | --- | --- | --- |",
    ]
    updates = sorted(
        (e for name, e in g.items() if name.startswith("update")),
        key=lambda e: (e["device"], e["size"]),
    )
    for e in updates:
        for name, times in e["times"].items():
            r, lo, hi = paired(e["times"], name, "sgd")
            lines.append(
                f"| {e['device']} | {e['size']:,} | `{name}` | {_median(times)} | "
                f"{r:.2f} [{lo:.2f}, {hi:.2f}] |"
            )
    return lines


def train_section(g: dict[str, dict[str, Any]]) -> tuple[list[str], list[str], dict[Any, Any]]:
    lines = [
        "## The whole default experiment (300 steps)",
        "",
        "| device | loop | median per run | speed-up over the book's loop [95% CI] |",
        "| --- | --- | --- | --- |",
    ]
    verdicts, failures, bars = [], [], {}
    for e in sorted((e for n, e in g.items() if n.startswith("train")), key=lambda e: e["device"]):
        base = e["base"]
        speedups = {loop: paired(e["times"], base, loop) for loop in e["times"]}
        bars[e["device"]] = speedups
        for loop, (r, lo, hi) in sorted(speedups.items(), key=lambda kv: -kv[1][0]):
            lines.append(
                f"| {e['device']} | {loop} | {_median(e['times'][loop])} | "
                f"{r:.2f}x [{lo:.2f}, {hi:.2f}] |"
            )
        for fast, slow, target, gated in TARGETS:
            if fast in e["times"] and slow in e["times"]:
                r, lo, hi = paired(e["times"], slow, fast)
                met = "met" if r >= target else "NOT met"
                verdicts.append(
                    f"| {e['device']} | {fast} vs {slow} | {r:.2f}x [{lo:.2f}, {hi:.2f}] "
                    f"| >= {target}x{' (gate)' if gated else ''} | {met} |"
                )
                if gated and r < target:
                    failures.append(f"{fast} is {r:.2f}x {slow} on {e['device']}, below {target}x")
    lines += [
        "",
        "Targets (the baseline's time / the loop's, in the same round):",
        "",
        "| device | loop vs baseline | speed-up [95% CI] | target | verdict |",
        "| --- | --- | --- | --- | --- |",
        *verdicts,
    ]
    return lines, failures, bars


def charts(series: dict[Any, Any], bars: dict[Any, Any], out: Path) -> list[str]:
    """Draw the ratio charts on linear axes (1 = no difference); return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (device, d, mode), points in sorted(series.items()):
            points.sort()
            ns = [f"{p[0]:.0e}" for p in points]
            r = np.array([p[1] for p in points])
            err = np.array([[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]])
            ax.errorbar(ns, r, yerr=err, marker="o", capsize=3, label=f"{mode}, d={d}, {device}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("n (examples)")
        ax.set_ylabel("time / time in grad mode (paired, per round)")
        ax.set_title("Evaluation time relative to grad mode (median, 95% CI)", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "eval_ratio.png", dpi=100)
        plt.close(fig)
        names.append("eval_ratio.png")
    if bars:
        fig, axes = plt.subplots(1, len(bars), figsize=(6.5 * len(bars), 3.5), squeeze=False)
        for ax, (device, speedups) in zip(axes.flat, sorted(bars.items()), strict=True):
            items = sorted(speedups.items(), key=lambda kv: kv[1][0])
            r = [v[0] for _, v in items]
            err = [[v[0] - v[1] for _, v in items], [v[2] - v[0] for _, v in items]]
            ax.barh([k for k, _ in items], r, xerr=err, capsize=3)
            ax.axvline(1.0, color="grey", lw=0.8)
            ax.set_xlabel("speed-up over the book's loop (paired, per round; 95% CI)")
            ax.set_title(f"the default experiment, {device}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "train.png", dpi=100)
        plt.close(fig)
        names.append("train.png")
    return names


def write_report(data: dict[str, Any], out: Path) -> tuple[Path, list[str]]:
    """Write benchmarks.md and its charts into out; return its path and the gate's failures."""
    out.mkdir(parents=True, exist_ok=True)
    g = groups(data)
    eval_lines, series, eval_failures = eval_section(g)
    train_lines, train_failures, bars = train_section(g)
    failures = eval_failures + train_failures
    gate = (
        ["Gate: every invariant held."]
        if not failures
        else ["Gate: FAILED.", "", *[f"- {f}" for f in failures]]
    )
    parts = [
        "# Benchmarks: what torch.no_grad() saves, and how fast the loop is",
        "",
        f"Machine: {machine(data['machine_info'])}.  ",
        f"Run: {data['datetime']}, pytest-benchmark {data['version']}. Thread count fixed by "
        "LINREG_BENCH_THREADS (torch.set_num_threads) for the whole run.",
        "",
        "How to read: what is compared ran interleaved, in a new random order every round; "
        "each ratio is paired (the two times of one round), and the report gives the median "
        "of those ratios with a 95% bootstrap interval over rounds. An interval that "
        "straddles 1 means no measurable difference.",
        "",
        *gate,
        "",
        *[f"![{c}]({c})" for c in charts(series, bars, out)],
        "",
        *eval_lines,
        "",
        *update_section(g),
        "",
        *train_lines,
        "",
    ]
    path = out / "benchmarks.md"
    path.write_text("\n".join(parts))
    return path, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "json", nargs="?", default="reports/benchmarks.json", help="pytest-benchmark's JSON"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the JSON's)")
    args = parser.parse_args(argv)
    source = Path(args.json)
    if not source.is_file():
        parser.error(f"{source} not found: run `tox -e bench` first")
    try:
        path, failures = write_report(
            json.loads(source.read_text()), Path(args.out) if args.out else source.parent
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"wrote {path}")
    for failure in failures:
        print(f"gate: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
