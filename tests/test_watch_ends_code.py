"""The watch ends the code it watches once it has what it needs, by raising from torch's seams
(Enough, a BaseException). Code that catches every exception (a bare `except:` around each
step) is ended again at its next seam, and what it does after the first end (a zero_grad()
the catch skipped) is never read as its training."""

from __future__ import annotations

from pathlib import Path

from linreg.audit.watcher import watch_script
from linreg.kinds.watched.steps import MOST_CAUGHT

EPOCHS = 30
BATCHES = 13  # 200 rows in batches of 16: 12 full ones and one of 8

# each step inside a try whose bare except logs and skips the batch (a "robust" loop: a bad
# batch must not kill a long run), zero_grad() after the step, as many scripts write it
SKIPS_A_BAD_BATCH = f"""
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
features = torch.randn(200, 3)
labels = features @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1
loader = DataLoader(TensorDataset(features, labels), batch_size=16, shuffle=True)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss()

steps = 0
for epoch in range({EPOCHS}):
    for x, y in loader:
        try:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
        except:  # noqa: E722
            print("skipped a bad batch", file=sys.stderr)
with open(sys.argv[1], "w") as out:
    out.write(str(steps))
"""


def _run(tmp_path: Path, code: str) -> tuple[str, str | None]:
    script, steps = tmp_path / "train.py", tmp_path / "steps.txt"
    script.write_text(code)
    report = watch_script(str(script), [str(steps)])
    return str(report), steps.read_text() if steps.exists() else None


def test_a_loop_that_catches_every_exception_is_ended_again_and_passes(tmp_path: Path) -> None:
    """The first end, raised from the step's hook, skips that batch's zero_grad(); read on,
    the next update would apply two batches (grad-zeroing, where stop 61's watch failed it)."""
    shown, steps = _run(tmp_path, SKIPS_A_BAD_BATCH)
    assert "0 failed" in shown, shown
    assert (
        f"watched {BATCHES + 1} update(s) (then ended the code, which caught that end 1 time(s)"
    ) in shown, shown
    assert steps is None  # ended: the script's last lines never ran


def test_a_loop_that_catches_every_exception_and_never_zeroes_fails_grad_zeroing(
    tmp_path: Path,
) -> None:
    shown, _ = _run(tmp_path, SKIPS_A_BAD_BATCH.replace("optimizer.zero_grad()\n", "pass\n"))
    assert "1 failed" in shown and "FAIL grad-zeroing" in shown, shown
    assert "caught that end 1 time(s)" in shown, shown


# a budget of steps over an iterator fetched by hand, every step in one try that catches all
# and moves on: a batch that fails to load, or a step that fails, costs that step alone
CATCHES_ALL_FETCHES_TOO = """
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
features = torch.randn(100, 3)
labels = features @ torch.tensor([[1.0], [-2.0], [0.5]])
loader = DataLoader(TensorDataset(features, labels), batch_size=16, shuffle=True)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

batches = iter(loader)
steps = 0
while steps < 500:
    try:
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        steps += 1
    except:  # noqa: E722
        continue
with open(sys.argv[1], "w") as out:
    out.write(str(steps))
"""


def test_a_loop_that_catches_the_end_every_time_runs_on_to_its_end_unread(
    tmp_path: Path,
) -> None:
    """Raised again at every seam, this code would never end (its fetch is in the try): after
    MOST_CAUGHT catches it runs to its own end, read no more, and the report says so."""
    shown, steps = _run(tmp_path, CATCHES_ALL_FETCHES_TOO)
    assert steps == "500", (shown, steps)
    assert f"more than {MOST_CAUGHT} times: it ran on to its own end unread" in shown, shown
    assert "0 failed" in shown and "watched 8 update(s)" in shown, shown
