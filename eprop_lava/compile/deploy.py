"""Running a compiled artifact: float engine, fixed-point engine, and the
Lava process graph in Lava's CPU simulation (or, where it could exist, a
Loihi system).

Hardware detection follows docs/lava_loihi.md §6: a Loihi system is usable only when
lava-loihi is installed (``lava.utils.loihi.is_installed()``), SLURM's
``sinfo`` exists and ``lava.utils.slurm.is_available()`` says so. Loihi2HwCfg
is never constructed without lava-loihi (it raises NameError there, §1.4).
Even with a system present, the e-prop Processes of this toolkit have only
PyProcessModels (CPU); neurocore (NcProcessModel) microcode for them is not
part of open Lava, so the run simulates and says why.

The Lava run builds :func:`eprop_lava.models.build_network` from the
artifact's FixedNetwork and runs it with ``Loihi2SimCfg(select_tag='fixed_pt')``
(explicit model map), samples one after another, and compares its readout
(and, when reading them is affordable, its spikes) with the fixed-point
engine bit for bit. ``Var.get()`` ships arrays element by element
(docs/lava_loihi.md §1.6: ~0.3 s per 10^4 values), so spikes are read back only up
to :data:`MAX_SPIKE_READ` values.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.lava_import import import_lava  # noqa: F401 - also re-exported for compile.netx

MAX_SPIKE_READ = 120_000


# ------------------------------------------------------------------ detection
def lava_status() -> tuple[bool, str]:
    """(importable, reason) for the Lava processes and models of this package."""
    try:
        import_lava("eprop_lava.models")
    except Exception as exc:  # noqa: BLE001 - ImportError, or a Lava that fails while importing
        return False, f"Lava is not importable ({type(exc).__name__}: {exc})"
    return True, "lava-nc importable"


def detect_hardware() -> dict:
    """docs/lava_loihi.md §6: lava-loihi installed, SLURM's sinfo present and a partition available."""
    out = {"lava_loihi": False, "sinfo": shutil.which("sinfo") is not None, "slurm": False, "hardware": False}
    try:
        import_lava("lava.magma.core.process.process")
        from lava.utils import loihi
    except Exception:  # noqa: BLE001 - no (working) Lava: no hardware either
        out["reason"] = "Lava is not installed"
        return out
    try:
        out["lava_loihi"] = bool(loihi.is_installed())
    except Exception as exc:  # noqa: BLE001 - a broken installation is "not installed"
        out["reason"] = f"lava.utils.loihi.is_installed() failed ({exc})"
        return out
    if not out["lava_loihi"]:
        out["reason"] = "lava-loihi (Intel's proprietary extension, INRC members only) is not installed"
        return out
    if not out["sinfo"]:
        out["reason"] = "lava-loihi is installed but SLURM's sinfo is not on PATH"
        return out
    try:
        from lava.utils import slurm

        out["slurm"] = bool(slurm.is_available())
    except Exception as exc:  # noqa: BLE001 - sinfo failures mean no partition
        out["reason"] = f"SLURM query failed ({exc})"
        return out
    out["hardware"] = out["slurm"]
    out["reason"] = "a Loihi system is reachable through SLURM" if out["hardware"] else "no SLURM partition available"
    return out


# ------------------------------------------------------------------ data
@dataclass
class TestSet:
    x: np.ndarray        # (T, S, n_in)
    target: np.ndarray   # (T, S, K)
    mask: np.ndarray     # (T, S)
    labels: Any
    batch: Any = field(repr=False, default=None)


#: rng streams [seed, stream] of the data: training 1 and validation 2 (training.py), test 3
#: (``eprop-lava eval``), and the on-chip learning stream, disjoint from all of them.
TEST_STREAM = 3
LEARN_STREAM = 4


def test_set(task_name: str, seed: int, samples: int, task_options: dict | None = None) -> tuple[Any, TestSet]:
    """The test batch of the task a network was trained on: the recorded task
    name and constructor options (a speech run's data directory, a changed
    evidence length), the test split where the task has splits, and the rng
    [seed, 3] of ``eprop-lava eval``."""
    from eprop_lava.training import TrainConfig, held_out, task_from_config

    task = held_out(task_from_config(TrainConfig(task=task_name, task_options=dict(task_options or {}))), "test")
    return task, draw(task, seed, TEST_STREAM, samples)


def draw(task: Any, seed: int, stream: int, samples: int) -> TestSet:
    """``samples`` samples of ``task`` from rng [seed, stream]."""
    from eprop_lava.validate import check_samples_memory

    spec = task.default_spec()
    check_samples_memory("--samples", samples, samples, getattr(task, "steps", 1),
                         spec.n_inputs + spec.readout.n_outputs)
    b = task.batch(np.random.default_rng([int(seed), int(stream)]), samples)
    return TestSet(np.asarray(b.x), np.asarray(b.target), np.asarray(b.mask), b.labels, b)


def source_task(source: dict) -> tuple[str, dict]:
    """(task name, task options) recorded in an artifact's ``source`` table."""
    return source["task"], dict((source.get("train") or {}).get("task_options") or {})


# ------------------------------------------------------------------ runs
def float_metric(task: Any, spec: Any, params: dict, ts: TestSet) -> float:
    from eprop_lava.training import forward_outputs

    y, _ = forward_outputs(spec, params, ts.batch)
    return float(task.metric(np.asarray(y, dtype=np.float64), ts.batch))


def fixed_run(net: fe.FixedNetwork, ts: TestSet) -> fe.FixedRun:
    return fe.simulate(net, ts.x)


def fixed_metric(task: Any, net: fe.FixedNetwork, run: fe.FixedRun, ts: TestSet, samples: slice | None = None) -> float:
    y = run.y / net.readout.y_scale
    b = ts.batch
    if samples is not None:
        from eprop_lava.engine.network import Batch

        b = Batch(x=b.x[:, samples], target=b.target[:, samples], mask=b.mask[:, samples],
                  labels=None if b.labels is None else np.asarray(b.labels)[samples])
        y = y[:, samples]
    return float(task.metric(y, b))


def lava_run(net: fe.FixedNetwork, x: np.ndarray, steps: int | None = None, timeout: float = 540.0,
             read_spikes: bool | None = None, progress: Any = None) -> dict:
    """Run ``x`` (T, S, n_in) sample after sample on Lava (fixed_pt, CPU).
    ``steps`` caps the total number of time steps. Returns the readout y
    (steps, K) and, if affordable, the spikes per layer (steps, N_r).
    ``progress`` (a :class:`eprop_lava.progress.Progress` over steps) makes
    the run advance one sample (T steps) per Lava run call and report it."""
    import_lava("eprop_lava.models")
    from lava.proc.io.source import RingBuffer

    from eprop_lava.models.network import build_network, run_config, run_guarded

    T, S, n_in = x.shape
    flat = np.transpose(x, (1, 0, 2)).reshape(S * T, n_in)
    total = S * T if steps is None else max(1, min(int(steps), S * T))
    flat = flat[:total]
    n_values = total * sum(L.neuron.size for L in net.layers)
    if read_spikes is None:
        read_spikes = n_values <= MAX_SPIKE_READ
    built = build_network(net=net, sample_steps=T, record_steps=total)
    src = RingBuffer(data=flat.T.copy())
    src.s_out.connect(built.dense_in[0].s_in)
    timing: dict = {}

    def read() -> dict:
        t0 = time.perf_counter()
        out = {"y": np.rint(built.readout.y_rec.get()[:total]).astype(np.int64)}
        if read_spikes:
            out["z"] = [np.rint(n.z_rec.get()[:total]).astype(np.int64) for n in built.neurons]
        timing["read_s"] = time.perf_counter() - t0
        return out

    t0 = time.perf_counter()
    out = run_guarded(src, total, run_config("fixed_pt"), read, timeout=timeout,
                      chunk=T if progress is not None else None,
                      progress=None if progress is None else progress.update)
    out["seconds"] = time.perf_counter() - t0
    out["read_seconds"] = timing.get("read_s", 0.0)
    out["steps"] = total
    out["sample_steps"] = T
    return out


def compare_lava(run: fe.FixedRun, lava: dict) -> dict:
    """Bit-for-bit comparison of the Lava run with the engine's (same samples)."""
    total = lava["steps"]
    K = run.y.shape[2]
    y_eng = np.transpose(run.y, (1, 0, 2)).reshape(-1, K)[:total]
    out = {"steps": total, "readout_mismatches": int(np.sum(lava["y"] != y_eng)),
           "readout_values": int(y_eng.size)}
    if "z" in lava:
        mism = 0
        for z_l, z_e in zip(lava["z"], run.z):
            z_e = np.transpose(z_e, (1, 0, 2)).reshape(-1, z_e.shape[2])[:total]
            mism += int(np.sum(z_l != z_e))
        out["spike_mismatches"] = mism
        out["spike_values"] = int(total * sum(z.shape[2] for z in run.z))
    else:
        out["spike_mismatches"] = None
        out["spikes_note"] = (f"spike records not read back ({total} steps x neurons > {MAX_SPIKE_READ} values; "
                              "Var.get() ships values one by one); the readout depends on every spike through W_out")
    out["bit_exact"] = out["readout_mismatches"] == 0 and not out.get("spike_mismatches")
    return out


def lava_metric(task: Any, net: fe.FixedNetwork, lava: dict, ts: TestSet) -> float | None:
    T = lava["sample_steps"]
    n_full = lava["steps"] // T
    if n_full == 0:
        return None
    K = lava["y"].shape[1]
    y = lava["y"][: n_full * T].reshape(n_full, T, K).transpose(1, 0, 2) / net.readout.y_scale
    from eprop_lava.engine.network import Batch

    b = ts.batch
    sub = Batch(x=b.x[:, :n_full], target=b.target[:, :n_full], mask=b.mask[:, :n_full],
                labels=None if b.labels is None else np.asarray(b.labels)[:n_full])
    return float(task.metric(y, sub))


def held_out_error(net: fe.FixedNetwork, test: TestSet, task: Any, samples: int) -> dict:
    """One point of a learning curve: the task's metric of ``net`` (the fixed-point
    engine) on the held-out ``test`` set after ``samples`` learned samples."""
    y = fe.simulate(net, test.x).y / net.readout.y_scale
    return {"samples": samples, "error": float(task.metric(y, test.batch))}


def online_curve(samples: int, learn_one: Any, score: Any = None, every: int | None = None,
                 progress: Any = None) -> list:
    """Learn sample after sample (``learn_one(s)`` for s = 0 .. samples - 1) and
    return the learning curve: ``score(n)`` before, every ``every`` samples and
    after (empty without ``score``); ``progress(done, samples)`` after each."""
    curve = [score(0)] if score else []
    for s in range(samples):
        learn_one(s)
        if score and every and (s + 1) % every == 0 and s + 1 < samples:
            curve.append(score(s + 1))
        if progress:
            progress(s + 1, samples)
    if score:
        curve.append(score(samples))
    return curve


def learn_run(net: fe.FixedNetwork, train: TestSet, test: TestSet | None = None, task: Any = None,
              every: int | None = None, progress: Any = None) -> dict:
    """On-chip online e-prop on the fixed-point engine, sample after sample
    (batch 1, as one chip learns) over the samples of ``train``; ``net`` is
    not changed. With ``test`` and ``task``: the held-out metric before, every
    ``every`` samples (the learning curve) and after; ``test`` must not hold
    the samples learned on (draw them from another rng stream).

    Returns net (the learned copy), changed_weights (per matrix), signal
    (counts of error and learning-signal values, underflows to 0 and
    saturations, :func:`eprop_lava.engine.fixed_engine.learning_signal`),
    counters (:func:`eprop_lava.engine.fixed_engine.new_counters` summed over
    the learning runs: neuron limits and weight clipping),
    feedback_before_last_update (B just before the last weight update: what
    Lava's LearningSignal holds at the end, as it receives W_out's change one
    step later), and with a test set error_before, error_after and curve."""
    probe = net.copy()
    before = {k: v.copy() for k, v in probe.weights().items()}
    rngs = fe.update_rngs(probe)
    stats: dict = {}
    last_b = {"b": probe.feedback.copy()}
    counters: dict = {}
    clipped = fe.new_counters(probe, 0, 1, True)

    def update(netx, *args):  # the engine's own update, with B kept just before it
        last_b["b"] = netx.feedback.copy()
        fe._update_all(netx, *args, counts=clipped)

    def learn_one(s: int) -> None:
        sl = slice(s, s + 1)
        run = fe.simulate(probe, train.x[:, sl], train.target[:, sl], train.mask[:, sl], learn=True, rngs=rngs,
                          stats=stats, on_update=update)
        fe.add_counters(counters, run.counters)

    scoring = test is not None and task is not None
    curve = online_curve(train.x.shape[1], learn_one, (lambda n: held_out_error(probe, test, task, n))
                         if scoring else None, every, progress)
    after = probe.weights()
    changed = {k: int(np.sum(after[k] != before[k])) for k in before}
    out = {"net": probe, "changed_weights": changed, "signal": signal_summary(stats),
           "counters": fe.add_counters(counters, clipped),
           "feedback_before_last_update": last_b["b"]}
    if scoring:
        out.update(error_before=curve[0]["error"], error_after=curve[-1]["error"], curve=curve)
    return out


def signal_summary(stats: dict) -> dict:
    """Counts of fixed_engine's output_error / learning_signal statistics with
    the fractions of non-zero values that underflowed to 0 or saturated."""
    out = {}
    for name in ("error", "signal"):
        n = int(stats.get(f"{name}_values", 0))
        u, s = int(stats.get(f"{name}_underflow", 0)), int(stats.get(f"{name}_saturated", 0))
        out[name] = {"values": n, "underflow": u, "saturated": s,
                     "underflow_fraction": u / n if n else 0.0, "saturated_fraction": s / n if n else 0.0}
    return out
