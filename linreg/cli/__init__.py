"""The command line: `python -m linreg pitfalls` shows every pitfall live; `train` runs the
book's experiment; `audit` checks your own iterator, update step, loss or loop."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from linreg import _validate
from linreg._book import TRUE_B, TRUE_W
from linreg._plain import plain
from linreg.kinds.options import resolve

# torch is imported inside the train and pitfalls commands; audit's options come from the
# registry of kinds (linreg.kinds), which imports it.

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the usage block: "see --help" says where the rest is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _converter(parse: Callable[[str], T], check: Callable[[str, object], T]) -> Callable[[str], T]:
    """Return an argparse type: parse the text, then _validate's check, one line if not."""
    expected = _validate.EXPECTED[check]

    def convert(text: str) -> T:
        try:
            return check("value", parse(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert


_positive_int = _converter(int, _validate.positive_int)
_non_negative_int = _converter(int, _validate.non_negative_int)
_positive_float = _converter(float, _validate.positive_finite)
_seed = _converter(int, _validate.seed)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for `python -m linreg`."""
    parser = _Parser(
        prog="python -m linreg",
        description="Linear regression from scratch (d2l), and its training-loop pitfalls.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _pitfalls_parser(sub)
    _audit_parser(sub)
    return parser


def _train_parser(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="run the book's experiment and print the loss per epoch",
        description=(
            "Train linear regression from scratch on the book's synthetic data "
            f"(true_w = {list(TRUE_W)}, true_b = {TRUE_B}) and print the full-data "
            "loss after each epoch and the errors in estimating w and b."
        ),
    )
    t.add_argument(
        "-n",
        "--num-examples",
        type=_positive_int,
        default=1000,
        help="number of synthetic examples (default: 1000)",
    )
    t.add_argument(
        "-b",
        "--batch-size",
        type=_positive_int,
        default=10,
        help="mini-batch size; the last batch is short when n %% b != 0 (default: 10)",
    )
    t.add_argument("--lr", type=_positive_float, default=0.03, help="learning rate (default: 0.03)")
    t.add_argument(
        "-e",
        "--epochs",
        type=_non_negative_int,
        default=3,
        help="number of passes over the data (default: 3)",
    )
    t.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed for the data, the initial w and the shuffling, an int from 0 to 2**64 - 2 "
        "(default: 0)",
    )
    t.add_argument(
        "--grad",
        choices=("autograd", "analytic"),
        default="autograd",
        help="gradients from autograd, or derived by hand (default: autograd)",
    )
    t.add_argument(
        "--drop-last",
        action="store_true",
        help="drop the n %% b examples left over after the full batches, each epoch",
    )
    t.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="floating dtype of data and parameters (default: float32)",
    )
    t.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    t.set_defaults(subparser=t)  # its errors name the command: "python -m linreg train"


def _pitfalls_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pitfalls",
        help="run every pitfall's wrong variant beside the correct code and show the evidence",
        description=(
            "Run each pitfall's demonstration on the book's data (n = 1000, batch 10, and an "
            "uneven n = 1003 where that is the point) and print what was expected, what was "
            "observed and whether they agree. Exit 0 when every pitfall behaved as documented, "
            "1 otherwise: a compatibility check for the installed torch."
        ),
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument(
        "--markdown",
        action="store_true",
        help="print Markdown: the catalogue, then each pitfall with its evidence",
    )
    fmt.add_argument(
        "--list", action="store_true", help="list the pitfalls (id and title) and run nothing"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="ID",
        help="run only this pitfall (repeatable); see --list for the ids",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the loss curves of correct vs wrong variants (needs matplotlib)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(subparser=p)  # its errors name the command: "python -m linreg pitfalls"


def _audit_parser(sub: Any) -> None:
    from linreg.kinds import KINDS
    from linreg.kinds.base import KEYWORD_HELP

    a = sub.add_parser(
        "audit",
        help="check your own iterator, update step, loss or loop against every pitfall",
        description=(
            "Run every pitfall property of KIND against your function MODULE:NAME through "
            "Hypothesis, and print each verdict with the smallest counterexample found. Exit 0 "
            "when every property holds, 1 when a pitfall is found, 2 for a usage error. "
            "Kinds and their signatures: "
            + "; ".join(f"{k.name} {k.signature}" for k in KINDS.values())
            + "."
        ),
    )
    a.add_argument(
        "kind", choices=tuple(KINDS), metavar="KIND", help=", ".join(KINDS) + ": see above"
    )
    a.add_argument(
        "target",
        metavar="MODULE:NAME",
        help="the function to audit, importable from the current directory",
    )
    for name, fields in audit_options().items():
        _add_option(a, name, fields)
    a.add_argument(
        "--max-examples",
        type=_positive_int,
        default=None,
        help=KEYWORD_HELP["max_examples"],
    )
    a.add_argument(
        "--seed",
        type=_non_negative_int,
        default=None,
        help=KEYWORD_HELP["seed"],
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw what each failing property measured (a training loop's ratio per "
        "step) into FILE.png (needs matplotlib)",
    )
    a.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    a.set_defaults(subparser=a)


def audit_options() -> dict[str, dict[str, dataclasses.Field[Any]]]:
    """Return every kind's options by name: for each, the kinds that take it and their field."""
    from linreg.kinds import KINDS

    out: dict[str, dict[str, dataclasses.Field[Any]]] = {}
    for kind in KINDS.values():
        for f in kind.options.fields():
            out.setdefault(f.name, {})[kind.name] = f
    return out


def _add_option(
    parser: argparse.ArgumentParser, name: str, fields: dict[str, dataclasses.Field[Any]]
) -> None:
    """Add one option of the kinds to the audit parser: its flag, its help, its conversion."""
    from linreg.kinds.base import CHOICES, FLAG, HELP, IMPORT, from_text, shown_value

    field = next(iter(fields.values()))  # the flag and the kind of value are the same for all
    texts: dict[str, list[str]] = {}  # one help text, and the kinds it is theirs
    for k, f in fields.items():
        default = "" if isinstance(f.default, bool) or f.default is None else f.default
        text = f.metadata[HELP] + (f" (default: {shown_value(default)})" if default != "" else "")
        texts.setdefault(text, []).append(k)
    helps = "; ".join(f"{', '.join(ks)}: {text}" for text, ks in texts.items()).replace("%", "%%")
    flag = field.metadata[FLAG]
    if isinstance(field.default, bool):  # a flag says the opposite of the default
        parser.add_argument(
            flag,
            dest=name,
            action="store_const",
            const=not field.default,
            default=None,
            help=helps,
        )
        return
    choices = sorted(
        {str(shown_value(c)) for f in fields.values() for c in f.metadata.get(CHOICES) or ()}
    )

    if choices:  # converted by name once the kind is known
        parser.add_argument(flag, dest=name, default=None, choices=choices, help=helps)
        return
    if field.metadata.get(IMPORT):  # imported once the kind is known: an error names the flag
        parser.add_argument(flag, dest=name, default=None, metavar="MODULE:NAME", help=helps)
        return

    def convert(text: str) -> Any:
        try:
            return from_text(field, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parser.add_argument(flag, dest=name, default=None, type=convert, help=helps)


def run_audit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Audit the target the arguments name, print the report, and return the exit code."""
    options = _audit_arguments(args, parser)
    if args.plot:
        _check_plot(args.plot, parser)
    try:
        fn = resolve(args.target)
    except ValueError as e:
        parser.error(str(e))
    try:
        from linreg import audit
    except ImportError as e:
        parser.error(str(e))
    try:
        target = audit.target_for(args.kind, fn, **options)  # checked once, before any work
    except (TypeError, ValueError) as e:  # audit.TargetError, or an option out of range
        parser.error(str(e))
    if not args.quiet:
        print(f"auditing {args.kind} {args.target} ...", file=sys.stderr, flush=True)
    report = audit.run(target, max_examples=args.max_examples, seed=args.seed)
    report = dataclasses.replace(report, target=args.target)  # as the user named it
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print(report)
    code = 0 if report.ok else 1
    if report.error.startswith("interrupted"):  # Ctrl-C: the verdicts so far, and the shell's
        code = 130  # code for SIGINT, so that a script tells it from a pitfall
    if args.plot:
        return _plot(report, args.plot, code, quiet=args.quiet)
    return code


def _plot(report: Any, path: str, code: int, *, quiet: bool) -> int:
    """Draw what the report measured into path; say why not in one line, keeping the verdict's
    exit code (a pitfall's 1 is never hidden); a picture that cannot be written is exit 2."""
    try:
        report.plot(path)
    except ValueError as e:  # nothing measured to draw: a note, not an error
        print(f"--plot: {e}; no picture written", file=sys.stderr)
        return code
    except OSError as e:
        print(f"--plot: could not write {path}: {e.strerror or e}", file=sys.stderr)
        return code or 2
    if not quiet:
        print(f"wrote the failing steps' picture to {path}", file=sys.stderr)
    return code


def _check_plot(path: str, parser: argparse.ArgumentParser) -> None:
    """Refuse a --plot that cannot be written, before any work."""
    if not path.lower().endswith(".png"):
        parser.error(f"--plot writes a PNG: give a FILE.png, got {path!r}")
    folder = Path(path).parent
    if not folder.is_dir():
        parser.error(f"--plot: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        parser.error(f"--plot: the folder {str(folder)!r} is not writable")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("--plot needs matplotlib: pip install 'linreg-pitfalls[plot]'")


def _audit_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Return the kind's options the command line gave, converted; usage errors in one line."""
    from linreg.kinds import KINDS
    from linreg.kinds.base import FLAG, REQUIRED, from_text

    own = {f.name: f for f in KINDS[args.kind].options.fields()}
    every = audit_options()
    given = {name: getattr(args, name) for name in every if getattr(args, name) is not None}
    for name in given:
        if name not in own:
            flag = next(iter(every[name].values())).metadata[FLAG]
            parser.error(f"{flag} does not apply to {args.kind}")
    missing = [
        f.metadata[FLAG] for f in own.values() if f.metadata[REQUIRED] and f.name not in given
    ]
    if missing:
        parser.error(f"{args.kind} needs {' and '.join(missing)} MODULE:NAME")
    options = {}
    for name, value in given.items():
        try:
            options[name] = from_text(own[name], value) if isinstance(value, str) else value
        except ValueError as e:
            parser.error(f"{own[name].metadata[FLAG]}: {e}")
    return options


def run_pitfalls(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the chosen demonstrations, print the report, and return the exit code."""
    from linreg.pitfalls import BY_ID, CATALOGUE

    if args.list:
        for pitfall in CATALOGUE:
            print(f"{pitfall.id:<26} {pitfall.title}")
        return 0
    unknown = [i for i in args.only or [] if i not in BY_ID]
    if unknown:
        parser.error(f"unknown pitfall id {unknown[0]!r}; choose from {', '.join(BY_ID)}")
    if args.plot:
        chosen = args.only or [p.id for p in CATALOGUE]
        if not any(BY_ID[i].plots for i in chosen):
            drawn = ", ".join(p.id for p in CATALOGUE if p.plots)
            parser.error(
                f"--plot: none of the chosen pitfalls draws loss curves (those that do: {drawn})"
            )
        _check_plot(args.plot, parser)

    from linreg.pitfalls import _live as demos
    from linreg.pitfalls import _render as render

    ids = args.only or [p.id for p in CATALOGUE]

    def progress(k: int, pitfall_id: str) -> None:
        if not args.quiet:
            print(f"[{k}/{len(ids)}] {pitfall_id} ...", file=sys.stderr, flush=True)

    runs = demos.report(ids, progress)
    if args.json:
        print(json.dumps(render.to_json(runs), indent=2, allow_nan=False))
    elif args.markdown:
        print(render.markdown(runs), end="")
    else:
        print(render.table(runs, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    if args.plot:
        panels = render.plot(runs, args.plot)
        print(f"wrote {panels} panels of loss curves to {args.plot}", file=sys.stderr)
    return 0 if all(r.evidence.ok for r in runs) else 1


def _check_memory(n: int, itemsize: int, parser: argparse.ArgumentParser) -> None:
    """Refuse, in one line, a run whose data would not fit in the memory this machine has free.

    Per row: the features and labels, the noise and X @ w drawn with them, and an epoch's
    permutation (int64): about 5 numbers and 8 bytes. Linux says what is free; elsewhere, no
    check.
    """
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvail"))
    except (OSError, StopIteration, ValueError):
        return
    need = n * (5 * itemsize + 8)
    if need > free:
        parser.error(
            f"-n/--num-examples: {n} rows need about {need / 2**30:.1f} GiB, more than this "
            f"machine has free ({free / 2**30:.1f} GiB)"
        )


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the experiment the parsed arguments describe and return its report.

    A run that diverges stops after the epoch its loss stopped being finite; the report's
    "diverged" then names the first step after which the params were not finite, and the
    largest stable lr for full-batch gradient descent on this data.
    """
    import torch

    from linreg import data
    from linreg.train import train

    dtype = getattr(torch, args.dtype)
    _check_memory(args.num_examples, dtype.itemsize, args.subparser)
    features, labels = data.book_data(args.num_examples, seed=args.seed, dtype=dtype)
    generator = torch.Generator().manual_seed(args.seed + 1)
    first_bad: list[int] = []

    def watch(step: int, w: Any, b: Any) -> None:
        # three numbers per step, here in the command only: train itself checks per epoch
        if not first_bad and not bool(torch.isfinite(w).all() and torch.isfinite(b).all()):
            first_bad.append(step)

    start = time.perf_counter()
    result = train(
        features,
        labels,
        lr=args.lr,
        batch_size=args.batch_size,
        num_epochs=args.epochs,
        generator=generator,
        grad=args.grad,
        drop_last=args.drop_last,
        on_step=watch,
    )
    seconds = time.perf_counter() - start
    w_error = (torch.tensor(TRUE_W, dtype=dtype) - result.w.detach().reshape(-1)).tolist()
    b_error = TRUE_B - float(result.b.detach())
    diverged = _diverged(first_bad, result, features)
    return {
        "config": {
            "num_examples": args.num_examples,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "epochs": args.epochs,
            "seed": args.seed,
            "grad": args.grad,
            "drop_last": args.drop_last,
            "dtype": args.dtype,
        },
        "losses": result.losses,
        "w": result.w.detach().reshape(-1).tolist(),
        "b": float(result.b.detach()),
        "w_error": w_error,
        "b_error": b_error,
        "num_steps": result.num_steps,
        "diverged": diverged,
        "seconds": seconds,
        "torch": torch.__version__,
    }


def _diverged(first_bad: list[int], result: Any, features: Any) -> dict[str, Any] | None:
    """Return where a run's params stopped being finite and the stable lr, or None."""
    from linreg.train import stable_bound

    if not first_bad and not (result.losses and not math.isfinite(result.losses[-1])):
        return None
    steps_per_epoch = max(1, result.num_steps // max(1, len(result.losses)))
    step = first_bad[0] if first_bad else result.num_steps
    return {
        "step": step,
        "epoch": (step - 1) // steps_per_epoch + 1,
        "stable_bound": stable_bound(features),
    }


def diverged_line(report: dict[str, Any]) -> str:
    """Return the one line that says where a run diverged and the stable lr for its data."""
    d, lr = report["diverged"], report["config"]["lr"]
    where = "above" if lr > d["stable_bound"] else "below"
    return (
        f"python -m linreg train: the run diverged: the params were no longer finite after step "
        f"{d['step']} (epoch {d['epoch']}); lr = {lr:g} is {where} 2 / lambda_max(A^T A / n) = "
        f"{d['stable_bound']:.4g}, the largest stable lr for full-batch gradient descent on "
        "this data" + ("" if where == "above" else " (mini-batches are less stable)")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "pitfalls":
        return run_pitfalls(args, args.subparser)
    if args.command == "audit":
        return run_audit(args, args.subparser)
    report = run_train(args)
    if args.json:
        print(json.dumps(plain(report), indent=2, allow_nan=False))
        if report["diverged"]:
            print(diverged_line(report), file=sys.stderr)
        return 1 if report["diverged"] else 0
    for epoch, value in enumerate(report["losses"], 1):
        print(f"epoch {epoch}, loss {value:f}")
    print("error in estimating w: [" + ", ".join(f"{e:+.6f}" for e in report["w_error"]) + "]")
    print(f"error in estimating b: {report['b_error']:+.6f}")
    sys.stdout.flush()  # the lines on stderr come after the results
    if report["diverged"]:
        print(diverged_line(report), file=sys.stderr)
        return 1
    print(
        f"{report['num_steps']} steps in {report['seconds'] * 1e3:.1f} ms "
        f"(grad={args.grad}, torch {report['torch']})",
        file=sys.stderr,
    )
    return 0
