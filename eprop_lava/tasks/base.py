"""The task protocol: a task generates seeded batches on the fly and scores outputs.

A task is an object with

* ``name``: the name used on the command line;
* ``default_spec()``: the NetworkSpec of the seed's experiment;
* ``batch(rng, batch_size) -> Batch``: a fresh batch drawn from ``rng``
  (a numpy Generator), so a seed fixes every batch;
* ``metric(y, batch) -> float``: the task's validation metric on readout
  outputs y (T, B, K) — lower is better (error rate, MSE);
* ``metric_name``: "error" or "mse";
* ``solved_below``: the metric value at which the seed calls the task solved
  (None when it gives none).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Protocol

import numpy as np

from eprop_lava.engine.network import Batch
from eprop_lava.spec import NetworkSpec


class Task(Protocol):
    name: str
    metric_name: str
    solved_below: float | None

    def default_spec(self) -> NetworkSpec: ...

    def batch(self, rng: np.random.Generator, batch_size: int) -> Batch: ...

    def metric(self, y: np.ndarray, batch: Batch) -> float: ...


def window_decision(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class decision per sample: the softmax averaged over the masked window
    (seed 001 sec. 5.3.2: "averaging all output probabilities during the recall period")."""
    e = np.exp(y - y.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    w = (mask > 0).astype(float)[..., None]
    return np.argmax((p * w).sum(0), axis=-1)


def classification_error(y: np.ndarray, batch: Batch) -> float:
    if batch.labels is None:
        raise ValueError("classification_error needs batch.labels")
    return float(np.mean(window_decision(y, batch.mask) != batch.labels))


def poisson_spikes(rng: np.random.Generator, rate_per_step: np.ndarray) -> np.ndarray:
    """Bernoulli spikes with the given per-step probability (same shape), as
    float32 0/1 (exact in every engine dtype; half the memory of float64):
    x = [u < p], u ~ U[0, 1) one draw per entry in C order.

    The definition is the numpy line ``rng.random(shape) < rate``; the
    compiled loop (numba, unless ``EPROP_LAVA_FUSED=0``) draws the same
    doubles from the same generator in the same order, so the spikes and the
    generator's state afterwards are identical; it skips the float64 array of
    draws (``tests/test_speed_paths.py`` holds it to the numpy line)."""
    rate = np.asarray(rate_per_step)
    kernel = _compiled_bernoulli(rng)
    if kernel is None or rate.size == 0:
        return (rng.random(rate.shape) < rate).astype(np.float32)
    out = np.empty(rate.shape, np.float32)
    _draw(kernel, rng, np.ascontiguousarray(rate, np.float64).reshape(-1, 1), 1, out.reshape(-1))
    return out


def grouped_poisson_spikes(rng: np.random.Generator, group_rate: np.ndarray, group_size: int) -> np.ndarray:
    """:func:`poisson_spikes` for inputs in groups of ``group_size`` that share
    a rate: group_rate (..., G) gives (..., G * group_size), equal to
    ``poisson_spikes(rng, np.repeat(group_rate, group_size, axis=-1))`` (same
    draws, same order) without building the repeated rate array."""
    group_rate = np.asarray(group_rate, np.float64)
    shape = group_rate.shape[:-1] + (group_rate.shape[-1] * group_size,)
    kernel = _compiled_bernoulli(rng)
    if kernel is None or group_rate.size == 0 or group_size < 1:
        return poisson_spikes(rng, np.repeat(group_rate, group_size, axis=-1))
    out = np.empty(shape, np.float32)
    _draw(kernel, rng, np.ascontiguousarray(group_rate).reshape(-1, 1), group_size, out.reshape(-1))
    return out


#: Below this many draws one thread draws them all (a second one costs more to start).
SPLIT_DRAWS = 1 << 18
_draw_pool = None


def _forget_draw_pool() -> None:
    # A forked child inherits the pool without its threads: work given to it would wait forever.
    global _draw_pool
    _draw_pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_draw_pool)


def _draw(kernel, rng: np.random.Generator, rate: np.ndarray, group_size: int, out: np.ndarray) -> None:
    """Run the compiled Bernoulli loop, split over threads where the bit
    generator can jump: PCG64 (numpy's default) advances by any number of
    draws, so chunk c starts from a copy of the generator advanced by the
    draws before it, and the generator ends advanced by all of them - the same
    doubles in the same places and the same final state as one loop
    (``tests/test_speed_paths.py``). Its buffered 32-bit half-word, which
    ``advance`` clears and these double draws never touch, is kept.

    The bit generator's lock is held throughout, as numpy's own ``rng.random``
    holds it: another thread drawing from ``rng`` meanwhile waits, instead of
    drawing copies of these numbers (the compiled loop does not take the lock)."""
    with rng.bit_generator.lock:
        _draw_locked(kernel, rng, rate, group_size, out)


def _draw_locked(kernel, rng: np.random.Generator, rate: np.ndarray, group_size: int, out: np.ndarray) -> None:
    from eprop_lava.engine import fused

    global _draw_pool
    bitgen = rng.bit_generator
    draws = rate.shape[0] * group_size
    threads = min(fused.thread_count(), os.cpu_count() or 1)
    if threads < 2 or draws < SPLIT_DRAWS or type(bitgen) not in (np.random.PCG64, np.random.PCG64DXSM):
        kernel(rng, rate, group_size, out)
        return
    from concurrent.futures import ThreadPoolExecutor

    if _draw_pool is None:
        _draw_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="eprop_lava_draws")
    state = bitgen.state
    edges = [rate.shape[0] * c // threads for c in range(threads + 1)]

    def chunk(c: int) -> None:
        gen = type(bitgen)()
        gen.state = state
        gen.advance(edges[c] * group_size)
        lo, hi = edges[c], edges[c + 1]
        kernel(np.random.Generator(gen), rate[lo:hi], group_size, out[lo * group_size:hi * group_size])

    list(_draw_pool.map(chunk, range(threads)))
    bitgen.advance(draws)
    end = bitgen.state
    end["has_uint32"], end["uinteger"] = state["has_uint32"], state["uinteger"]
    bitgen.state = end


_bernoulli_kernel = None


def _compiled_bernoulli(rng):
    """The compiled Bernoulli loop, or None when the compiled loops are off
    (no numba, or EPROP_LAVA_FUSED=0) or ``rng`` is not a numpy Generator
    (the only kind numba draws from): then the numpy definition runs."""
    global _bernoulli_kernel
    from eprop_lava.engine import fused

    if not fused.available() or not isinstance(rng, np.random.Generator):
        return None
    if _bernoulli_kernel is None:
        def bernoulli(rng, rate, group_size, out):  # pragma: no cover - compiled
            # rate (M, 1): one probability per run of group_size outputs; u < p with
            # u = rng.random() is numpy's comparison of a float64 draw (NaN: no spike)
            k = 0
            for m in range(rate.shape[0]):
                p = rate[m, 0]
                for _ in range(group_size):
                    out[k] = np.float32(1.0) if rng.random() < p else np.float32(0.0)
                    k += 1

        _bernoulli_kernel = fused.numba.njit(cache=True, nogil=True)(bernoulli)
    return _bernoulli_kernel


def check_option_types(task: Any) -> None:
    """Each constructor option has the type of its default: integers are
    integers (not 2.5, not true), numbers are finite reals, switches are
    true/false, names are strings, lists are lists (stored as tuples). A
    task calls this first in ``__post_init__``, then checks its ranges."""
    name = getattr(task, "name", type(task).__name__)
    for f in dataclasses.fields(task):
        if not f.init or f.default is dataclasses.MISSING:
            continue
        default, value = f.default, getattr(task, f.name)
        if value is None or value is default:
            continue
        where = f"task {name!r}: option {f.name}"
        if isinstance(default, bool):
            ok = isinstance(value, bool)
            kind = "true or false"
        elif isinstance(default, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 200.0 ms is 200 ms; 2.5 cues is an error
                object.__setattr__(task, f.name, value)
            ok = isinstance(value, int) and not isinstance(value, bool)
            kind = "an integer"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            kind = "a finite number"
        elif isinstance(default, str):
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # a name that is a number, e.g. phones=61 on the command line
                object.__setattr__(task, f.name, value)
            ok = isinstance(value, str)
            kind = "a string"
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple))
            kind = "a list"
            if ok:
                object.__setattr__(task, f.name, tuple(value))
        else:
            continue
        if not ok:
            raise ValueError(f"{where}: expected {kind}, got {value!r}")


def require(task: Any, option: str, condition: bool, what: str) -> None:
    """Raise the task's one-line option error unless ``condition``."""
    if not condition:
        raise ValueError(f"task {getattr(task, 'name', type(task).__name__)!r}: option {option} {what}, "
                         f"got {getattr(task, option)!r}")
