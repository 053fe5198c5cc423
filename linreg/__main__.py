"""Run the command line: `python -m linreg --help`."""

from linreg.cli import main

# Guarded: processes started with the "spawn" method import the main module again.
if __name__ == "__main__":
    raise SystemExit(main())
