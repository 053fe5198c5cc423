"""Run the command line: `python -m linreg --help`."""

import signal
import sys
from types import FrameType

_CTRL_C: list[int] = []  # set when SIGINT came: an import may turn it into another exception


def _on_ctrl_c(signum: int, frame: FrameType | None) -> None:
    _CTRL_C.append(signum)
    raise KeyboardInterrupt  # as Python's own handler does


# Guarded: processes started with the "spawn" method import the main module again.
if __name__ == "__main__":
    signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        from linreg.cli import main  # imports torch: seconds, during which Ctrl-C may come

        code = main()
    except (KeyboardInterrupt, Exception):  # numpy, say, turns it into an ImportError
        if not _CTRL_C:
            raise
        print("python -m linreg: interrupted (Ctrl-C)", file=sys.stderr)
        code = 130
    raise SystemExit(code)
