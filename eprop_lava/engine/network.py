"""Parameters, batches and the batched forward simulation of a multi-layer RSNN.

Parameters are a flat dict of named arrays (easy to checkpoint, optimize and
quantize):

    layers.{r}.w_in   (N_r, N_src)   input weights (src = inputs or layer r-1)
    layers.{r}.w_rec  (N_r, N_r)     recurrent weights, zero diagonal
    layers.{r}.rev_w_in, rev_w_rec   the backward direction of a bidirectional layer
    readout.w         (K, N_total)   readout from all layers (seed 002 Eq. 3.12)
    readout.b         (K,)           (held at its initial value with conventions.readout_bias = "untrained")
    feedback.b        (N_total, K)   random / adaptive e-prop only

The forward pass (seed 002 Eqs. 3.10-3.14) follows the spec's timing:

    bellec: I_r^t = W_in,r src^t + W_rec,r z_r^{t-1},  y^t uses z^t
    loihi:  I_r^t = W_in,r src^{t-1} + W_rec,r z_r^{t-1},  y^t uses z^{t-1}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from eprop_lava.engine import fused
from eprop_lava.neurons import get_model
from eprop_lava.spec import NetworkSpec, SpecError


@dataclass
class Batch:
    """A minibatch, time-major: x (T, B, n_in); target (T, B, K) (class
    probabilities for cross-entropy, values for MSE); mask (T, B) weights
    of each step in the loss (0 outside the loss window)."""

    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    labels: np.ndarray | None = None  # (B,) class per sample, when the task has one

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise ValueError(f"Batch.x must have shape (T, B, n_inputs), got {self.x.shape}")
        T, B = self.x.shape[:2]
        if self.target.shape[:2] != (T, B) or self.target.ndim != 3:
            raise ValueError(f"Batch.target must have shape (T={T}, B={B}, K), got {self.target.shape}")
        if self.mask.shape != (T, B):
            raise ValueError(f"Batch.mask must have shape (T={T}, B={B}), got {self.mask.shape}")

    @property
    def steps(self) -> int:
        return self.x.shape[0]

    @property
    def size(self) -> int:
        return self.x.shape[1]


def param_names(spec: NetworkSpec) -> list[str]:
    names = []
    for r, layer in enumerate(spec.layers):
        for prefix in ((f"layers.{r}.", f"layers.{r}.rev_") if layer.bidirectional else (f"layers.{r}.",)):
            names.append(prefix + "w_in")
            if layer.recurrent:
                names.append(prefix + "w_rec")
    names += ["readout.w", "readout.b"]
    if spec.learning.variant != "symmetric":
        names.append("feedback.b")
    return names


def init_params(spec: NetworkSpec, rng: np.random.Generator | int | None = None) -> dict[str, np.ndarray]:
    """Initial weights: W ~ N(0, 1/n_pre) * weight_scale (recurrent diagonal 0),
    readout N(0, 1/N_total), bias 0, feedback B ~ N(0, feedback_std^2)
    (seed 001 sec. 5.3.3: mean 0, variance 1)."""
    rng = np.random.default_rng(spec.seed if rng is None else rng)
    params: dict[str, np.ndarray] = {}
    n_src = spec.n_inputs
    for r, layer in enumerate(spec.layers):
        n = layer.size
        for prefix in ((f"layers.{r}.", f"layers.{r}.rev_") if layer.bidirectional else (f"layers.{r}.",)):
            params[prefix + "w_in"] = layer.weight_scale * rng.standard_normal((n, n_src)) / np.sqrt(n_src)
            if layer.recurrent:
                w = layer.weight_scale * rng.standard_normal((n, n)) / np.sqrt(n)
                np.fill_diagonal(w, 0.0)
                params[prefix + "w_rec"] = w
        n_src = layer.n_outputs
    K, N = spec.readout.n_outputs, spec.n_neurons
    params["readout.w"] = rng.standard_normal((K, N)) / np.sqrt(N)
    params["readout.b"] = np.zeros(K)
    if spec.learning.variant != "symmetric":
        params["feedback.b"] = spec.learning.feedback_std * rng.standard_normal((N, K))
    return params


def readout_gain(spec: NetworkSpec) -> float:
    """The factor on the readout's input: 1 (seed 002 Eq. 3.12), or 1 - kappa
    with conventions.readout_input_scaling = "one_minus_kappa" (TF, NEST):

        y^t = kappa y^{t-1} + g (W_out z^t + b)

    dy^t/d(W_out z^t) = g, so the readout gradients and the learning signal
    carry g as well (engine/gradients.py)."""
    if spec.conventions.readout_input_scaling == "one_minus_kappa":
        return 1.0 - spec.readout.kappa
    return 1.0


def fold_conventions(spec: NetworkSpec, params: dict) -> tuple[NetworkSpec, dict]:
    """The same network under this toolkit's default dynamics conventions, for
    paths that implement only those (fixed point, Lava, NIR):

    * input_scaling "one_minus_alpha": W_in, W_rec <- (1 - alpha_r) W (g I = (g W) pre);
    * readout_input_scaling "one_minus_kappa": W_out, b, and a random or
      adaptive B <- (1 - kappa) times themselves (the learning signal
      (1 - kappa) B Ybar is then B' Ybar);
    * refractory_count "t_ref_steps": n_ref <- max(n_ref - 1, 0) blocked steps;
    * surrogate_scale "gamma_over_v_th": gamma <- gamma / v_th;
    * reset_timing "same_step" has no such form: SpecError.

    The forward pass (spikes, psi, readout) is the same; gradients with
    respect to a folded weight are 1 / g those of the original. The training
    conventions (Adam form, batch reduction, rates, bias, logged loss) are kept."""
    from eprop_lava.neurons.base import decay

    conv = spec.conventions
    if conv.reset_timing == "same_step":
        # alpha v_th subtracted, v_th compared: no weight or parameter scaling gives that in a next-step reset
        raise SpecError("conventions.reset_timing: 'same_step' (NEST's eprop_iaf) has no fixed-point, Lava or NIR "
                        "form; these reset in the next step (reset_timing = 'next_step')")
    dynamics = dict(input_scaling="none", readout_input_scaling="none", refractory_count="blocked_steps",
                    surrogate_scale="gamma")
    if all(getattr(conv, k) == v for k, v in dynamics.items()):
        return spec, params
    params = dict(params)
    layers = []
    for r, layer in enumerate(spec.layers):
        p = layer.params
        changes = {}
        if conv.refractory_count == "t_ref_steps" and layer.neuron != "izhikevich":
            changes["n_ref"] = max(int(p.n_ref) - 1, 0)
        if conv.surrogate_scale == "gamma_over_v_th" and layer.neuron != "izhikevich":
            changes["gamma"] = p.gamma / p.v_th
        if conv.input_scaling == "one_minus_alpha":
            gain = 1.0 - decay(p.tau_m, spec.dt)
            for key in [k for k in params if k.startswith(f"layers.{r}.")]:
                params[key] = gain * np.asarray(params[key])
        layers.append(replace(layer, params=replace(p, **changes)) if changes else layer)
    if conv.readout_input_scaling == "one_minus_kappa":
        gain = 1.0 - spec.readout.kappa
        for key in ("readout.w", "readout.b") + (("feedback.b",) if "feedback.b" in params else ()):
            params[key] = gain * np.asarray(params[key])
    folded = replace(conv, **dynamics)
    return spec.replace(layers=tuple(layers), conventions=folded), params


def feedback_matrix(spec: NetworkSpec, params: dict) -> Any:
    """B (N_total, K): W_out^T for symmetric e-prop, else the stored matrix."""
    if spec.learning.variant == "symmetric":
        return params["readout.w"].T
    return params["feedback.b"]


@dataclass
class LayerRuntime:
    """One population: a layer, or one direction of a bidirectional layer."""

    model: Any
    const: Any
    w_in: Any
    w_rec: Any | None
    layer: int = 0
    reverse: bool = False      # processes the sequence backwards in time (seed 002 sec. 3.4)
    prefix: str = ""           # parameter name prefix, e.g. "layers.0." or "layers.0.rev_"
    columns: tuple = (0, 0)    # (start, stop) in the concatenated spikes seen by the readout

    def __post_init__(self) -> None:
        # Row-major transposes once, so each step's product is a plain GEMM.
        self.w_in_t = _contiguous_t(self.w_in)
        self.w_rec_t = None if self.w_rec is None else _contiguous_t(self.w_rec)


def _contiguous_t(w: Any) -> Any:
    t = w.T
    return t.contiguous() if hasattr(t, "contiguous") else np.ascontiguousarray(t)


@dataclass
class Trajectory:
    """What a forward pass leaves behind (all time-major, real time order).

    ``populations`` lists every population; per population p (in its own time
    order, reversed for a backward direction): ``pop_records[p]`` and
    ``pop_pre_in[p]``. For convenience ``records``, ``pre_in`` and ``layers``
    give the forward population of each layer, and ``z[r]`` the whole output
    of layer r (both directions, real time)."""

    z: list            # per layer (T, B, n_out_r)
    records: list      # per layer: forward population's records (T, B, N_r)
    pre_in: list       # per layer: the signal W_in of the forward population multiplies at step t
    readout_in: Any    # (T, B, N_total): the spikes that W_out multiplies at step t
    y: Any             # (T, B, K)
    layers: list = field(default_factory=list)
    populations: list = field(default_factory=list)
    pop_records: list = field(default_factory=list)
    pop_pre_in: list = field(default_factory=list)
    pop_z: list = field(default_factory=list)   # per population, its own time order
    # per population, the EventRows of pre_in / z the compiled forward loops found ({} if none)
    pop_events: list = field(default_factory=list)


def build_layers(spec: NetworkSpec, params: dict, ops: Any) -> list[LayerRuntime]:
    """All populations in order: per layer the forward one, then the backward one."""
    out = []
    offsets = spec.layer_offsets()
    for r, layer in enumerate(spec.layers):
        model = get_model(layer.neuron)
        const = model.constants(layer, spec.dt, spec.reset, ops, spec.conventions)
        start = offsets[r][0]
        for reverse in ((False, True) if layer.bidirectional else (False,)):
            prefix = f"layers.{r}.rev_" if reverse else f"layers.{r}."
            w_rec = params.get(prefix + "w_rec") if layer.recurrent else None
            cols = (start + layer.size, start + 2 * layer.size) if reverse else (start, start + layer.size)
            out.append(LayerRuntime(model, const, params[prefix + "w_in"], w_rec, r, reverse, prefix, cols))
    return out


def run_population(L: LayerRuntime, src: Any, ops: Any, loihi: bool, record: bool, events: dict | None = None):
    """Simulate one population on its presynaptic sequence src (its own time
    order). Returns (z, records, pre_in) with pre_in the signal W_in multiplies.
    events: a dict that receives, where the compiled loops found them on the
    way, the :class:`~eprop_lava.engine.fused.EventRows` of pre_in ("pre_in")
    and of z ("z") (for the readout's input and the backward pass)."""
    T, B = src.shape[:2]
    pre_in = ops.shift_forward(src) if loihi else src
    if fused.supports(L.model, ops):  # the same equations, compiled (engine/fused.py)
        keep = events is not None
        projected = fused.project_events(pre_in, L.w_in_t, events=keep)
        if projected is None:  # dense input: one GEMM
            external = ops.project(pre_in, L.w_in_t)
        elif keep:
            external, events["pre_in"] = projected
        else:
            external = projected
        out = fused.run_lif_family(L.model, L.const, external, L.w_rec_t, events=keep)
        if keep:
            events["z"] = out[2]
        return out[0], (out[1] if record else None), pre_in
    external = ops.project(ops.eprop_cut(pre_in), L.w_in_t)     # one GEMM for the whole sequence
    state = L.model.initial_state(B, L.w_in.shape[0], L.const, ops)
    zs, recs = [], []
    with ops.single_threaded():
        for t in range(T):
            current = external[t]
            if L.w_rec_t is not None:
                current = current + ops.eprop_cut(state["z"]) @ L.w_rec_t
            z, state, rec = L.model.step(state, current, L.const, ops)
            zs.append(z)
            if record:
                recs.append(rec)
    stacked = None
    if record:
        stacked = {k: ops.stack([rc[k] for rc in recs]) for k in recs[0]}
        if "psi" not in stacked:  # one vectorized evaluation instead of one per step
            stacked["psi"] = L.model.surrogate(stacked, L.const, ops)
    return ops.stack(zs), stacked, pre_in


def simulate(spec: NetworkSpec, params: dict, x: Any, ops: Any, record: bool = True) -> Trajectory:
    """Run the network on x (T, B, n_in); params already on the ops' backend.

    Layers are simulated one after the other over the whole sequence (a layer
    depends only on the previous layer's spikes and its own past, in both
    timings), so each layer's input current is one matrix product and a
    backward direction simply runs on the time-reversed input."""
    T, B, n_in = x.shape
    if n_in != spec.n_inputs:
        raise ValueError(f"input has {n_in} channels, spec.n_inputs is {spec.n_inputs}")
    x = ops.asarray(x)
    pops = build_layers(spec, params, ops)
    loihi = spec.timing == "loihi"
    src = x
    z_layers, pop_z, pop_records, pop_pre, pop_events = [], [], [], [], []
    for r in range(len(spec.layers)):
        outputs = []
        for L in (P for P in pops if P.layer == r):
            events: dict = {}
            z, rec, pre = run_population(L, ops.flip_time(src) if L.reverse else src, ops, loihi, record, events)
            pop_events.append(events)
            pop_z.append(z)
            pop_records.append(rec)
            pop_pre.append(pre)
            outputs.append(ops.flip_time(z) if L.reverse else z)
        src = ops.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        z_layers.append(src)
    forward = [i for i, P in enumerate(pops) if not P.reverse]
    spikes = ops.concat(z_layers, axis=-1) if len(z_layers) > 1 else z_layers[0]
    readout_in = ops.shift_forward(spikes) if loihi else spikes
    if pop_events and all("z" in e for e in pop_events) and all(
            e["z"].density(P.columns[1] - P.columns[0]) <= fused.EVENT_DENSITY for P, e in zip(pops, pop_events)):
        # the readout's input from the spikes' event lists (K outputs: a search of
        # every spike value would cost more than the sums); the same sums, in the
        # same order, as project_events (which a sparse input takes)
        parts = [(e["z"], P.columns[0], P.reverse) for P, e in zip(pops, pop_events)]
        order = sorted(range(len(parts)), key=lambda k: parts[k][1])
        drive = fused.project_listed([parts[k] for k in order], params["readout.w"].T, T, B, 1 if loihi else 0)
    else:
        drive = ops.project(readout_in, params["readout.w"].T)
    drive = drive + params["readout.b"]
    gain = readout_gain(spec)
    y = ops.leaky_filter(drive if gain == 1.0 else gain * drive, spec.readout.kappa)
    return Trajectory(z=z_layers, records=[pop_records[i] for i in forward] if record else [],
                      pre_in=[pop_pre[i] for i in forward], readout_in=readout_in, y=y,
                      layers=[pops[i] for i in forward], populations=pops,
                      pop_records=pop_records if record else [], pop_pre_in=pop_pre, pop_z=pop_z,
                      pop_events=pop_events)
