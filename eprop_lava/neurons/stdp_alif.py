"""STDP-ALIF neuron (seed 002 sec. 3.2.2.1, Eqs. 3.15-3.22).

The membrane is reset to zero at a spike and again when the refractory period
of delta = n_ref steps ends:

    v^{t+1} = alpha v^t (1 - z^t - z^{t-delta}) + I^{t+1}          (Eq. 3.15)
    a^{t+1} = rho a^t + z^t ,  z^t = H(v^t - v_th - beta a^t)

e-prop's Jacobian (Eqs. 3.17-3.19):

    dh^{t+1}/dh^t = [[alpha (1 - z^t - z^{t-delta}), 0], [psi^t, rho - beta psi^t]]

and the pseudo-derivative is negative while refractory (Eq. 3.22), which
makes post-before-pre pairings depress synapses (STDP):

    psi^t = -gamma                                        refractory
            gamma max(0, 1 - |v^t - v_th - beta a^t| / v_th)   otherwise

Choices where the thesis is ambiguous: "refractory" means the n_ref steps
after a spike (the same steps on which z is forced to 0), and the distance
to threshold in psi uses the adaptive threshold A = v_th + beta a (Eq. 3.22
writes v_th; the two agree for beta = 0). The ``reset`` option of the spec
does not apply: Eq. 3.15 defines the reset.
"""

from __future__ import annotations

from typing import Any

from eprop_lava.neurons.base import (
    Constants, adaptation_constants, convention_constants, decay, fire, pseudo_derivative, refractory_counter,
)

name = "stdp_alif"
hidden = ("v", "a")


def constants(layer: Any, dt: float, reset: str, ops: Any, conventions: Any = None) -> Constants:
    p = layer.params
    beta, rho = adaptation_constants(layer, dt)
    alpha = decay(p.tau_m, dt)
    conv = convention_constants(p, alpha, conventions)  # its membrane has no input gain (the spec refuses one)
    return Constants(dict(alpha=alpha, v_th=p.v_th, gamma=conv["gamma"], n_ref=conv["n_ref"],
                          beta=ops.asarray(beta), rho=ops.asarray(rho)))


def initial_state(batch: int, n: int, const: Constants, ops: Any) -> dict:
    zero = ops.zeros((batch, n))
    return dict(v=zero, a=zero, z=zero, ref=zero, end=zero)


def step(state: dict, current: Any, const: Constants, ops: Any) -> tuple[Any, dict, dict]:
    # state["end"] = z^{t-delta}: the refractory period ended with the previous step.
    keep = 1.0 - ops.eprop_cut(state["z"]) - state["end"]
    v = const.alpha * state["v"] * keep + current
    a = const.rho * state["a"] + state["z"]
    ref = refractory_counter(state["ref"], state["z"], const.n_ref, ops)
    free = ref <= 0
    x = v - (const.v_th + const.beta * a)
    end = ops.as_float(ref == 1.0)
    record = dict(x=ops.detach(x), free=free, end=end)
    z = fire(x, free, record, surrogate, const, ops)
    record["z"] = ops.detach(z)
    return z, dict(v=v, a=a, z=z, ref=ref, end=end), record


def surrogate(record: dict, const: Constants, ops: Any) -> Any:
    """psi of Eq. 3.22: -gamma while refractory, Eq. 2.18 otherwise."""
    return ops.where(record["free"], pseudo_derivative(record["x"], const.v_th, const.gamma, ops), -const.gamma)


def transition_jacobian(record: dict, const: Constants) -> list:
    psi = record["psi"]
    return [[const.alpha * (1.0 - record["z"] - record["end"]), None],
            [psi, const.rho - const.beta * psi]]


def spike_jacobian(record: dict, const: Constants) -> list:
    psi = record["psi"]
    return [psi, -const.beta * psi]
