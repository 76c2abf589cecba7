"""On-chip (fixed-point, online) e-prop learning with a choice of where the
eligibility traces live, built on the public functions of
:mod:`eprop_lava.engine.fixed_engine`.

``trace_storage="synapse"`` is exact e-prop as the fixed-point engine runs it:
every synapse keeps its eligibility vector eps_ji (two for ALIF), its
filtered trace ebar_ji and an accumulator. :func:`learn_batch` then calls the
engine's own :func:`~eprop_lava.engine.fixed_engine.hidden_synapse_step`, and
a test checks it is bit-identical to ``fixed_engine.simulate(learn=True)``.

``trace_storage="neuron"`` is the approximation of the ReckOn chip (Frenkel &
Indiveri, ISSCC 2022, arXiv:2208.09759; its design (github.com/ChFrenkel/ReckOn)
keeps 12-bit input and recurrent eligibility traces per neuron, so trace
storage scales with the number of neurons, not synapses). Per neuron, not per
synapse:

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
from eprop_lava.fixed import FixedPointError, decay, saturate, shift_round
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
    fe.set_learning_rates(net, lr, lr / (1.0 - net.spec.readout.kappa))


# ----------------------------------------------------------------- the learning loop
PER_NEURON = fe.SynapseRule(
    new=lambda p, batch, n_pre, profile: new_neuron_synapse(p, batch, n_pre),
    record=lambda p, z, post, syn: None,
    step=lambda syn, p, rec, post, pre, sig, d_kappa, prof: neuron_synapse_step(syn, p, post["psi"], pre, sig, prof),
)


def learn_batch(net: fe.FixedNetwork, x: np.ndarray, target: np.ndarray, mask: np.ndarray,
                rngs: dict, trace_storage: str = "synapse") -> dict:
    """One batch of online fixed-point e-prop, updating ``net`` in place: the
    engine's own loop (:func:`eprop_lava.engine.fixed_engine.simulate`) with
    the eligibility kept per synapse (exact) or per neuron (ReckOn). Returns
    the run's counters (:func:`~eprop_lava.engine.fixed_engine.new_counters`)."""
    if trace_storage not in TRACE_STORAGES:
        raise FixedPointError(f"trace_storage: choose one of {', '.join(TRACE_STORAGES)}, got {trace_storage!r}")
    rule = fe.PER_SYNAPSE if trace_storage == "synapse" else PER_NEURON
    return fe.simulate(net, x, target, mask, learn=True, rngs=rngs, synapses=rule).counters


def train_on_chip(net: fe.FixedNetwork, batches: Iterable, trace_storage: str = "synapse",
                  counters: dict | None = None) -> fe.FixedNetwork:
    """Online learning over ``batches`` (each with x, target, mask); the
    stochastic-rounding generators persist across batches. counters: the
    runs' counters are added to it."""
    rngs = fe.update_rngs(net)
    for b in batches:
        counts = learn_batch(net, b.x, b.target, b.mask, rngs, trace_storage)
        if counters is not None:
            fe.add_counters(counters, counts)
    return net


def fixed_metric(task, net: fe.FixedNetwork, batches: Iterable, counters: dict | None = None) -> float:
    """The task's metric of the fixed-point network (inference only);
    counters: the runs' counters are added to it."""
    vals = []
    for b in batches:
        run = fe.simulate(net, b.x)
        vals.append(task.metric(run.y / net.readout.y_scale, b))
        if counters is not None:
            fe.add_counters(counters, run.counters)
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


# ----------------------------------------------------------------- on-chip adaptation
def float_online_eprop(spec, params: dict, train, lr: float, test=None, task=None, every: int | None = None,
                       progress=None, hidden_lr: float | None = None) -> dict:
    """The float reference of on-chip learning: e-prop on the float engine
    (:func:`eprop_lava.engine.gradients.eprop_gradient`), one sample at a time
    (batch 1), plain SGD ``w -= lr dE/dw`` after each sample, as the
    fixed-point engine updates at the end of each sample. It learns what the
    fixed-point engine learns: the input, recurrent and readout weights from
    the task loss alone (no readout bias, no firing-rate regularizer; for
    adaptive feedback B receives W_out's change, without the Kolen-Pollack
    decay). ``train``/``test``: deploy.TestSet; ``hidden_lr``: the rate of the
    input and recurrent weights (default lr). Returns params, and with
    test/task the held-out curve."""
    from dataclasses import replace

    from eprop_lava.compile.deploy import float_metric
    from eprop_lava.engine.gradients import eprop_gradient
    from eprop_lava.engine.network import Batch

    spec = spec.replace(regularization=replace(spec.regularization, coefficient=0.0, l2=0.0))
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    learned = [k for k in params if k.endswith((".w_in", ".w_rec")) or k == "readout.w"]
    scoring = test is not None and task is not None
    curve = [{"samples": 0, "error": float_metric(task, spec, params, test)}] if scoring else []
    S = train.x.shape[1]
    for s in range(S):
        sl = slice(s, s + 1)
        b = Batch(x=train.x[:, sl], target=train.target[:, sl], mask=train.mask[:, sl], labels=None)
        _, grads, _ = eprop_gradient(spec, params, b)
        deltas = {k: -(lr if k == "readout.w" or hidden_lr is None else hidden_lr) * np.asarray(grads[k], dtype=np.float64)
                  for k in learned}
        for k, d in deltas.items():
            params[k] = params[k] + d
        if spec.learning.variant == "adaptive":  # B receives W_out's change, as in the fixed-point engine
            params["feedback.b"] = params["feedback.b"] + deltas["readout.w"].T
        if scoring and every and (s + 1) % every == 0 and s + 1 < S:
            curve.append({"samples": s + 1, "error": float_metric(task, spec, params, test)})
        if progress:
            progress(s + 1, S)
    if scoring:
        curve.append({"samples": S, "error": float_metric(task, spec, params, test)})
    out = {"params": params}
    if scoring:
        out.update(error_before=curve[0]["error"], error_after=curve[-1]["error"], curve=curve)
    return out


def feedback_gain(params: dict, variant: str) -> float:
    """rms(W_out) / rms(B): how much larger a hidden neuron's learning
    signal L = B err is with this feedback than with B = W_out^T (symmetric
    e-prop, gain 1). A random B drawn with std 1 is ~10x a trained readout,
    so plain SGD at the readout's rate moves the hidden weights ~10x further
    than symmetric e-prop would and, online at batch 1, destroys what the
    network had learned; scaling the hidden rate by this gain keeps the
    hidden steps at the symmetric size."""
    if variant == "symmetric":
        return 1.0
    w = np.asarray(params["readout.w"], dtype=np.float64)
    b = np.asarray(params["feedback.b"], dtype=np.float64)
    return float(np.sqrt(np.mean(w * w)) / max(np.sqrt(np.mean(b * b)), 1e-300))


def adaptation(artifact, samples: int = 32, test_samples: int = 64, every: int | None = None,
               condition: dict | None = None, float_reference: bool = True, lr: float | None = None,
               hidden_lr: float | None = None, learn_stream: int | None = None, log=None,
               profile_changes: dict | None = None, rounding_seed: int | None = None) -> dict:
    """On-chip adaptation to a changed condition: the compiled (off-chip
    trained) network of ``artifact`` learns online on ``samples`` samples of
    the task with ``condition`` (task options; default: the evidence task's
    cue sides swapped) in the artifact's fixed-point profile; the same samples
    with float e-prop (:func:`float_online_eprop`, same learning rate, from the
    artifact's float parameters) are the reference. Held-out error on the new
    condition (rng stream [seed, 3], disjoint from the learning stream
    [seed, 4]) before, along the way and after. ``lr``: the readout's SGD
    rate (default: the artifact's); ``hidden_lr``: the input and recurrent
    rate (default lr * :func:`feedback_gain`); both engines use both.
    ``learn_stream``: the rng stream of the learning samples (default
    deploy.LEARN_STREAM; repeats use others, never the test stream 3).
    ``profile_changes``: fields of the artifact's fixed-point profile to
    change for the on-chip learning (e.g. signal_rounding="stochastic");
    ``rounding_seed``: the seed of the stochastic-rounding streams (default:
    the network's)."""
    import time

    from eprop_lava.compile import deploy
    from eprop_lava.compile.artifact import load_artifact
    from eprop_lava.tasks import get_task
    from eprop_lava.training import held_out

    art = load_artifact(artifact)
    src = art.manifest["source"]
    seed = int(src["seed"])
    condition = {"swap_sides": True} if condition is None else dict(condition)
    task_name, options = deploy.source_task(src)
    task = get_task(task_name, **{**options, **condition})
    lr = art.manifest["target"].get("learning_rate") if lr is None else lr
    if lr is None:
        raise FixedPointError(f"artifact {artifact}: no learning rate recorded (compile it again or give lr)")
    lr = float(lr)
    if hidden_lr is None:
        hidden_lr = lr * feedback_gain(art.float_params, art.spec.learning.variant) if art.float_params else lr
    net = art.net.copy()
    if profile_changes:
        net.profile = net.profile.with_(**profile_changes)
    if rounding_seed is not None:
        net.seed = int(rounding_seed)
    fe.set_learning_rates(net, lr, hidden_lr)
    test = deploy.draw(held_out(task, "test"), seed, deploy.TEST_STREAM, test_samples)
    learn_stream = deploy.LEARN_STREAM if learn_stream is None else int(learn_stream)
    if learn_stream in (1, 2, deploy.TEST_STREAM):
        raise FixedPointError(f"learn_stream: {learn_stream} is the training, validation or test stream")
    train = deploy.draw(held_out(task, "train"), seed, learn_stream, samples)
    every = every or max(1, samples // 8)
    t0 = time.perf_counter()
    fixed = deploy.learn_run(net, train, test, task, every)
    out = {"task": src["task"], "condition": condition, "profile": net.profile.name,
           "profile_changes": dict(profile_changes or {}), "rounding_seed": int(net.seed), "samples": samples,
           "test_samples": test_samples, "learn_stream": learn_stream, "learning_rate": lr,
           "hidden_learning_rate": float(hidden_lr),
           "error_exp": int(art.net.error_bits),
           "signal_shift": int(art.net.signal_shift),
           "fixed": {"error_before": fixed["error_before"], "error_after": fixed["error_after"],
                     "curve": fixed["curve"], "weights_changed": int(sum(fixed["changed_weights"].values())),
                     "signal": fixed["signal"], "seconds": time.perf_counter() - t0}}
    if log:
        log(f"adaptation, fixed point ({art.net.profile.name}): held-out error {fixed['error_before']:.3f} -> "
            f"{fixed['error_after']:.3f} after {samples} on-chip samples")
    if float_reference and art.float_params:
        t0 = time.perf_counter()
        ref = float_online_eprop(art.spec, art.float_params, train, lr, test, task, every, hidden_lr=hidden_lr)
        out["float"] = {"error_before": ref["error_before"], "error_after": ref["error_after"],
                        "curve": ref["curve"], "seconds": time.perf_counter() - t0}
        out["fixed_minus_float_after"] = fixed["error_after"] - ref["error_after"]
    return out


def format_adaptation(r: dict) -> str:
    cond = ", ".join(f"{k}={v}" for k, v in r["condition"].items())
    lines = [f"on-chip adaptation ({r['task']}, {cond}): held-out error on the new condition "
             f"({r['test_samples']} test samples), {r['samples']} online samples, SGD rate {r['learning_rate']:g} "
             f"(readout), {r['hidden_learning_rate']:.3g} (hidden)",
             f"  fixed point ({r['profile']}): before {r['fixed']['error_before']:.3f}, after "
             f"{r['fixed']['error_after']:.3f} ({r['fixed']['weights_changed']} weights changed, "
             f"{r['fixed']['seconds']:.1f} s)"]
    if "float" in r:
        lines.append(f"  float e-prop reference: before {r['float']['error_before']:.3f}, after "
                     f"{r['float']['error_after']:.3f} (fixed - float: {r['fixed_minus_float_after']:+.3f}; "
                     f"{r['float']['seconds']:.1f} s)")
    return "\n".join(lines)
