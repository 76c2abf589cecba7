"""Self-resetting Izhikevich neuron (seed 002 sec. 3.2.2.2, Eqs. 3.23-3.38).

With the reset folded into the update (Eqs. 3.25-3.26; c = -65, d = 2):

    vt^t = v^t - (v^t - c) z^t ,   ut^t = u^t + d z^t
    v^{t+1} = vt + 0.04 vt^2 + 5 vt + 140 - ut + I^{t+1}       (Eq. 3.27)
    u^{t+1} = ut + a (b vt - ut)                               (Eq. 3.28; a b = 0.004, 1 - a = 0.98)
    z^t = H(v^t - v_peak)                                      (v_peak = 30 mV)
    psi^t = gamma exp((min(v^t, 30) - 30) / 30)                (Eq. 3.35)

e-prop's Jacobian (Eqs. 3.29-3.32, with the z-dependence of the reset left out):

    dh^{t+1}/dh^t = [[(1 - z^t)(6 + 0.08 v^t), -1], [a b (1 - z^t), 1 - a]]

(the thesis prints the labels of Eqs. 3.30/3.31 swapped; the matrix of Eq. 3.34
is the one used). dz/dh = (psi, 0) (Eq. 3.36), so e_ji = psi_j eps_v (Eq. 3.38).
The 0.04, 5 and 140 of Eq. 3.23 are fixed; a, b, c, d, v_peak are parameters.
The psi of Eq. 3.35 uses the fixed 30 mV scale of the thesis.
"""

from __future__ import annotations

from typing import Any

from eprop_lava.neurons.base import Constants

name = "izhikevich"
hidden = ("v", "u")


def constants(layer: Any, dt: float, reset: str, ops: Any, conventions: Any = None) -> Constants:
    """Izhikevich's constants; none of the conventions applies to it (it has
    no v_th, no refractory counter, and the spec refuses an input scaling)."""
    p = layer.params
    return Constants(dict(a=p.a, b=p.b, c=p.c, d=p.d, v_peak=p.v_peak, gamma=p.gamma))


def initial_state(batch: int, n: int, const: Constants, ops: Any) -> dict:
    zero = ops.zeros((batch, n))
    return dict(v=zero + const.c, u=zero + const.b * const.c, z=zero)


def step(state: dict, current: Any, const: Constants, ops: Any) -> tuple[Any, dict, dict]:
    z_cut = ops.eprop_cut(state["z"])
    v_prev, u_prev = state["v"], state["u"]
    vt = v_prev - (v_prev - const.c) * z_cut
    ut = u_prev + const.d * z_cut
    v = vt + 0.04 * vt * vt + 5.0 * vt + 140.0 - ut + current
    u = ut + const.a * (const.b * vt - ut)
    x = v - const.v_peak
    record = dict(v=ops.detach(v))
    value = ops.as_float(ops.detach(x) >= 0)  # no refractory period: the reset is built in
    if ops.autograd:
        record["psi"] = surrogate(record, const, ops)
        z = ops.spike(x, value, record["psi"])
    else:
        z = value
    record["z"] = ops.detach(z)
    return z, dict(v=v, u=u, z=z), record


def surrogate(record: dict, const: Constants, ops: Any) -> Any:
    """psi of Eq. 3.35."""
    return const.gamma * ops.exp((ops.minimum(record["v"], 30.0) - 30.0) / 30.0)


def transition_jacobian(record: dict, const: Constants) -> list:
    keep = 1.0 - record["z"]
    return [[keep * (6.0 + 0.08 * record["v"]), -1.0],
            [const.a * const.b * keep, 1.0 - const.a]]


def spike_jacobian(record: dict, const: Constants) -> list:
    return [record["psi"], None]
