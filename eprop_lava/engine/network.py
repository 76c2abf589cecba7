"""Parameters, batches and the batched forward simulation of a multi-layer RSNN.

Parameters are a flat dict of named arrays (easy to checkpoint, optimize and
quantize):

    layers.{r}.w_in   (N_r, N_src)   input weights (src = inputs or layer r-1)
    layers.{r}.w_rec  (N_r, N_r)     recurrent weights, zero diagonal
    readout.w         (K, N_total)   readout from all layers (seed 002 Eq. 3.12)
    readout.b         (K,)
    feedback.b        (N_total, K)   random / adaptive e-prop only

The forward pass (seed 002 Eqs. 3.10-3.14) follows the spec's timing:

    bellec: I_r^t = W_in,r src^t + W_rec,r z_r^{t-1},  y^t uses z^t
    loihi:  I_r^t = W_in,r src^{t-1} + W_rec,r z_r^{t-1},  y^t uses z^{t-1}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eprop_lava.neurons import get_model
from eprop_lava.spec import NetworkSpec


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
        names.append(f"layers.{r}.w_in")
        if layer.recurrent:
            names.append(f"layers.{r}.w_rec")
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
        params[f"layers.{r}.w_in"] = layer.weight_scale * rng.standard_normal((n, n_src)) / np.sqrt(n_src)
        if layer.recurrent:
            w = layer.weight_scale * rng.standard_normal((n, n)) / np.sqrt(n)
            np.fill_diagonal(w, 0.0)
            params[f"layers.{r}.w_rec"] = w
        n_src = n
    K, N = spec.readout.n_outputs, spec.n_neurons
    params["readout.w"] = rng.standard_normal((K, N)) / np.sqrt(N)
    params["readout.b"] = np.zeros(K)
    if spec.learning.variant != "symmetric":
        params["feedback.b"] = spec.learning.feedback_std * rng.standard_normal((N, K))
    return params


def feedback_matrix(spec: NetworkSpec, params: dict) -> Any:
    """B (N_total, K): W_out^T for symmetric e-prop, else the stored matrix."""
    if spec.learning.variant == "symmetric":
        return params["readout.w"].T
    return params["feedback.b"]


@dataclass
class LayerRuntime:
    model: Any
    const: Any
    w_in: Any
    w_rec: Any | None

    def __post_init__(self) -> None:
        # Row-major transposes once, so each step's product is a plain GEMM.
        self.w_in_t = _contiguous_t(self.w_in)
        self.w_rec_t = None if self.w_rec is None else _contiguous_t(self.w_rec)


def _contiguous_t(w: Any) -> Any:
    t = w.T
    return t.contiguous() if hasattr(t, "contiguous") else np.ascontiguousarray(t)


@dataclass
class Trajectory:
    """What a forward pass leaves behind (all time-major)."""

    z: list            # per layer (T, B, N_r)
    records: list      # per layer dict of (T, B, N_r) arrays used by e-prop's Jacobians
    pre_in: list       # per layer (T, B, N_src): the signal that W_in multiplies at step t
    readout_in: Any    # (T, B, N_total): the spikes that W_out multiplies at step t
    y: Any             # (T, B, K)
    layers: list = field(default_factory=list)


def build_layers(spec: NetworkSpec, params: dict, ops: Any) -> list[LayerRuntime]:
    out = []
    for r, layer in enumerate(spec.layers):
        model = get_model(layer.neuron)
        const = model.constants(layer, spec.dt, spec.reset, ops)
        w_rec = params.get(f"layers.{r}.w_rec") if layer.recurrent else None
        out.append(LayerRuntime(model, const, params[f"layers.{r}.w_in"], w_rec))
    return out


def simulate(spec: NetworkSpec, params: dict, x: Any, ops: Any, record: bool = True) -> Trajectory:
    """Run the network on x (T, B, n_in); params already on the ops' backend."""
    T, B, n_in = x.shape
    if n_in != spec.n_inputs:
        raise ValueError(f"input has {n_in} channels, spec.n_inputs is {spec.n_inputs}")
    x = ops.asarray(x)
    layers = build_layers(spec, params, ops)
    loihi = spec.timing == "loihi"
    src0 = ops.shift_forward(x) if loihi else x
    # The first layer's input current does not depend on the state: one GEMM.
    first_current = src0 @ layers[0].w_in_t
    states = [L.model.initial_state(B, L.w_in.shape[0], L.const, ops) for L in layers]
    z_seq = [[] for _ in layers]
    rec_seq = [[] for _ in layers]
    for t in range(T):
        z_prev = [s["z"] for s in states]
        for r, L in enumerate(layers):
            if r == 0:
                current = first_current[t]
            else:
                src = z_prev[r - 1] if loihi else states[r - 1]["z"]
                current = ops.eprop_cut(src) @ L.w_in_t
            if L.w_rec is not None:
                current = current + ops.eprop_cut(z_prev[r]) @ L.w_rec_t
            z, states[r], rec = L.model.step(states[r], current, L.const, ops)
            z_seq[r].append(z)
            if record:
                rec_seq[r].append(rec)
    z_all = [ops.stack(zs) for zs in z_seq]
    records = []
    if record:
        for L, recs in zip(layers, rec_seq):
            stacked = {k: ops.stack([rc[k] for rc in recs]) for k in recs[0]}
            if "psi" not in stacked:  # one vectorized evaluation instead of one per step
                stacked["psi"] = L.model.surrogate(stacked, L.const, ops)
            records.append(stacked)
    pre_in = [src0] + [(ops.shift_forward(z) if loihi else z) for z in z_all[:-1]]
    spikes = ops.concat(z_all, axis=-1) if len(z_all) > 1 else z_all[0]
    readout_in = ops.shift_forward(spikes) if loihi else spikes
    y = ops.leaky_filter(readout_in @ params["readout.w"].T + params["readout.b"], spec.readout.kappa)
    return Trajectory(z=z_all, records=records, pre_in=pre_in, readout_in=readout_in, y=y, layers=layers)
