"""Leaky integrate-and-fire neuron (seed 001 Eqs. 1.19-1.21; seed 002 Eqs. 2.3-2.4).

    v^{t+1} = alpha v^t + sum_i W^rec_ji z_i^t + sum_i W^in_ji x_i^{t+1} - z^t v_th
    z^t     = H(v^t - v_th),  forced to 0 for n_ref steps after a spike
    psi^t   = gamma max(0, 1 - |v^t - v_th| / v_th),  0 while refractory

Hidden state h = (v). e-prop: dh^{t+1}/dh^t = alpha (Eq. 2.19, or alpha (1 - z^t)
with reset to zero), dz/dh = psi (Eq. 4.12), so the eligibility vector is the
presynaptic trace and e_ji^t = psi_j^t zbar_i^t (seed 001 Eqs. 4.13-4.14).
"""

from __future__ import annotations

from typing import Any

from eprop_lava.neurons.base import (
    Constants, convention_constants, decay, fire, leak_jacobian, membrane_update, not_refractory_psi, pseudo_derivative,
    refractory_counter,
)

name = "lif"
hidden = ("v",)


def constants(layer: Any, dt: float, reset: str, ops: Any, conventions: Any = None) -> Constants:
    p = layer.params
    alpha = decay(p.tau_m, dt)
    return Constants(dict(alpha=alpha, v_th=p.v_th, reset=reset, **convention_constants(p, alpha, conventions)))


def initial_state(batch: int, n: int, const: Constants, ops: Any) -> dict:
    zero = ops.zeros((batch, n))
    return dict(v=zero, z=zero, ref=zero)


def step(state: dict, current: Any, const: Constants, ops: Any) -> tuple[Any, dict, dict]:
    v = membrane_update(state["v"], current, state["z"], const, ops)
    ref = refractory_counter(state["ref"], state["z"], const.n_ref, ops)
    free = ref <= 0
    x = v - const.v_th
    record = dict(x=ops.detach(x), free=free)
    z = fire(x, free, record, surrogate, const, ops)
    record["z"] = ops.detach(z)
    return z, dict(v=v, z=z, ref=ref), record


def surrogate(record: dict, const: Constants, ops: Any) -> Any:
    """psi (Eq. 2.18), 0 while refractory."""
    return not_refractory_psi(pseudo_derivative(record["x"], const.v_th, const.gamma, ops), record, ops)


def transition_jacobian(record: dict, const: Constants) -> list:
    return [[leak_jacobian(record, const)]]


def spike_jacobian(record: dict, const: Constants) -> list:
    return [record["psi"]]
