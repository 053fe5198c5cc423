"""`refutes`: assert that Hypothesis finds a counterexample to a property."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from linreg.checks import CheckFailed

T = TypeVar("T")


def refutes(
    strategy: st.SearchStrategy[T], prop: Callable[[T], Any], *, max_examples: int = 100
) -> T:
    """Return an example on which prop raises CheckFailed; fail the test if none is found.

    The property must fail by its own check, not by crashing: any other exception propagates.
    """

    def fails(example: T) -> bool:
        try:
            prop(example)
        except CheckFailed:
            return True
        return False

    try:
        return find(
            strategy,
            fails,
            settings=settings(
                max_examples=max_examples,
                database=None,
                deadline=None,
                derandomize=settings.default.derandomize,
                # no shrinking: any counterexample refutes, and shrinking costs most of the time
                phases=(Phase.generate,),
            ),
        )
    except NoSuchExample:
        pytest.fail(
            f"Hypothesis found no counterexample in {max_examples} examples: "
            "the property has no teeth against this variant"
        )
