"""Feedback during long work: a progress bar on a terminal, plain log lines
everywhere else, and the expected cost before slow work starts.

* On a terminal (stderr is a TTY) :class:`Progress` draws a ``tqdm.auto``
  bar (a widget in a notebook).
* When stderr is not a terminal (nohup, SLURM, a subprocess, a pipe) it
  writes one plain line to stderr once the work has lasted 10 s, then at
  most every ``EPROP_LAVA_LOG_SECONDS`` seconds (default 30), and at the
  end (work that ends within 10 s stays quiet, as does the bar)::

      train evidence: 40/300 it (13%), 9.1 s elapsed, 0.23 s/it, ~60 s left, loss=0.412

* Every line (and every :func:`note`) is also appended to the log file of the
  current run (``RUN/log.txt``, ``ARTIFACT/log.txt``; see :func:`log_file`),
  one ``write`` per line on a file opened with ``O_APPEND``, so concurrent
  writers never interleave within a line.

Expected costs (:data:`COSTS`) are documented measurements on the 2-core
development machine (docs/benchmarks.md); commands print them, labelled as
documented, before slow work, and measured figures once the first steps ran.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, TextIO

DEFAULT_LOG_SECONDS = 30.0
DEFAULT_DELAY_SECONDS = 10.0   # no progress on stderr for work that ends sooner

# (low, high) seconds, documented measurements (docs/benchmarks.md):
COSTS = {
    # torch autograd, full graph, 100 ALIF/LIF neurons, batch 32 x 2250 steps (evidence):
    # 16.7-18.6 s idle, up to ~27 s while other processes share the two cores
    "bptt_iteration_evidence": (17.0, 27.0),
    # Lava Loihi2SimCfg(select_tag="fixed_pt") on CPU, per time step of one sample
    # (docs/benchmarks.md idle, docs/fixed_point.md under load): inference 1.3-2.2 ms,
    # online e-prop learning 2.7-5.4 ms
    "lava_inference_step": (1.3e-3, 2.2e-3),
    "lava_learning_step": (2.7e-3, 5.4e-3),
}
BPTT_REFERENCE_SAMPLE_STEPS = 32 * 2250   # the batch x steps that bptt_iteration_evidence was measured at

_current_log: list[Path] = []


def log_seconds() -> float:
    """Seconds between plain log lines (``EPROP_LAVA_LOG_SECONDS``)."""
    try:
        value = float(os.environ.get("EPROP_LAVA_LOG_SECONDS", DEFAULT_LOG_SECONDS))
    except ValueError:
        return DEFAULT_LOG_SECONDS
    return value if value >= 0 else DEFAULT_LOG_SECONDS


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def log_file(path: str | Path | None) -> Iterator[Path | None]:
    """Within the block, notes and progress lines are also appended to ``path``."""
    if path is None:
        yield None
        return
    path = Path(path)
    _current_log.append(path)
    try:
        yield path
    finally:
        _current_log.remove(path)


def current_log_file() -> Path | None:
    return _current_log[-1] if _current_log else None


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single write on an O_APPEND descriptor (atomic
    with respect to other appenders; the file is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _stamp(line: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + line


def note(message: str, stream: TextIO | None = None, echo: bool = True) -> None:
    """One line to stderr (if ``echo``) and to the current run's log file."""
    if echo:
        print(message, file=sys.stderr if stream is None else stream, flush=True)
    path = current_log_file()
    if path is not None:
        append_line(path, _stamp(message))


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # nan, inf
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_range(low: float, high: float) -> str:
    a, b = format_seconds(low), format_seconds(high)
    return a if a == b else f"{a}-{b}"


def bptt_estimate(batch_size: int, steps: int, iterations: int) -> str:
    """The documented BPTT cost scaled to this run's batch x steps (the
    cost grows with the number of sample-steps the graph holds)."""
    low, high = COSTS["bptt_iteration_evidence"]
    scale = batch_size * steps / BPTT_REFERENCE_SAMPLE_STEPS
    return (f"BPTT on CPU costs {low:.0f}-{high:.0f} s per iteration at batch 32 x 2250 steps (documented, "
            f"docs/benchmarks.md); this run ({batch_size} x {steps} steps) expects ~{format_range(low * scale, high * scale)}"
            f" per iteration, ~{format_range(low * scale * iterations, high * scale * iterations)} for "
            f"{iterations} iteration(s)")


def lava_estimate(steps: int, learning: bool = False) -> str:
    low, high = COSTS["lava_learning_step" if learning else "lava_inference_step"]
    what = "learning" if learning else "inference"
    return (f"Lava fixed_pt on CPU: {steps} steps at {low * 1e3:.1f}-{high * 1e3:.1f} ms per step ({what}, documented, "
            f"docs/benchmarks.md) -> ~{format_range(low * steps, high * steps)} plus start-up")


class Progress:
    """Progress of ``total`` units of work (iterations, samples, steps).

    ``enabled=False`` shows nothing on stderr but still logs to the current
    run's log file. ``update(n, **info)`` advances and shows ``info`` (e.g.
    the loss) next to the counts."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, every_seconds: float | None = None,
                 delay_seconds: float = DEFAULT_DELAY_SECONDS) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.count = initial
        self.initial = initial
        self.stream = sys.stderr if stream is None else stream
        self.every = log_seconds() if every_seconds is None else every_seconds
        self.delay = delay_seconds     # stderr stays quiet for work shorter than this
        self.echoed = False
        self.first_done: int | None = None   # units and time of the first update
        self.t_first = 0.0
        self.t0 = time.perf_counter()
        self.last_line = -float("inf")
        self.lines = 0
        self.emitted_count = initial
        self.info: dict = {}
        self.bar = None
        if enabled and is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                            file=self.stream, delay=delay_seconds)
        self.plain = enabled and self.bar is None   # plain lines on stderr (not a terminal)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        done = self.count - self.initial
        parts = [f"{self.desc}: {self.count}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.count / self.total:.0f}%)"
        parts.append(f"{format_seconds(elapsed)} elapsed")
        if done > 0:
            # the rate after the first update: the first one also pays for start-up and compilation
            later = done - self.first_done
            per = (time.perf_counter() - self.t_first) / later if later > 0 else elapsed / done
            parts.append(f"{per:.3g} s/{self.unit}")
            if self.total and (later > 0 or self.count >= self.total):
                parts.append(f"~{format_seconds(per * max(self.total - self.count, 0))} left")
        parts += [f"{k}={v}" for k, v in self.info.items()]
        return ", ".join(parts)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _emit(self) -> None:
        text = self.line()
        self.last_line = time.perf_counter()
        self.lines += 1
        self.emitted_count = self.count
        # on stderr only once the work has lasted delay_seconds (short work stays quiet),
        # then the final line too; the log file gets every line
        echo = self.plain and (self.echoed or self._elapsed() >= self.delay)
        self.echoed = self.echoed or echo
        note(text, self.stream, echo=echo)

    def update(self, n: int = 1, **info: Any) -> None:
        self.count += n
        if self.first_done is None:
            self.first_done, self.t_first = n, time.perf_counter()
        if info:
            self.info = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in info.items()}
        if self.bar is not None:
            self.bar.update(n)
            if self.info:
                self.bar.set_postfix(self.info, refresh=False)
        now = time.perf_counter()
        if (self.lines == 0 or now - self.last_line >= self.every
                or (self.plain and not self.echoed and now - self.t0 >= self.delay)):
            self._emit()

    def close(self) -> None:
        """Close the bar; log the final count unless the last line showed it."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.count > self.initial and self.emitted_count != self.count:
            self._emit()
        self.plain = False
