"""The command line: `python -m linreg train` runs the book's experiment."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from linreg._book import TRUE_B, TRUE_W

# torch is imported inside the commands, so that --help and argument errors come at once.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the usage block: "see --help" says where the rest is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


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
        type=int,
        default=0,
        help="seed for the data, the initial w and the shuffling (default: 0)",
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
    return parser


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the experiment the parsed arguments describe and return its report."""
    import torch

    from linreg import data
    from linreg.train import train

    dtype = getattr(torch, args.dtype)
    features, labels = data.book_data(args.num_examples, seed=args.seed, dtype=dtype)
    generator = torch.Generator().manual_seed(args.seed + 1)
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
    )
    seconds = time.perf_counter() - start
    w_error = (torch.tensor(TRUE_W, dtype=dtype) - result.w.detach().reshape(-1)).tolist()
    b_error = TRUE_B - float(result.b.detach())
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
        "seconds": seconds,
        "torch": torch.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    report = run_train(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for epoch, value in enumerate(report["losses"], 1):
        print(f"epoch {epoch}, loss {value:f}")
    print("error in estimating w: [" + ", ".join(f"{e:+.6f}" for e in report["w_error"]) + "]")
    print(f"error in estimating b: {report['b_error']:+.6f}")
    sys.stdout.flush()  # the timing line on stderr comes after the results
    print(
        f"{report['num_steps']} steps in {report['seconds'] * 1e3:.1f} ms "
        f"(grad={args.grad}, torch {report['torch']})",
        file=sys.stderr,
    )
    return 0
