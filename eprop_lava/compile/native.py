"""The native deployment target for inference: the compiled network as a
graph of Lava's standard processes only (``lava.proc.dense.process.Dense``
and ``lava.proc.lif.process.LIF``), which lava-loihi implements on
neurocores, and where every process would run on a Loihi 2 system.

Graph (one step of the fixed-point engine, :mod:`eprop_lava.engine.fixed_engine`):

* hidden layer r: ``LIF(du, dv, vth, bias_mant, bias_exp)`` fed by
  ``Dense(w_in)`` from the input (r = 0) or layer r - 1, and by
  ``Dense(w_rec)`` from itself (each Dense with the matrix's own
  ``weight_exp`` and the fewest ``num_weight_bits`` for which Lava's
  truncation keeps every weight);
* the readout: one ``LIF`` that cannot spike (``du = 4095``: u is this
  step's input; ``dv = d_kappa``; ``vth = 2^17``, above the clipped
  v <= 2^23 - 1 after the 2^6 shift), fed by one ``Dense`` per hidden layer
  (so, unlike netx's chain, every layer may drive it); its v is the engine's
  y, and y / y_scale the float readout;
* input: a ``RingBuffer`` source on the host; spikes and v are read with
  ``RingBuffer`` sinks and a ``Monitor`` (host).

Where lava-loihi and a Loihi system are present (``deploy.detect_hardware``)
the graph runs with ``Loihi2HwCfg``; that path is untested (no system was
available), in particular whether the host-side sinks and the Monitor probe
of the readout's v work unchanged on a chip. Everywhere else it runs with
``Loihi2SimCfg(select_tag='fixed_pt')``.

Refused, with the reason: ALIF / STDP-ALIF (Lava's ATRLIF, its only
adaptive-threshold process, keeps v after a spike and subtracts a refractory
term r = 2 theta instead; measured against the engine in
:mod:`eprop_lava.compile.native_alif`), Izhikevich (no Lava
process), refractory periods (the standard LIF has none), and
a readout bias that ``bias_mant << bias_exp`` cannot hold exactly. On-chip
learning (``compile --learning``) is the graph of
:mod:`eprop_lava.compile.native_learning` (LIF layers, random feedback;
ALIF networks and symmetric / adaptive feedback are refused there, with
the reason).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from eprop_lava.compile.native_alif import ATRLIF_MISMATCH
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.errors import UserError
from eprop_lava.fixed import dense_weights

VTH_NEVER = 1 << 17
BIAS_MANT_MAX = (1 << 12) - 1


class NativeError(UserError):
    """The network needs something Lava's standard processes do not have."""


PLACEMENT = {
    "Dense": ("neurocore", "a standard Lava process; lava-loihi maps it onto a neurocore's synaptic memory"),
    "LIF": ("neurocore", "a standard Lava process (CUBA LIF); lava-loihi runs it on a neurocore's compartments"),
    "readout LIF": ("neurocore", "a LIF that cannot spike (vth = 2^17): its v is the readout, read by the host"),
    "RingBuffer source": ("host", "input spikes are produced by the host and sent into the mesh"),
    "RingBuffer sink / Monitor": ("host", "spikes and the readout voltage are read back to the host"),
    "softmax / class decision": ("host", "not in the graph: y / y_scale and its arg-max are computed on the host"),
}


def weight_bits(w: np.ndarray) -> int:
    """Fewest num_weight_bits (1..8) for which Lava's Dense keeps w unchanged."""
    for b in range(1, 9):
        if np.array_equal(dense_weights(w, b), w):
            return b
    raise NativeError("weights are not on Lava's 8-bit Dense grid (mixed-sign weights must be even, in "
                      "[-256, 254]); compile with eprop-lava compile")


def bias_mant_exp(bias: Any, size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(bias_mant, bias_exp) with mant << exp == bias exactly, |mant| <= 4095."""
    b = np.asarray(bias, dtype=np.int64) * np.ones(size, dtype=np.int64)
    mant, exp = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    for i, v in enumerate(b):
        for e in range(8):
            if v % (1 << e) == 0 and abs(v >> e) <= BIAS_MANT_MAX:
                mant[i], exp[i] = v >> e, e
                break
        else:
            raise NativeError(f"{where}: bias {int(v)} is not mant << exp with |mant| <= 4095, exp <= 7")
    return mant, exp


def check_native(net: fe.FixedNetwork, learning: bool = False) -> None:
    """Raise NativeError naming the first thing the native graph cannot hold
    (``learning``: also what native on-chip e-prop cannot,
    :func:`eprop_lava.compile.native_learning.check_native_learning`)."""
    if learning:
        from eprop_lava.compile.native_learning import check_native_learning, rules

        check_native_learning(net)
        rules(net, "eprop")  # the learning rates must be m 2^e constants of the rule
    for r, L in enumerate(net.layers):
        p = L.neuron
        if p.kind in ("alif", "stdp_alif"):
            raise NativeError(f"layer {r} is {p.kind}: no standard Lava process matches the engine's ALIF: "
                              f"{ATRLIF_MISMATCH}; native inference needs LIF layers")
        if p.kind == "izhikevich":
            raise NativeError(f"layer {r} is izhikevich: Lava has no Izhikevich process")
        if np.any(np.asarray(p.n_ref) != 0):
            raise NativeError(f"layer {r} has a refractory period: Lava's standard LIF has none")
        for name in ("w_in", "w_rec"):
            w = getattr(L, name)
            if w is not None:
                try:
                    weight_bits(w)
                except NativeError as exc:
                    raise NativeError(f"layer {r} {name}: {exc}") from None
        bias_mant_exp(p.bias, p.size, f"layer {r}")
    try:
        weight_bits(net.readout.w)
    except NativeError as exc:
        raise NativeError(f"readout: {exc}") from None
    bias_mant_exp(net.readout.bias, net.readout.w.shape[0], "readout")


def placement(net: fe.FixedNetwork) -> list[dict]:
    """Every process of the native graph, where it would run on a Loihi 2 system, and why."""
    rows = [{"process": "RingBuffer source (input)", "where": PLACEMENT["RingBuffer source"][0],
             "why": PLACEMENT["RingBuffer source"][1]}]
    for r, L in enumerate(net.layers):
        rows.append({"process": f"Dense w_in{r} ({weight_bits(L.w_in)} bits, weight_exp {L.weight_exp})",
                     "where": "neurocore", "why": PLACEMENT["Dense"][1]})
        if L.w_rec is not None:
            rows.append({"process": f"Dense w_rec{r} ({weight_bits(L.w_rec)} bits, weight_exp {L.rec_exp})",
                         "where": "neurocore", "why": PLACEMENT["Dense"][1]})
        rows.append({"process": f"LIF layer{r} ({L.neuron.size})", "where": "neurocore", "why": PLACEMENT["LIF"][1]})
        rows.append({"process": f"Dense w_out{r}", "where": "neurocore", "why": PLACEMENT["Dense"][1]})
    rows.append({"process": f"LIF readout ({net.readout.w.shape[0]})", "where": "neurocore",
                 "why": PLACEMENT["readout LIF"][1]})
    for key in ("RingBuffer sink / Monitor", "softmax / class decision"):
        rows.append({"process": key, "where": PLACEMENT[key][0], "why": PLACEMENT[key][1]})
    return rows


LEARNING_PLACEMENT = {
    "LearningDense": ("neurocore", "a standard Lava process (Dense with a Loihi3FLearningRule): the synapses and "
                                   "the rule's sum of products run in a neurocore's learning engine"),
    "EpropLearningLIF": ("neurocore (custom neuron program)",
                         "NOT a standard process: Lava's LIF dynamics (bit-exact) plus a model that sends psi as "
                         "the post trace y1 and forwards the third factor as y2 / y3; on a Loihi 2 it needs its own "
                         "neuron microcode (open Lava has no NcProcessModel for it)"),
    "LearningLIF": ("neurocore", "Lava's standard LearningLIF with its own model, which sends spikes only: the rule "
                                 "uses the post spike (bAP) for psi; the third factor is wired into the "
                                 "LearningDenses' y2 / y3 ports, which in Lava's CPU simulation works but has no equivalent on a chip "
                                 "unless the neuron program forwards it (untested)"),
    "learning signal": ("embedded CPU or host", "ClosedLoopLearningSignal, a custom PyLoihiProcessModel: reads the "
                                                "readout's v every step (RefPort), softmax error and B err in "
                                                "fixed point; no neurocore computes a softmax"),
    "target RingBuffer": ("host", "targets and loss mask streamed from the host: Lava's RingBuffer with a float "
                                  "model of its own (the fixed-point model would truncate the loss mask)"),
}


def learning_placement(net: fe.FixedNetwork, neuron: str = "eprop") -> list[dict]:
    """Every process of the native learning graph (:mod:`native_learning`),
    where it would run on a Loihi 2 system, whether it is a standard Lava
    process, and why."""
    K = net.readout.w.shape[0]

    def row(process: str, key: str, standard: bool) -> dict:
        where, why = (LEARNING_PLACEMENT | {k: v for k, v in PLACEMENT.items()})[key]
        return {"process": process, "where": where, "standard": standard, "why": why}

    rows = [row("RingBuffer source (input)", "RingBuffer source", True)]
    for r, L in enumerate(net.layers):
        n, n_pre = L.w_in.shape
        rows.append(row(f"LearningDense w_in{r} ({n}x{n_pre})", "LearningDense", True))
        if L.w_rec is not None:
            rows.append(row(f"LearningDense w_rec{r} ({n}x{n})", "LearningDense", True))
        if neuron in ("eprop", "eprop_cut"):
            rows.append(row(f"EpropLearningLIF layer{r} ({n})", "EpropLearningLIF", False))
        else:
            rows.append(row(f"LearningLIF layer{r} ({n})", "LearningLIF", True))
        rows += [row(f"LearningDense w_out{r} ({K}x{n})", "LearningDense", True),
                 row(f"ClosedLoopLearningSignal {r} (rows of B for layer {r})", "learning signal", False)]
    rows += [row(f"LIF readout ({K})", "readout LIF", True),
             row("TargetSource (target, mask)", "target RingBuffer", False),
             row("RingBuffer sink / Monitor", "RingBuffer sink / Monitor", True)]
    return rows


def build_native(net: fe.FixedNetwork, steps: int) -> dict:
    """The graph of Lava standard processes (not yet connected to an input)."""
    from eprop_lava.lava_import import import_lava

    import_lava("lava.magma.core.process.process")
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    check_native(net)
    slices = fe.layer_slices(net.spec)
    ro = net.readout
    K = ro.w.shape[0]
    mant, exp = bias_mant_exp(ro.bias, K, "readout")
    readout = LIF(shape=(K,), du=4095, dv=int(ro.d_kappa), vth=VTH_NEVER, bias_mant=mant, bias_exp=exp,
                  name="readout")
    layers, dense_in = [], []
    for r, L in enumerate(net.layers):
        p = L.neuron
        bm, be = bias_mant_exp(p.bias, p.size, f"layer {r}")
        lif = LIF(shape=(p.size,), du=int(np.max(p.du)), dv=int(np.max(p.dv)), vth=int(np.max(p.vth)),
                  bias_mant=bm, bias_exp=be, name=f"layer{r}")
        d_in = Dense(weights=L.w_in.copy(), weight_exp=int(L.weight_exp), num_weight_bits=weight_bits(L.w_in),
                     name=f"w_in{r}")
        d_in.a_out.connect(lif.a_in)
        if r > 0:
            layers[-1].s_out.connect(d_in.s_in)
        if L.w_rec is not None:
            d_rec = Dense(weights=L.w_rec.copy(), weight_exp=int(L.rec_exp), num_weight_bits=weight_bits(L.w_rec),
                          name=f"w_rec{r}")
            lif.s_out.connect(d_rec.s_in)
            d_rec.a_out.connect(lif.a_in)
        w_out = ro.w[:, slices[r]].copy()
        d_out = Dense(weights=w_out, weight_exp=int(ro.weight_exp), num_weight_bits=weight_bits(w_out),
                      name=f"w_out{r}")
        lif.s_out.connect(d_out.s_in)
        d_out.a_out.connect(readout.a_in)
        layers.append(lif)
        dense_in.append(d_in)
    return {"layers": layers, "dense_in": dense_in, "readout": readout}


def run_config(hardware: bool | None = None) -> tuple[Any, str]:
    """Loihi2HwCfg where lava-loihi and a Loihi system are present (UNTESTED:
    no system was available to this project), else Loihi2SimCfg(fixed_pt)."""
    from eprop_lava.compile.deploy import detect_hardware
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

    if hardware is None:
        hardware = bool(detect_hardware()["hardware"])
    if hardware:
        return Loihi2HwCfg(), "Loihi2HwCfg on a Loihi 2 system (untested path)"
    return (Loihi2SimCfg(select_tag="fixed_pt"),
            "Loihi2SimCfg(select_tag='fixed_pt'), CPU (no Loihi system: Loihi2HwCfg is not exercised)")


def run_native(net: fe.FixedNetwork, x: np.ndarray, hardware: bool | None = None) -> dict:
    """Run x (T, n_in) through the native graph: spikes per layer (T, N_r),
    the readout v (T, K) and y in float units. ``hardware``: None detects a
    Loihi system (:func:`run_config`)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    g = build_native(net, T)
    src = io.source.RingBuffer(data=x.T.copy())
    src.s_out.connect(g["dense_in"][0].s_in)
    sinks = []
    for lif in g["layers"]:
        sink = io.sink.RingBuffer(shape=lif.s_out.shape, buffer=T)
        lif.s_out.connect(sink.a_in)
        sinks.append(sink)
    mon = Monitor()
    mon.probe(g["readout"].v, T)
    cfg, backend = run_config(hardware)
    t0 = time.perf_counter()
    try:
        src.run(condition=RunSteps(num_steps=T), run_cfg=cfg)
        z = [np.rint(s.data.get()).astype(np.int64).T for s in sinks]
        v = np.rint(mon.get_data()[g["readout"].name]["v"]).astype(np.int64).reshape(T, -1)
    finally:
        try:
            src.stop()
        except Exception:  # noqa: BLE001 - the runtime may not have started
            pass
    return {"z": z, "y_fixed": v, "y": v / float(net.readout.y_scale), "seconds": time.perf_counter() - t0,
            "backend": backend}


def compare_native(net: fe.FixedNetwork, x: np.ndarray) -> dict:
    """Native graph against the fixed-point engine on x (T, n_in)."""
    run = fe.simulate(net, np.asarray(x)[:, None, :])
    nv = run_native(net, x)
    spikes = sum(int(np.sum(zn != ze[:, 0, :])) for zn, ze in zip(nv["z"], run.z))
    return {"steps": int(np.shape(x)[0]), "spike_mismatches": spikes,
            "spikes_engine": int(sum(z.sum() for z in run.z)),
            "readout_mismatches": int(np.sum(nv["y_fixed"] != run.y[:, 0, :])), "seconds": nv["seconds"],
            "backend": nv["backend"]}
