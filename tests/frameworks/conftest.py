"""The framework tests: run by `tox -e frameworks` only (tests/conftest.py leaves them out).

The frameworks' own warnings (deprecations inside torch's pytree, Lightning's advice on
DataLoader workers) are theirs, not this suite's: ignored here, kept as errors elsewhere.
"""

from __future__ import annotations

import pytest

FRAMEWORK_WARNINGS = (
    "ignore::FutureWarning",
    "ignore::DeprecationWarning",
    "ignore::UserWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for rule in FRAMEWORK_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(rule))
