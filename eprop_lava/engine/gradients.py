"""E-prop gradients of a batch: the fast formulation (used for training), the
online formulation (the specification: per-synapse state, step by step), and
the BPTT baseline (torch autograd) in two graphs.

All three return ``(loss, grads, trajectory)`` with grads a dict named like
the parameters (see :mod:`eprop_lava.engine.network`). Gradients are sums over
the batch; ``feedback.b`` is never differentiated (the adaptive variant moves
it with W_out's update in the trainer).

Readout gradients are exact in every formulation (seed 002 Eqs. 2.38-2.39,
with the bias filtered by kappa as Eq. 3.12 implies):

    dE/dW_out = g sum_t Ybar^t z^t ,  dE/db = g sum_t Ybar^t ,  Ybar^t = dE/dy^t + kappa Ybar^{t+1}

with g the readout's input gain (1, or 1 - kappa under TF's convention,
:func:`eprop_lava.engine.network.readout_gain`); the learning signal is
L^t = B g Ybar^t.

Input and recurrent weights (seed 002 Eq. 2.37, 3.43):

    dE/dW_ji = sum_t L_j^t ebar_ji^t  [+ reg_j^t e_ji^t]  [+ online rate term]  [+ c_L2 W_ji]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eprop_lava.engine import fused
from eprop_lava.engine.backend import Ops, make_ops
from eprop_lava.engine.network import Batch, Trajectory, feedback_matrix, readout_gain, simulate
from eprop_lava.eprop.learning_signal import learning_signal
from eprop_lava.eprop.loss import (
    batch_scale, bellec_rate_loss, bellec_rate_signal, firing_rate, online_rate_signal, task_loss,
    task_loss_and_error,
)
from eprop_lava.eprop.traces import eligibility_step, local_adjoint
from eprop_lava.spec import NetworkSpec


def _on(ops: Ops, params: dict) -> dict:
    return {k: ops.asarray(v) for k, v in params.items()}


def _spikes(traj: Trajectory, ops: Ops) -> Any:
    return ops.concat(traj.z, axis=-1) if len(traj.z) > 1 else traj.z[0]


def readout_gradients(spec: NetworkSpec, traj: Trajectory, error: Any, ops: Ops) -> tuple[dict, Any]:
    """Exact readout gradients and the back-filtered error g Ybar (T, B, K)."""
    ybar = ops.leaky_filter(error, spec.readout.kappa, reverse=True)
    gain = readout_gain(spec)
    if gain != 1.0:
        ybar = gain * ybar
    grads = {
        "readout.w": ops.sum_outer(ybar, traj.readout_in),
        "readout.b": ybar.sum(0).sum(0),
    }
    return grads, ybar


def _bellec_rate(spec: NetworkSpec, traj: Trajectory, ops: Ops) -> Any:
    """The firing rates the Bellec regularizer's loss and signal share (None for other forms)."""
    reg = spec.regularization
    if reg.form != "bellec" or not reg.coefficient:
        return None
    return firing_rate(_spikes(traj, ops), spec.dt, spec.conventions.rate_average == "sample",
                       _spike_counts(traj))


def _spike_counts(traj: Trajectory) -> Any:
    """sum_t z^t (B, N_total) from the forward loops' spike event lists (the
    same integers as summing the (T, B, N) spikes, without a pass over them),
    or None where a population has none."""
    if len(traj.pop_events) != len(traj.populations) or not all("z" in e for e in traj.pop_events):
        return None
    B, dtype = traj.z[0].shape[1], traj.z[0].dtype
    counts = np.zeros((B, traj.readout_in.shape[2]), dtype)
    for P, events in zip(traj.populations, traj.pop_events):
        start, stop = P.columns
        counts[:, start:stop] = events["z"].counts(stop - start)
    return counts


def _regularization_terms(spec: NetworkSpec, traj: Trajectory, ops: Ops, rate: Any = None):
    """(rate signal added to L before dz/dh: (N,) or per sample (B, N); per-neuron online term),
    both scaled as the task loss (conventions.batch_reduction). ``rate``: :func:`_bellec_rate`
    when the caller has it."""
    reg = spec.regularization
    if reg.coefficient == 0 or reg.form == "none":
        return None, None
    spikes = _spikes(traj, ops)
    scale = batch_scale(spec.conventions.batch_reduction, spikes.shape[1])
    if reg.form == "bellec":
        per_sample = spec.conventions.rate_average == "sample"
        signal = bellec_rate_signal(spikes, reg.target_hz, reg.coefficient, spec.dt, per_sample, rate)
        return (signal if scale == 1.0 else scale * signal), None
    online = online_rate_signal(spikes, reg.target_hz, reg.coefficient, spec.dt, ops)
    return None, (online if scale == 1.0 else scale * online)


def rate_loss(spec: NetworkSpec, traj: Trajectory, ops: Ops, rate: Any = None) -> Any:
    """The Bellec firing-rate regularizer E_reg of this trajectory (0 for the
    other forms, which are no loss), scaled as the task loss; ``rate`` as in
    :func:`_regularization_terms`."""
    reg = spec.regularization
    if reg.form != "bellec" or not reg.coefficient:
        return 0.0
    spikes = _spikes(traj, ops)
    scale = batch_scale(spec.conventions.batch_reduction, spikes.shape[1])
    value = bellec_rate_loss(spikes, reg.target_hz, reg.coefficient, spec.dt,
                             spec.conventions.rate_average == "sample", rate)
    return value if scale == 1.0 else scale * value


def _weight_terms(spec: NetworkSpec, params: dict, grads: dict, online_rate: Any, traj: Trajectory,
                  ops: Ops) -> None:
    """Add the online rate term (to every afferent weight) and L2; mask the diagonal."""
    l2 = spec.regularization.l2
    for P in traj.populations:
        for name in ("w_in", "w_rec"):
            key = P.prefix + name
            if key not in grads:
                continue
            if online_rate is not None:
                start, stop = P.columns
                grads[key] = grads[key] + online_rate[start:stop][:, None]
            if l2:
                grads[key] = grads[key] + l2 * params[key]
            if name == "w_rec":
                grads[key] = ops.zero_diagonal(grads[key])  # no self-connections
    if l2:
        grads["readout.w"] = grads["readout.w"] + l2 * params["readout.w"]


def total_loss(spec: NetworkSpec, traj: Trajectory, batch_on: tuple, ops: Ops) -> Any:
    """Task loss (summed or averaged over the batch, conventions.batch_reduction)
    plus the Bellec rate regularizer (:func:`rate_loss`)."""
    x, target, mask = batch_on
    loss = task_loss(spec.loss, traj.y, target, mask, ops)
    scale = batch_scale(spec.conventions.batch_reduction, mask.shape[1])
    if scale != 1.0:
        loss = scale * loss
    return loss + rate_loss(spec, traj, ops)


def loss_and_error(spec: NetworkSpec, traj: Trajectory, batch_on: tuple, ops: Ops) -> tuple[Any, Any]:
    """(:func:`total_loss`, dE/dy) for the e-prop formulations, sharing one log-softmax."""
    x, target, mask = batch_on
    loss, error = task_loss_and_error(spec.loss, traj.y, target, mask, ops)
    scale = batch_scale(spec.conventions.batch_reduction, mask.shape[1])
    if scale != 1.0:
        loss, error = scale * loss, scale * error
    return loss + rate_loss(spec, traj, ops), error


def _readout_backward(spec: NetworkSpec, traj: Trajectory, batch_on: tuple, ops: Ops,
                      rate: Any = None, readout_weights: bool = True) -> tuple[Any, dict, Any]:
    """(:func:`total_loss`, the exact readout gradients, g Ybar as dE/dz^t sees it):
    Ybar^t under Bellec timing, Ybar^{t+1} under Loihi timing (y^t sees z^{t-1}).
    With the compiled loops the loss, the error and the reverse readout filter are
    one sweep over time (:func:`eprop_lava.engine.fused.readout_backward`), else the
    numpy passes of :func:`loss_and_error` and :func:`readout_gradients`. Without
    ``readout_weights`` the compiled sweep leaves dE/dW_out out of the dict
    (the caller sums it with the adjoint, :func:`eprop_gradient`)."""
    x, target, mask = batch_on
    shift = 1 if spec.timing == "loihi" else 0
    if getattr(ops, "fused", False) and fused.available():
        scale = batch_scale(spec.conventions.batch_reduction, mask.shape[1])
        out = fused.readout_backward(spec.loss, traj.y, target, mask, traj.readout_in if readout_weights else None,
                                     spec.readout.kappa, readout_gain(spec), scale, shift)
        if out is not None:
            task, grad_w, grad_b, ybar = out
            grads = {"readout.b": grad_b} if grad_w is None else {"readout.w": grad_w, "readout.b": grad_b}
            return task + rate_loss(spec, traj, ops, rate), grads, ybar
    loss, error = loss_and_error(spec, traj, batch_on, ops)
    grads, ybar = readout_gradients(spec, traj, error, ops)
    return loss, grads, (ops.shift_backward(ybar) if shift else ybar)


def _compiled_adjoint(P: Any, traj: Trajectory, i: int, signal: tuple, ops: Ops, readout: bool):
    """(delta, dE/dW_in, dE/dW_rec, this population's readout columns of dE/dW_out;
    each of the last three None when left to the caller) of population i from the
    compiled adjoint with the model's Jacobians traced into it
    (:func:`eprop_lava.engine.fused.traced_adjoint_gradients`); None without
    the compiled loops (the caller runs :func:`eprop_lava.eprop.traces.local_adjoint`)."""
    if not (getattr(ops, "fused", False) and fused.available()):
        return None
    from eprop_lava.neurons.base import input_jacobian

    events = traj.pop_events[i] if i < len(traj.pop_events) else {}
    return fused.traced_adjoint_gradients(P.model, P.const, traj.pop_records[i], signal, input_jacobian(P.const),
                                          traj.pop_pre_in[i], traj.pop_z[i], recurrent=P.w_rec is not None,
                                          readout=readout, pre_events=events.get("pre_in"),
                                          spike_events=events.get("z"))


def _batch_on(batch: Batch, ops: Ops) -> tuple:
    return ops.asarray(batch.x), ops.asarray(batch.target), ops.asarray(batch.mask)


def eprop_gradient(spec: NetworkSpec, params: dict, batch: Batch, ops: Ops | None = None):
    """The fast formulation: one forward pass, a per-neuron adjoint per layer,
    one matrix product per weight matrix. Memory O(T B (N + n_in))."""
    ops = ops or make_ops("numpy")
    p = _on(ops, params)
    x, target, mask = _batch_on(batch, ops)
    traj = simulate(spec, p, x, ops)
    rates = _bellec_rate(spec, traj, ops)  # one pass over the spikes for the regularizer's loss and signal
    loss, grads, ybar = _readout_backward(spec, traj, (x, target, mask), ops, rates, readout_weights=False)
    readout_columns = None if "readout.w" in grads else np.zeros((ybar.shape[2], traj.readout_in.shape[2]),
                                                                  ybar.dtype)
    # The learning signal L = ybar B^T (+ rate signal) goes to the adjoint as its
    # factors: the compiled loop forms L^t step by step, with no (T, B, N) array.
    feedback = ops.asarray(feedback_matrix(spec, p))
    rate_signal, online_rate = _regularization_terms(spec, traj, ops, rates)
    for i, P in enumerate(traj.populations):
        start, stop = P.columns
        rate = None
        if rate_signal is not None:
            rate = rate_signal[..., start:stop]
        # A backward direction runs in reversed time: its signal is reversed too.
        own = (ops.flip_time(ybar) if P.reverse else ybar, feedback[start:stop], rate)
        grad_in = grad_rec = grad_out = None
        compiled = _compiled_adjoint(P, traj, i, own, ops, readout_columns is not None)
        if compiled is not None:  # delta and, for spike inputs, the weight gradients in one loop
            delta, grad_in, grad_rec, grad_out = compiled
        else:
            delta = local_adjoint(P.model, P.const, traj.pop_records[i], own, ops)
        if readout_columns is not None:
            # this population's readout columns: sum_t ybar^t z^t in its own time order
            # (= g sum_t Ybar^t readout_in^t, whichever the timing: ybar is dE/dz^t)
            readout_columns[:, start:stop] = ops.sum_outer(own[0], traj.pop_z[i]) if grad_out is None else grad_out
        grads[P.prefix + "w_in"] = ops.sum_outer(delta, traj.pop_pre_in[i]) if grad_in is None else grad_in
        if P.w_rec is not None:
            # sum_t delta^t z^{t-1}: slices instead of a shifted copy of the spikes
            grads[P.prefix + "w_rec"] = (ops.sum_outer(delta[1:], traj.pop_z[i][:-1]) if grad_rec is None
                                         else grad_rec)
    if readout_columns is not None:
        grads["readout.w"] = readout_columns
    _weight_terms(spec, p, grads, online_rate, traj, ops)
    return loss, grads, traj


def eprop_gradient_online(spec: NetworkSpec, params: dict, batch: Batch, ops: Ops | None = None):
    """The online formulation, the specification of what each synapse holds:
    eps (d per synapse), ebar (kappa-filtered trace) and, for the Bellec rate
    regularizer, sum_t e; updated every step from locally available values
    (pre signal, post psi and state, learning signal L^t). Memory
    O(B N_post N_pre d): for verification on small networks."""
    if any(layer.bidirectional for layer in spec.layers):
        raise ValueError("the online formulation needs causal layers; a bidirectional layer reads the "
                         "sequence backwards (use eprop_gradient)")
    ops = ops or make_ops("numpy")
    p = _on(ops, params)
    x, target, mask = _batch_on(batch, ops)
    # The neuron dynamics do not depend on learning within a sample, so the
    # forward trajectory supplies the per-step post-synaptic values.
    traj = simulate(spec, p, x, ops)
    loss, error = loss_and_error(spec, traj, (x, target, mask), ops)
    grads, _ = readout_gradients(spec, traj, error, ops)
    signal = learning_signal(error, ops.asarray(feedback_matrix(spec, p)), ops)  # unfiltered L^t
    gain = readout_gain(spec)
    if gain != 1.0:
        signal = gain * signal
    rate_signal, online_rate = _regularization_terms(spec, traj, ops)
    kappa = spec.readout.kappa
    loihi = spec.timing == "loihi"
    T = batch.steps
    for r, L in enumerate(traj.layers):
        start, stop = L.columns
        sources = {"w_in": traj.pre_in[r]}
        if L.w_rec is not None:
            sources["w_rec"] = ops.shift_forward(traj.z[r])
        for name, pre_seq in sources.items():
            B_, n_post, n_pre = pre_seq.shape[1], stop - start, pre_seq.shape[2]
            d = len(L.model.hidden)
            eps = [ops.zeros((B_, n_post, n_pre)) for _ in range(d)]
            ebar = ops.zeros((B_, n_post, n_pre))
            e_sum = ops.zeros((B_, n_post, n_pre))
            grad = ops.zeros((n_post, n_pre))
            rec_prev = None
            for t in range(T):
                rec = {k: v[t] for k, v in traj.records[r].items()}
                eps, e = eligibility_step(L.model, L.const, eps, rec_prev, rec, pre_seq[t], ops)
                L_t = signal[t][:, start:stop][:, :, None]
                if loihi:  # y^t sees z^{t-1}: L^t pairs with ebar^{t-1}
                    grad = grad + (L_t * ebar).sum(0)
                    ebar = kappa * ebar + e
                else:
                    ebar = kappa * ebar + e
                    grad = grad + (L_t * ebar).sum(0)
                e_sum = e_sum + e
                rec_prev = rec
            if rate_signal is not None:
                if getattr(rate_signal, "ndim", 1) == 2:   # one rate per sample (B, N)
                    grad = grad + (rate_signal[:, start:stop][:, :, None] * e_sum).sum(0)
                else:
                    grad = grad + (rate_signal[start:stop][:, None] * e_sum.sum(0))
            grads[f"layers.{r}.{name}"] = grad
    _weight_terms(spec, p, grads, online_rate, traj, ops)
    return loss, grads, traj


def bptt_gradient(spec: NetworkSpec, params: dict, batch: Batch, graph: str = "full",
                  device: str = "cpu", dtype: Any = "float64"):
    """BPTT with torch autograd through the same step functions.

    graph="full": the surrogate gradient through every path (the baseline).
    graph="eprop": stops the gradient exactly where e-prop's Jacobians do
    (resets, spikes into other neurons), so it must equal symmetric e-prop."""
    ops = make_ops("torch", dtype=dtype, device=device, graph=graph)
    torch = ops.torch
    if ops.device.type == "cpu":
        # Thousands of tiny per-step ops: intra-op threads only add overhead.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _bptt(spec, params, batch, ops)
        finally:
            torch.set_num_threads(threads)
    return _bptt(spec, params, batch, ops)


def _bptt(spec: NetworkSpec, params: dict, batch: Batch, ops: Ops):
    torch = ops.torch
    names = [k for k in params if k != "feedback.b"]
    p = {k: ops.asarray(v).requires_grad_(k in names) for k, v in params.items()}
    x, target, mask = _batch_on(batch, ops)
    traj = simulate(spec, p, x, ops)
    loss = total_loss(spec, traj, (x, target, mask), ops)
    leaves = [p[k] for k in names]
    values = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = {k: (g if g is not None else torch.zeros_like(p[k])) for k, g in zip(names, values)}
    with torch.no_grad():
        _, online_rate = _regularization_terms(spec, traj, ops)
        _weight_terms(spec, {k: v.detach() for k, v in p.items()}, grads, online_rate, traj, ops)
    grads = {k: ops.to_numpy(v) for k, v in grads.items()}
    return float(loss.detach()), grads, traj
