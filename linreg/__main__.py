"""Run the command line: `python -m linreg --help`."""

import sys

# Guarded: processes started with the "spawn" method import the main module again.
if __name__ == "__main__":
    try:
        from linreg.cli import main  # imports torch: seconds, during which Ctrl-C may come

        code = main()
    except KeyboardInterrupt:  # one line, not a traceback, and the shell's code for SIGINT
        print("python -m linreg: interrupted (Ctrl-C)", file=sys.stderr)
        code = 130
    raise SystemExit(code)
