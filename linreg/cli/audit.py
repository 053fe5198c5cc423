"""`python -m linreg audit KIND MODULE:NAME`: every property of a kind against your function.

Its options come from the registry of kinds (linreg.kinds), which imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from linreg.cli import arguments

HELP = "check your own iterator, update step, loss or loop against every pitfall"


def add_parser(sub: Any) -> None:
    from linreg.kinds import KINDS
    from linreg.kinds.options import KEYWORD_HELP

    a = sub.add_parser(
        "audit",
        help=HELP,
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
        type=arguments.positive_int,
        default=None,
        help=KEYWORD_HELP["max_examples"],
    )
    a.add_argument(
        "--seed",
        type=arguments.non_negative_int,
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
    from linreg.kinds.options import CHOICES, FLAG, HELP, IMPORT, from_text, shown_value

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


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Audit the target the arguments name, print the report, and return the exit code."""
    options = _audit_arguments(args, parser)
    if args.plot:
        arguments.check_plot(args.plot, parser)
    try:
        from linreg.kinds.options import resolve

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
        return arguments.plot(report, args.plot, code, quiet=args.quiet)
    return code


def _audit_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Return the kind's options the command line gave, converted; usage errors in one line."""
    from linreg.kinds import KINDS
    from linreg.kinds.options import CHOICES, FLAG, REQUIRED, from_text, shown_value

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
        choices = [str(shown_value(c)) for c in own[name].metadata.get(CHOICES) or ()]
        if choices and isinstance(value, str) and value not in choices:  # (the union's, not
            parser.error(  # this kind's: --help lists every kind's)
                f"argument {own[name].metadata[FLAG]}: invalid choice for {args.kind}: "
                f"{value!r} (choose from {', '.join(map(repr, choices))})"
            )
        try:
            options[name] = from_text(own[name], value) if isinstance(value, str) else value
        except ValueError as e:
            parser.error(f"{own[name].metadata[FLAG]}: {e}")
    return options
