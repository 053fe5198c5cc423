"""Turn pytest-benchmark's JSON into reports/benchmarks.md and charts.

Usage: python -m benchmarks.report [reports/benchmarks.json] [--out reports]
The JSON must hold each round's timings (`--benchmark-save-data`): the ratios' confidence
intervals come from a bootstrap over rounds (resample both cases' rounds with replacement,
take the ratio of medians, 1000 times; the 2.5th and 97.5th percentiles). Rounds are
independent repetitions of one call, so resampling them is sound; the median, not the mean,
because a few rounds hit page faults or the other process on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

RNG_SEED, RESAMPLES, MAX_ROUNDS = 0, 1000, 4000
TARGETS = [  # (loop that must be faster, baseline, at least this many times faster)
    ("linreg.train(autograd)", "book loop", 1.5),
    ("linreg.train(autograd)", "DataLoader + optim.SGD", 2.0),
    ("linreg.train(analytic)", "book loop", 5.0),
]


def ratio_ci(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Return median(num) / median(den) and its 95% bootstrap interval."""
    rng = np.random.default_rng(RNG_SEED)
    a, b = (
        np.asarray(x if len(x) <= MAX_ROUNDS else rng.choice(x, MAX_ROUNDS, replace=False))
        for x in (num, den)
    )
    ra = np.median(rng.choice(a, (RESAMPLES, len(a))), axis=1)
    rb = np.median(rng.choice(b, (RESAMPLES, len(b))), axis=1)
    lo, hi = np.percentile(ra / rb, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


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


def by_group(benchmarks: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    groups: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for bench in benchmarks:
        extra = bench["extra_info"]
        key = extra.get("mode") or extra.get("update") or extra.get("loop")
        groups[bench["group"]][key] = bench
    return groups


def eval_section(
    groups: dict[str, dict[str, dict[str, Any]]], out: Path
) -> tuple[list[str], list[str]]:
    lines = [
        "## Evaluation: the full-data loss in grad mode, under no_grad, under inference_mode",
        "",
        "Ratio = median time of the mode / median time in grad mode (below 1: the mode saves "
        "time), with a 95% bootstrap interval. Bytes: what autograd saved for backward beyond "
        "the inputs, counted with saved-tensor hooks; on CUDA also torch.cuda.memory_allocated "
        "while the result is alive (the graph's buffers plus the output's 512-byte block).",
        "Accounting: `mm` saves X (the input: no new memory), `pow` saves the (n, 1) residual: "
        "4n bytes in float32; nothing else is saved.",
        "",
        "| device | n | d | grad | no_grad | inference_mode | no_grad / grad [95% CI] | "
        "inference_mode / grad [95% CI] | bytes held (grad) | 4n | CUDA bytes held "
        "(grad / no_grad) |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    series: dict[tuple[str, int, str], list[tuple[int, float, float, float]]] = defaultdict(list)
    nbytes: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    evals = sorted(
        (g for g in groups if g.startswith("eval")),
        key=lambda g: (
            groups[g]["grad"]["extra_info"]["device"],
            groups[g]["grad"]["extra_info"]["d"],
            groups[g]["grad"]["extra_info"]["n"],
        ),
    )
    for name in evals:
        g = groups[name]
        e = g["grad"]["extra_info"]
        cells = []
        for mode in ("no_grad", "inference_mode"):
            r, lo, hi = ratio_ci(g[mode]["stats"]["data"], g["grad"]["stats"]["data"])
            series[(e["device"], e["d"], mode)].append((e["n"], r, lo, hi))
            cells.append(f"{r:.3f} [{lo:.3f}, {hi:.3f}]")
        nbytes[(e["device"], e["d"])].append((e["n"], e["saved_bytes_beyond_inputs"]))
        cuda = (
            f"{e['cuda_bytes_held']:,} / {g['no_grad']['extra_info']['cuda_bytes_held']:,}"
            if e.get("cuda_bytes_held") is not None
            else "-"
        )
        times = [
            f"{fmt_time(g[m]['stats']['median'])} (IQR {fmt_time(g[m]['stats']['iqr'])})"
            for m in ("grad", "no_grad", "inference_mode")
        ]
        lines.append(
            f"| {e['device']} | {e['n']:,} | {e['d']} | {' | '.join(times)} | "
            f"{' | '.join(cells)} | {e['saved_bytes_beyond_inputs']:,} | {4 * e['n']:,} "
            f"| {cuda} |"
        )
    charts = []
    if series:
        charts = _eval_charts(series, nbytes, out)
    return lines, charts


def _eval_charts(
    series: dict[tuple[str, int, str], list[tuple[int, float, float, float]]],
    nbytes: dict[tuple[str, int], list[tuple[int, int]]],
    out: Path,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (device, d, mode), points in sorted(series.items()):
        points.sort()
        ns = [p[0] for p in points]
        r = np.array([p[1] for p in points])
        err = np.array([[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]])
        ax.errorbar(ns, r, yerr=err, marker="o", capsize=3, label=f"{mode}, d={d}, {device}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (examples)")
    ax.set_ylabel("time / time in grad mode")
    ax.set_title("Evaluation time relative to grad mode (95% bootstrap CI)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "eval_ratio.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (device, d), held in sorted(nbytes.items()):
        held.sort()
        ax.plot(
            [p[0] for p in held],
            [p[1] for p in held],
            marker="o",
            label=f"saved beyond inputs, d={d}, {device}",
        )
    ns = sorted({p[0] for pts in nbytes.values() for p in pts})
    ax.plot(ns, [4 * n for n in ns], "k--", lw=1, label="4n (the float32 residual)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (examples)")
    ax.set_ylabel("bytes held by the graph")
    ax.set_title("What grad mode holds that no_grad does not", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "eval_bytes.png", dpi=100)
    plt.close(fig)
    return ["eval_ratio.png", "eval_bytes.png"]


def update_section(groups: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "## The update step",
        "",
        "Ratio = median time / median time of linreg's `sgd` (below 1: faster than sgd).",
        "",
        "| device | elements | update | median (IQR) | / sgd [95% CI] |",
        "| --- | ---: | --- | --- | --- |",
    ]
    updates = sorted(
        (g for g in groups if g.startswith("update")),
        key=lambda g: (
            groups[g]["sgd"]["extra_info"]["device"],
            groups[g]["sgd"]["extra_info"]["size"],
        ),
    )
    for name in updates:
        g = groups[name]
        base = g["sgd"]["stats"]["data"]
        for key, bench in g.items():
            e, s = bench["extra_info"], bench["stats"]
            r, lo, hi = ratio_ci(s["data"], base)
            lines.append(
                f"| {e['device']} | {e['size']:,} | `{key}` | {fmt_time(s['median'])} "
                f"({fmt_time(s['iqr'])}) | {r:.2f} [{lo:.2f}, {hi:.2f}] |"
            )
    return lines


def train_section(
    groups: dict[str, dict[str, dict[str, Any]]], out: Path
) -> tuple[list[str], list[str], list[str]]:
    lines = [
        "## The whole default experiment (300 steps)",
        "",
        "| device | loop | median (IQR) | rounds |",
        "| --- | --- | --- | ---: |",
    ]
    verdicts = []
    trains = sorted(g for g in groups if g.startswith("train"))
    for name in trains:
        g = groups[name]
        for key, bench in sorted(g.items(), key=lambda kv: kv[1]["stats"]["median"]):
            s = bench["stats"]
            lines.append(
                f"| {bench['extra_info']['device']} | {key} | {fmt_time(s['median'])} "
                f"({fmt_time(s['iqr'])}) | {s['rounds']} |"
            )
        device = next(iter(g.values()))["extra_info"]["device"]
        for fast, slow, target in TARGETS:
            if fast in g and slow in g:
                r, lo, hi = ratio_ci(g[slow]["stats"]["data"], g[fast]["stats"]["data"])
                met = "met" if r >= target else "NOT met"
                verdicts.append(
                    f"| {device} | {fast} vs {slow} | {r:.2f}x [{lo:.2f}, {hi:.2f}] "
                    f"| >= {target}x | {met} |"
                )
    lines += [
        "",
        "Speed-ups (median of the baseline / median of the loop, 95% bootstrap CI):",
        "",
        "| device | loop vs baseline | speed-up | target | verdict |",
        "| --- | --- | --- | --- | --- |",
        *verdicts,
    ]
    charts = []
    if trains:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(trains), figsize=(6.5 * len(trains), 3.5), squeeze=False)
        for ax, name in zip(axes.flat, trains, strict=True):
            items = sorted(groups[name].items(), key=lambda kv: kv[1]["stats"]["median"])
            ax.barh(
                [k for k, _ in items],
                [b["stats"]["median"] * 1e3 for _, b in items],
                xerr=[b["stats"]["iqr"] * 1e3 / 2 for _, b in items],
                capsize=3,
            )
            ax.set_xlabel("ms per 300-step run (median, IQR bar)")
            ax.set_title(name, fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "train.png", dpi=100)
        plt.close(fig)
        charts.append("train.png")
    return lines, verdicts, charts


def write_report(data: dict[str, Any], out: Path) -> Path:
    """Write benchmarks.md and its charts into out; return the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    groups = by_group(data["benchmarks"])
    eval_lines, eval_charts = eval_section(groups, out)
    train_lines, _, train_charts = train_section(groups, out)
    parts = [
        "# Benchmarks: what torch.no_grad() saves, and how fast the loop is",
        "",
        f"Machine: {machine(data['machine_info'])}.  ",
        f"Run: {data['datetime']}, pytest-benchmark {data['version']}. Thread count fixed by "
        "LINREG_BENCH_THREADS (torch.set_num_threads) for the whole run.",
        "",
        "How to read: medians and interquartile ranges of per-call times; ratios are "
        "medians of the same process's runs, with 95% bootstrap intervals over rounds (an "
        "interval that straddles 1 means no measurable difference).",
        "",
        *[f"![{c}]({c})" for c in eval_charts + train_charts],
        "",
        *eval_lines,
        "",
        *update_section(groups),
        "",
        *train_lines,
        "",
    ]
    path = out / "benchmarks.md"
    path.write_text("\n".join(parts))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "json",
        nargs="?",
        default="reports/benchmarks.json",
        help="pytest-benchmark JSON written with --benchmark-save-data",
    )
    parser.add_argument("--out", default=None, help="output folder (default: the JSON's)")
    args = parser.parse_args(argv)
    source = Path(args.json)
    if not source.is_file():
        parser.error(
            f"{source} not found: run `tox -e bench` (or pytest benchmarks "
            "--benchmark-json=... --benchmark-save-data) first"
        )
    data = json.loads(source.read_text())
    if any(not b["stats"].get("data") for b in data["benchmarks"]):
        parser.error(f"{source} has no per-round data: rerun with --benchmark-save-data")
    path = write_report(data, Path(args.out) if args.out else source.parent)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
