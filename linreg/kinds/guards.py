"""How a target runs: its exceptions become verdicts, its RNGs are seeded and restored.

A target's exceptions become a pitfall's `CheckFailed` when they are one's symptom, else the
target's own error (`guarded`); its use of torch's, Python's and numpy's global RNGs is seeded
per example and given back (`seeded`, `kept_rngs`); torch computes on one thread while the
audit runs (`one_thread`), and torch.compile'd code runs eagerly (`eager`); every call of it
has a time limit and gives grad mode back (`bounded`, `time_limit`); its prints stay out of
the audit's output (`silenced`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from linreg.checks import CheckFailed, LoopRaised, is_symptom, where


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn an exception a target raises into a verdict: a CheckFailed when it is a pitfall's
    symptom (checks.SYMPTOMS), else LoopRaised, the target's own error, saying what raised it where.

    The target's warnings are ignored: a warning filter set to "error" (pytest's, say) must
    not turn `float(loss)` in a logging line into a verdict.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (CheckFailed, LoopRaised):
        raise
    except Exception as e:
        said = f"{what} raised {type(e).__name__}: {e}"
        if is_symptom(e):
            raise CheckFailed(said) from e
        raise LoopRaised(said + where(e)) from e


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and Python's global RNGs while a target runs; restore them, and numpy's
    (which a framework's set_seed draws), afterwards."""
    with kept_rngs():
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds CUDA: slow
        random.seed(seed)
        yield


@contextlib.contextmanager
def kept_rngs() -> Iterator[None]:
    """Give torch's, Python's and numpy's global RNGs back as they were, however code used them."""
    state = random.getstate()
    numpy = sys.modules.get("numpy")
    drawn = numpy.random.get_state() if numpy is not None else None
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state)
            if numpy is not None:
                numpy.random.set_state(drawn)


def compile_disabled() -> Callable[[], None]:
    """Run torch.compile'd code eagerly from now (a compiled graph calls no torch loss
    function a watcher could read, and compiling takes longer than an audit's runs; the math
    is the same), whether torch._dynamo is imported now or by the code; return what puts its
    setting back."""
    env = os.environ.get("TORCH_COMPILE_DISABLE")
    config = sys.modules.get("torch._dynamo.config")
    was = getattr(config, "disable", None)
    os.environ["TORCH_COMPILE_DISABLE"] = "1"  # read when the code imports torch._dynamo
    if config is not None:
        setattr(config, "disable", True)  # noqa: B010 (a module found at run time)

    def back() -> None:
        if env is None:
            os.environ.pop("TORCH_COMPILE_DISABLE", None)
        else:
            os.environ["TORCH_COMPILE_DISABLE"] = env
        now = sys.modules.get("torch._dynamo.config")
        if now is not None:  # as found; imported since: as the environment says
            setattr(now, "disable", was if was is not None else env == "1")  # noqa: B010
        dynamo = sys.modules.get("torch._dynamo")
        if config is None and dynamo is not None:  # imported since: the frames it
            with contextlib.suppress(Exception):  # skipped meanwhile are compiled when next run
                dynamo.reset()

    return back


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run torch.compile'd code eagerly inside (compile_disabled), put back after."""
    back = compile_disabled()
    try:
        yield
    finally:
        back()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's intra-op work on one thread; restore the caller's thread count afterwards.

    An audit's tensors hold a few rows: threads only contend, and on a machine where another
    job runs (a test session, a notebook beside a training run) they made one audit 12x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ended_process(e: BaseException) -> str:
    """Name how the target tried to end the process: SystemExit(0), sys.exit(...)'s code."""
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}) (sys.exit or exit() in the audited code)"
    return f"{type(e).__name__}"


class Aborted(BaseException):
    """Stop the audit now, past Hypothesis (which would replay and shrink): a run timed out.

    Its one argument is the LoopRaised to report.
    """


class Overran(BaseException):
    """Raised from the step hook once a run took more updates than four for each row it was
    handed (a budget of its own), or showed what the audit ran it for (a slow loop's probe):
    ends the loop (a BaseException, as TimeUp), and what it did is judged."""


class TimeUp(BaseException):
    """Raised inside the loop when its time is up: a BaseException, so `except Exception` in
    the loop cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[Callable[[], None]]:
    """Raise TimeUp in the block after `seconds`, in any thread; an outer limit still holds.

    Yields `again()`, which starts the `seconds` anew (a loop's progress: each update it makes
    earns it another `seconds`). In the main thread a SIGALRM timer (the handler and any outer
    timer put back after); in another thread an entry on the watchdog thread (`_Watchdog`),
    which raises TimeUp in this one when its Python code next runs.
    """
    if seconds is None:
        yield _nothing
        return
    seconds = min(seconds, _LONGEST)  # setitimer refuses what overflows its clock
    if threading.current_thread() is not threading.main_thread():
        with _thread_time_limit(seconds) as anew:
            yield anew
        return

    def ring(signum: int, frame: Any) -> None:
        raise TimeUp

    start = time.monotonic()
    left = signal.getitimer(signal.ITIMER_REAL)[0]  # an enclosing limit's time ends this one
    ends = start + left if left > 0 else math.inf

    def again() -> None:
        signal.setitimer(signal.ITIMER_REAL, max(min(seconds, ends - time.monotonic()), 1e-3))

    outer, interval = 0.0, 0.0
    previous = signal.signal(signal.SIGALRM, ring)
    try:
        outer, interval = signal.setitimer(signal.ITIMER_REAL, min(seconds, ends - start))
        yield again
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # an enclosing audit's limit: what is left of it, at least a moment
            left = outer - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), interval)


def _nothing() -> None:
    return None


_LONGEST = 1e7  # seconds (116 days): longer limits are this one


class _Watchdog:
    """One thread that raises TimeUp in the threads whose time limit is up (off the main
    thread, where there is no SIGALRM).

    A limit is an entry (its deadline, its thread), not a thread of its own: an audit sets one
    around every call and every next() of the code it runs, and a thread started for each (and
    again at each update) made an audit in a thread 9x slower. The thread runs while some block
    keeps it (`kept`: each audit, for its length) and is gone after, as the audit found the
    process.
    """

    def __init__(self) -> None:
        # a plain Lock taken by `with` in the threads it limits: a Condition's own __enter__
        # is Python code, where a TimeUp fired at a thread waiting for the lock would land
        # after the lock is taken and before the block, leaving it held (a deadlock)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._due: dict[object, tuple[float, int]] = {}  # key: (deadline, thread ident)
        self._wake = math.inf  # when the thread looks next
        self._users = 0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        with self._lock:
            self._users += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="linreg-time-limit", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                ending = self._thread if self._users == 0 else None
                if ending is not None:
                    self._thread = None
                    self._cond.notify_all()
            if ending is not None:
                ending.join()

    def set(self, key: object, seconds: float) -> None:
        """Set (or move) key's deadline to `seconds` from now, for the calling thread."""
        deadline = time.monotonic() + seconds
        with self._lock:
            self._due[key] = (deadline, threading.get_ident())
            if deadline < self._wake:
                self._cond.notify_all()

    def drop(self, key: object) -> None:
        """End key's limit: once this returns, it raises nothing more."""
        with self._lock:
            self._due.pop(key, None)

    def _run(self) -> None:
        import ctypes

        me = threading.current_thread()
        with self._cond:
            while self._thread is me:
                now = time.monotonic()
                for key, (deadline, ident) in list(self._due.items()):
                    if deadline <= now:  # under the lock: never after its block has ended
                        del self._due[key]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(ident), ctypes.py_object(TimeUp)
                        )
                self._wake = min((d for d, _ in self._due.values()), default=math.inf)
                self._cond.wait(None if self._wake == math.inf else self._wake - now)
            self._wake = math.inf


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def watchdog_kept() -> Iterator[None]:
    """Keep the time limits' thread running through the block, off the main thread (on it,
    SIGALRM needs none): each limit set inside is then an entry, not a thread started."""
    if threading.current_thread() is threading.main_thread():
        yield
        return
    with _WATCHDOG.kept():
        yield


@contextlib.contextmanager
def _thread_time_limit(seconds: float) -> Iterator[Callable[[], None]]:
    key = object()

    def again() -> None:
        _WATCHDOG.set(key, seconds)

    with _WATCHDOG.kept():  # a moment's work when an audit keeps it already
        again()
        try:
            yield again
        finally:
            _WATCHDOG.drop(key)


FLOOR = 10.0  # seconds: the least time one call of the audited code is given (timeout= sets it)
FIRST = 60.0  # seconds the first call may take, when no timeout is given: the limit's yardstick


def bounded(
    fn: Callable[..., Any], what: str, timeout: float | None, *, limited: bool = True
) -> Callable[..., Any]:
    """Return fn that cannot run forever and gives grad mode back as it found it.

    Each call may take `timeout` seconds, or 50 times the first call and at least FLOOR; an
    iterator it returns may take as long for its whole walk. Past it, the audit stops with
    the report's error (Aborted, never replayed). Grad mode is put back after each call: a
    target that turns it off for the process (torch.set_grad_enabled(False)) must not turn
    it off for the checks after it. limited=False: grad mode only (the caller bounds each run).
    """
    limit = [timeout]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        mode, start = torch.is_grad_enabled(), time.monotonic()
        if not limited:  # the caller bounds it, and handles its own TimeUp
            try:
                return fn(*args, **kwargs)
            finally:
                torch.set_grad_enabled(mode)
        seconds = limit[0] or FIRST
        try:
            with time_limit(seconds):
                got = fn(*args, **kwargs)
        except TimeUp:
            raise Aborted(_late(what, "return", seconds)) from None
        finally:
            torch.set_grad_enabled(mode)
        if limit[0] is None:
            limit[0] = max(FLOOR, 50 * (time.monotonic() - start))
        if inspect.isgenerator(got):  # its walk is the call's work (an iterator class may
            # reset itself in __iter__: left as it is)
            return _walk(got, what, limit[0] or FIRST)
        return got

    call.user_fn = fn  # type: ignore[attr-defined]
    return call


def _walk(it: Iterator[Any], what: str, seconds: float) -> Iterator[Any]:
    """Yield what it yields, for `seconds` in all: an endless iterator ends there."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:  # each next() was quick, and there is no end of them
            raise Aborted(_late(what, "end", seconds))
        try:
            with time_limit(left):
                item = next(it)
        except StopIteration:
            return
        except TimeUp:
            raise Aborted(_late(what, "end", seconds)) from None
        yield item


def _late(what: str, verb: str, seconds: float) -> LoopRaised:
    return LoopRaised(
        f"{what} did not {verb} within {seconds:g} s: an endless loop? (timeout= sets the limit)"
    )


def user_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return the user's own callable behind bounded's wrapper (fn itself otherwise)."""
    inner: Callable[..., Any] = getattr(fn, "user_fn", fn)
    return inner


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Keep the prints and progress bars of the code this thread runs out of the audit's output
    (its JSON, say); what other threads of the process write still reaches their streams."""
    sink, ident = io.StringIO(), threading.get_ident()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Routed(out, sink, ident), _Routed(err, sink, ident)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


class _Routed:
    """A stream that sends one thread's writes to a sink and the others' on to the stream."""

    def __init__(self, stream: Any, sink: io.StringIO, ident: int) -> None:
        self._stream, self._sink, self._ident = stream, sink, ident

    def _target(self) -> Any:
        return self._sink if threading.get_ident() == self._ident else self._stream

    def write(self, text: str) -> int:
        return int(self._target().write(text))

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno: the stream's own
        return getattr(self._stream, name)
