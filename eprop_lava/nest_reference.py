"""NEST 3.10's e-prop reference networks as eprop-lava specs.

NEST's testsuite holds the losses of five training iterations of two networks
built with its original-paper models (``eprop_iaf_bsshslm_2020``,
``eprop_iaf_adapt_bsshslm_2020``, ``eprop_readout_bsshslm_2020``,
``eprop_synapse_bsshslm_2020``): ``test_eprop_regression`` and
``test_eprop_classification`` in
``testsuite/pytests/synapses/test_eprop_bsshslm_2020_plasticity.py`` of
github.com/nest/nest-simulator at tag v3.10 (commit
acca9704da248750219a027db99fec6cd1f9052a). The test draws every weight and
input from NumPy's legacy global ``RandomState`` seeded with 1; this module
repeats those draws in the same order with ``np.random.RandomState(1)``
(whose streams NumPy keeps fixed), so the networks are the test's, weight for
weight and spike for spike, without NEST.

How NEST's parameters map onto a spec (``conventions`` preset
"nest-bsshslm-2020", see spec.ConventionSpec):

* ``regular_spike_arrival = False`` (regression) is input_scaling =
  "one_minus_alpha"; True (classification) is "none". The readouts use False:
  readout_input_scaling = "one_minus_kappa"; there is no readout bias.
* ``surrogate_gradient_height = 0.3 / V_th``, width V_th: gamma = 0.3 with
  surrogate_scale = "gamma_over_v_th".
* ``t_ref = 5`` ms: n_ref = 5 with refractory_count = "t_ref_steps" (4 blocked steps).
* ``c_reg``: NEST adds c_reg (f - f0) / T sum_t e to each gradient and, with
  ``average_gradient``, divides the whole gradient by the learning window W;
  that is the gradient of c sum_j (f_j - f0)^2 with c = c_reg / 2 (regression)
  or c_reg / (2 W) (classification). One rate per sequence: rate_average = "sample".
* ``average_gradient = True`` divides by the learning window: the loss mask is
  1 / W in the window; the batch is averaged (batch_reduction = "mean").
* The loss NEST's test reports is the task loss (0.5 sum_t (y - y*)^2, resp.
  the cross-entropy averaged over the window), averaged over the batch.

The step offsets of NEST (generator, input -> recurrent, recurrent ->
readout, readout normalization: 1 step each) make its neurons see input
x^t in the step it arrives and the readout see z^t in the same step:
timing = "bellec".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import eprop_gradient, rate_loss
from eprop_lava.engine.network import Batch
from eprop_lava.spec import (
    ConventionSpec, LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, ReadoutSpec,
    RegularizationSpec,
)

SOURCE = ("nest/nest-simulator v3.10 (acca9704da248750219a027db99fec6cd1f9052a), "
          "testsuite/pytests/synapses/test_eprop_bsshslm_2020_plasticity.py")

#: The published losses (``loss_nest_reference`` in the test).
PUBLISHED_REGRESSION = [101.964356999041, 103.466731126205, 103.340607074771, 103.680244037686, 104.412775748752]
PUBLISHED_CLASSIFICATION = {
    1: [0.741152550006, 0.740388187700, 0.665785233177, 0.663644193322, 0.729428962844],
    2: [0.702163370672, 0.735555303152, 0.740354864111, 0.683882815282, 0.707841122268],
}
#: The TensorFlow losses the test also checks (``loss_tf_reference``).
TF_REGRESSION = [101.964363098144, 103.466735839843, 103.340606689453, 103.680244445800, 104.412780761718]
TF_CLASSIFICATION = [0.741152524948, 0.740388214588, 0.665785133838, 0.663644134998, 0.729429066181]


@dataclass
class ReferenceNetwork:
    """A spec, its initial parameters and one batch per iteration."""

    spec: NetworkSpec
    params: dict
    batches: list


def regression_network(n_iter: int = 5) -> ReferenceNetwork:
    """``test_eprop_regression``: 100 inputs (Bernoulli 0.05, first step
    silent, the same sequence every iteration), 100 LIF (tau_m 30 ms, V_th
    0.03, t_ref 0), one readout (tau 30 ms), MSE on a sum of four sines,
    gradient descent eta 1e-4, c_reg 300, batch 1."""
    rs = np.random.RandomState(1)
    n_in, n_rec, n_out, T = 100, 100, 1, 1000
    f32 = np.float32
    w_in = np.array(rs.randn(n_in, n_rec).T / np.sqrt(n_in), dtype=f32)
    w_rec = np.array(rs.randn(n_rec, n_rec).T / np.sqrt(n_rec), dtype=f32)
    np.fill_diagonal(w_rec, 0.0)
    w_out = np.array(rs.randn(n_rec, n_out).T / np.sqrt(n_rec), dtype=f32)
    feedback = np.array(rs.randn(n_rec, n_out) / np.sqrt(n_rec), dtype=f32)
    spikes = rs.rand(T, n_in) < 0.05
    spikes[0] = False
    periods = [1000, 500, 333, 200]
    amplitudes = rs.uniform(low=0.5, high=2.0, size=len(periods))
    phases = rs.uniform(low=0.0, high=2.0 * np.pi, size=len(periods))
    target = sum(a * np.sin(np.linspace(p, p + 2.0 * np.pi * (T // P), T))
                 for a, p, P in zip(amplitudes, phases, periods))
    target = target - target[0]
    target = target / max(np.abs(target).max(), 1e-6)
    spec = NetworkSpec(
        n_inputs=n_in,
        layers=(LayerSpec(size=n_rec, neuron="lif", params=NeuronParams(tau_m=30.0, v_th=0.03, n_ref=0, gamma=0.3)),),
        readout=ReadoutSpec(n_outputs=n_out, kappa=math.exp(-1.0 / 30.0)),
        loss="mse",
        learning=LearningSpec(variant="random"),
        regularization=RegularizationSpec(form="bellec", target_hz=10.0, coefficient=300.0 / 2),
        optimizer=OptimizerSpec(kind="sgd", lr=1e-4),
        conventions=ConventionSpec(preset="nest-bsshslm-2020", input_scaling="one_minus_alpha"),
    )
    batch = Batch(x=spikes[:, None, :].astype(np.float64), target=target[:, None, None].astype(np.float64),
                  mask=np.ones((T, 1)))
    params = _params(w_in, w_rec, w_out, feedback)
    return ReferenceNetwork(spec, params, [batch] * n_iter)


def classification_network(batch_size: int, n_iter: int = 5) -> ReferenceNetwork:
    """``test_eprop_classification``: evidence accumulation (40 inputs in 4
    groups, 7 cues of 100 ms after 50 ms gaps, 1050 ms of background, 150 ms
    recall; 2250 steps), 50 LIF + 50 ALIF (tau_m 20 ms, V_th 0.6, t_ref 5 ms,
    tau_a 2000 ms, beta = 1.7 (1 - rho) / (1 - alpha)), two cross-entropy
    readouts (tau 20 ms) with Glorot-uniform weights, random feedback,
    Adam eta 5e-3 eps 1e-8, c_reg 300, learning window 150 steps."""
    rs = np.random.RandomState(1)
    n_in, n_reg, n_ad, n_out = 40, 50, 50, 2
    n_rec = n_reg + n_ad
    cue, spacing, background, recall, n_cues = 100, 50, 1050, 150, 7
    T = n_cues * (cue + spacing) + background + recall
    f32 = np.float32
    w_in = np.array(rs.randn(n_in, n_rec).T / np.sqrt(n_in), dtype=f32)
    w_rec = np.array(rs.randn(n_rec, n_rec).T / np.sqrt(n_rec), dtype=f32)
    np.fill_diagonal(w_rec, 0.0)
    limit = np.sqrt(3.0 * (1.0 / max(1.0, (n_rec + n_out) / 2.0)))
    w_out = np.array(rs.uniform(low=-limit, high=limit, size=(n_rec, n_out)).T, dtype=f32)
    feedback = np.array(rs.randn(n_rec, n_out), dtype=f32)
    batches = []
    n_pop = n_in // 4
    for _ in range(n_iter):
        choices = np.array([0.3, 0.7], dtype=np.float32)
        idx = rs.choice([0, 1], batch_size)
        probs = np.zeros((batch_size, 2), dtype=np.float32)
        probs[:, 0] = choices[idx]
        probs[:, 1] = choices[1 - idx]
        cues = np.zeros((batch_size, n_cues), dtype=int)
        for b in range(batch_size):
            cues[b, :] = rs.choice([0, 1], n_cues, p=probs[b])
        p_in = np.zeros((batch_size, T, n_in))
        for b in range(batch_size):
            for c in range(n_cues):
                start = c * (cue + spacing) + spacing
                p_in[b, start:start + cue, cues[b, c] * n_pop:(cues[b, c] + 1) * n_pop] = 0.04
        p_in[:, -recall:, 2 * n_pop:3 * n_pop] = 0.04
        p_in[:, :, 3 * n_pop:] = 0.04 / 4.0
        spikes = p_in > rs.rand(p_in.size).reshape(p_in.shape)
        spikes[:, 0, :] = False
        labels = (np.sum(cues, axis=1) > n_cues // 2).astype(int)
        target = np.zeros((T, batch_size, n_out))
        target[:, np.arange(batch_size), labels] = 1.0
        mask = np.zeros((T, batch_size))
        mask[-recall:] = 1.0 / recall
        batches.append(Batch(x=spikes.transpose(1, 0, 2).astype(np.float64), target=target, mask=mask,
                             labels=labels))
    params_rec = NeuronParams(tau_m=20.0, v_th=0.6, n_ref=5, gamma=0.3, tau_a=2000.0, beta=1.7)
    spec = NetworkSpec(
        n_inputs=n_in,
        layers=(LayerSpec(size=n_rec, neuron="alif", adaptive_fraction=n_ad / n_rec, params=params_rec),),
        readout=ReadoutSpec(n_outputs=n_out, kappa=math.exp(-1.0 / 20.0)),
        loss="cross_entropy",
        learning=LearningSpec(variant="random"),
        regularization=RegularizationSpec(form="bellec", target_hz=10.0, coefficient=300.0 / (2 * recall)),
        optimizer=OptimizerSpec(kind="adam", lr=5e-3, beta1=0.9, beta2=0.999, epsilon=1e-8),
        conventions="nest-bsshslm-2020",
    )
    return ReferenceNetwork(spec, _params(w_in, w_rec, w_out, feedback), batches)


def _params(w_in, w_rec, w_out, feedback) -> dict:
    return {"layers.0.w_in": w_in.astype(np.float64), "layers.0.w_rec": w_rec.astype(np.float64),
            "readout.w": w_out.astype(np.float64), "readout.b": np.zeros(w_out.shape[0]),
            "feedback.b": feedback.astype(np.float64)}


def train_losses(net: ReferenceNetwork, fused: bool | None = None) -> tuple[list[float], list[dict]]:
    """Train one iteration per batch with the toolkit's own e-prop gradient
    and optimizer (float64); returns each iteration's task loss (before its
    update) and the parameters after each update."""
    from eprop_lava.training import apply_update, make_optimizer

    ops = make_ops("numpy", dtype="float64", fused=fused)
    params = {k: v.copy() for k, v in net.params.items()}
    optimizer = make_optimizer(net.spec)
    losses, history = [], []
    for batch in net.batches:
        loss, grads, traj = eprop_gradient(net.spec, params, batch, ops)
        losses.append(float(loss) - float(rate_loss(net.spec, traj, ops)))
        apply_update(net.spec, params, optimizer, grads)
        history.append({k: v.copy() for k, v in params.items()})
    return losses, history


# ------------------------------------------------ NEST 3.10's event-based models
EVENTBASED_SOURCE = ("nest/nest-simulator v3.10 (acca9704da248750219a027db99fec6cd1f9052a), "
                     "testsuite/pytests/synapses/test_eprop_plasticity.py")

#: ``loss_nest_reference`` of ``test_eprop_regression`` in that file, with
#: learning (a weight update at every step, ``optimize_each_step = True``).
PUBLISHED_EVENTBASED = {
    "eprop_iaf": [0.14000491891386, 0.28735818029752, 0.22263713699860, 0.23015072431384, 0.17565248170694],
    "eprop_iaf_adapt": [0.02242584487453, 0.01916753791522, 0.00571493935652, 0.00037875376195,
                        0.00037823157578],
}
#: The same network run in NEST 3.10.0 with eta = 0 (no learning), measured by
#: benchmarks/nest/nest_eventbased_losses.py (benchmarks/results/nest_eventbased.json).
NEST_EVENTBASED_FROZEN = {
    "eprop_iaf": [0.140826014576, 0.309285464652, 0.299950006707, 0.295650520297, 0.286433497822],
    "eprop_iaf_adapt": [0.022427393564, 0.019170821598, 0.005716376771, 0.000378665576, 0.000378281961],
}


def eventbased_network(model: str = "eprop_iaf", n_iter: int = 5) -> ReferenceNetwork:
    """``test_eprop_regression`` of NEST's ``test_eprop_plasticity.py``: 100
    inputs (Bernoulli 0.05, one 100-step pattern repeated), 100 ``eprop_iaf``
    (tau_m 30 ms, V_th 0.03, t_ref 0) or ``eprop_iaf_adapt`` (adapt_beta
    0.0174, adapt_tau 2000 ms: a^{t+1} = rho a^t + z^t, beta_scaling "none"),
    one ``eprop_readout`` (tau 30 ms); input, recurrent, readout and feedback
    weights multiplied by 1 - kappa = 0.03 as the test does; the target is 0
    (the test's sines have periods of 200 steps and more in a 100-step
    sequence: ``steps // T = 0`` makes each constant). Surrogate height 10,
    width V_th: gamma = 0.3 with surrogate_scale "gamma_over_v_th".

    The event-based models have no update interval and never reset their
    state, so the n_iter sequences are one sample of n_iter * 100 steps here:
    ``batches`` holds that one batch. NEST's readout sees z^{t-1} (the 1-step
    recurrent -> readout delay and no normalization step): see
    :func:`eventbased_losses`."""
    if model not in PUBLISHED_EVENTBASED:
        raise ValueError(f"model: {model!r} is not one of {', '.join(PUBLISHED_EVENTBASED)}")
    rs = np.random.RandomState(1)
    n_in, n_rec, n_out, T, scale = 100, 100, 1, 100, 1.0 - 0.97
    f32 = np.float32
    w_in = np.array(rs.randn(n_in, n_rec).T / np.sqrt(n_in), dtype=f32) * scale
    w_rec = np.array(rs.randn(n_rec, n_rec).T / np.sqrt(n_rec), dtype=f32)
    np.fill_diagonal(w_rec, 0.0)
    w_rec = w_rec * scale
    w_out = np.array(rs.randn(n_rec, n_out).T / np.sqrt(n_rec), dtype=f32) * scale
    feedback = np.array(rs.randn(n_rec, n_out) / np.sqrt(n_rec), dtype=f32) * scale
    spikes = rs.rand(T, n_in) < 0.05
    if model == "eprop_iaf":
        layer = LayerSpec(size=n_rec, neuron="lif", params=NeuronParams(tau_m=30.0, v_th=0.03, n_ref=0, gamma=0.3))
    else:
        layer = LayerSpec(size=n_rec, neuron="alif", adaptive_fraction=1.0,
                          params=NeuronParams(tau_m=30.0, v_th=0.03, n_ref=0, gamma=0.3, tau_a=2000.0,
                                              beta=0.0174, beta_scaling="none"))
    spec = NetworkSpec(
        n_inputs=n_in, layers=(layer,), readout=ReadoutSpec(n_outputs=n_out, kappa=math.exp(-1.0 / 30.0)),
        loss="mse", learning=LearningSpec(variant="random"),
        optimizer=OptimizerSpec(kind="adam" if model == "eprop_iaf" else "sgd", lr=1e-4 * scale ** 2,
                                epsilon=1e-7),
        conventions="nest-eprop",
    )
    steps = n_iter * T
    x = np.tile(spikes, (n_iter, 1)).astype(np.float64)
    batch = Batch(x=x[:, None, :], target=np.zeros((steps, 1, n_out)), mask=np.ones((steps, 1)))
    return ReferenceNetwork(spec, _params(w_in, w_rec, w_out, feedback), [batch])


def eventbased_losses(net: ReferenceNetwork, n_iter: int = 5) -> list[float]:
    """Per-iteration losses 0.5 sum_t (y - y*)^2 of the frozen network, as
    NEST's test computes them from its readout recorder: NEST's readout
    value at step t is this toolkit's y^{t-1} (it integrates z^{t-1})."""
    ops = make_ops("numpy", dtype="float64")
    from eprop_lava.engine.network import simulate

    p = {k: ops.asarray(v) for k, v in net.params.items()}
    batch = net.batches[0]
    y = np.asarray(simulate(net.spec, p, ops.asarray(batch.x), ops).y)[:, 0, :]
    y_nest = np.concatenate([np.zeros((1, y.shape[1])), y[:-1]])
    err = (y_nest - batch.target[:, 0, :]).reshape(n_iter, -1, y.shape[1])
    return [float(v) for v in 0.5 * np.sum(err ** 2, axis=(1, 2))]
