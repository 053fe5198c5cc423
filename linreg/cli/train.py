"""`python -m linreg train`: the book's experiment, the loss per epoch and the errors in w and b."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from linreg._book import TRUE_B, TRUE_W
from linreg.cli import arguments

HELP = "run the book's experiment and print the loss per epoch"


def add_parser(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help=HELP,
        description=(
            "Train linear regression from scratch on the book's synthetic data "
            f"(true_w = {list(TRUE_W)}, true_b = {TRUE_B}) and print the full-data "
            "loss after each epoch and the errors in estimating w and b."
        ),
    )
    t.add_argument(
        "-n",
        "--num-examples",
        type=arguments.positive_int,
        default=1000,
        help="number of synthetic examples (default: 1000)",
    )
    t.add_argument(
        "-b",
        "--batch-size",
        type=arguments.positive_int,
        default=10,
        help="mini-batch size; the last batch is short when n %% b != 0 (default: 10)",
    )
    t.add_argument(
        "--lr", type=arguments.positive_float, default=0.03, help="learning rate (default: 0.03)"
    )
    t.add_argument(
        "-e",
        "--epochs",
        type=arguments.non_negative_int,
        default=3,
        help="number of passes over the data (default: 3)",
    )
    t.add_argument(
        "--seed",
        type=arguments.seed,
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


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the experiment, print its results, and return the exit code."""
    report = run_train(args)
    if args.json:
        from linreg._plain import plain

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
