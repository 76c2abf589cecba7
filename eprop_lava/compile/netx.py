"""Export to lava-dl's netx HDF5 format (docs/lava_loihi.md §5) and run it back.

What netx can express, and therefore what is exported:

* hidden layers of CUBA LIF neurons (``neuron/type = 'CUBA'``, ``iDecay =
  du + 1``, ``vDecay = dv``, ``vThMant = vth``), as ``dense_rec`` (input and
  recurrent weights, netx's RecurrentDense: both Dense synapses delay one
  step, as our engine's "loihi" timing) or ``dense``;
* the leaky readout as a final ``dense`` CUBA layer that never spikes
  (``iDecay = 4096``: u carries only this step's input; ``vDecay =
  d_kappa``; ``vThMant = 2^17 - 1``): its voltage v is our readout y;
* biases as ``bias`` with netx's fixed ``bias_exp = 6``: a readout bias that
  is not a multiple of 64 is rounded, and the export says by how much.

What it cannot, with the reason in the error:

* ALIF / STDP-ALIF (netx has no adaptive-threshold neuron: ``get_neuron_params``
  has no ALIF branch), Izhikevich (no such neuron in Lava), refractory
  periods (Lava's LIF has none, docs/lava_loihi.md §2.3);
* learning synapses (netx describes static Dense weights);
* a readout fed by layers other than the last (netx layers form a chain);
* weights off Lava's Dense grid or with ``weight_exp != 0`` (netx derives
  its own exponent with ``optimize_weight_bits``; on the grid that is exact).

Weights are written as the integers the engine uses; netx rescales them to
full 8-bit range with a compensating negative ``weight_exp``, which is exact
for grid weights (a left shift then a floor right shift of an exact
multiple), so the Lava network produces the engine's spikes bit for bit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.errors import UserError
from eprop_lava.fixed import dense_weights

VTH_NEVER = (1 << 17) - 1
NETX_BIAS_EXP = 6


class NetxError(UserError):
    """The network uses something lava-dl netx cannot express."""


def check_netx(net: fe.FixedNetwork, learning: bool = False) -> None:
    """Raise NetxError naming the first thing netx cannot express."""
    if learning:
        raise NetxError("netx describes static Dense weights; an artifact compiled with learning synapses "
                        "(on-chip e-prop) cannot be exported. Compile without --learning for inference")
    n_layers = len(net.layers)
    for r, L in enumerate(net.layers):
        p = L.neuron
        if p.kind in ("alif", "stdp_alif"):
            raise NetxError(f"layer {r} is {p.kind}: netx has no adaptive-threshold neuron (lava-dl "
                            "netx/hdf5.py get_neuron_params has no ALIF branch; docs/lava_loihi.md §5.1). Only LIF "
                            "(CUBA) networks export; use 'eprop-lava run' for ALIF networks")
        if p.kind == "izhikevich":
            raise NetxError(f"layer {r} is izhikevich: Lava and netx have no Izhikevich neuron (docs/lava_loihi.md §2.3)")
        if p.n_ref != 0:
            raise NetxError(f"layer {r} has a refractory period of {p.n_ref} steps: Lava's LIF has none "
                            f"(docs/lava_loihi.md §2.3); train with --set spec.layers.{r}.params.n_ref=0 to export")
        if np.any(p.bias != 0) and np.any(p.bias % (1 << NETX_BIAS_EXP) != 0):
            raise NetxError(f"layer {r}: biases must be multiples of 2^6 (netx fixes bias_exp = 6)")
        if L.weight_exp != 0:
            raise NetxError(f"layer {r}: weight_exp = {L.weight_exp}; netx chooses its own exponent, export needs 0")
        for name in ("w_in", "w_rec"):
            w = getattr(L, name)
            if w is not None and w.size and not np.array_equal(dense_weights(w, 8), w):
                raise NetxError(f"layer {r} {name}: weights are not on Lava's 8-bit Dense grid (mixed-sign weights "
                                "must be even, in [-256, 254]); compile with eprop-lava compile")
    ro = net.readout
    if ro.weight_exp != 0:
        raise NetxError(f"readout: weight_exp = {ro.weight_exp}; export needs 0")
    if not np.array_equal(dense_weights(ro.w, 8), ro.w):
        raise NetxError("readout: weights are not on Lava's 8-bit Dense grid")
    last = fe.layer_slices(net.spec)[-1]
    if n_layers > 1 and np.any(ro.w[:, :last.start] != 0):
        raise NetxError("readout: it is fed by layers other than the last; netx layers form a chain, so only the "
                        "last layer can drive the readout")


def export_netx(net: fe.FixedNetwork, path: str | Path, learning: bool = False) -> dict:
    """Write the netx HDF5 file; returns what was written (and any rounding)."""
    check_netx(net, learning)
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    last = fe.layer_slices(net.spec)[-1]
    ro = net.readout
    bias = np.asarray(ro.bias, dtype=np.int64) * np.ones(ro.w.shape[0], dtype=np.int64)
    bias_mant = np.rint(bias / float(1 << NETX_BIAS_EXP)).astype(np.int64)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        layers = f.create_group("layer")
        for r, L in enumerate(net.layers):
            g = layers.create_group(str(r))
            rec = L.w_rec is not None
            g.create_dataset("type", (1,), "S10", [b"dense_rec" if rec else b"dense"])
            g.create_dataset("shape", data=np.array([L.neuron.size]))
            g.create_dataset("weight", data=L.w_in.astype(np.int64))
            if rec:
                g.create_dataset("weight_rec", data=L.w_rec.astype(np.int64))
            if np.any(L.neuron.bias != 0):
                g.create_dataset("bias", data=(L.neuron.bias >> NETX_BIAS_EXP) * np.ones(L.neuron.size, dtype=np.int64))
            _neuron(g, int(L.neuron.du) + 1, int(L.neuron.dv), int(L.neuron.vth))
        g = layers.create_group(str(len(net.layers)))
        g.create_dataset("type", (1,), "S10", [b"dense"])
        g.create_dataset("shape", data=np.array([ro.w.shape[0]]))
        g.create_dataset("weight", data=ro.w[:, last].astype(np.int64))
        if np.any(bias_mant != 0):
            g.create_dataset("bias", data=bias_mant)
        _neuron(g, 4096, int(ro.d_kappa), VTH_NEVER)
    tmp.replace(path)
    return {"path": str(path), "layers": len(net.layers) + 1,
            "readout_bias_rounding": int(np.max(np.abs(bias_mant * (1 << NETX_BIAS_EXP) - bias))) if bias.size else 0,
            "note": "the readout is a non-spiking CUBA layer whose voltage is y (threshold 2^17 - 1)"}


def _neuron(g: Any, i_decay: int, v_decay: int, vth: int) -> None:
    n = g.create_group("neuron")
    n.create_dataset("type", (1,), "S10", [b"CUBA"])
    for k, v in dict(iDecay=i_decay, vDecay=v_decay, vThMant=vth, refDelay=1, gradedSpike=False).items():
        n.create_dataset(k, data=v)


def netx_bias_net(net: fe.FixedNetwork) -> fe.FixedNetwork:
    """The network the netx file describes: the readout bias rounded to netx's 2^6 grid."""
    out = net.copy()
    b = np.asarray(out.readout.bias, dtype=np.int64)
    out.readout.bias = np.rint(b / 64.0).astype(np.int64) * 64
    return out


def run_netx(path: str | Path, x: np.ndarray, timeout: float = 300.0) -> dict:
    """Load the file with lava.lib.dl.netx.hdf5.Network and run x (T, n_in)
    in Loihi2SimCfg(select_tag='fixed_pt'): spikes of every hidden layer
    (T, N_r) and the readout voltage (T, K)."""
    from eprop_lava.compile.deploy import import_lava

    import_lava("lava.magma.core.process.process")
    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    net = hdf5.Network(net_config=str(path))
    src = io.source.RingBuffer(data=x.T.copy())
    src.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers[:-1]:
        sink = io.sink.RingBuffer(shape=layer.out.shape, buffer=T)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    mon = Monitor()
    mon.probe(net.layers[-1].neuron.v, T)
    t0 = time.perf_counter()
    try:
        net.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        z = [np.rint(s.data.get()).astype(np.int64).T for s in sinks]
        data = mon.get_data()
        v = np.rint(data[net.layers[-1].neuron.name]["v"]).astype(np.int64).reshape(T, -1)
    finally:
        try:
            net.stop()
        except Exception:  # noqa: BLE001 - the runtime may not have started
            pass
    return {"z": z, "y": v, "seconds": time.perf_counter() - t0}


def compare_netx(net: fe.FixedNetwork, path: str | Path, x: np.ndarray) -> dict:
    """Run the netx file and the fixed-point engine on x (T, n_in); count mismatches."""
    ref = netx_bias_net(net)
    run = fe.simulate(ref, np.asarray(x)[:, None, :])
    lv = run_netx(path, x)
    spikes = sum(int(np.sum(zl != ze[:, 0, :])) for zl, ze in zip(lv["z"], run.z))
    return {"steps": int(x.shape[0]), "spike_mismatches": spikes,
            "spikes_engine": int(sum(z.sum() for z in run.z)),
            "readout_mismatches": int(np.sum(lv["y"] != run.y[:, 0, :])), "seconds": lv["seconds"]}
