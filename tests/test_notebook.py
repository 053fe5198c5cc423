"""examples/audit_in_a_notebook.ipynb runs top to bottom in a real Jupyter kernel.

Executed with nbclient and ipykernel (the notebook extra); committed without outputs, so what
it shows is what this run computed. Each audit's table is the Report's _repr_html_, and each
verdict the notebook's text promises is checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parent.parent / "examples" / "audit_in_a_notebook.ipynb"
# what each audited cell must show, in order: the pitfalls that fail ([] = all pass)
EXPECTED = [
    ("iterator", "data_iter", []),
    ("update-step", "sgd", []),
    ("loss", "squared_loss", []),
    ("loop", "train", ["short-last-batch"]),
    ("loop", "train_actual", []),
    ("update-step", "sgd_rebinding", ["rebinding"]),
    ("loop", "train_no_zero", ["grad-zeroing"]),
    ("loop", "train_once_per_epoch", ["grad-zeroing"]),
    ("training-loop", "fit_accumulated", ["short-last-batch"]),
    ("training-loop", "fit_accumulated_right", []),
]


def test_the_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.heavy
def test_the_notebook_runs_in_a_fresh_kernel_and_shows_each_verdict() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on any error
    tables = [
        o["data"]["text/html"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/html" in o.get("data", {})
    ]
    assert len(tables) == len(EXPECTED)
    for html, (kind, name, fails) in zip(tables, EXPECTED, strict=True):
        assert f"audit of {kind} __main__:{name} " in html
        failed = re.findall(
            r"<code>([a-z-]+)</code></td><td[^>]*>[^<]*</td><td[^>]*><b>✗ FAIL", html
        )
        assert failed[: len(fails)] == fails, (name, failed)
        assert bool(failed) == bool(fails), (name, failed)
    pictures = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(pictures) == 1
