"""Live demonstrations: each pitfall's properties on the book's example, and its measured story.

`demonstrate(pitfall)` checks every property that has a book example against linreg's own
targets (each must hold) and against the wrong variants (each must be refuted, there and then),
and runs the pitfall's own `demo` for the figures: what the catalogue says should happen, what
was observed, and loss curves where there are some. `show(ids)` runs the chosen ones, as
`python -m linreg pitfalls` does; its exit code is 1 if any disagrees, so the command doubles
as a compatibility check across torch versions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from linreg.checks import CheckFailed
from linreg.pitfalls import BY_ID, CATALOGUE, Evidence, Pitfall, Property, Target, _spawn

__all__ = ["DEMOS", "Evidence", "Shown", "demonstrate", "show", "verdicts"]


def verdicts(prop: Property) -> list[dict[str, Any]]:
    """Check prop on its book example against each own target and each wrong variant."""
    if prop.book is None:
        return []
    cases: list[tuple[str, Target]] = [("holds", t) for t in prop.holds_for]
    cases += [("refuted", v.target) for v in prop.refuted_by]
    rows = []
    for expected, target in cases:
        if prop.applies(target.options) is not None:
            continue
        try:
            prop.check(target, prop.book())
            held, message = True, ""
        except CheckFailed as e:
            held, message = False, str(e)
        rows.append(
            {
                "property": prop.name,
                "target": str(target),
                "expected": expected,
                "held": held,
                "ok": held == (expected == "holds"),
                "message": message,
            }
        )
    return rows


def demonstrate(pitfall: Pitfall) -> Evidence:
    """Shown a pitfall's demonstration and check its properties on the book's example."""
    evidence = pitfall.demo()
    if evidence.skipped:
        return evidence
    for prop in pitfall.properties:
        evidence.properties += verdicts(prop)
    evidence.ok = evidence.ok and all(row["ok"] for row in evidence.properties)
    return evidence


DEMOS: dict[str, Callable[[], Evidence]] = {p.id: partial(demonstrate, p) for p in CATALOGUE}


@dataclass
class Shown:
    """One demonstration's evidence and how long it took."""

    evidence: Evidence
    seconds: float


def show(ids: Sequence[str], progress: Callable[[int, str], None] | None = None) -> list[Shown]:
    """Run the chosen pitfalls' demonstrations in catalogue order and time each.

    Slow work a pitfall can start early (its processes) starts first and runs while the others
    do. A demonstration that crashes did not behave as documented: it is reported, not raised.
    """
    for pitfall_id in ids:
        early = BY_ID[pitfall_id].start_early
        if early is not None:
            early()
    try:
        return _shown(ids, progress)
    except KeyboardInterrupt:  # Ctrl-C: the processes started early are not waited for
        _spawn.end_all()
        raise


def _shown(ids: Sequence[str], progress: Callable[[int, str], None] | None) -> list[Shown]:
    shown = []
    for k, pitfall_id in enumerate(ids, 1):
        if progress is not None:
            progress(k, pitfall_id)
        start = time.perf_counter()
        try:
            evidence = DEMOS[pitfall_id]()
        except Exception as e:
            evidence = Evidence(
                id=pitfall_id,
                expected="the demonstration runs",
                observed=f"raised {type(e).__name__}: {e}",
                ok=False,
            )
        shown.append(Shown(evidence, time.perf_counter() - start))
    return shown
