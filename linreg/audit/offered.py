"""The examples Hypothesis offered the first property of an audit that passed, checked by
the others outside Hypothesis where every property draws one strategy (Offered)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from linreg.checks import CheckFailed, LoopRaised

__all__ = ["Offered"]


class Offered:
    """The examples Hypothesis offered the first property of an audit that passed, where every
    property draws one strategy (the training-loop kind's): with the same seed and the same
    number of examples, Hypothesis offers each of the others the same ones, in the same order,
    while all pass. So each of the others checks them first, outside Hypothesis (whose engine
    would cost more than the checks of runs the properties share); one that fails is run
    through Hypothesis again, which finds it at the same place and shrinks it."""

    def __init__(self) -> None:
        self.examples: list[Any] | None = None
        self.limit = 0

    def keep(self, examples: list[Any], limit: int) -> None:
        """Keep the examples a property that passed was offered (the first such property's)."""
        if self.examples is None and examples:
            self.examples, self.limit = list(examples), limit

    def pass_(self, test: Callable[[Any], None], limit: int) -> bool:
        """Return True if test passed on each example kept; False where none are kept for this
        number of examples, or one failed (CheckFailed, LoopRaised: Hypothesis runs the
        property then, to shrink it)."""
        if self.examples is None or self.limit != limit:
            return False
        try:
            for example in self.examples:
                test(example)
        except (CheckFailed, LoopRaised):
            return False
        return True
