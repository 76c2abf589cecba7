"""Export to lava-dl's netx HDF5 format, read the file back through netx,
run it, and report success only when it reproduces the engine.

What netx can express, and therefore what is exported:

* hidden layers of CUBA LIF neurons (``neuron/type = 'CUBA'``, ``iDecay =
  du + 1``, ``vDecay = dv``, ``vThMant = vth``), as ``dense_rec`` (input and
  recurrent weights, netx's RecurrentDense: both Dense synapses delay one
  step, as our engine's "loihi" timing) or ``dense``;
* the leaky readout as a final ``dense`` CUBA layer that never spikes:
  ``iDecay = 4096`` (u carries only this step's input), ``vDecay =
  d_kappa`` and ``vThMant = 2^17``. netx's own default for a layer without
  a neuron is the same threshold (lava-dl 0.6 ``netx/hdf5.py``
  ``create_dense``: ``'vThMant': 1 << 18 - 1``, which Python reads as
  ``1 << 17``). Lava's fixed-point LIF clips v to 2^23 - 1 and spikes when
  v > vth 2^6 = 2^23, so this layer cannot fire even when the readout
  saturates (a threshold of 2^17 - 1 fires and resets a saturated readout).
  Its voltage v is the engine's readout y; y / ``y_scale`` is the float
  readout. The file's root attribute ``eprop_lava`` (JSON) names the layer,
  the variable and ``y_scale``, and :func:`netx_readout` returns y in float
  units;
* biases as ``bias`` with netx's fixed ``bias_exp = 6`` (``get_neuron_params``
  sets it): a bias must be a multiple of 64 with ``|bias / 64| <= 4095``
  (Lava's 13-bit ``bias_mant``). Off-grid readout biases are refused, or,
  with ``round_bias=True``, rounded to the nearest multiple of 64; the file
  then describes that rounded network and the export says so.

How netx reads weights (lava-dl 0.6 ``netx/utils.py optimize_weight_bits``,
called by ``create_dense``): a ``dense_rec`` layer's ``[w_in | w_rec]`` is
optimised *together*: a mixed-sign matrix is clipped to [-256, 254]; it is
shifted left by ``s`` bits with ``weight_exp = -s``; ``num_weight_bits``
counts the trailing zero bits common to the whole concatenation. Each of the
two Lava Dense synapses then determines its *own* sign mode and truncates
``8 - num_weight_bits + mixed`` low bits (``lava/utils/weightutils.py``).
So odd excitatory input weights next to a mixed-sign recurrent matrix with
values above 127 make netx pick 9 bits and the input Dense zeroes every
input weight; a 255 next to a negative weight becomes 254. Instead of
reasoning about every case, :func:`netx_weight_problems` loads the file
with ``lava.lib.dl.netx.hdf5.Network``, applies Lava's own clip and
truncation to the weights netx built, and compares them with the engine's:
any difference is a refusal that names the matrix, the entry and the cause.
Compile with ``grid="netx"`` (``eprop-lava compile --grid netx``) to put a
layer's input and recurrent weights on one grid, which netx reproduces.

What it cannot express, refused before anything is written:

* ALIF / STDP-ALIF (netx has no adaptive-threshold neuron: ``get_neuron_params``
  has no ALIF branch), Izhikevich (no such neuron in Lava), refractory
  periods (Lava's LIF has none, docs/lava_loihi.md §2.3);
* learning synapses (netx describes static Dense weights);
* a readout fed by layers other than the last (netx layers form a chain);
* weights off Lava's Dense grid or with ``weight_exp != 0``.

What is left for a user of the bare file: netx's ``Network`` exposes only
the last layer's spikes, so the readout voltage has to be probed
(``Monitor().probe(net.layers[-1].neuron.v, T)``) and divided by ``y_scale``
(stored in the file) - :func:`netx_readout` does both; the engine's
off-chip parts (softmax, learning) are not in the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.errors import UserError
from eprop_lava.fixed import dense_weights

VTH_NEVER = 1 << 17          # v <= 2^23 - 1 < 2^17 * 2^6: a Lava LIF that cannot spike
NETX_BIAS_EXP = 6
BIAS_MANT_MAX = (1 << 12) - 1
VERIFY_STEPS = 200
VERIFY_RATE = 0.1


class NetxError(UserError):
    """The network uses something lava-dl netx cannot express, or netx
    would run it differently from the engine."""


# ------------------------------------------------------------------ structural checks (no Lava needed)
def check_netx(net: fe.FixedNetwork, learning: bool = False, round_bias: bool = False) -> None:
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
        _check_bias(f"layer {r}", np.asarray(p.bias), round_bias=False)
        if L.weight_exp != 0 or L.rec_exp != 0:
            raise NetxError(f"layer {r}: weight_exp = {L.weight_exp} (recurrent {L.rec_exp}); netx chooses its own "
                            "exponent, export needs 0")
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
    _check_bias("readout", np.asarray(ro.bias), round_bias)
    last = fe.layer_slices(net.spec)[-1]
    if n_layers > 1 and np.any(ro.w[:, :last.start] != 0):
        raise NetxError("readout: it is fed by layers other than the last; netx layers form a chain, so only the "
                        "last layer can drive the readout")


def _check_bias(where: str, bias: np.ndarray, round_bias: bool) -> None:
    step = 1 << NETX_BIAS_EXP
    b = np.asarray(bias, dtype=np.int64)
    mant = np.rint(b / step) if round_bias else b / step
    if np.any(np.abs(mant) > BIAS_MANT_MAX):
        raise NetxError(f"{where}: bias {int(b.flat[np.argmax(np.abs(b))])} exceeds netx's range: netx fixes "
                        f"bias_exp = 6 and Lava's bias_mant has 13 bits (|bias| <= {BIAS_MANT_MAX * step})")
    if not round_bias and np.any(b % step != 0):
        bad = int(b.flat[np.argmax(b % step != 0)])
        raise NetxError(f"{where}: bias {bad} is not a multiple of 64 (netx fixes bias_exp = 6); compile with "
                        "--grid netx, or export with --round-bias to round it (the export reports the change)")


def netx_network(net: fe.FixedNetwork) -> fe.FixedNetwork:
    """The network the netx file describes: the readout bias on netx's 2^6 grid
    (identical to ``net`` when the bias already is)."""
    out = net.copy()
    b = np.asarray(out.readout.bias, dtype=np.int64)
    out.readout.bias = np.rint(b / float(1 << NETX_BIAS_EXP)).astype(np.int64) << NETX_BIAS_EXP
    return out


# ------------------------------------------------------------------ writing
def write_netx(net: fe.FixedNetwork, path: str | Path) -> None:
    """Write the HDF5 file (no checks; see :func:`export_netx`)."""
    import h5py

    last = fe.layer_slices(net.spec)[-1]
    ro = net.readout
    bias = np.asarray(ro.bias, dtype=np.int64) * np.ones(ro.w.shape[0], dtype=np.int64)
    bias_mant = np.rint(bias / float(1 << NETX_BIAS_EXP)).astype(np.int64)
    with h5py.File(path, "w") as f:
        f.attrs["eprop_lava"] = json.dumps(readout_description(net))
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
                g.create_dataset("bias", data=(np.asarray(L.neuron.bias, dtype=np.int64) >> NETX_BIAS_EXP)
                                 * np.ones(L.neuron.size, dtype=np.int64))
            _neuron(g, int(L.neuron.du) + 1, int(L.neuron.dv), int(L.neuron.vth))
        g = layers.create_group(str(len(net.layers)))
        g.create_dataset("type", (1,), "S10", [b"dense"])
        g.create_dataset("shape", data=np.array([ro.w.shape[0]]))
        g.create_dataset("weight", data=ro.w[:, last].astype(np.int64))
        if np.any(bias_mant != 0):
            g.create_dataset("bias", data=bias_mant)
        _neuron(g, 4096, int(ro.d_kappa), VTH_NEVER)


def readout_description(net: fe.FixedNetwork) -> dict:
    """How to read the readout from the netx network (stored in the file)."""
    return {"readout_layer": len(net.layers), "variable": "neuron.v", "y_scale": float(net.readout.y_scale),
            "float_readout": "y = v / y_scale (v: the last layer's neuron.v, probed every step)",
            "timing": "y at step t integrates the hidden spikes of step t-1 (one Dense delay per hop)",
            "classes": int(net.readout.w.shape[0])}


def _neuron(g: Any, i_decay: int, v_decay: int, vth: int) -> None:
    n = g.create_group("neuron")
    n.create_dataset("type", (1,), "S10", [b"CUBA"])
    for k, v in dict(iDecay=i_decay, vDecay=v_decay, vThMant=vth, refDelay=1, gradedSpike=False).items():
        n.create_dataset(k, data=v)


# ------------------------------------------------------------------ reading back through netx
def _lava():
    from eprop_lava.compile.deploy import import_lava

    try:
        import_lava("lava.magma.core.process.process")
        import_lava("lava.lib.dl.netx.hdf5")
    except ImportError as exc:
        raise NetxError(f"export-netx checks the file by loading and running it with lava-dl netx, which is not "
                        f"importable ({exc}); install eprop-lava[lava] (Python 3.10)") from None


def netx_weight_problems(net: fe.FixedNetwork, path: str | Path) -> list[str]:
    """Load the file with lava-dl netx and compare, per Dense synapse, the
    weights Lava's Dense will apply (netx's shifted weights, clipped and
    truncated by Lava's own weightutils, then >> -weight_exp) with the
    engine's. Returns one line per differing matrix (empty: exact)."""
    _lava()
    from lava.lib.dl.netx import hdf5
    from lava.utils.weightutils import SignMode, clip_weights, determine_sign_mode, truncate_weights

    nx = hdf5.Network(net_config=str(path))
    last = fe.layer_slices(net.spec)[-1]
    expected = []
    for r, L in enumerate(net.layers):
        expected.append((f"layer {r} w_in", L.w_in, nx.layers[r].synapse))
        if L.w_rec is not None:
            expected.append((f"layer {r} w_rec", L.w_rec, nx.layers[r].synapse_rec))
    expected.append(("readout w", net.readout.w[:, last], nx.layers[-1].synapse))
    problems = []
    for name, w_engine, syn in expected:
        w_nx = np.asarray(syn.weights.init, dtype=np.int64)
        bits = int(syn.proc_params.get("num_weight_bits", 8))
        wexp = int(syn.proc_params.get("weight_exp", 0))
        mode = determine_sign_mode(w_nx)
        k = 8 - bits + int(mode == SignMode.MIXED)
        if k < 0 or bits > 8:
            what = ("Lava's Dense truncates by a negative bit count and loses every weight" if k < 0 else
                    "a weight mantissa Loihi does not have (1..8 bits)")
            problems.append(f"{name}: netx sets num_weight_bits = {bits}: {what}. netx optimises a layer's "
                            "[w_in | w_rec] together, and odd weights in one matrix next to mixed-sign weights "
                            "beyond +-127 in the other need 9 bits. Compile with --grid netx")
            continue
        applied = truncate_weights(clip_weights(w_nx, mode, num_bits=8), mode, bits).astype(np.int64)
        if wexp > 0:
            problems.append(f"{name}: netx sets weight_exp = {wexp} > 0; the engine's weights have exponent 0")
            continue
        want = np.asarray(w_engine, dtype=np.int64) << -wexp
        bad = np.argwhere(applied != want)
        if bad.size:
            i = tuple(int(v) for v in bad[0])
            cause = ("netx clips a mixed-sign [w_in | w_rec] to [-256, 254]"
                     if w_engine[i] > 254 else "netx's shared weight bits truncate it")
            problems.append(f"{name}: {len(bad)} weight(s) differ, e.g. {list(i)}: engine {int(w_engine[i])}, "
                            f"netx applies {applied[i] / 2.0 ** -wexp:g} ({cause}). Compile with --grid netx")
    return problems


def run_netx(path: str | Path, x: np.ndarray) -> dict:
    """Load the file with lava.lib.dl.netx.hdf5.Network and run x (T, n_in)
    in Loihi2SimCfg(select_tag='fixed_pt'): spikes of every layer (T, N)
    (the readout's included: it must stay silent) and the readout voltage
    (T, K)."""
    _lava()
    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    net = hdf5.Network(net_config=str(path))
    src = io.source.RingBuffer(data=x.T.copy())
    src.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers:
        sink = io.sink.RingBuffer(shape=layer.out.shape, buffer=T)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    mon = Monitor()
    mon.probe(net.layers[-1].neuron.v, T)
    from eprop_lava.compile.deploy import import_lava

    import_lava("eprop_lava.models")
    from eprop_lava.models.network import run_guarded

    def read() -> tuple:
        z = [np.rint(s.data.get()).astype(np.int64).T for s in sinks]
        data = mon.get_data()
        return z, np.rint(data[net.layers[-1].neuron.name]["v"]).astype(np.int64).reshape(T, -1)

    t0 = time.perf_counter()
    # stop() always, also on SIGTERM; the workers die with this process (models/network.py)
    z, v = run_guarded(net, T, Loihi2SimCfg(select_tag="fixed_pt"), read)
    return {"z": z[:-1], "readout_spikes": int(z[-1].sum()), "y": v, "seconds": time.perf_counter() - t0}


def netx_readout(path: str | Path, x: np.ndarray) -> dict:
    """Run a file written by :func:`export_netx` on x (T, n_in) and return the
    readout in float units (y / y_scale, (T, K)), the predicted class per
    step, and the hidden spikes."""
    import h5py

    with h5py.File(path, "r") as f:
        desc = json.loads(f.attrs["eprop_lava"])
    run = run_netx(path, x)
    y = run["y"] / desc["y_scale"]
    return {"y": y, "argmax": np.argmax(y, axis=1), "z": run["z"], "y_fixed": run["y"]}


def compare_netx(net: fe.FixedNetwork, path: str | Path, x: np.ndarray) -> dict:
    """Run the netx file and the fixed-point engine on x (T, n_in); count mismatches."""
    run = fe.simulate(net, np.asarray(x)[:, None, :])
    lv = run_netx(path, x)
    spikes = sum(int(np.sum(zl != ze[:, 0, :])) for zl, ze in zip(lv["z"], run.z))
    y = run.y[:, 0, :]
    return {"steps": int(x.shape[0]), "spike_mismatches": spikes,
            "spikes_engine": int(sum(z.sum() for z in run.z)),
            "readout_mismatches": int(np.sum(lv["y"] != y)), "readout_spikes": lv["readout_spikes"],
            "readout_saturated_steps": int(np.sum(np.any(np.abs(y) >= (1 << 23) - 1, axis=1))),
            "seconds": lv["seconds"]}


def verification_input(n_inputs: int, steps: int = VERIFY_STEPS, rate: float = VERIFY_RATE,
                       seed: int = 0) -> np.ndarray:
    """Bernoulli input spikes (steps, n_inputs) for the export's self-check."""
    return (np.random.default_rng(seed).random((steps, n_inputs)) < rate).astype(np.float64)


# ------------------------------------------------------------------ the export
def export_netx(net: fe.FixedNetwork, path: str | Path, learning: bool = False, round_bias: bool = False,
                x: np.ndarray | None = None) -> dict:
    """Write the netx HDF5 file, load it back through lava-dl netx, check its
    weights, run it on ``x`` (default: :func:`verification_input`) and compare
    with the engine. The file appears at ``path`` only if everything matches
    (0 spike and 0 readout mismatches); otherwise NetxError names the cause."""
    check_netx(net, learning, round_bias)
    target = netx_network(net)
    rounding = int(np.max(np.abs(np.asarray(target.readout.bias) - np.asarray(net.readout.bias)), initial=0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_netx(target, tmp)
        problems = netx_weight_problems(target, tmp)
        if problems:
            raise NetxError("netx would run a different network: " + "; ".join(problems))
        if x is None:
            x = verification_input(net.spec.n_inputs)
        check = compare_netx(target, tmp, x)
        if check["spike_mismatches"] or check["readout_mismatches"] or check["readout_spikes"]:
            raise NetxError(f"netx run differs from the engine on {check['steps']} verification steps: "
                            f"{check['spike_mismatches']} spike and {check['readout_mismatches']} readout "
                            f"mismatches, {check['readout_spikes']} readout spikes")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "layers": len(net.layers) + 1, "verified": check,
            "readout_bias_rounding": rounding,
            "readout_bias_rounding_float": rounding / float(net.readout.y_scale),
            "readout": readout_description(net),
            "note": "the readout is a non-spiking CUBA layer (threshold 2^17); y = neuron.v / y_scale"
                    + ("; the readout bias was rounded to multiples of 64 (netx's bias_exp = 6): the file "
                       "describes that network" if rounding else "")}
