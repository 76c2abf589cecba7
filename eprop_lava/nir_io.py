"""NIR (Neuromorphic Intermediate Representation) export and import.

NIR (Pedersen et al., Nat. Commun. 15:8122, 2024; https://github.com/neuromorphs/NIR,
package ``nir`` 1.0.8) describes a network as a graph of continuous-time
primitives. This module maps this toolkit's discrete-time networks onto it
and back; docs/nir.md states every convention with its source.

Export (:func:`export_nir`) writes, per layer r (names without dots, because
snnTorch's importer groups nodes by the text before the first dot):

* ``layer{r}_w_in``: Linear (N_r, N_src), fed by ``input`` or the previous
  layer's spikes (through ``layer{r}_delay``, a Delay of one step, under
  ``timing="loihi"``);
* ``reset="zero"``: ``layer{r}_lif``, a NIR LIF (v_reset = 0): it spikes and
  resets, like v^{t+1} = alpha v^t (1 - z^t) + I^{t+1} (seed 001 Eq. 1.19
  with Loihi's reset);
* ``reset="subtract"``: NIR's LIF can only reset to a value, so the neuron
  is the exact subgraph ``layer{r}_v`` (LI: the membrane, no reset) ->
  ``layer{r}_spike`` (Threshold v_th) -> ``layer{r}_reset`` (Linear,
  diag(-v_th)) -> ``layer{r}_v``: the spike subtracts v_th one step later,
  v^{t+1} = alpha v^t + I^{t+1} - z^t v_th (seed 001 Eq. 1.19);
* ALIF (subtractive reset): ``layer{r}_spike`` -> ``layer{r}_a`` (LI, decay
  rho_j) -> ``layer{r}_adapt`` (Scale -beta_j) -> ``layer{r}_spike``, so the
  Threshold sees v - beta_j a (seed 001 Eqs. 1.22-1.24);
* ``layer{r}_w_rec``: Linear (N_r, N_r) from the layer's spikes back to its
  membrane, a cycle (one step of delay, seed 002 Eq. 3.10);
* the readout ``readout`` (LI, y^t = kappa y^{t-1} + W_out z^t + b, seed 002
  Eq. 3.12) fed by ``readout_w{r}`` from every layer (``readout_w0`` is an
  Affine carrying b), then ``output``.

Discretisation: NIR's tau dv/dt = (v_leak - v) + r I becomes v^{t+1} = a v^t
+ g I^{t+1} with a = exp(-dt/tau), g = r (1 - a) ("exact": the solution for
input held over the step) or a = 1 - dt/tau, g = r dt/tau ("euler", as
snnTorch with dt = 1e-4 s and Norse with dt = 1e-3 s integrate). Export
picks tau and r so that the chosen rule at the chosen dt gives this
network's alpha and unit gain; import inverts the same rule.

Import (:func:`import_nir`) reads graphs in that form and the forms snnTorch
and Norse write (Linear/Affine -> LIF or memoryless CubaLIF, recurrent LIF
as a nested subgraph, torch tensors as parameters); anything else is refused
with :class:`NIRError`, naming the node and the reason. :func:`write_run`
turns the result into a run directory that ``train`` fine-tunes and
``compile`` takes to Loihi fixed point.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from eprop_lava.errors import UserError
from eprop_lava.neurons.base import adaptation_constants, decay
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec, SpecError

DISCRETISATIONS = ("exact", "euler")
MS = 1e-3            # NIR time constants are written in seconds; this toolkit's are in ms
GAIN_SNAP = 1e-12    # an input gain within this of 1 is 1 (r is stored as a rounded float)
MEMORYLESS = 1e-6    # a CubaLIF synaptic decay below this is none (float32 rounding of tau_syn = dt)
METADATA_KEY = "eprop_lava"


class NIRError(UserError):
    """A NIR graph or a network that cannot be mapped; the message names the node or layer."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRError("NIR support needs the nir package: pip install 'eprop-lava[nir]'") from None
    return nir


# ------------------------------------------------------------ discretisation
def leak_to_tau(leak: float, dt: float, discretisation: str) -> float:
    """The time constant whose discretisation at step dt decays by ``leak`` per step."""
    if discretisation == "exact":
        return -dt / math.log(leak)
    return dt / (1.0 - leak)


def tau_to_leak(tau: np.ndarray, dt: float, discretisation: str) -> np.ndarray:
    """Per-step decay of tau at step dt: exp(-dt/tau) (exact) or 1 - dt/tau (euler)."""
    tau = np.asarray(tau, dtype=np.float64)
    return np.exp(-dt / tau) if discretisation == "exact" else 1.0 - dt / tau


def unit_gain_r(leak: float, tau: float, dt: float, discretisation: str) -> float:
    """r such that the input enters with gain 1: 1/(1 - a) (exact) or tau/dt (euler)."""
    return 1.0 / (1.0 - leak) if discretisation == "exact" else tau / dt


def input_gain(r: np.ndarray, leak: np.ndarray, tau: np.ndarray, dt: float, discretisation: str) -> np.ndarray:
    """g in v^{t+1} = a v^t + g I^{t+1}: r (1 - a) (exact) or r dt / tau (euler)."""
    r = np.asarray(r, dtype=np.float64)
    return r * (1.0 - leak) if discretisation == "exact" else r * dt / np.asarray(tau, dtype=np.float64)


def _check_discretisation(discretisation: str, dt: float) -> None:
    if discretisation not in DISCRETISATIONS:
        raise NIRError(f"discretisation {discretisation!r}: choose one of {', '.join(DISCRETISATIONS)}")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"dt {dt!r}: expected a positive time step in seconds")


# ------------------------------------------------------------------ export
def _exportable(spec: NetworkSpec) -> None:
    """Raise NIRError naming the first layer NIR cannot express."""
    for r, layer in enumerate(spec.layers):
        where = f"layers[{r}] ({layer.neuron})"
        if layer.neuron == "izhikevich":
            raise NIRError(f"{where}: NIR has no Izhikevich neuron and its quadratic membrane "
                           "(0.04 v^2 + 5 v + 140, seed 002 Eq. 3.25) is no combination of NIR's linear primitives")
        if layer.neuron == "stdp_alif":
            raise NIRError(f"{where}: STDP-ALIF's spike-timing-dependent threshold jump (seed 002 Eq. 3.15) "
                           "needs a product of state variables, which NIR cannot express")
        if layer.neuron == "alif" and layer.n_adaptive and spec.reset == "zero":
            raise NIRError(f"{where}: adaptive neurons with reset to zero; the adaptive threshold needs the "
                           "LI + Threshold membrane, which can only subtract its reset (v (1 - z) is a product)")
        if layer.bidirectional:
            raise NIRError(f"{where}: a bidirectional layer reads the sequence backwards in time; "
                           "a NIR graph is causal")
        if layer.params.n_ref != 0:
            raise NIRError(f"{where}: refractory period of {layer.params.n_ref} steps; NIR neurons have none. "
                           f"Train with --set spec.layers.{r}.params.n_ref=0 to export")


def _full(n: int, value: float) -> np.ndarray:
    return np.full(n, float(value), dtype=np.float64)


def _adaptation_nodes(nir: Any, nodes: dict, edges: list, r: int, layer: LayerSpec, dt_ms: float, dt: float,
                      discretisation: str) -> None:
    """ALIF's threshold A^t = v_th + beta_j a^t, a^{t+1} = rho_j a^t + z^t
    (seed 001 Eqs. 1.22-1.24): the spikes feed ``layer{r}_a`` (LI, decay
    rho_j, gain 1), whose output enters the Threshold through
    ``layer{r}_adapt`` (Scale -beta_j), added to the membrane v. The cycle
    spike -> a -> Scale -> spike holds only time-invariant nodes, so its one
    step of delay gives the same spikes wherever a reader puts it."""
    beta, rho = adaptation_constants(layer, dt_ms)
    tau_a = np.array([leak_to_tau(float(q), dt, discretisation) for q in rho])
    r_a = np.array([unit_gain_r(float(q), float(t), dt, discretisation) for q, t in zip(rho, tau_a)])
    p = layer.params
    meta = {"tau_a_ms": float(p.tau_a), "tau_a_max_ms": float(p.tau_a_max if p.tau_a_max is not None else p.tau_a),
            "beta": float(p.beta), "beta_scaling": p.beta_scaling, "adaptive_fraction": float(layer.adaptive_fraction),
            "dt_ms": float(dt_ms)}
    nodes[f"layer{r}_a"] = nir.LI(tau=tau_a, r=r_a, v_leak=np.zeros(layer.size), metadata=meta)
    nodes[f"layer{r}_adapt"] = nir.Scale(scale=-beta)
    edges += [(f"layer{r}_spike", f"layer{r}_a"), (f"layer{r}_a", f"layer{r}_adapt"),
              (f"layer{r}_adapt", f"layer{r}_spike")]


def build_graph(spec: NetworkSpec, params: dict, discretisation: str = "exact", dt: float | None = None,
                readout: bool = True):
    """The NIR graph (a ``nir.NIRGraph``) of a network. dt: the simulator
    step in seconds the graph's time constants are written for (default:
    the spec's own step). ``readout=False`` leaves the readout out: the
    graph's output is the last layer's spikes."""
    nir = _nir()
    dt = spec.dt * MS if dt is None else float(dt)
    _check_discretisation(discretisation, dt)
    _exportable(spec)
    loihi = spec.timing == "loihi"
    nodes: dict = {"input": nir.Input(input_type={"input": np.array([spec.n_inputs])})}
    edges: list = []
    src, n_src = "input", spec.n_inputs
    spikes = []

    def delayed(source: str, n: int, name: str) -> str:
        if not loihi:
            return source
        nodes[name] = nir.Delay(delay=_full(n, dt))
        edges.append((source, name))
        return name

    for r, layer in enumerate(spec.layers):
        n, p = layer.size, layer.params
        alpha = decay(p.tau_m, spec.dt)
        tau = leak_to_tau(alpha, dt, discretisation)
        gain_r = unit_gain_r(alpha, tau, dt, discretisation)
        meta = {"tau_m_ms": float(p.tau_m), "dt_ms": float(spec.dt), "gamma": float(p.gamma)}
        w_in = np.asarray(params[f"layers.{r}.w_in"], dtype=np.float64)
        feed = delayed(src, n_src, f"layer{r}_delay")  # nodes in topological order (nirtorch runs them so)
        nodes[f"layer{r}_w_in"] = nir.Linear(weight=w_in)
        edges.append((feed, f"layer{r}_w_in"))
        if spec.reset == "zero":
            membrane = spike = f"layer{r}_lif"
            nodes[membrane] = nir.LIF(tau=_full(n, tau), r=_full(n, gain_r), v_leak=_full(n, 0.0),
                                      v_threshold=_full(n, p.v_th), v_reset=_full(n, 0.0), metadata=meta)
            edges.append((f"layer{r}_w_in", membrane))
        else:
            membrane, spike = f"layer{r}_v", f"layer{r}_spike"
            nodes[membrane] = nir.LI(tau=_full(n, tau), r=_full(n, gain_r), v_leak=_full(n, 0.0), metadata=meta)
            nodes[spike] = nir.Threshold(threshold=_full(n, p.v_th))
            nodes[f"layer{r}_reset"] = nir.Linear(weight=np.diag(_full(n, -p.v_th)))
            edges += [(f"layer{r}_w_in", membrane), (membrane, spike), (spike, f"layer{r}_reset"),
                      (f"layer{r}_reset", membrane)]
            if layer.neuron == "alif" and layer.n_adaptive:
                _adaptation_nodes(nir, nodes, edges, r, layer, spec.dt, dt, discretisation)
        if layer.recurrent:
            nodes[f"layer{r}_w_rec"] = nir.Linear(weight=np.asarray(params[f"layers.{r}.w_rec"], dtype=np.float64))
            edges += [(spike, f"layer{r}_w_rec"), (f"layer{r}_w_rec", membrane)]
        spikes.append(spike)
        src, n_src = spike, n

    if not readout:  # for readers without LI (snnTorch's and Norse's importers): the last layer's spikes
        nodes["output"] = nir.Output(output_type={"output": np.array([spec.layers[-1].size])})
        edges.append((spikes[-1], "output"))
    else:
        K = spec.readout.n_outputs
        kappa = spec.readout.kappa
        tau_k = leak_to_tau(kappa, dt, discretisation)
        nodes["readout"] = nir.LI(tau=_full(K, tau_k), r=_full(K, unit_gain_r(kappa, tau_k, dt, discretisation)),
                                  v_leak=_full(K, 0.0), metadata={"kappa": float(kappa), "loss": spec.loss})
        w_out = np.asarray(params["readout.w"], dtype=np.float64)
        for r, (start, stop) in enumerate(spec.layer_offsets()):
            name = f"readout_w{r}"
            w = np.ascontiguousarray(w_out[:, start:stop])
            feed = delayed(spikes[r], spec.layers[r].size, f"readout_delay{r}")
            nodes[name] = (nir.Affine(weight=w, bias=np.asarray(params["readout.b"], dtype=np.float64)) if r == 0
                           else nir.Linear(weight=w))
            edges += [(feed, name), (name, "readout")]
        nodes["output"] = nir.Output(output_type={"output": np.array([K])})
        edges.append(("readout", "output"))
    metadata = {METADATA_KEY: json.dumps({"discretisation": discretisation, "dt": dt, "timing": spec.timing,
                                          "reset": spec.reset, "dt_ms": spec.dt})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def load_network(source: Any) -> tuple[NetworkSpec, dict, str]:
    """(spec, float parameters, which) of a run directory (its best.npz when
    it kept one, as compile takes it), checkpoint file, compiled artifact (its
    float parameters, as trained), or a (spec, params) pair."""
    if isinstance(source, tuple) and len(source) == 2:
        return source[0], source[1], "the given parameters"
    path = Path(source)
    if (path / "manifest.json").is_file():
        from eprop_lava.compile.artifact import load_artifact

        art = load_artifact(path)
        if not art.float_params:
            raise NIRError(f"artifact {path}: it holds no float parameters to export")
        return art.spec, art.float_params, f"artifact {path} (its float parameters)"
    from eprop_lava.training import load_checkpoint, select_checkpoint

    ck_file, which = select_checkpoint(path)
    ck = load_checkpoint(ck_file)
    from eprop_lava.engine.network import fold_conventions

    spec, params = fold_conventions(ck.spec, ck.params)  # NIR's LIF/LI have no (1 - alpha) / (1 - kappa) factor
    return spec, params, which


def _atomic_write_graph(graph: Any, path: Path) -> None:
    nir = _nir()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        nir.write(tmp, graph)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def export_nir(source: Any, path: str | Path, discretisation: str = "exact", dt: float | None = None,
               readout: bool = True) -> dict:
    """Write the NIR file of a run, checkpoint, artifact or (spec, params);
    returns a summary (nodes, edges, discretisation, dt)."""
    path = Path(path)
    if path.is_dir():
        raise NIRError(f"--out {path}: is a directory; give the NIR file to write, e.g. {path}/net.nir")
    spec, params, which = load_network(source)
    graph = build_graph(spec, params, discretisation, dt, readout)
    _atomic_write_graph(graph, path)
    return {"path": str(path), "nodes": len(graph.nodes), "edges": len(graph.edges),
            "layers": len(spec.layers), "discretisation": discretisation,
            "dt_seconds": spec.dt * MS if dt is None else float(dt), "reset": spec.reset, "timing": spec.timing,
            "readout": readout, "source": which}


# ------------------------------------------------------------------ import
def read_graph(path: str | Path):
    """nir.read, with any failure as one NIRError line naming the file."""
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise NIRError(f"NIR file not found: {path}")
    try:
        # nir's own type check would add Input nodes in front of dangling
        # nodes; the checks below name them instead
        return nir.read(path, type_check=False)
    except Exception as exc:  # noqa: BLE001 - h5py, assertion and type errors all mean a bad file
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NIRError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {text})") from None


def _flatten(graph: Any, prefix: str = "") -> tuple[dict, list]:
    """Inline nested NIRGraph nodes (snnTorch writes a recurrent layer as
    one): the subgraph's Input forwards to its successors, its Output
    collects its predecessors."""
    nir = _nir()
    nodes: dict = {}
    edges: list = []
    entry: dict = {}   # subgraph name -> inner names its inputs feed
    exit_: dict = {}   # subgraph name -> inner names feeding its output
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _flatten(node, full + "/")
            ins = [k for k, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [k for k, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise NIRError(f"node {full!r}: a subgraph needs exactly one Input and one Output, "
                               f"it has {len(ins)} and {len(outs)}")
            i_name, o_name = f"{full}/{ins[0]}", f"{full}/{outs[0]}"
            entry[full] = [b for a, b in inner_edges if a == i_name]
            exit_[full] = [a for a, b in inner_edges if b == o_name]
            inner_edges = [(a, b) for a, b in inner_edges if a != i_name and b != o_name]
            del inner_nodes[i_name], inner_nodes[o_name]
            nodes.update(inner_nodes)
            edges += inner_edges
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = prefix + a, prefix + b
        for src in exit_.get(a, [a]):
            for dst in entry.get(b, [b]):
                edges.append((src, dst))
    return nodes, edges


def _finite_arrays(name: str, node: Any) -> None:
    for field, value in list(vars(node).items()):
        if field in ("input_type", "output_type", "metadata"):
            continue
        if hasattr(value, "detach") and hasattr(value, "numpy"):  # Norse's graphs hold torch tensors in memory
            value = value.detach().cpu().numpy()
            setattr(node, field, value)
        if isinstance(value, (np.ndarray, float, int)) and not isinstance(value, bool):
            a = np.asarray(value)
            if a.dtype.kind in "fiu" and not np.all(np.isfinite(a)):
                raise NIRError(f"node {name!r} ({type(node).__name__}): {field} has non-finite values")


def _uniform(name: str, field: str, values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise NIRError(f"node {name!r}: {field} is empty")
    if not np.all(values == values[0]):
        raise NIRError(f"node {name!r}: {field} differs between neurons ({values.min():g} .. {values.max():g}); "
                       "this toolkit has one value per layer")
    return float(values[0])


def _snap_gain(g: float) -> float:
    return 1.0 if abs(g - 1.0) <= GAIN_SNAP else g


def _meta(node: Any) -> dict:
    m = getattr(node, "metadata", None)
    return m if isinstance(m, dict) else {}


def _time_constant_ms(name: str, node: Any, leak: float, dt_ms: float) -> float:
    """tau_m (ms) of the spec whose alpha = exp(-dt/tau_m) is ``leak``; this
    toolkit's own value when the node records one that gives the same decay
    (the float round trip through seconds is otherwise off by an ulp)."""
    if not 0.0 < leak < 1.0:
        raise NIRError(f"node {name!r}: per-step decay {leak:g} is outside (0, 1) at this dt; "
                       "check --dt and --discretisation")
    m = _meta(node)
    try:
        tau_ms, rec_dt = float(m["tau_m_ms"]), float(m["dt_ms"])
        if rec_dt == dt_ms and abs(decay(tau_ms, dt_ms) - leak) <= 1e-12:
            return tau_ms
    except (KeyError, TypeError, ValueError):
        pass
    return -dt_ms / math.log(leak)


def _graph_conventions(graph: Any, discretisation: str | None, dt: float | None) -> tuple[str, float, float]:
    """(discretisation, dt in seconds, spec dt in ms): the caller's choice,
    else what this toolkit recorded in the graph, else an error."""
    recorded: dict = {}
    raw = _meta(graph).get(METADATA_KEY)
    if raw is not None:
        try:
            recorded = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except (TypeError, ValueError):
            recorded = {}
    disc = discretisation or recorded.get("discretisation")
    step = dt if dt is not None else recorded.get("dt")
    if disc is None or step is None:
        raise NIRError("the graph does not record how it is discretised; pass --discretisation and --dt "
                       "(snnTorch's exporter: euler, 1e-4; Norse's: euler, 1e-3)")
    _check_discretisation(disc, step)
    dt_ms = float(recorded["dt_ms"]) if ("dt_ms" in recorded and dt is None) else float(step) / MS
    return disc, float(step), dt_ms


def import_nir(path: str | Path, discretisation: str | None = None, dt: float | None = None,
               n_outputs: int | None = None, base: NetworkSpec | None = None) -> tuple[NetworkSpec, dict]:
    """Read a NIR file as (NetworkSpec, params); see :func:`network_from_graph`."""
    spec, params, _ = network_from_graph(read_graph(path), discretisation, dt, n_outputs, base)
    return spec, params


def network_from_graph(graph: Any, discretisation: str | None = None, dt: float | None = None,
                       n_outputs: int | None = None, base: NetworkSpec | None = None) -> tuple[NetworkSpec, dict, list]:
    """(NetworkSpec, params, notes) of a NIR graph.

    discretisation and dt (seconds): how the graph's origin integrated it
    (default: what this toolkit recorded in it). ``base`` supplies what NIR
    does not describe (loss, learning, optimizer, pseudo-derivative gamma);
    its structure is replaced by the graph's. A graph whose output is a
    spiking layer (snnTorch's usual last Leaky) gets a fresh readout of
    ``n_outputs`` leaky units (default: that layer's size), named in the notes."""
    nir = _nir()
    disc, step, dt_ms = _graph_conventions(graph, discretisation, dt)
    nodes, edges = _flatten(graph)
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise NIRError(f"edge ({a!r}, {b!r}): node {end!r} does not exist")
    for name, node in nodes.items():
        _finite_arrays(name, node)
    succ: dict = {k: [] for k in nodes}
    pred: dict = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    for name, node in nodes.items():
        if not pred[name] and not isinstance(node, nir.Input):
            raise NIRError(f"node {name!r} ({type(node).__name__}): no edge leads into it")
        if not succ[name] and not isinstance(node, nir.Output):
            raise NIRError(f"node {name!r} ({type(node).__name__}): no edge leaves it")
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"the graph needs exactly one Input and one Output node, it has {len(inputs)} "
                       f"and {len(outputs)}")
    supported = (nir.Input, nir.Output, nir.Linear, nir.Affine, nir.LIF, nir.LI, nir.Threshold, nir.CubaLIF,
                 nir.Delay, nir.Scale)
    for name, node in nodes.items():
        if not isinstance(node, supported):
            raise NIRError(f"node {name!r}: NIR type {type(node).__name__} has no counterpart here "
                           "(supported: Input, Output, Linear, Affine, LIF, CubaLIF, LI, Threshold, Scale, Delay)")
    n_in = int(np.prod(nodes[inputs[0]].input_type["input"]))

    # The spiking units: a LIF/CubaLIF, or an LI whose only successor is a Threshold.
    units: dict = {}   # membrane node -> spike node
    adaptation: dict = {}   # membrane node -> (adaptation LI, Scale)
    for name, node in nodes.items():
        if isinstance(node, (nir.LIF, nir.CubaLIF)):
            units[name] = name
        elif isinstance(node, nir.Threshold):
            ps = pred[name]
            lis = [q for q in ps if isinstance(nodes[q], nir.LI)]
            scales = [q for q in ps if isinstance(nodes[q], nir.Scale)]
            if len(lis) != 1 or len(scales) > 1 or len(ps) != len(lis) + len(scales):
                raise NIRError(f"node {name!r}: a Threshold must be fed by one LI (the membrane) and at most one "
                               f"Scale (an adaptive threshold); it is fed by {ps}")
            units[lis[0]] = name
            if scales:
                a = pred[scales[0]]
                if len(a) != 1 or not isinstance(nodes[a[0]], nir.LI) or pred[a[0]] != [name]:
                    raise NIRError(f"node {scales[0]!r}: an adaptive threshold is Threshold -> LI -> Scale -> "
                                   f"Threshold; this Scale is fed by {a}")
                adaptation[lis[0]] = (a[0], scales[0])
    adaptive_lis = {a for a, _ in adaptation.values()}
    for name, node in nodes.items():
        if isinstance(node, nir.Scale) and not any(name == sc for _, sc in adaptation.values()):
            raise NIRError(f"node {name!r}: a Scale maps only as the adaptation of a threshold")
    readouts = [k for k, v in nodes.items() if isinstance(v, nir.LI) and k not in units and k not in adaptive_lis]
    if len(readouts) > 1:
        raise NIRError(f"nodes {readouts}: more than one leaky integrator without a threshold; "
                       "this toolkit has one readout")

    def through_delay(name: str) -> str:
        """The source behind an optional Delay node (loihi timing)."""
        if isinstance(nodes[name], nir.Delay):
            d = nodes[name].delay
            if not np.allclose(d, step, rtol=1e-9, atol=0):
                raise NIRError(f"node {name!r}: delay {np.ravel(d)[0]:g} s; only a delay of one step ({step:g} s) "
                               "maps (Loihi timing)")
            ps = pred[name]
            if len(ps) != 1:
                raise NIRError(f"node {name!r}: a Delay needs exactly one source, it has {ps}")
            return ps[0]
        return name

    def afferents(target: str) -> list:
        """(source, weight, bias, via_delay) of every Linear/Affine feeding target."""
        out = []
        for w in pred[target]:
            node = nodes[w]
            if not isinstance(node, (nir.Linear, nir.Affine)):
                raise NIRError(f"node {target!r}: fed by {w!r} ({type(node).__name__}); only Linear or Affine "
                               "weights may feed a neuron here")
            ps = pred[w]
            if len(ps) != 1:
                raise NIRError(f"node {w!r}: a weight node needs exactly one source, it has {len(ps)}")
            src = through_delay(ps[0])
            weight = np.asarray(node.weight, dtype=np.float64)
            if weight.ndim != 2:
                raise NIRError(f"node {w!r}: weight has shape {weight.shape}; only 2-D (dense) weights map")
            bias = np.asarray(node.bias, dtype=np.float64) if isinstance(node, nir.Affine) else None
            out.append((src, w, weight, bias, src != ps[0]))
        return out

    # Walk the chain of layers from the input.
    layers, chain_params = [], {}
    source, n_src, timing_delay = inputs[0], n_in, None
    resets = set()
    layer_spikes: list = []
    membranes_left = set(units)
    r = 0
    while True:
        fed = []
        for m in sorted(membranes_left):
            sources = {src for src, *_ in afferents(m)} - {m, units[m]}
            if source in sources:
                fed.append(m)
        if not fed:
            break
        if len(fed) > 1:
            raise NIRError(f"nodes {fed}: more than one layer is fed by {source!r}; only a chain of layers maps")
        m = fed[0]
        membranes_left.discard(m)
        spike = units[m]
        node = nodes[m]
        ff, loop = [], []
        for src, w, weight, bias, via_delay in afferents(m):
            if bias is not None and np.any(bias != 0):
                raise NIRError(f"node {w!r}: bias feeding layer {m!r}; this toolkit's layers have no bias")
            if src in (spike, m):
                if via_delay:
                    raise NIRError(f"node {w!r}: a Delay inside a recurrent loop does not map")
                loop.append((w, weight))
            elif src == source:
                ff.append((w, weight, via_delay))
            else:
                raise NIRError(f"node {w!r}: feeds layer {m!r} from {src!r}, which is neither the previous "
                               f"layer ({source!r}) nor the layer itself; skip connections do not map")
        if len(ff) != 1:
            raise NIRError(f"node {m!r}: needs exactly one input weight from {source!r}, found {len(ff)}")
        w_name, w_in, via_delay = ff[0]
        n = int(np.prod(node.output_type["output"])) if node.output_type else w_in.shape[0]
        if w_in.shape != (n, n_src):
            raise NIRError(f"node {w_name!r}: weight shape {w_in.shape}, layer {m!r} needs ({n}, {n_src})")
        if timing_delay is None:
            timing_delay = via_delay
        elif timing_delay != via_delay:
            raise NIRError(f"node {w_name!r}: some layers are fed through a one-step Delay and others not; "
                           "this toolkit's timings delay all (loihi) or none (bellec)")
        if isinstance(node, nir.LI):
            tau, r_, v_th = node.tau, node.r, _uniform(spike, "threshold", nodes[spike].threshold)
            if np.any(node.v_leak != 0):
                raise NIRError(f"node {m!r}: v_leak must be 0")
            reset = "subtract"
        else:
            if isinstance(node, nir.CubaLIF):
                syn_leak = tau_to_leak(node.tau_syn, step, disc)
                # snnTorch writes tau_syn = dt / (1 - alpha) in float32: alpha = 0 comes back as ~1e-8
                if not np.all(np.abs(syn_leak) <= MEMORYLESS):
                    raise NIRError(f"node {m!r}: CubaLIF filters its synaptic current (per-step decay "
                                   f"{np.ravel(syn_leak)[0]:g}); this toolkit's neurons have no current filter")
                tau, r_ = node.tau_mem, node.r * node.w_in * input_gain(1.0, syn_leak, node.tau_syn, step, disc)
            else:
                tau, r_ = node.tau, node.r
            if np.any(node.v_leak != 0):
                raise NIRError(f"node {m!r}: v_leak must be 0")
            if np.any(node.v_reset != 0):
                raise NIRError(f"node {m!r}: v_reset must be 0 (this toolkit resets to zero or subtracts)")
            v_th = _uniform(m, "v_threshold", node.v_threshold)
            reset = "zero"
        resets.add(reset)
        if v_th <= 0:
            raise NIRError(f"node {spike!r}: threshold {v_th:g} must be > 0")
        leak = _uniform(m, "decay", tau_to_leak(tau, step, disc))
        gain = _snap_gain(_uniform(m, "input gain r", input_gain(r_, tau_to_leak(tau, step, disc), tau, step, disc)))
        tau_ms = _time_constant_ms(m, node, leak, dt_ms)
        w_rec = sum((w for _, w in loop), np.zeros((n, n)))
        for w_name_l, w in loop:
            if w.shape != (n, n):
                raise NIRError(f"node {w_name_l!r}: recurrent weight shape {w.shape}, layer {m!r} needs ({n}, {n})")
        if reset == "subtract":
            # the loops' sum is W_rec - v_th I whatever they are: a loop without the
            # reset (or none: a neuron that never resets) becomes +v_th on W_rec's diagonal
            w_rec = w_rec * gain + v_th * np.eye(n)
        else:
            w_rec = w_rec * gain
        # a subtractive layer always has its reset loop; it is recurrent when W_rec is more than that
        recurrent = bool(np.any(w_rec != 0)) if reset == "subtract" else bool(loop)
        chain_params[f"layers.{r}.w_in"] = w_in * gain
        if recurrent:
            chain_params[f"layers.{r}.w_rec"] = w_rec
        gamma = _meta(node).get("gamma")
        base_params = (base.layers[min(r, len(base.layers) - 1)].params if base is not None else NeuronParams())
        neuron_params = replace(base_params, tau_m=tau_ms, v_th=v_th, n_ref=0,
                                gamma=float(gamma) if gamma is not None else base_params.gamma)
        layer_spec = LayerSpec(size=n, neuron="lif", recurrent=recurrent, params=neuron_params)
        if m in adaptation:
            layer_spec = _adaptive_layer(nodes, adaptation[m], layer_spec, leak, step, disc, dt_ms)
        layers.append(layer_spec)
        layer_spikes.append(spike)
        source, n_src = spike, n
        r += 1
    if not layers:
        raise NIRError(f"no spiking layer (LIF, CubaLIF, or LI + Threshold) is fed by the input {inputs[0]!r}")
    if membranes_left:
        raise NIRError(f"nodes {sorted(membranes_left)}: not reached from the input through a chain of layers")
    if len(resets) > 1:
        raise NIRError("the graph mixes reset-to-zero (LIF) and subtractive-reset (LI + Threshold) layers; "
                       "this toolkit uses one reset for the whole network")
    reset = resets.pop()
    notes: list = []
    out_name = outputs[0]
    out_src = pred[out_name]
    if len(out_src) != 1:
        raise NIRError(f"node {out_name!r}: the Output needs exactly one source, it has {out_src}")
    offsets, start = [], 0
    for L in layers:
        offsets.append((start, start + L.size))
        start += L.size
    n_total = start
    if readouts:
        ro = readouts[0]
        if out_src[0] != ro:
            raise NIRError(f"node {out_name!r}: fed by {out_src[0]!r}, expected the readout {ro!r}")
        li = nodes[ro]
        K = int(np.asarray(li.tau).size)
        if np.any(li.v_leak != 0):
            raise NIRError(f"node {ro!r}: v_leak must be 0 (a constant drive is an Affine bias)")
        leak = _uniform(ro, "decay", tau_to_leak(li.tau, step, disc))
        if not 0.0 < leak < 1.0:
            raise NIRError(f"node {ro!r}: per-step decay {leak:g} is outside (0, 1); check --dt and --discretisation")
        recorded = _meta(li).get("kappa")
        kappa = float(recorded) if recorded is not None and abs(float(recorded) - leak) <= 1e-12 else leak
        gain = _snap_gain(_uniform(ro, "input gain r", input_gain(li.r, tau_to_leak(li.tau, step, disc), li.tau,
                                                                   step, disc)))
        w_out, b = np.zeros((K, n_total)), np.zeros(K)
        for src, w, weight, bias, via_delay in afferents(ro):
            if src not in layer_spikes:
                raise NIRError(f"node {w!r}: feeds the readout from {src!r}, which is not a spiking layer")
            if via_delay != bool(timing_delay):
                raise NIRError(f"node {w!r}: the readout's Delay does not match the layers' timing")
            k = layer_spikes.index(src)
            s0, s1 = offsets[k]
            if weight.shape != (K, s1 - s0):
                raise NIRError(f"node {w!r}: weight shape {weight.shape}, the readout needs ({K}, {s1 - s0})")
            w_out[:, s0:s1] += weight * gain
            if bias is not None:
                b = b + bias * gain
        readout_w = {"readout.w": w_out, "readout.b": b}
    else:
        if out_src[0] != layer_spikes[-1]:
            raise NIRError(f"node {out_name!r}: fed by {out_src[0]!r}; expected the readout LI or the last layer")
        K = int(n_outputs or layers[-1].size)
        kappa = base.readout.kappa if base is not None else ReadoutSpec().kappa
        readout_w = None
        notes.append(f"the graph has no leaky readout (its output is the spikes of {out_src[0]!r}); "
                     f"a new readout of {K} units from all layers was initialised (N(0, 1/N), bias 0)")
    timing = "loihi" if timing_delay else "bellec"
    fields = dict(n_inputs=n_in, layers=tuple(layers), readout=ReadoutSpec(n_outputs=K, kappa=kappa),
                  timing=timing, reset=reset, dt=dt_ms)
    try:
        spec = base.replace(**fields) if base is not None else NetworkSpec(**fields)
    except SpecError as exc:
        raise NIRError(f"the graph maps to an invalid network: {exc}") from None
    from eprop_lava.engine.network import init_params

    params = init_params(spec)
    params.update(chain_params)
    if readout_w is not None:
        params.update(readout_w)
    for r, L in enumerate(layers):
        if not L.recurrent:
            params.pop(f"layers.{r}.w_rec", None)
    return spec, params, notes


def _adaptive_layer(nodes: dict, names: tuple, layer: LayerSpec, alpha: float, step: float, disc: str,
                    dt_ms: float) -> LayerSpec:
    """The ALIF layer whose (beta_j, rho_j) (base.adaptation_constants) are
    the graph's: non-adaptive neurons first, tau_a spanning [tau_a, tau_a_max]
    linearly, beta constant ("none") or beta (1 - rho_j)/(1 - alpha) ("bellec")."""
    a_name, scale_name = names
    li, scale = nodes[a_name], nodes[scale_name]
    n = layer.size
    if np.asarray(li.tau).size != n or np.asarray(scale.scale).size != n:
        raise NIRError(f"node {a_name!r}: the adaptation has {np.asarray(li.tau).size} units, the layer {n}")
    if np.any(li.v_leak != 0):
        raise NIRError(f"node {a_name!r}: v_leak must be 0")
    rho = tau_to_leak(li.tau, step, disc)
    gain = input_gain(li.r, rho, li.tau, step, disc)
    beta = -np.asarray(scale.scale, dtype=np.float64) * np.where(np.abs(gain - 1) <= GAIN_SNAP, 1.0, gain)
    adaptive = beta != 0
    n_ad = int(adaptive.sum())
    if n_ad == 0:
        return layer
    if not np.all(adaptive[n - n_ad:]) or np.any(beta < 0):
        raise NIRError(f"node {scale_name!r}: adaptive neurons must come last with beta > 0 "
                       "(this toolkit's layer layout)")
    m = _meta(li)
    frac = n_ad / n
    try:  # this toolkit's own values, when they give the graph's constants
        candidate = replace(layer, neuron="alif", adaptive_fraction=float(m["adaptive_fraction"]), params=replace(
            layer.params, tau_a=float(m["tau_a_ms"]), beta=float(m["beta"]), beta_scaling=str(m["beta_scaling"]),
            tau_a_max=float(m["tau_a_max_ms"]) if float(m["tau_a_max_ms"]) != float(m["tau_a_ms"]) else None))
        b2, r2 = adaptation_constants(candidate, dt_ms)
        if float(m["dt_ms"]) == dt_ms and np.allclose(b2, beta, rtol=1e-12, atol=0) and \
                np.allclose(r2[n - n_ad:], rho[n - n_ad:], rtol=1e-12, atol=0):
            return candidate
    except (KeyError, TypeError, ValueError, SpecError):
        pass
    rho_ad = rho[n - n_ad:]
    if not np.all((rho_ad > 0) & (rho_ad < 1)):
        raise NIRError(f"node {a_name!r}: adaptation decay outside (0, 1) at this dt")
    taus = -dt_ms / np.log(rho_ad)
    if not np.allclose(taus, np.linspace(taus[0], taus[-1], n_ad), rtol=1e-9, atol=0):
        raise NIRError(f"node {a_name!r}: adaptation time constants do not span [tau_a, tau_a_max] linearly")
    scaling, value = "none", beta[n - n_ad:]
    if not np.allclose(value, value[0], rtol=1e-9, atol=0):
        scaling, value = "bellec", value * (1 - alpha) / (1 - rho_ad)
        if not np.allclose(value, value[0], rtol=1e-9, atol=0):
            raise NIRError(f"node {scale_name!r}: beta is neither constant nor beta (1 - rho_j)/(1 - alpha)")
    return replace(layer, neuron="alif", adaptive_fraction=frac, params=replace(
        layer.params, tau_a=float(taus[0]), tau_a_max=float(taus[-1]) if taus[-1] != taus[0] else None,
        beta=float(value[0]), beta_scaling=scaling))


# ------------------------------------------------------------------ run directory
def write_run(spec: NetworkSpec, params: dict, out: str | Path, task: str, task_options: dict | None = None,
              origin: str = "", train: dict | None = None) -> Path:
    """A run directory (config.json, checkpoint.npz at iteration 0) that
    ``train`` resumes from (fine-tuning) and ``compile`` reads, written with
    training.py's own checkpoint functions."""
    from dataclasses import asdict

    from eprop_lava.eprop.optim import Optimizer
    from eprop_lava.training import TrainConfig, atomic_write_text, save_checkpoint, task_from_config

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NIRError(f"--out {out}: exists and is not an empty directory; choose another")
    config = TrainConfig.from_dict({**(train or {}), "task": task, "task_options": dict(task_options or {}),
                                    "seed": spec.seed})
    task_obj = task_from_config(config)
    want = task_obj.default_spec()
    if want.n_inputs != spec.n_inputs or want.readout.n_outputs != spec.readout.n_outputs:
        raise NIRError(f"task {task!r} has {want.n_inputs} inputs and {want.readout.n_outputs} outputs; the graph's "
                       f"network has {spec.n_inputs} and {spec.readout.n_outputs}")
    if hasattr(task_obj, "parameter_distance"):  # logged every iteration by train: it must accept these shapes
        try:
            task_obj.parameter_distance(params)
        except ValueError as exc:
            raise NIRError(f"task {task!r} compares the network with its teacher and cannot: {exc} "
                           "(the teacher is the task's default network: match it with --task-option, e.g. n_neurons=N, "
                           "or choose another task)") from None
    rng = np.random.default_rng([config.seed, 1])
    save_checkpoint(out / "checkpoint.npz", spec, config, params, Optimizer(spec.optimizer), 0,
                    rng.bit_generator.state, {"imported_from": origin})
    atomic_write_text(out / "config.json", json.dumps({"spec": spec.to_dict(), "train": asdict(config)}, indent=2))
    return out


# ------------------------------------------------------------------ command line
def cmd_export_nir(args: Any) -> int:
    info = export_nir(args.source, args.out, discretisation=args.discretisation, dt=args.dt,
                      readout=not args.no_readout)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"from {info['source']}")
        print(f"NIR graph: {info['path']} ({info['layers']} layer(s), {info['nodes']} nodes, {info['edges']} edges; "
              f"{info['discretisation']} at dt = {info['dt_seconds']:g} s, reset {info['reset']}, "
              f"timing {info['timing']})")
    return 0


def cmd_import_nir(args: Any) -> int:
    from eprop_lava.cli import _parse_value, _set_path
    from eprop_lava.training import TrainConfig, task_from_config

    options = {}
    for item in args.task_option or []:
        if "=" not in item:
            raise UserError(f"--task-option {item!r}: expected key=value, e.g. --task-option n_cues=5")
        key, value = item.split("=", 1)
        options[key.strip()] = _parse_value(value)
    train: dict = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().startswith("train."):
            raise UserError(f"--set {item!r}: expected train.KEY=VALUE, e.g. train.batch_size=16")
        _set_path(train, key.strip()[6:], _parse_value(value), f"--set {key.strip()}")
    if args.outputs is not None and args.outputs < 1:
        raise UserError(f"--outputs: expected a positive integer, got {args.outputs}")
    task = task_from_config(TrainConfig(task=args.task, task_options=options))
    spec, params, notes = network_from_graph(read_graph(args.graph), discretisation=args.discretisation, dt=args.dt,
                                             n_outputs=args.outputs or task.default_spec().readout.n_outputs,
                                             base=task.default_spec())
    out = write_run(spec, params, args.out, args.task, options, origin=str(args.graph), train=train)
    summary = {"run_dir": str(out), "task": args.task, "layers": [L.size for L in spec.layers],
               "recurrent": [L.recurrent for L in spec.layers], "n_inputs": spec.n_inputs,
               "n_outputs": spec.readout.n_outputs, "reset": spec.reset, "timing": spec.timing,
               "tau_m_ms": [L.params.tau_m for L in spec.layers], "notes": notes}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for note in notes:
            print(f"note: {note}")
        print(f"imported {args.graph}: {spec.n_inputs} inputs, layers {summary['layers']}, "
              f"{spec.readout.n_outputs} outputs, reset {spec.reset}, timing {spec.timing} -> {out} "
              f"(fine-tune: eprop-lava train {args.task} --config {out}/config.json --out {out}; "
              f"compile: eprop-lava compile {out})")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("export-nir", help="write a trained network as a NIR graph (docs/nir.md)")
    p.add_argument("source", help="run directory, checkpoint.npz or compiled artifact")
    p.add_argument("--out", required=True, help="NIR file to write (HDF5, e.g. net.nir)")
    p.add_argument("--discretisation", choices=DISCRETISATIONS, default="exact",
                   help="how the reading simulator integrates: exact (a = exp(-dt/tau), default) or euler "
                        "(a = 1 - dt/tau, snnTorch and Norse)")
    p.add_argument("--dt", type=float, help="that simulator's time step in seconds (default: the network's own "
                                            "step; snnTorch's importer uses 1e-4)")
    p.add_argument("--no-readout", action="store_true",
                   help="leave the leaky readout out (the output is the last layer's spikes), for readers without "
                        "an LI such as snnTorch's and Norse's importers")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (for scripts) instead of text")
    p.set_defaults(func=cmd_export_nir)

    p = sub.add_parser("import-nir", help="turn a NIR graph into a run directory to fine-tune and compile")
    p.add_argument("graph", help="NIR file (HDF5)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--task", required=True, help="the task the run trains on (its inputs and outputs must match)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="an option of the task (repeatable)")
    p.add_argument("--discretisation", choices=DISCRETISATIONS,
                   help="how the graph's origin integrated it (default: recorded in the graph by this toolkit; "
                        "snnTorch and Norse: euler)")
    p.add_argument("--dt", type=float, help="the origin's time step in seconds (snnTorch 1e-4, Norse 1e-3)")
    p.add_argument("--set", action="append", metavar="train.KEY=VALUE",
                   help="training option recorded in the run, e.g. train.batch_size=16 (repeatable)")
    p.add_argument("--outputs", type=int, help="readout size when the graph has no leaky readout "
                                                "(default: the task's)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (for scripts) instead of text")
    p.set_defaults(func=cmd_import_nir)
