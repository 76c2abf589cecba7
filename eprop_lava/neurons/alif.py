"""Adaptive LIF neuron (seed 001 Eqs. 1.22-1.24; seed 002 Eqs. 2.5-2.6, 2.15-2.28).

    v^{t+1} = alpha v^t + I^{t+1} - z^t v_th          (Eq. 2.4)
    a^{t+1} = rho a^t + z^t                           (Eq. 2.6)
    A^t     = v_th + beta a^t                         (Eq. 1.22)
    z^t     = H(v^t - A^t), 0 while refractory        (Eq. 2.5)
    psi^t   = gamma max(0, 1 - |v^t - A^t| / v_th)    (Eq. 2.18)

Hidden state h = (v, a). e-prop's Jacobian (Eqs. 2.19-2.22):

    dh^{t+1}/dh^t = [[alpha, 0], [psi^t, rho - beta psi^t]]

It keeps the adaptation path through the neuron's own spike (Eq. 2.21) and
leaves out the reset's dependence (Eq. 2.19). dz/dh = (psi, -beta psi)
(Eq. 2.27), so e_ji = psi_j (eps_v - beta eps_a) (Eq. 2.28).
A layer mixes LIF (beta = 0) and ALIF neurons (``adaptive_fraction``).
"""

from __future__ import annotations

from typing import Any

from eprop_lava.neurons.base import (
    Constants, adaptation_constants, convention_constants, decay, fire, leak_jacobian, membrane_update,
    not_refractory_psi, pseudo_derivative, refractory_counter,
)

name = "alif"
hidden = ("v", "a")


def constants(layer: Any, dt: float, reset: str, ops: Any, conventions: Any = None) -> Constants:
    p = layer.params
    beta, rho = adaptation_constants(layer, dt)
    alpha = decay(p.tau_m, dt)
    return Constants(dict(alpha=alpha, v_th=p.v_th, reset=reset, beta=ops.asarray(beta), rho=ops.asarray(rho),
                          **convention_constants(p, alpha, conventions)))


def initial_state(batch: int, n: int, const: Constants, ops: Any) -> dict:
    zero = ops.zeros((batch, n))
    return dict(v=zero, a=zero, z=zero, ref=zero)


def step(state: dict, current: Any, const: Constants, ops: Any) -> tuple[Any, dict, dict]:
    v = membrane_update(state["v"], current, state["z"], const, ops)
    a = const.rho * state["a"] + state["z"]
    ref = refractory_counter(state["ref"], state["z"], const.n_ref, ops)
    free = ref <= 0
    x = v - (const.v_th + const.beta * a)
    record = dict(x=ops.detach(x), free=free)
    z = fire(x, free, record, surrogate, const, ops)
    record["z"] = ops.detach(z)
    return z, dict(v=v, a=a, z=z, ref=ref), record


def surrogate(record: dict, const: Constants, ops: Any) -> Any:
    """psi (Eq. 2.18) with the adaptive threshold, 0 while refractory."""
    return not_refractory_psi(pseudo_derivative(record["x"], const.v_th, const.gamma, ops), record, ops)


def transition_jacobian(record: dict, const: Constants) -> list:
    psi = record["psi"]
    return [[leak_jacobian(record, const), None],
            [psi, const.rho - const.beta * psi]]


def spike_jacobian(record: dict, const: Constants) -> list:
    psi = record["psi"]
    return [psi, -const.beta * psi]
