"""Run directories that lose nothing.

* A run directory is created by ``train`` or recognized as a run (its
  ``config.json`` holds a ``spec`` and a ``train`` table); any other
  non-empty directory is refused, so ``--out`` pointing at the user's own
  files cannot delete or overwrite them.
* One writer at a time: :class:`RunLock` holds an exclusive ``flock`` on
  ``run_dir/.lock`` for the whole run; a second ``train`` on the same
  directory stops with a one-line error instead of interleaving metrics and
  checkpoints. The kernel drops the lock when the holder dies (even kill -9),
  so a crashed run never blocks its resumption.
* Temporary files of an interrupted atomic write (``.NAME.*.tmp``, see
  :func:`eprop_lava.training.atomic_write_bytes`) are removed by the next run
  that holds the lock: nobody else can be writing them.
* The metrics log is append-only JSON lines; only its last line may be torn
  (a crash in the middle of a write). :func:`read_metrics` refuses any other
  damage and names the line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Callable

from eprop_lava.errors import UserError

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"


class RunDirError(UserError):
    """A run directory that cannot be used as asked (not a run, in use, damaged)."""


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run written by ``train`` (its config.json)."""
    try:
        data = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("spec"), dict) and isinstance(data.get("train"), dict)


def _is_scratch(name: str) -> bool:
    """Files a run leaves that carry no user data: its lock, interrupted temporaries."""
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def check_run_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a usable run directory (created if missing), or a RunDirError."""
    return check_output_dir(path, is_run_dir, "a run", option)


def check_output_dir(path: str | Path, is_ours: Callable[[Path], bool], what: str, option: str = "--out") -> Path:
    """``path`` as the output directory of a command: created if missing, used
    if empty (but for scratch files) or if ``is_ours(path)`` recognizes an
    earlier output of the same command; anything else is refused untouched."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{option} {path}: exists and is not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"{option} {path}: {parent} is not a directory")
            break
    if path.is_dir():
        entries = [e.name for e in path.iterdir() if not _is_scratch(e.name)]
        if entries and not is_ours(path):
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise RunDirError(f"{option} {path}: a non-empty directory that is not {what} (holds {shown}); "
                              "choose a new or empty directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunLock:
    """Exclusive lock on a run directory for as long as the run writes to it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"{self.run_dir} is in use by another train process (pid {holder}); "
                                  "wait for it to finish or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing drops the flock
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temporaries(run_dir: str | Path) -> list[str]:
    """Delete ``.NAME.*.tmp`` files left by an interrupted atomic write (call
    only while holding the run's lock). Returns the names removed."""
    removed = []
    for entry in Path(run_dir).iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry.name)
            except FileNotFoundError:
                pass
    return sorted(removed)


def read_metrics(path: str | Path, upto: int | None = None) -> list[dict]:
    """The rows of a metrics log (with ``iteration <= upto`` if given). A torn
    last line is dropped; any other unreadable line is a RunDirError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise RunDirError(f"{path}: line {line} is not text; the metrics log is damaged") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip("\0 "):
        lines.pop()  # the trailing newline, or zeros a crash left after the end of the data
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            iteration = row.get("iteration", 0)
            if isinstance(iteration, bool) or not isinstance(iteration, (int, float)):
                raise ValueError(f"iteration {iteration!r} is not a number")
        except ValueError as exc:
            if number == len(lines):
                break  # torn by a crash in the middle of the write
            raise RunDirError(f"{path}: line {number} is damaged ({exc}); only a torn last line "
                              "can be repaired, fix or remove the file") from None
        if upto is None or iteration <= upto:
            rows.append(row)
    return rows
