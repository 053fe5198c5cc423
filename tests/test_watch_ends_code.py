"""The watch ends the code it watches once it has what it needs, by raising from torch's seams
(Enough, a BaseException). Code that catches every exception (a bare `except:` around each
step) is ended again at its next seam, and what it does after the first end (a zero_grad()
the catch skipped) is never read as its training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from linreg.audit.watcher import watch_script
from linreg.kinds.watched.steps import MOST_CAUGHT

EPOCHS = 30
BATCHES = 13  # 200 rows in batches of 16: 12 full ones and one of 8

# each step inside a try whose bare except logs and skips the batch (a "robust" loop: a bad
# batch must not kill a long run), zero_grad() after the step, as many scripts write it
# a regression's data, model and optimizer, each script's start
REGRESSION = """
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
"""

SKIPS_A_BAD_BATCH = (
    REGRESSION
    + f"""loss_fn = nn.MSELoss()

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
)


def _run(tmp_path: Path, code: str, steps: int | None = None) -> tuple[str, str | None]:
    script, out = tmp_path / "train.py", tmp_path / "steps.txt"
    script.write_text(code)
    report = watch_script(str(script), [str(out)], steps=steps)
    return str(report), out.read_text() if out.exists() else None


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
    assert f"end more than {MOST_CAUGHT} times" in shown, shown
    assert "and went on unread" in shown, shown
    assert "0 failed" in shown and "watched 8 update(s)" in shown, shown


def test_code_that_catches_the_end_and_then_runs_out_is_said_to_run_on(tmp_path: Path) -> None:
    """Batches listed before training, 3 updates watched: the end, raised at the third
    step, and each step after it are caught until the list runs out and the script ends on
    its own, as the note says (not "ended")."""
    code = SKIPS_A_BAD_BATCH.replace(
        "for epoch in range(", "batches = list(loader)[:6]\nfor epoch in range("
    ).replace("    for x, y in loader:\n", "    for x, y in batches:\n")
    shown, steps = _run(tmp_path, code.replace(f"range({EPOCHS})", "range(1)"), steps=3)
    assert steps == "2", (shown, steps)  # the third step's end and the 3 after it caught
    assert "watched 3 update(s) (then the code caught the watch's end 4 time(s)" in shown, shown
    assert "and went on unread" in shown, shown


# the run in a try whose finally evaluates and saves, whatever ended it (an interrupt too)
EVALUATES_IN_FINALLY = (
    REGRESSION
    + """held_out = DataLoader(TensorDataset(features[:64], labels[:64]), batch_size=32)

try:
    for epoch in range(5):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
finally:
    with torch.no_grad():
        rows = sum(len(y) for _, y in held_out)
        loss = sum(nn.functional.mse_loss(model(x), y, reduction="sum") for x, y in held_out)
    torch.save({"model": model.state_dict(), "held-out loss": loss / rows}, sys.argv[1])
"""
)


def test_a_finally_that_evaluates_and_saves_runs_as_it_would(tmp_path: Path) -> None:
    """The end unwinds through the code's `finally`: its evaluation fetches its batches and
    its checkpoint is saved, nothing raised again or read there (review cr62 found the
    evaluation's first fetch raising again, and no checkpoint)."""
    script, checkpoint = tmp_path / "train.py", tmp_path / "last.pt"
    script.write_text(EVALUATES_IN_FINALLY)
    shown = str(watch_script(str(script), [str(checkpoint)]))
    saved = torch.load(checkpoint)
    assert float(saved["held-out loss"]) > 0, saved
    assert "watched 14 update(s) (then ended the code)\n" in shown, shown


# batches fetched ahead on a thread of their own, as a background prefetcher does
PREFETCHED = SKIPS_A_BAD_BATCH.replace(
    "steps = 0\n",
    '''steps = 0


def ahead(batches, depth=4):
    """Yield the batches, fetched on a thread of their own up to depth ahead."""
    import queue
    import threading

    fetched = queue.Queue(depth)

    def fetch():
        for batch in batches:
            fetched.put(batch)
        fetched.put(None)

    threading.Thread(target=fetch, daemon=True).start()
    while (batch := fetched.get(timeout=60)) is not None:  # (its thread dead: raises)
        yield batch


''',
).replace("    for x, y in loader:\n", "    for x, y in ahead(loader):\n")


def test_a_thread_that_fetches_ahead_is_never_ended_by_the_watch(tmp_path: Path) -> None:
    """The end is raised again on the thread it was first raised on alone: the fetching
    thread goes on (review cr62: raised there, it died, and the code waited for its batches
    for ever), while the training thread catches it each step until it runs on unread."""
    shown, steps = _run(tmp_path, PREFETCHED)
    # every step the script's but the end's and the MOST_CAUGHT after it: run to its end
    assert steps == str(EPOCHS * BATCHES - 1 - MOST_CAUGHT), (shown, steps)
    assert "0 failed" in shown and f"end more than {MOST_CAUGHT} times" in shown, shown


def test_an_update_by_hand_that_catches_its_end_is_ended_again(tmp_path: Path) -> None:
    """The end of code that updates its params by hand (nothing the watch can read) is raised
    again as any other is (review cr62: each backward() after it raised it again, caught, for
    the rest of the run, the note silent)."""
    code = SKIPS_A_BAD_BATCH.replace(
        "            optimizer.step()\n            optimizer.zero_grad()\n",
        "            with torch.no_grad():\n"
        "                for p in model.parameters():\n"
        "                    p -= 0.05 * p.grad\n"
        "                    p.grad = None\n",
    )
    shown, steps = _run(tmp_path, code)
    assert "ERROR the params moved, yet no torch optimizer stepped" in shown, shown
    assert "(then ended the code, which caught that end 1 time(s)" in shown, shown
    assert steps is None, (shown, steps)
    assert "--steps watches more" not in shown, shown  # (no update: more would show none)


# training in a function, and a bare except around it that trains again, raises an error
# of its own, or exits
HANDLED = (
    REGRESSION
    + """

def train(epochs):
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()


try:
    train(30)
except:  # noqa: E722
HANDLER
with open(sys.argv[1], "w") as out:
    out.write("trained")
"""
)


@pytest.mark.parametrize(
    "handler",
    ["    train(1)  # once more", "    raise RuntimeError('training failed')", "    sys.exit(1)"],
    ids=["trains-again", "raises-its-own", "exits"],
)
def test_a_handler_of_the_end_that_trains_again_or_raises_its_own_ends_as_the_end(
    tmp_path: Path, handler: str
) -> None:
    """Raised again at the handler's first optimizer step (a retry would train anew, to its
    end, unread: review cr64), and an error or exit the handler raises from the end is the
    end (before, the script was said to raise, exit 1 on correct code)."""
    shown, steps = _run(tmp_path, HANDLED.replace("HANDLER", handler))
    assert steps is None, (shown, steps)
    assert "0 failed" in shown and "ERROR" not in shown, shown
    assert "watched 14 update(s) (then ended the code)\n" in shown, shown
