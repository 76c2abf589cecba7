"""On-chip (fixed-point, online) e-prop learning with a choice of where the
eligibility traces live, built on the public functions of
:mod:`eprop_lava.engine.fixed_engine`.

``trace_storage="synapse"`` is exact e-prop as the fixed-point engine runs it:
every synapse keeps its eligibility vector eps_ji (two for ALIF), its
filtered trace ebar_ji and an accumulator. :func:`learn_batch` then calls the
engine's own :func:`~eprop_lava.engine.fixed_engine.hidden_synapse_step`, and
a test checks it is bit-identical to ``fixed_engine.simulate(learn=True)``.

``trace_storage="neuron"`` is the approximation of the ReckOn chip (Frenkel &
Indiveri 2022; research notes EPROP_ANCHORS §3.2: "modify the e-prop equations
so that ET storage requirements scale with the number of neurons, instead of
the number of synapses"). Per neuron, not per synapse:

* each presynaptic neuron i keeps one trace eps_i = alpha-filtered spikes
  (``decay(eps_i, dv) + impulse * s_i``): the post neuron's reset cut
  ``(1 - z_j)`` of exact LIF e-prop is dropped, and so is the ALIF
  adaptation component eps_th (it would need per-synapse state);
* each postsynaptic neuron j sends psi_j as before;
* the eligibility e_ji = (psi_j eps_i) >> psi_bits is formed on the fly when
  the learning signal arrives and is *not* low-pass filtered by kappa (that
  filter, ebar_ji, is per-synapse state). To keep the step size comparable,
  the learning rate of the hidden layers is multiplied by 1 / (1 - kappa),
  the DC gain of the dropped filter.

What remains per synapse is the weight and the update accumulator (Loihi's
synaptic-change accumulator; ReckOn updates weights directly instead).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.fixed import FixedPointError, decay, learning_rate, saturate, shift_round
from eprop_lava.neurons import fixed as fx

TRACE_STORAGES = ("synapse", "neuron")


# ----------------------------------------------------------------- per-neuron synapses
def new_neuron_synapse(p: fx.FixedNeuronParams, batch: int, n_pre: int) -> dict:
    """Per-neuron trace state of one synapse matrix: eps (B, pre), the
    previous step's eps and psi (to pair L^t with e^{t-1}), and the
    per-synapse accumulator (post, pre)."""
    dv = np.unique(np.asarray(p.dv))
    if dv.size != 1:
        raise FixedPointError("trace_storage='neuron' needs one membrane decay per layer "
                              "(a presynaptic trace is shared by all its targets)")
    return dict(eps=np.zeros((batch, n_pre), dtype=np.int64), eps_prev=None, psi_prev=None,
                acc=np.zeros((p.size, n_pre), dtype=np.int64), dv=int(dv[0]))


def neuron_synapse_step(syn: dict, p: fx.FixedNeuronParams, psi: np.ndarray, pre: np.ndarray,
                        signal: np.ndarray, profile) -> dict:
    """One step: acc += (L^t e^{t-1}) >> product_shift with
    e^{t-1}_ji = (psi_j^{t-1} eps_i^{t-1}) >> psi_bits; then the presynaptic
    traces advance. Nothing of size (post, pre) is kept except acc."""
    acc = syn["acc"]
    if syn["eps_prev"] is not None:
        e = shift_round(syn["psi_prev"][:, :, None] * syn["eps_prev"][:, None, :], int(p.psi_bits),
                        profile.product_rounding)
        prod = shift_round(signal[:, :, None] * e, profile.product_shift, profile.product_rounding)
        acc = saturate(acc + prod.sum(0), *profile.accumulator_range)
    eps = saturate(decay(syn["eps"], syn["dv"]) + profile.trace_impulse * np.asarray(pre, dtype=np.int64),
                   0, profile.trace_max)
    return dict(eps=eps, eps_prev=eps, psi_prev=np.asarray(psi, dtype=np.int64), acc=acc, dv=syn["dv"])


def per_neuron_learning_rates(net: fe.FixedNetwork, lr: float) -> None:
    """Scale the hidden learning rates by 1 / (1 - kappa) (see module docstring)."""
    gain = 1.0 / (1.0 - net.spec.readout.kappa)
    for L in net.layers:
        L.lr = learning_rate(lr * L.w_scale * L.grad_scale * gain, net.profile)


# ----------------------------------------------------------------- the learning loop
PER_NEURON = fe.SynapseRule(
    new=lambda p, batch, n_pre, profile: new_neuron_synapse(p, batch, n_pre),
    record=lambda p, z, post, syn: None,
    step=lambda syn, p, rec, post, pre, sig, d_kappa, prof: neuron_synapse_step(syn, p, post["psi"], pre, sig, prof),
)


def learn_batch(net: fe.FixedNetwork, x: np.ndarray, target: np.ndarray, mask: np.ndarray,
                rngs: dict, trace_storage: str = "synapse") -> None:
    """One batch of online fixed-point e-prop, updating ``net`` in place: the
    engine's own loop (:func:`eprop_lava.engine.fixed_engine.simulate`) with
    the eligibility kept per synapse (exact) or per neuron (ReckOn)."""
    if trace_storage not in TRACE_STORAGES:
        raise FixedPointError(f"trace_storage: choose one of {', '.join(TRACE_STORAGES)}, got {trace_storage!r}")
    rule = fe.PER_SYNAPSE if trace_storage == "synapse" else PER_NEURON
    fe.simulate(net, x, target, mask, learn=True, rngs=rngs, synapses=rule)


def train_on_chip(net: fe.FixedNetwork, batches: Iterable, trace_storage: str = "synapse") -> fe.FixedNetwork:
    """Online learning over ``batches`` (each with x, target, mask); the
    stochastic-rounding generators persist across batches."""
    rngs = fe.update_rngs(net)
    for b in batches:
        learn_batch(net, b.x, b.target, b.mask, rngs, trace_storage)
    return net


def fixed_metric(task, net: fe.FixedNetwork, batches: Iterable) -> float:
    """The task's metric of the fixed-point network (inference only)."""
    vals = [task.metric(fe.simulate(net, b.x).y / net.readout.y_scale, b) for b in batches]
    return float(np.mean(vals))


# ----------------------------------------------------------------- memory accounting
def memory_bits_per_synapse(spec, profile, learning: bool, trace_storage: str = "synapse") -> float:
    """Bits of storage per synapse, averaged over every synapse of the
    network (input, recurrent, readout), with per-neuron state amortized
    over the synapses that share it. Inference: the signed weight only.

    Exact e-prop (per synapse): weight, eligibility vector(s) eps (two for
    ALIF/STDP-ALIF/Izhikevich), filtered trace ebar, accumulator; readout
    synapses: weight and accumulator plus the per-neuron presynaptic trace.
    Per neuron: weight and accumulator, plus one trace per presynaptic
    neuron and one psi per postsynaptic neuron."""
    w = profile.weight_bits + 1
    if not learning:
        return float(w)
    acc = profile.accumulator_bits + 1
    trace = profile.trace_bits + 1
    total_bits = 0.0
    count = 0
    n_src = spec.n_inputs
    for layer in spec.layers:
        pres = [n_src] + ([layer.size] if layer.recurrent else [])
        n_eps = 1 if layer.neuron == "lif" else 2
        for n_pre in pres:
            syn = layer.size * n_pre
            count += syn
            if trace_storage == "synapse":
                total_bits += syn * (w + n_eps * trace + profile.tag_bits + 1 + acc)
            else:
                total_bits += syn * (w + acc) + n_pre * trace + layer.size * (profile.psi_bits + 1)
        n_src = layer.size
    K, N = spec.readout.n_outputs, spec.n_neurons
    count += K * N
    total_bits += K * N * (w + acc) + N * trace
    return total_bits / count
