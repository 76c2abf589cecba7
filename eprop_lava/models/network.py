"""Building, selecting and running e-prop networks on Lava.

* :func:`model_map` / :func:`run_config`: explicit ProcessModel selection
  (``exception_proc_model_map``), never Lava's directory scan.
* :func:`build_network`: the process graph of a multi-layer RSNN with
  readout and learning signal, from a FixedNetwork (fixed_pt) or a spec and
  float parameters (floating_pt); used by :class:`EpropRSNN`'s SubProcessModel
  and by :func:`run_network`.
* :func:`run_guarded`: every run under a wall-clock timeout, with ``stop()``
  in ``finally`` (also on exceptions and Ctrl-C), so no OS processes or
  shared memory leak (docs/lava_loihi.md §1.6).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.io.source import PySendModelFloat, RingBuffer

from eprop_lava.engine.fixed_engine import READOUT_KEY, layer_slices
from eprop_lava.lifetime import children_die_with_parent, deferred_signals, raise_for, terminate_as_interrupt
from eprop_lava.models import models as M
from eprop_lava.processes.process import (
    NEURON_PROCESSES, EpropDense, EpropRSNN, LearningSignal, Readout, ReadoutDense,
)

TAGS = ("fixed_pt", "floating_pt")


class LavaTimeout(TimeoutError):
    """A Lava run exceeded its wall-clock limit (the runtime was stopped)."""


def model_map(tag: str) -> dict:
    """{Process: ProcessModel} for every Process of this package (and the
    RingBuffer source, which always sends floats: spikes and targets)."""
    if tag not in TAGS:
        raise ValueError(f"tag: expected one of {TAGS}, got {tag!r}")
    fixed = tag == "fixed_pt"
    out = {RingBuffer: PySendModelFloat}
    for kind, proc in NEURON_PROCESSES.items():
        name = {"lif": "EpropLIF", "alif": "EpropALIF", "stdp_alif": "EpropSTDPALIF",
                "izhikevich": "EpropIzhikevich"}[kind]
        out[proc] = getattr(M, f"Py{name}Model{'Fixed' if fixed else 'Float'}")
    out[EpropDense] = M.PyEpropDenseModelFixed if fixed else M.PyEpropDenseModelFloat
    out[ReadoutDense] = M.PyReadoutDenseModelFixed if fixed else M.PyReadoutDenseModelFloat
    out[Readout] = M.PyReadoutModelFixed if fixed else M.PyReadoutModelFloat
    out[LearningSignal] = M.PyLearningSignalModelFixed if fixed else M.PyLearningSignalModelFloat
    out[EpropRSNN] = PyEpropRSNNModel
    return out


class ClassKeyedModelMap(dict):
    """An exception_proc_model_map keyed by Process class that also answers
    for instances. Lava's compiler looks a Process *instance* up in the map
    before it scans directories for models (compiler_graphs.py
    _map_proc_to_model); answering for instances keeps Lava from executing
    every module of this package during that scan, also for the children a
    SubProcessModel creates at compile time."""

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or dict.__contains__(self, type(key))

    def __getitem__(self, key: Any) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return dict.__getitem__(self, type(key))


def run_config(tag: str, extra: dict | None = None) -> Loihi2SimCfg:
    """Loihi2SimCfg selecting our models explicitly (select_tag only for Lava's own processes)."""
    mapping = ClassKeyedModelMap(model_map(tag))
    if extra:
        mapping.update(extra)
    return Loihi2SimCfg(select_tag=tag, select_sub_proc_model=True, exception_proc_model_map=mapping)


def run_guarded(root: Any, steps: int, run_cfg: Any, read: Callable[[], Any], timeout: float = 120.0,
                stop_timeout: float = 20.0, chunk: int | None = None,
                progress: Callable[[int], None] | None = None) -> Any:
    """root.run(RunSteps(steps)), then ``read()`` (Var.get() works only while the
    runtime lives), under a wall-clock timeout; root.stop() always runs
    afterwards (also on exceptions, Ctrl-C and SIGTERM). When a failed run leaves the
    runtime unable to stop (stop() waits on a dead model forever), the model
    processes are terminated after ``stop_timeout`` seconds instead, so
    nothing is left running. With ``chunk`` the steps run as consecutive
    blocking runs of ``chunk`` steps (Lava continues its time step across
    them), and ``progress(n)`` is called after each with its step count."""
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

    def _expire(signum, frame):  # noqa: ARG001
        raise LavaTimeout(f"Lava run of {steps} steps exceeded {timeout:.0f} s")

    # SIGTERM unwinds like an error (stop() below); the forked model processes
    # die with this one even when it is killed with SIGKILL (eprop_lava/lifetime.py).
    with children_die_with_parent(), terminate_as_interrupt():
        old = signal.signal(signal.SIGALRM, _expire) if use_alarm else None
        try:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            done = 0
            while done < steps:
                n = steps - done if not chunk else min(int(chunk), steps - done)
                root.run(condition=RunSteps(num_steps=n, blocking=True), run_cfg=run_cfg)
                done += n
                if progress is not None:
                    progress(n)
            return read()
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
            with deferred_signals() as arrived:  # a second Ctrl-C or SIGTERM must not cut stop() short
                try:
                    _stop(root, stop_timeout if use_alarm else None)
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                        signal.signal(signal.SIGALRM, old)
            raise_for(arrived)


def _stop(root: Any, limit: float | None) -> None:
    runtime = getattr(root, "runtime", None)
    if runtime is None:
        return
    if limit is not None:
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        root.stop()
    except LavaTimeout:
        _terminate(runtime)
    except Exception:  # noqa: BLE001 - a runtime that failed to start cannot stop itself
        _terminate(runtime)


def _terminate(runtime: Any) -> None:
    """Last resort after a hung stop(): end the model processes this run forked."""
    infra = getattr(runtime, "_messaging_infrastructure", None)
    for actor in list(getattr(infra, "_actors", []) or []):
        try:
            actor.terminate()
            actor.join(timeout=5)
        except Exception:  # noqa: BLE001
            pass
    try:  # joins the (now ended) actors and releases the shared memory
        infra.stop()
    except Exception:  # noqa: BLE001
        pass


@dataclass
class LavaNetwork:
    """The processes of one RSNN (lists per layer)."""

    neurons: list
    dense_in: list
    dense_rec: list
    readout_dense: list
    readout: Any
    signal: Any = None
    fixed: bool = True
    extras: dict = field(default_factory=dict)


def build_network(net: Any = None, spec: Any = None, params: dict | None = None, learn: bool = False,
                  sample_steps: int = 0, record_steps: int = 0) -> LavaNetwork:
    """Processes and internal connections of an RSNN. Connect inputs to
    ``dense_in[0].s_in`` and, with learning, the (target, mask) stream to
    ``signal.target_in``."""
    fixed = net is not None
    spec = net.spec if fixed else spec
    if not fixed and learn:
        raise ValueError("build_network: learning on Lava runs in fixed point; pass net= (a FixedNetwork)")
    slices = layer_slices(spec)
    n_total, K = spec.n_neurons, spec.readout.n_outputs
    prof = net.profile if fixed else None
    ro = net.readout if fixed else None
    neurons, dense_in, dense_rec, rdense = [], [], [], []
    for r, ls in enumerate(spec.layers):
        proc = NEURON_PROCESSES[ls.neuron]
        if fixed:
            L = net.layers[r]
            neurons.append(proc(n=ls.size, fixed=L.neuron, sample_steps=sample_steps, record_steps=record_steps,
                                name=f"layer{r}"))
            common = dict(weight_exp=L.weight_exp, learn=learn, post=L.neuron, profile=prof, d_kappa=ro.d_kappa,
                          lr=L.lr, signal_slice=(slices[r].start, slices[r].stop), n_signal=n_total,
                          sample_steps=sample_steps)
            dense_in.append(EpropDense(weights=L.w_in, rng_key=(net.seed, r, 0), name=f"w_in{r}", **common))
            dense_rec.append(EpropDense(weights=L.w_rec, rng_key=(net.seed, r, 1), zero_diagonal=True,
                                        name=f"w_rec{r}", **(common | dict(weight_exp=L.rec_exp, lr=L.rec_lr)))
                             if L.w_rec is not None else None)
            rdense.append(ReadoutDense(weights=ro.w[:, slices[r]], weight_exp=ro.weight_exp, learn=learn,
                                       profile=prof, d_kappa=ro.d_kappa, lr=ro.lr,
                                       rng_key=(net.seed, READOUT_KEY, r), col_slice=(slices[r].start, slices[r].stop),
                                       n_total=n_total, sample_steps=sample_steps, name=f"w_out{r}"))
        else:
            neurons.append(proc(n=ls.size, layer=ls, dt=spec.dt, sample_steps=sample_steps,
                                record_steps=record_steps, name=f"layer{r}"))
            dense_in.append(EpropDense(weights=params[f"layers.{r}.w_in"], sample_steps=sample_steps,
                                       name=f"w_in{r}"))
            dense_rec.append(EpropDense(weights=params[f"layers.{r}.w_rec"], sample_steps=sample_steps,
                                        name=f"w_rec{r}") if ls.recurrent else None)
            rdense.append(ReadoutDense(weights=np.asarray(params["readout.w"])[:, slices[r]],
                                       sample_steps=sample_steps, name=f"w_out{r}"))
    if fixed:
        readout = Readout(n_out=K, fixed=ro, sample_steps=sample_steps, record_steps=record_steps, name="readout")
    else:
        readout = Readout(n_out=K, kappa=spec.readout.kappa, bias=params["readout.b"], sample_steps=sample_steps,
                          record_steps=record_steps, name="readout")
    for r in range(len(spec.layers)):
        dense_in[r].a_out.connect(neurons[r].a_in)
        if dense_rec[r] is not None:
            dense_rec[r].a_out.connect(neurons[r].a_in)
            neurons[r].s_out.connect(dense_rec[r].s_in)
        if r + 1 < len(spec.layers):
            neurons[r].s_out.connect(dense_in[r + 1].s_in)
        neurons[r].s_out.connect(rdense[r].s_in)
        rdense[r].a_out.connect(readout.a_in)
    ls = None
    if learn:
        update_fb = spec.learning.variant != "random"
        ls = LearningSignal(n_out=K, n_total=n_total, feedback=net.feedback, loss=spec.loss,
                            signal_shift=net.signal_shift, profile=prof, y_scale=ro.y_scale, error_exp=net.error_exp,
                            update_feedback=update_fb, seed=net.seed, name="learning_signal")
        readout.y_out.connect(ls.y_in)
        for r in range(len(spec.layers)):
            for d in (dense_in[r], dense_rec[r]):
                if d is None:
                    continue
                neurons[r].s_out.connect(d.zpost_in)
                neurons[r].post_out.connect(d.post_in)
                ls.signal_out.connect(d.signal_in)
            ls.err_out.connect(rdense[r].err_in)
            if update_fb:
                rdense[r].dw_out.connect(ls.dw_in)
    return LavaNetwork(neurons, dense_in, dense_rec, rdense, readout, ls, fixed)


@implements(proc=EpropRSNN, protocol=LoihiProtocol)
@requires(CPU)
class PyEpropRSNNModel(AbstractSubProcessModel):
    """Hierarchical RSNN: the children of :func:`build_network`, with the
    parent's ports passed through. The built graph is kept on
    ``proc.lava_network`` for reading records and weights."""

    def __init__(self, proc):
        pp = proc.proc_params
        built = build_network(net=pp.get("net"), spec=pp.get("spec"), params=pp.get("params"),
                              learn=pp.get("learn"), sample_steps=pp.get("sample_steps"),
                              record_steps=pp.get("record_steps"))
        proc.in_ports.x_in.connect(built.dense_in[0].s_in)
        built.readout.y_out.connect(proc.out_ports.y_out)
        if built.signal is not None:
            proc.in_ports.target_in.connect(built.signal.target_in)
        proc.lava_network = built
        # Lava finds sub-processes among the model's attributes (find_sub_procs)
        children = [*built.neurons, *built.dense_in, *built.dense_rec, *built.readout_dense, built.readout,
                    built.signal]
        for i, child in enumerate(c for c in children if c is not None):
            setattr(self, f"child_{i}", child)


def read_network(built: LavaNetwork, steps: int, weights: bool = False) -> dict:
    """Records (z, psi per layer; y) and, optionally, all weights (int for fixed)."""
    cast = (lambda a: np.rint(a).astype(np.int64)) if built.fixed else (lambda a: np.asarray(a))  # noqa: E731
    out = {"z": [cast(n.z_rec.get()[:steps]) for n in built.neurons],
           "psi": [cast(n.psi_rec.get()[:steps]) for n in built.neurons],
           "y": cast(built.readout.y_rec.get()[:steps])}
    if weights:
        w = {}
        for r, (di, dr) in enumerate(zip(built.dense_in, built.dense_rec)):
            w[f"layers.{r}.w_in"] = cast(di.weights.get())
            if dr is not None:
                w[f"layers.{r}.w_rec"] = cast(dr.weights.get())
        w["readout.w"] = np.concatenate([cast(d.weights.get()) for d in built.readout_dense], axis=1)
        if built.signal is not None:
            w["feedback.b"] = cast(built.signal.feedback.get())
        out["weights"] = w
    return out


def run_network(x: np.ndarray, net: Any = None, spec: Any = None, params: dict | None = None,
                target: np.ndarray | None = None, mask: np.ndarray | None = None, learn: bool = False,
                weights: bool = False, timeout: float = 180.0, hierarchical: bool = False,
                progress: Any = None) -> dict:
    """Run samples one after another on Lava: x (S, T, n_in) spikes (S samples
    of T steps), target (S, T, K), mask (S, T). fixed_pt when ``net`` (a
    FixedNetwork) is given, floating_pt for ``spec`` + ``params``. Returns
    records stacked as (S*T, ...) and, if asked, the weights at the end.
    ``progress`` (a :class:`eprop_lava.progress.Progress` over steps): one
    Lava run call per sample, reported after each."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x: expected (samples, steps, n_inputs), got shape {x.shape}")
    S, T, n_in = x.shape
    spec_ = net.spec if net is not None else spec
    K = spec_.readout.n_outputs
    steps = S * T
    src = RingBuffer(data=x.reshape(steps, n_in).T.copy())
    tsrc = None
    if learn:
        if target is None:
            raise ValueError("target: learning needs targets (samples, steps, K)")
        mask = np.ones((S, T)) if mask is None else np.asarray(mask, dtype=np.float64)
        tm = np.concatenate([np.asarray(target, dtype=np.float64).reshape(steps, K), mask.reshape(steps, 1)], axis=1)
        tsrc = RingBuffer(data=tm.T.copy())
    tag = "fixed_pt" if net is not None else "floating_pt"
    if hierarchical:
        root = EpropRSNN(net=net, spec=spec, params=params, learn=learn, sample_steps=T, record_steps=steps)
        src.s_out.connect(root.x_in)
        if tsrc is not None:
            tsrc.s_out.connect(root.target_in)

        def read() -> dict:
            return read_network(root.lava_network, steps, weights)

        return run_guarded(root, steps, run_config(tag), read, timeout, chunk=T if progress else None,
                           progress=progress.update if progress else None)
    built = build_network(net=net, spec=spec, params=params, learn=learn, sample_steps=T, record_steps=steps)
    src.s_out.connect(built.dense_in[0].s_in)
    if tsrc is not None:
        tsrc.s_out.connect(built.signal.target_in)
    return run_guarded(src, steps, run_config(tag), lambda: read_network(built, steps, weights), timeout,
                       chunk=T if progress else None, progress=progress.update if progress else None)
