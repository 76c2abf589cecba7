"""Eligibility vectors and traces from a neuron model's Jacobians.

Both formulations of e-prop use only ``transition_jacobian`` (dh^{t+1}/dh^t)
and ``spike_jacobian`` (dz^t/dh^t) of the neuron module, so each model's
e-prop is defined once.

Online (per synapse, what a chip's synapse holds), seed 002 Eq. 2.13, 2.26:

    eps_ji^t = J_j^t eps_ji^{t-1} + (pre_i^t, 0, ...)      e_ji^t = dz_j^t/dh_j^t . eps_ji^t

Fast (per neuron): the gradient sum_t lambda_j^t . eps_ji^t is linear in
pre_i, so the product of Jacobians can be moved onto a per-neuron adjoint
that runs backward in time,

    mu_j^t = lambda_j^t + mu_j^{t+1} J_j^{t+1},     grad_ji = sum_t g mu_{j,v}^t pre_i^t,

with lambda_j^t = Lbar_j^t dz_j^t/dh_j^t and g = dv^t/dI^t the membrane's
input gain (:func:`eprop_lava.neurons.base.input_jacobian`: 1, or 1 - alpha
with TF's input scaling). This costs O(T B N) plus one matrix
product per weight matrix and never stores (T, B, post, pre) tensors.
"""

from __future__ import annotations

from typing import Any

from eprop_lava.engine import fused
from eprop_lava.eprop.learning_signal import learning_signal
from eprop_lava.neurons.base import input_jacobian


def local_adjoint(model: Any, const: Any, records: dict, signal: Any, ops: Any) -> Any:
    """delta^t = g mu_v^t (T, B, N) for a learning signal (T, B, N) already
    filtered as the trace it multiplies (see :func:`eprop_lava.engine.fast`);
    g = dv^t/dI^t.

    ``signal`` may also be given by its factors, a tuple (ybar (T, B, K),
    feedback B (N, K), rate (N,), (B, N) or None) with L^t = ybar^t B^T + rate
    (:func:`eprop_lava.eprop.learning_signal.learning_signal`): the compiled
    loop then forms L^t inside the backward pass, step by step, and no
    (T, B, N) array of the signal exists; the reference loop forms it first."""
    gain = input_jacobian(const)
    if getattr(ops, "fused", False) and fused.available():
        out = fused.traced_adjoint(model, const, records, signal, gain)  # Jacobians per element, compiled
        if out is not None:
            return out
        if len(model.hidden) <= 2:
            return _blocked_adjoint(model, const, records, signal, gain)
    if isinstance(signal, tuple):
        ybar, feedback, rate = signal
        signal = learning_signal(ybar, feedback, ops)
        if rate is not None:
            signal = signal + rate
    if gain != 1.0:  # mu is linear in the signal: the gain can scale the signal instead
        signal = signal * gain
    T = signal.shape[0]
    dz_dh = model.spike_jacobian(records, const)
    jac = model.transition_jacobian(records, const)  # jac built from record t is J^{t+1}
    d = len(dz_dh)
    lam = [None if D is None else signal * D for D in dz_dh]
    zero = ops.zeros(signal.shape[1:])
    # (column c) -> [(row r, entry, entry varies over time)], resolved once
    terms = [[(r, jac[r][c], getattr(jac[r][c], "ndim", 0) >= 3) for r in range(d) if jac[r][c] is not None]
             for c in range(d)]
    mu = [lam[c][T - 1] if lam[c] is not None else zero for c in range(d)]
    out = [None] * T
    out[T - 1] = mu[0]
    for t in range(T - 2, -1, -1):
        new = []
        for c in range(d):
            acc = lam[c][t] if lam[c] is not None else zero
            for r, entry, varies in terms[c]:
                acc = acc + mu[r] * (entry[t] if varies else entry)
            new.append(acc)
        mu = new
        out[t] = mu[0]
    return ops.stack(out)


def _blocked_adjoint(model: Any, const: Any, records: dict, signal: Any, gain: float) -> Any:
    """The same recursion with the loop compiled (:func:`eprop_lava.engine.fused.adjoint_block`),
    backward over blocks of time steps: the model's Jacobians are evaluated
    per block, so they stay in cache instead of filling (T, B, N) arrays."""
    import numpy as np

    factors = isinstance(signal, tuple)
    if factors:
        (T, B, _), N = signal[0].shape, signal[1].shape[0]
    else:
        T, B, N = signal.shape
    dtype = (signal[0] if factors else signal).dtype
    out = np.empty((T, B, N), dtype)
    mu = np.zeros((2, B, N), dtype)  # mu^{T} = 0, so mu^{T-1} = lam^{T-1}
    block = max(1, fused.ADJOINT_BLOCK_ELEMENTS // max(1, B * N))
    for t1 in range(T, 0, -block):
        t0 = max(0, t1 - block)
        rec = {k: v[t0:t1] for k, v in records.items()}
        part = (signal[0][t0:t1], signal[1], signal[2]) if factors else signal[t0:t1]
        fused.adjoint_block(part, model.spike_jacobian(rec, const), model.transition_jacobian(rec, const), mu,
                            out[t0:t1], gain)
    return out


def eligibility_step(model: Any, const: Any, eps: list, record_prev: dict | None, record: dict, pre: Any, ops: Any):
    """One step of the per-synapse eligibility vector and trace.

    eps: list of d arrays (B, post, pre) holding eps^{t-1}; record_prev is the
    record of step t-1 (None at t = 0, when eps^{-1} = 0); pre (B, pre) is the
    signal entering v^t, through the input gain g = dv^t/dI^t. Returns (eps^t, e^t)."""
    d = len(eps)
    if record_prev is None:
        new = [ops.zeros(eps[0].shape) for _ in range(d)]
    else:
        jac = model.transition_jacobian(record_prev, const)
        new = []
        for r in range(d):
            acc = ops.zeros(eps[0].shape)
            for c in range(d):
                entry = jac[r][c]
                if entry is not None:
                    acc = acc + _post(entry) * eps[c]
            new.append(acc)
    gain = input_jacobian(const)
    new[0] = new[0] + (pre[:, None, :] if gain == 1.0 else gain * pre[:, None, :])
    dz_dh = model.spike_jacobian(record, const)
    e = ops.zeros(eps[0].shape)
    for c in range(d):
        if dz_dh[c] is not None:
            e = e + _post(dz_dh[c]) * new[c]
    return new, e


def _post(entry: Any) -> Any:
    """Broadcast a per-post-neuron factor (scalar, (N,) or (B, N)) over the pre axis."""
    if getattr(entry, "ndim", 0) == 0:
        return entry
    return entry[..., :, None]
