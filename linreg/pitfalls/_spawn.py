"""Run a function in R local processes joined by torch.distributed (gloo), with a hard timeout.

Not a launcher for real jobs: the tests and the report use it to run DDP on one machine. It is
torch.multiprocessing.spawn(join=False) with a file:// rendezvous (no port to race for): the
first rank that fails ends the others, and the error names it (a signal, an exit code, or the
child's traceback); a group that outlives the timeout is killed. Nothing is left running: a
rank ends at once on Ctrl-C (even inside a collective, where gloo would wait its 30 s), and
`end_all()` ends the groups still running when their parent is interrupted.

Each spawned rank imports torch and DDP afresh (about 2.4 s of CPU). A process that starts many
groups, as a test session does, can call `serve_from_a_forkserver()` once: its ranks are then
forked from one server process that imported them once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.spawn import (
    ProcessContext,
    ProcessExitedException,
    ProcessRaisedException,
    start_processes,
)


class DistributedFailure(RuntimeError):
    """A rank died, failed, or the group did not finish in time; all ranks were ended.

    `tracebacks` holds each rank that raised: its own traceback, as the child printed it.
    """

    def __init__(self, message: str, tracebacks: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.tracebacks = tracebacks or {}


def gloo_available() -> bool:
    """Return whether torch.distributed with the gloo backend can be used here."""
    return bool(torch.distributed.is_available() and torch.distributed.is_gloo_available())


def _entry(
    rank: int, world_size: int, folder: str, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    # Ctrl-C in a terminal reaches every rank: end now, not at the collective's timeout (one
    # that came while the rank was started, held back until here, ends it now too)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # end with the process that started it, killed or not: torch's death signal
    # (PR_SET_PDEATHSIG) names a rank's parent, and a rank forked by the forkserver has the
    # server as its parent, which outlives a killed starter
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        threading.Thread(target=_orphaned, args=(parent.sentinel,), daemon=True).start()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)  # R processes on a small machine: no oversubscription
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=30),
    )
    try:
        torch.save(fn(rank, world_size, *args), Path(folder) / f"rank{rank}.pt")
        torch.distributed.barrier()  # leave together: no rank tears down under another's feet
    finally:
        torch.distributed.destroy_process_group()
    # Skip the interpreter's teardown: gloo's threads can abort it ("terminate called without
    # an active exception", seen once under load). The result is saved; exit cleanly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _orphaned(sentinel: int) -> None:
    """Wait until the process that started this rank has ended, then end the rank."""
    multiprocessing.connection.wait([sentinel])
    os.kill(os.getpid(), signal.SIGKILL)


def _failures(context: ProcessContext, e: Exception) -> DistributedFailure:
    """Name every rank that failed on its own: signal deaths first (the likely cause), then the
    ranks that raised, those that only lost a peer (gloo's transport errors) last."""
    found: list[tuple[int, int, str]] = []
    for rank, p in enumerate(context.processes):
        code = p.exitcode
        cause = isinstance(e, ProcessExitedException) and rank == e.error_index
        # SIGTERM is how the context ends the others: not a cause, unless the first to fail
        if code is not None and code < 0 and (cause or code != -signal.SIGTERM):
            found.append((0, rank, f"rank {rank} was killed by {signal.Signals(-code).name}"))
        elif cause:
            found.append((0, rank, f"rank {rank} exited with code {code}"))
    tracebacks = {}
    for rank, path in enumerate(context.error_files):
        if os.access(path, os.R_OK):
            with open(path, "rb") as f:
                tracebacks[rank] = str(pickle.load(f))
            last = tracebacks[rank].strip().splitlines()[-1]
            found.append((2 if "gloo" in last else 1, rank, f"rank {rank} raised {last}"))
    message = "; ".join(text for _, _, text in sorted(found)) + "; all ranks were ended"
    return DistributedFailure(message, tracebacks)


def spawn(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 60.0) -> list[Any]:
    """Run fn(rank, world_size, *args) in world_size processes; return each rank's result.

    fn must be importable by name (a module's top-level function): "spawn" pickles it.
    """
    return start(fn, world_size, *args).join(timeout)


_RUNNING: set[ProcessContext] = set()  # groups started and not yet joined

# how `start` makes the ranks when not forking; see serve_from_a_forkserver
_method = "spawn"


def serve_from_a_forkserver(*preload: str) -> None:
    """Fork every later group's ranks from one forkserver process that imports torch, DDP and
    `preload` (module names) once, when the first group starts, instead of spawning each rank.

    The server lives until this process exits, and the forkserver's preload list is the whole
    process's setting: the library never calls this itself (a notebook's ranks are spawned and
    leave nothing behind); a test session does (tests/conftest.py). Where the platform has no
    forkserver (Windows), ranks are still spawned.
    """
    global _method
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.set_forkserver_preload(
        # torch._dynamo: the first optimizer a rank builds imports it (about 1 s)
        [__name__, "linreg.pitfalls._ddp", "torch.nn.parallel", "torch._dynamo", *preload]
    )
    _method = "forkserver"


def end_all() -> None:
    """Kill the ranks of every group still running (their joins then report it): the parent
    was interrupted and will not wait for them."""
    for context in list(_RUNNING):
        for p in context.processes:
            if p.is_alive():
                p.kill()


class Started:
    """Ranks started by `start`: `join(timeout)` waits for them and returns their results."""

    def __init__(self, context: ProcessContext, folder: tempfile.TemporaryDirectory[str]) -> None:
        self.context, self.folder = context, folder

    def join(self, timeout: float = 60.0) -> list[Any]:
        """Wait for every rank (ending them all past timeout); return each rank's result."""
        with self.folder as folder:
            return _join(self.context, folder, timeout)


def start(fn: Callable[..., Any], world_size: int, *args: Any, fork: bool = False) -> Started:
    """Start fn(rank, world_size, *args) in world_size processes, spawned (or forked from the
    forkserver, see serve_from_a_forkserver), or forked from this one (fork=True: it has imported
    what the ranks need, and must run no other thread yet)."""
    if not gloo_available():
        raise DistributedFailure("torch.distributed with the gloo backend is not available")
    folder = tempfile.TemporaryDirectory(prefix="linreg-ddp-")
    # Ctrl-C held back while the ranks start: a child's Python handler, inherited, would
    # raise it inside its own start-up (a traceback from threading's _after_fork); the parent
    # gets it once they are started, and each rank when _entry lets it through. (A forkserver
    # started here inherits the mask too, and so do the ranks it forks.)
    held = hasattr(signal, "pthread_sigmask")
    if held:
        # (the resource tracker first: starting it unblocks SIGINT, and a forkserver or the
        # ranks started after that would not inherit the mask)
        multiprocessing.resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        # torch.multiprocessing.spawn(..., join=False), which is start_processes with "spawn"
        context: ProcessContext = start_processes(  # type: ignore[no-untyped-call]
            _entry,
            args=(world_size, folder.name, fn, args),
            nprocs=world_size,
            join=False,
            start_method="fork" if fork else _method,
        )
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _RUNNING.add(context)
    return Started(context, folder)


def _join(context: ProcessContext, folder: str, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    try:
        while not context.join(
            timeout=min(max(deadline - time.monotonic(), 0), 0.5), grace_period=2
        ):
            if time.monotonic() >= deadline:
                running = [r for r, p in enumerate(context.processes) if p.is_alive()]
                raise DistributedFailure(
                    f"timed out after {timeout:g} s with ranks {running} still running; "
                    "all ranks were ended"
                )
    except (ProcessExitedException, ProcessRaisedException) as e:
        raise _failures(context, e) from e
    finally:
        _RUNNING.discard(context)
        for p in context.processes:
            if p.is_alive():
                p.kill()
            p.join()
        for path in context.error_files:  # torch's, one per rank, read above: left nowhere
            with contextlib.suppress(OSError):
                os.unlink(path)
    ranks = range(len(context.processes))
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in ranks]
