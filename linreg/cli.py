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

# torch is imported inside the commands, so that --help and argument errors come at once.

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the usage block: "see --help" says where the rest is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _converter(
    parse: Callable[[str], T], check: Callable[[str, object], T], expected: str
) -> Callable[[str], T]:
    """Return an argparse type: parse the text, then _validate's check, one line if not."""

    def convert(text: str) -> T:
        try:
            return check("value", parse(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert


_positive_int = _converter(int, _validate.positive_int, "a positive int")
_non_negative_int = _converter(int, _validate.non_negative_int, "an int >= 0")
_positive_float = _converter(float, _validate.positive_finite, "a finite number > 0")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for `python -m linreg`."""
    parser = _Parser(
        prog="python -m linreg",
        description="Linear regression from scratch (d2l), and its training-loop pitfalls.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
        type=_non_negative_int,
        default=0,
        help="seed for the data, the initial w and the shuffling, an int >= 0 (default: 0)",
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

    a = sub.add_parser(
        "audit",
        help="check your own iterator, update step, loss or loop against every pitfall",
        description=(
            "Run every pitfall property of KIND against your function MODULE:NAME through "
            "Hypothesis, and print each verdict with the smallest counterexample found. Exit 0 "
            "when every property holds, 1 when a pitfall is found, 2 for a usage error. "
            "Signatures: iterator fn(batch_size, features, labels); update-step fn(params, lr, "
            "batch_size); loss fn(y_hat, y); loop fn(features, labels, params, *, lr, "
            "batch_size, num_epochs); epoch-loss fn(features, labels, params, *, lr, "
            "batch_size), returning the epoch's loss; training-loop fn(model, loader, "
            "optimizer, *, num_epochs), any PyTorch loop, with --model and --example."
        ),
    )
    a.add_argument(
        "kind",
        choices=("iterator", "update-step", "loss", "loop", "epoch-loss", "training-loop"),
        metavar="KIND",
        help="iterator, update-step, loss, loop, epoch-loss or training-loop",
    )
    a.add_argument(
        "target",
        metavar="MODULE:NAME",
        help="the function to audit, importable from the current directory",
    )
    a.add_argument(
        "--drop-last",
        action="store_true",
        help="iterator, loop: it drops the n %% B left-over samples each epoch",
    )
    a.add_argument(
        "--reused",
        action="store_true",
        help="iterator: the trainer calls it once and iterates the result every epoch",
    )
    a.add_argument(
        "--no-zeroes-grad",
        dest="zeroes_grad",
        action="store_false",
        help="update-step: the loop zeroes the grads, not the step",
    )
    a.add_argument(
        "--under-no-grad",
        action="store_true",
        help="update-step: the trainer calls it inside torch.no_grad()",
    )
    a.add_argument(
        "--no-divide",
        dest="divides_by_batch_size",
        action="store_false",
        help="update-step: it takes p - lr * grad (the gradient of a mean loss)",
    )
    a.add_argument(
        "--reduction",
        choices=("none", "mean", "sum"),
        default=None,
        help="loss: how it reduces over the examples (default: none); training-loop: mean "
        "or sum over a step's rows (default: mean)",
    )
    a.add_argument(
        "--scale",
        type=_positive_float,
        default=0.5,
        help="loss: the factor before (y_hat - y)^2: 0.5 for the book, 1 for "
        "nn.MSELoss (default: 0.5)",
    )
    a.add_argument(
        "--no-flat-labels",
        dest="flat_labels",
        action="store_false",
        help="loss: the labels are always (n, 1); do not try labels of shape (n,)",
    )
    a.add_argument(
        "--objective",
        choices=("book", "mse"),
        default="book",
        help="loop, epoch-loss: the mean of r^2 / 2 (book) or of r^2 (mse) (default: book)",
    )
    a.add_argument(
        "--full-batch", action="store_true", help="loop: every step takes the whole data"
    )
    a.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="loop, epoch-loss: the dtype of the data and params (default: float32)",
    )
    a.add_argument(
        "--model",
        metavar="MODULE:NAME",
        help="training-loop: a zero-argument factory of a fresh nn.Module (a class will do)",
    )
    a.add_argument(
        "--example",
        metavar="MODULE:NAME",
        help="training-loop: one (x, y) sample, unbatched, or a function returning one",
    )
    a.add_argument(
        "--optimizer",
        metavar="MODULE:NAME",
        help="training-loop: a factory params -> torch.optim.Optimizer (default: plain SGD)",
    )
    a.add_argument(
        "--accumulation-steps",
        type=_positive_int,
        default=1,
        help="training-loop: the loop steps once per this many batches (default: 1)",
    )
    a.add_argument(
        "--max-examples",
        type=_positive_int,
        default=None,
        help="examples per property (default: 30)",
    )
    a.add_argument(
        "--seed",
        type=_non_negative_int,
        default=None,
        help="seed for Hypothesis, an int >= 0 (default: derandomized)",
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    a.set_defaults(subparser=a)
    return parser


# The options each kind takes, by destination; any other option given is a usage error.
AUDIT_OPTIONS = {
    "iterator": ("drop_last", "reused"),
    "update-step": ("zeroes_grad", "under_no_grad", "divides_by_batch_size"),
    "loss": ("reduction", "scale", "flat_labels"),
    "loop": ("objective", "full_batch", "drop_last", "dtype"),
    "epoch-loss": ("objective", "dtype"),
    "training-loop": ("model", "example", "optimizer", "accumulation_steps", "reduction"),
}
_FLAGS = {
    "drop_last": "--drop-last",
    "reused": "--reused",
    "zeroes_grad": "--no-zeroes-grad",
    "under_no_grad": "--under-no-grad",
    "divides_by_batch_size": "--no-divide",
    "reduction": "--reduction",
    "scale": "--scale",
    "flat_labels": "--no-flat-labels",
    "objective": "--objective",
    "full_batch": "--full-batch",
    "dtype": "--dtype",
    "model": "--model",
    "example": "--example",
    "optimizer": "--optimizer",
    "accumulation_steps": "--accumulation-steps",
}
# The options that name an object to import, and the kinds whose --reduction defaults differ.
_IMPORTED = ("model", "example", "optimizer")
_REDUCTION = {"loss": "none", "training-loop": "mean"}


def resolve(spec: str, *, callable_: bool = True) -> Any:
    """Import MODULE:NAME (NAME may be dotted) and return it; raise ValueError saying why not.

    callable_=False accepts any object (an example), not only a callable.
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise ValueError(f"expected MODULE:NAME, got {spec!r}")
    import importlib

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the current directory first
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        raise ValueError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {name!r}") from None
    if callable_ and not callable(obj):
        raise ValueError(f"{spec} is not callable: it is a {type(obj).__name__}")
    return obj


def run_audit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Audit the target the arguments name, print the report, and return the exit code."""
    defaults = {k: parser.get_default(k) for k in _FLAGS}
    wrong = [
        k for k in _FLAGS if k not in AUDIT_OPTIONS[args.kind] and getattr(args, k) != defaults[k]
    ]
    if wrong:
        parser.error(f"{_FLAGS[wrong[0]]} does not apply to {args.kind}")
    try:
        fn = resolve(args.target)
    except ValueError as e:
        parser.error(str(e))
    try:
        from linreg import audit
    except ImportError as e:
        parser.error(str(e))
    import torch

    options = {k: getattr(args, k) for k in AUDIT_OPTIONS[args.kind]}
    if "reduction" in options and options["reduction"] is None:
        options["reduction"] = _REDUCTION[args.kind]
    if args.kind == "training-loop":
        missing = [_FLAGS[k] for k in ("model", "example") if options[k] is None]
        if missing:
            parser.error(f"training-loop needs {' and '.join(missing)} MODULE:NAME")
        for k in _IMPORTED:
            if options[k] is not None:
                try:
                    options[k] = resolve(options[k], callable_=k != "example")
                except ValueError as e:
                    parser.error(f"{_FLAGS[k]}: {e}")
    if "dtype" in options:
        options["dtype"] = getattr(torch, options["dtype"])
    try:
        audit.target_for(args.kind, fn, **options)  # the signature, before any work
    except (TypeError, ValueError) as e:  # audit.TargetError, or an option out of range
        parser.error(str(e))
    if not args.quiet:
        print(f"auditing {args.kind} {args.target} ...", file=sys.stderr, flush=True)
    report = audit.KINDS[args.kind](fn, max_examples=args.max_examples, seed=args.seed, **options)
    report = dataclasses.replace(report, target=args.target)  # as the user named it
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print(report)
    return 0 if report.ok else 1


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
        if not args.plot.lower().endswith(".png"):
            parser.error(f"--plot writes a PNG: give a FILE.png, got {args.plot!r}")
        folder = Path(args.plot).parent
        if not folder.is_dir():
            parser.error(f"--plot: the folder {str(folder)!r} does not exist")
        chosen = args.only or [p.id for p in CATALOGUE]
        if not any(BY_ID[i].plots for i in chosen):
            drawn = ", ".join(p.id for p in CATALOGUE if p.plots)
            parser.error(
                f"--plot: none of the chosen pitfalls draws loss curves (those that do: {drawn})"
            )
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'linreg-pitfalls[plot]'")

    from linreg import demos, render

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


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the experiment the parsed arguments describe and return its report.

    A run that diverges stops after the epoch its loss stopped being finite; the report's
    "diverged" then names the first step after which the params were not finite, and the
    largest stable lr for full-batch gradient descent on this data.
    """
    import torch

    from linreg import data
    from linreg.train import stable_bound, train

    dtype = getattr(torch, args.dtype)
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
    diverged = None
    if first_bad or (result.losses and not math.isfinite(result.losses[-1])):
        steps_per_epoch = max(1, result.num_steps // max(1, len(result.losses)))
        step = first_bad[0] if first_bad else result.num_steps
        diverged = {
            "step": step,
            "epoch": (step - 1) // steps_per_epoch + 1,
            "stable_bound": stable_bound(features),
        }
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


def _finite_or_none(value: Any) -> Any:
    """Return value with every non-finite float as None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


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
        print(json.dumps(_finite_or_none(report), indent=2, allow_nan=False))
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
