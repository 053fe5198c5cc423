"""The DDP harness's ranks end with the process that started them, killed or not: forked from
a forkserver, their parent is the server, which torch's death signal (PR_SET_PDEATHSIG, set
for the parent) then names, and which outlived a killed test process with its ranks (code
review cr37: a `hangs` group ran on for its 600 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linreg.pitfalls import _spawn

ROOT = Path(__file__).resolve().parent.parent

STARTER = """
import os, signal, sys
from linreg.pitfalls import _spawn
from tests import ddp_support
_spawn.serve_from_a_forkserver("tests.ddp_support")
started = _spawn.start(ddp_support.hangs, 2, 600.0)
with open(sys.argv[1], "w") as f:
    f.write(" ".join(str(p.pid) for p in started.context.processes))
os.kill(os.getpid(), signal.SIGKILL)  # no join, no clean-up: killed
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended


@pytest.mark.distributed
@pytest.mark.skipif(not _spawn.gloo_available(), reason="gloo is not available")
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ddp_ranks_forked_from_a_forkserver_end_when_their_starter_is_killed(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    ended = subprocess.run(
        [sys.executable, "-c", STARTER, str(pids)],
        cwd=ROOT,
        # (its rendezvous folder, which a killed starter cannot remove, left in tmp_path)
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # (no pipe a survivor could hold open)
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    assert ended.returncode == -signal.SIGKILL
    ranks = [int(p) for p in pids.read_text().split()]
    assert len(ranks) == 2
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in ranks if _running(pid)]
    for pid in left:  # (not to leave them running if the test fails)
        os.kill(pid, signal.SIGKILL)
    assert left == []
