"""Pieces shared by the LIF family: one source for each equation.

A neuron model is a module-level object with

* ``hidden``: names of the hidden state h_j (first is always the membrane v,
  where synaptic input enters, so dh/dW = (pre, 0, ...), seed 002 Eq. 2.13);
* ``constants(layer, dt, reset, ops, conventions=None)``: per-neuron
  parameter arrays (``conventions``: the spec's ConventionSpec, None for the
  defaults; see :func:`convention_constants`);
* ``initial_state(batch, const, ops)``;
* ``step(state, current, const, ops) -> (z, state, record)``: one time step
  (Norse style: pure, no hidden globals);
* ``surrogate(record, const, ops)``: the pseudo-derivative psi from a record.
  Under autograd (BPTT) each step needs psi as its spike's surrogate; the
  e-prop engine instead evaluates it once over the whole trajectory, which is
  the same function applied to stacked records;
* ``transition_jacobian(record, const)``: e-prop's dh^{t+1}/dh^t, computed
  from the record of step t, as a d x d nested list (None = structural zero);
* ``spike_jacobian(record, const)``: dz^t/dh^t as a list of length d.

Records are elementwise, so the Jacobians evaluate equally on one step
(B, N) or on a whole stacked trajectory (T, B, N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class Constants:
    """Per-neuron constants of one layer (arrays of shape (N,) or scalars),
    as plain attributes (read thousands of times per sequence)."""

    def __init__(self, values: dict):
        self.values = dict(values)
        self.__dict__.update(values)


def decay(tau: float, dt: float) -> float:
    """exp(-dt / tau): the per-step decay of a time constant tau."""
    return math.exp(-dt / tau)


def convention_constants(p: Any, alpha: float, conventions: Any = None) -> dict:
    """The constants a :class:`~eprop_lava.spec.ConventionSpec` changes, for
    neuron parameters p with membrane decay alpha:

    input_gain (the factor on I in :func:`membrane_update`): 1, or 1 - alpha
      with input_scaling = "one_minus_alpha" (TF LightLIF; NEST
      regular_spike_arrival = False);
    n_ref (steps blocked after a spike, what :func:`refractory_counter`
      counts): p.n_ref, or max(p.n_ref - 1, 0) with refractory_count =
      "t_ref_steps" (TF/NEST set the counter to t_ref / dt and decrement it
      before testing it);
    gamma (the height in :func:`pseudo_derivative`): p.gamma, or
      p.gamma / v_th with surrogate_scale = "gamma_over_v_th" (TF's psi / thr);
    reset_amount (what a spike z^t subtracts from v^{t+1} in
      :func:`membrane_update`): v_th, or alpha v_th with reset_timing =
      "same_step" (the reset applied in the spiking step then decays)."""
    input_scaling = getattr(conventions, "input_scaling", "none")
    refractory = getattr(conventions, "refractory_count", "blocked_steps")
    surrogate = getattr(conventions, "surrogate_scale", "gamma")
    same_step = getattr(conventions, "reset_timing", "next_step") == "same_step"
    return dict(input_gain=1.0 - alpha if input_scaling == "one_minus_alpha" else 1.0,
                reset_amount=alpha * p.v_th if same_step else p.v_th,
                n_ref=max(int(p.n_ref) - 1, 0) if refractory == "t_ref_steps" else int(p.n_ref),
                gamma=p.gamma / p.v_th if surrogate == "gamma_over_v_th" else p.gamma)


def pseudo_derivative(x: Any, v_th: Any, gamma: float, ops: Any) -> Any:
    """psi = gamma * max(0, 1 - |x / v_th|) with x = v - A the distance to the
    (possibly adaptive) threshold A (seed 002 Eq. 2.18; seed 001 Eq. 1.27).

    Bellec's code divides psi by v_th as well; pass gamma / v_th for that."""
    return gamma * ops.maximum(1.0 - ops.abs(ops.detach(x)) / v_th, 0.0)


def fire(x: Any, free: Any, record: dict, surrogate: Any, const: Constants, ops: Any) -> Any:
    """z = H(x) when not refractory (``free``) (seed 001 Eq. 1.21: H(0) = 1).

    Under autograd dz/dx = psi, the model's surrogate, which is then also
    stored in the record; otherwise psi is left to be computed afterwards."""
    value = ops.as_float((ops.detach(x) >= 0) & free)
    if not ops.autograd:
        return value
    record["psi"] = surrogate(record, const, ops)
    return ops.spike(x, value, record["psi"])


def refractory_counter(ref_prev: Any, z_prev: Any, n_ref: int, ops: Any) -> Any:
    """Remaining refractory steps: n_ref right after a spike, then counting
    down, so the n_ref steps after a spike are refractory (seed 001 sec. 1.6.2).
    n_ref here is the number of blocked steps (see :func:`convention_constants`
    for TF's and NEST's t_ref / dt, which blocks one step less)."""
    return ops.where(ops.detach(z_prev) > 0, float(n_ref), ops.maximum(ref_prev - 1.0, 0.0))


def membrane_update(v_prev: Any, current: Any, z_prev: Any, const: Constants, ops: Any) -> Any:
    """LIF/ALIF membrane, seed 001 Eq. 1.19 / seed 002 Eq. 2.4:

    reset="subtract": v^{t+1} = alpha v^t + g I^{t+1} - z^t r
    reset="zero":     v^{t+1} = alpha v^t (1 - z^t) + g I^{t+1}   (Loihi's LIF)

    with the input gain g = 1 (the seeds) or g = 1 - alpha (TF's LightLIF,
    ``v = decay * v + (1 - decay) * i_t - z * thr``; NEST's
    regular_spike_arrival = False), ``const.input_gain``. e-prop keeps
    dv^{t+1}/dv^t = alpha (Eq. 2.19), resp. alpha (1 - z^t): the reset's
    dependence on v through z is the part it leaves out; dv/dI = g
    (:func:`input_jacobian`). The reset amount r is v_th, or alpha v_th with
    conventions.reset_timing = "same_step" (NEST's eprop_iaf:
    alpha (v^t - z^t v_th)); ``const.reset_amount``."""
    z_cut = ops.eprop_cut(z_prev)
    gain = getattr(const, "input_gain", 1.0)
    if const.reset == "subtract":
        return const.alpha * v_prev + gain * current - getattr(const, "reset_amount", const.v_th) * z_cut
    return const.alpha * v_prev * (1.0 - z_cut) + gain * current


def input_jacobian(const: Constants) -> float:
    """dv^t/dI^t of :func:`membrane_update`: the input gain g; the
    eligibility vector's input term is g pre_i^t (seed 002 Eq. 2.13 for g = 1)."""
    return getattr(const, "input_gain", 1.0)


def not_refractory_psi(psi: Any, record: dict, ops: Any) -> Any:
    """psi = 0 while refractory (seed 002 Eq. 2.18: "set to 0 during the refractory period")."""
    return ops.where(record["free"], psi, 0.0)


def leak_jacobian(record: dict, const: Constants) -> Any:
    """dv^{t+1}/dv^t as e-prop uses it (Eq. 2.19, or alpha (1 - z) for reset to zero)."""
    if const.reset == "subtract":
        return const.alpha
    return const.alpha * (1.0 - record["z"])


def adaptation_constants(layer: Any, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(beta_j, rho_j) for a layer whose last n_adaptive neurons adapt
    (seed 001 sec. 5.3.2: tau_a spans [tau_a, tau_a_max];
    beta_j = beta (1 - rho_j) / (1 - alpha) with beta_scaling="bellec")."""
    p = layer.params
    n, n_ad = layer.size, layer.n_adaptive
    beta = np.zeros(n)
    rho = np.full(n, decay(p.tau_a, dt))
    if n_ad:
        tau_max = p.tau_a_max if p.tau_a_max is not None else p.tau_a
        taus = np.linspace(p.tau_a, tau_max, n_ad)
        rho_ad = np.exp(-dt / taus)
        alpha = decay(p.tau_m, dt)
        scale = (1.0 - rho_ad) / (1.0 - alpha) if p.beta_scaling == "bellec" else np.ones(n_ad)
        beta[n - n_ad:] = p.beta * scale
        rho[n - n_ad:] = rho_ad
    return beta, rho
