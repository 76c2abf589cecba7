"""Child processes that cannot outlive the run that forked them.

Lava's CPU runtime forks its model processes, runtime services and a
shared-memory manager with ``multiprocessing`` (lava-nc 0.10,
``lava/magma/runtime/message_infrastructure/multiprocessing.py``). If the
parent is killed (``kill -9``) or ends on an unhandled SIGTERM, nothing tells
them: they wait on their channels forever and keep the shared-memory
segments of the channels alive.

:func:`children_die_with_parent` makes every process forked inside it ask the
kernel for SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``,
see prctl(2)); once all of them are gone, multiprocessing's resource tracker
reads end-of-file on its pipe, unlinks the segments still registered and
exits, so neither processes nor /dev/shm entries are left.

:func:`terminate_as_interrupt` turns SIGTERM into :class:`Terminated`, an
exception, so a terminated run unwinds through the same ``finally`` blocks
(``runtime.stop()``) as an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_guarded = 0          # > 0 while some thread is inside children_die_with_parent()
_fork_parent = 0      # pid of the process that is forking (set before each fork)
_hook_installed = False
_lock = threading.Lock()


class Terminated(BaseException):
    """The process received SIGTERM (a BaseException, like KeyboardInterrupt,
    so ``except Exception`` handlers do not swallow it)."""

    exit_code = 128 + signal.SIGTERM


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()


def _after_fork_in_child() -> None:
    if _guarded <= 0:
        return
    _set_parent_death_signal()
    # The parent may have died between fork() and prctl(); the signal would
    # then never come.
    if os.getppid() != _fork_parent:
        os._exit(1)


def _install_hook() -> None:
    global _hook_installed
    with _lock:
        if not _hook_installed:
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
            _hook_installed = True


@contextlib.contextmanager
def children_die_with_parent() -> Iterator[None]:
    """Processes forked inside this block get SIGKILL when their parent dies.

    The death signal follows the forking *thread* (prctl(2)): fork from a
    thread that outlives the children (the main thread, as Lava does)."""
    global _guarded
    _install_hook()
    with _lock:
        _guarded += 1
    try:
        yield
    finally:
        with _lock:
            _guarded -= 1


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside this block (main thread
    only; elsewhere the default action stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def deferred_signals() -> Iterator[list]:
    """Hold SIGTERM and SIGINT while cleaning up (so a second signal cannot
    interrupt ``stop()`` half-way); the signals that arrived are listed and
    re-raised by the caller. Main thread only."""
    arrived: list = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return

    def hold(signum, frame):  # noqa: ARG001
        arrived.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield arrived
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def raise_for(signals: list) -> None:
    """Re-raise the first deferred signal as the exception it stands for."""
    if not signals:
        return
    if signals[0] == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"terminated by signal {signals[0]}")
