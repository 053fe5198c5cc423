"""Run the command line: `python -m linreg --help`."""

import sys


def _interrupted(e: BaseException) -> bool:
    """Return whether e is, or was caused by, Ctrl-C: numpy turns a Ctrl-C during its import
    into an ImportError ("Importing the numpy C-extensions failed")."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Guarded: processes started with the "spawn" method import the main module again.
if __name__ == "__main__":
    try:
        from linreg.cli import main  # imports torch: seconds, during which Ctrl-C may come

        code = main()
    except (KeyboardInterrupt, ImportError) as e:  # one line and the shell's code for SIGINT
        if not _interrupted(e):
            raise
        print("python -m linreg: interrupted (Ctrl-C)", file=sys.stderr)
        code = 130
    raise SystemExit(code)
