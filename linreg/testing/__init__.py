"""Testing helpers for your own code: Hypothesis strategies and a pytest plugin.

`linreg.testing.strategies` draws the data the pitfall properties run on (datasets, sizes with
uneven and exact splits, learning rates, params with grads set); `linreg.testing.plugin` is the
pytest plugin behind `pytest --pitfalls-audit KIND=MODULE:NAME`. Both need Hypothesis
(`pip install 'linreg-pitfalls[test]'`); importing `linreg`, or loading the plugin without
using it, does not.
"""

from __future__ import annotations

NEEDS_HYPOTHESIS = "this needs Hypothesis: pip install 'linreg-pitfalls[test]' (or hypothesis)"
