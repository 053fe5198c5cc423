"""Run the command line: `python -m linreg --help`."""

from linreg.cli import main

raise SystemExit(main())
