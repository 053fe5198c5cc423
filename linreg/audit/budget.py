"""The time an audit's properties share at the default examples (Budget): a slow target's
audit (a loop that evaluates after every step) ends near BUDGET seconds, each property after
FEWEST examples at least, and the report says what was cut."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

__all__ = ["BUDGET", "FEWEST", "Budget"]

# At the default examples, an audit of a slow target (a loop that evaluates after every step)
# fits its properties into about BUDGET seconds: each property runs until its share of what is
# left is spent, never fewer than FEWEST examples (a slow target's: the few that hold what
# every property judges, Options.first_examples), and the report says so (Budget).
BUDGET = 6.0
FEWEST = 8


class Budget:
    """The time an audit's properties share at the default examples: each property runs until
    another example, as long as the longest so far, would end past its share of what is left
    (after FEWEST examples at least), so that a slow target
    (a loop that evaluates after every step) ends the audit near BUDGET s; what was cut is said.

    Where the properties draw one strategy (whole=True: the training-loop kind's), the first
    makes the runs the others read, so each runs until half the time left is spent (the rest
    for what the others add: references, a run of one epoch): an even share would cut the
    first, which pays for all, and leave the others' unused."""

    def __init__(self, properties: int, *, whole: bool = False, fewest: int = FEWEST) -> None:
        self.left, self.spent, self.until = properties, 0.0, math.inf
        self.longest = 0.0  # seconds: the audit's longest example so far
        self.cut: list[int] = []
        self.examples = 0
        self.whole = whole
        self.fewest = fewest  # a slow target's: its first examples (Options.first_examples)

    @contextlib.contextmanager
    def share(self) -> Iterator[Budget]:
        """Give the next property its share of the time left, and count what it took."""
        start = time.perf_counter()
        left = max(BUDGET - self.spent, 0.0)
        self.until = start + (left / 2 if self.whole else left / max(self.left, 1))
        try:
            yield self
        finally:
            self.spent += time.perf_counter() - start
            self.left = max(self.left - 1, 0)

    def over(self, examples: int) -> bool:
        """Return True if the property has run its fewest examples and another, as long as the
        longest example of the audit so far, would end past its share (a run the properties
        share costs its first reader alone: a slow loop's next one may take seconds)."""
        return examples >= self.fewest and time.perf_counter() + self.longest > self.until

    def took(self, seconds: float) -> None:
        """Count one example's time."""
        self.longest = max(self.longest, seconds)

    def ran(self, examples: int, cut: bool) -> None:
        self.examples += examples
        if cut:
            self.cut.append(examples)

    def note(self) -> str:
        """Return what was cut and why, for the report ("" if nothing was)."""
        if not self.cut:
            return ""
        cost = self.spent / max(self.examples, 1)
        ran = f"{min(self.cut)}-{max(self.cut)}" if len(self.cut) > 1 else f"{self.cut[0]}"
        which = f"{len(self.cut)} properties" if len(self.cut) > 1 else "1 property"
        if self.spent <= BUDGET * 1.25:
            return (
                f"{which} ran {ran} examples and passed over the rest, to end near {BUDGET:g} "
                f"s: the target took {cost * 1000:.0f} ms an example (max_examples= runs as "
                "many as you ask)"
            )
        fewest = ", the fewest each runs," if max(self.cut) <= self.fewest else ""
        return (  # past the aim (the fewest examples cost more): said, not hidden
            f"{which} ran {ran} examples{fewest} and passed over the rest: the "
            f"target took {cost * 1000:.0f} ms an example, so the properties took "
            f"{self.spent:.0f} s, past the {BUDGET:g} s aimed at (max_examples= runs as many as "
            "you ask)"
        )
