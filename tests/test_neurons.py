"""Known-value tests: each neuron model against sequences computed by hand."""

import math

import numpy as np
import pytest

from eprop_lava.engine.backend import make_ops
from eprop_lava.neurons import alif, izhikevich, lif, stdp_alif
from eprop_lava.spec import LayerSpec, NeuronParams

OPS = make_ops("numpy", dtype="float64")


def run(model, layer, currents, reset="subtract"):
    const = model.constants(layer, 1.0, reset, OPS)
    state = model.initial_state(1, layer.size, const, OPS)
    zs, recs, states = [], [], []
    for c in currents:
        z, state, rec = model.step(state, np.array([[c]], dtype=float), const, OPS)
        zs.append(float(z[0, 0]))
        recs.append(rec)
        states.append({k: float(np.asarray(v)[0, 0]) for k, v in state.items()})
    return zs, recs, states, const


def test_lif_subtractive_reset_and_refractory_by_hand():
    # alpha = exp(-1/20); constant drive 0.4, threshold 1.0, n_ref = 2.
    p = NeuronParams(tau_m=20.0, v_th=1.0, n_ref=2, gamma=0.3)
    layer = LayerSpec(size=1, neuron="lif", params=p)
    a = math.exp(-1 / 20)
    zs, recs, states, _ = run(lif, layer, [0.4] * 6)
    v = [0.4]
    v.append(a * v[-1] + 0.4)             # 0.780
    v.append(a * v[-1] + 0.4)             # 1.142 -> spike at step 2
    v.append(a * v[-1] + 0.4 - 1.0)       # reset by subtraction; refractory
    v.append(a * v[-1] + 0.4)             # refractory
    v.append(a * v[-1] + 0.4)             # free again: 1.22 >= 1 -> spike
    assert [s["v"] for s in states] == pytest.approx(v, abs=1e-12)
    assert zs == [0, 0, 1, 0, 0, 1]
    # psi = gamma max(0, 1 - |v - v_th| / v_th), zero while refractory (steps 3, 4)
    psi = lif.surrogate({k: np.stack([r[k] for r in recs]) for k in recs[0]}, lif.constants(layer, 1.0, "subtract", OPS), OPS)[:, 0, 0]
    expected = [0.3 * max(0.0, 1 - abs(x - 1.0)) for x in v]
    expected[3] = expected[4] = 0.0
    assert psi == pytest.approx(expected, abs=1e-12)


def test_lif_reset_to_zero():
    p = NeuronParams(tau_m=10.0, v_th=0.5, n_ref=0)
    layer = LayerSpec(size=1, neuron="lif", params=p)
    a = math.exp(-0.1)
    zs, _, states, _ = run(lif, layer, [0.3, 0.3, 0.3, 0.3], reset="zero")
    v1 = 0.3
    v2 = a * v1 + 0.3                      # 0.571 -> spike
    v3 = a * v2 * 0 + 0.3                  # reset to zero before integrating
    v4 = a * v3 + 0.3
    assert [s["v"] for s in states] == pytest.approx([v1, v2, v3, v4], abs=1e-12)
    assert zs == [0, 1, 0, 1]


def test_alif_threshold_adaptation_by_hand():
    # beta_scaling none: A = v_th + beta a, a^{t+1} = rho a^t + z^t (Eqs. 1.22-1.23)
    p = NeuronParams(tau_m=20.0, v_th=1.0, n_ref=0, tau_a=100.0, beta=0.5, beta_scaling="none")
    layer = LayerSpec(size=1, neuron="alif", adaptive_fraction=1.0, params=p)
    rho = math.exp(-1 / 100)
    zs, _, states, _ = run(alif, layer, [1.2, 0.0, 1.2, 0.0])
    assert zs[0] == 1.0
    assert states[1]["a"] == pytest.approx(1.0)          # a^1 = rho * 0 + z^0
    assert states[2]["a"] == pytest.approx(rho)          # a^2 = rho a^1 + z^1 (= 0)
    # step 2: v = alpha v1 + 1.2 where v1 = alpha*1.2 + 0 - 1.0
    al = math.exp(-1 / 20)
    v1 = al * 1.2 - 1.0
    v2 = al * v1 + 1.2
    assert states[2]["v"] == pytest.approx(v2)
    assert zs[2] == float(v2 >= 1.0 + 0.5 * rho)


def test_alif_mixed_layer_constants():
    p = NeuronParams(tau_m=20.0, tau_a=2000.0, tau_a_max=4000.0, beta=1.7)
    layer = LayerSpec(size=10, neuron="alif", adaptive_fraction=0.4, params=p)
    const = alif.constants(layer, 1.0, "subtract", OPS)
    assert np.all(const.beta[:6] == 0)
    rho = np.exp(-1 / np.linspace(2000, 4000, 4))
    assert const.rho[6:] == pytest.approx(rho)
    # seed 001 sec. 5.3.2: beta_j = 1.7 (1 - rho_j) / (1 - exp(-1/tau_m))
    assert const.beta[6:] == pytest.approx(1.7 * (1 - rho) / (1 - math.exp(-1 / 20)))


def test_stdp_alif_resets_at_spike_and_end_of_refractory():
    p = NeuronParams(tau_m=20.0, v_th=1.0, n_ref=2, gamma=0.3, beta=0.0)
    layer = LayerSpec(size=1, neuron="stdp_alif", adaptive_fraction=0.0, params=p)
    a = math.exp(-1 / 20)
    zs, recs, states, const = run(stdp_alif, layer, [1.5, 0.2, 0.2, 0.2, 0.2])
    # step 0 spikes; steps 1, 2 refractory; v integrates; at step 3 (end of
    # refractory, z^{t-delta} = 1) the membrane is reset again (Eq. 3.15).
    assert zs[0] == 1
    assert states[1]["v"] == pytest.approx(0.2)                 # alpha v (1 - z) + I
    assert states[2]["v"] == pytest.approx(a * 0.2 + 0.2)
    assert states[3]["v"] == pytest.approx(0.2)                 # reset at the end of refractoriness
    assert states[4]["v"] == pytest.approx(a * 0.2 + 0.2)
    stacked = {k: np.stack([r[k] for r in recs]) for k in recs[0]}
    psi = stdp_alif.surrogate(stacked, const, OPS)[:, 0, 0]
    assert psi[1] == pytest.approx(-0.3) and psi[2] == pytest.approx(-0.3)   # Eq. 3.22
    assert psi[3] == pytest.approx(0.3 * max(0, 1 - abs(0.2 - 1.0)))


def test_izhikevich_self_reset_by_hand():
    layer = LayerSpec(size=1, neuron="izhikevich", params=NeuronParams(gamma=0.3))
    zs, recs, states, const = run(izhikevich, layer, [0.0, 10.0])
    # from rest v = -65, u = -13 with no input: v' = -65 + 0.04*4225 - 325 + 140 + 13 = -68
    v1 = -65 + 0.04 * 65 ** 2 + 5 * -65 + 140 + 13
    u1 = -13 + 0.02 * (0.2 * -65 + 13)
    assert states[0]["v"] == pytest.approx(v1)
    assert states[0]["u"] == pytest.approx(u1)
    v2 = v1 + 0.04 * v1 ** 2 + 5 * v1 + 140 - u1 + 10.0
    assert states[1]["v"] == pytest.approx(v2)
    # a spike resets v to c and increments u by d in the next step (Eqs. 3.25-3.26)
    state = {"v": np.array([[35.0]]), "u": np.array([[-10.0]]), "z": np.array([[1.0]])}
    _, new, _ = izhikevich.step(state, np.array([[0.0]]), const, OPS)
    vt, ut = -65.0, -8.0
    assert float(new["v"][0, 0]) == pytest.approx(vt + 0.04 * vt ** 2 + 5 * vt + 140 - ut)
    assert float(new["u"][0, 0]) == pytest.approx(ut + 0.02 * (0.2 * vt - ut))
    psi = izhikevich.surrogate({"v": np.array([30.0, 0.0])}, const, OPS)
    assert psi == pytest.approx([0.3, 0.3 * math.exp(-1.0)])   # Eq. 3.35


@pytest.mark.parametrize("model,neuron", [(alif, "alif"), (stdp_alif, "stdp_alif"), (izhikevich, "izhikevich")])
def test_jacobian_entries_match_the_thesis(model, neuron):
    layer = LayerSpec(size=3, neuron=neuron, adaptive_fraction=1.0,
                      params=NeuronParams(n_ref=2, beta=0.3, beta_scaling="none", tau_a=50.0))
    const = model.constants(layer, 1.0, "subtract", OPS)
    rec = {"z": np.array([[0.0, 1.0, 0.0]]), "psi": np.array([[0.1, 0.2, 0.0]]),
           "end": np.array([[0.0, 0.0, 1.0]]), "v": np.array([[-60.0, 31.0, 10.0]])}
    J = model.transition_jacobian(rec, const)
    if neuron == "izhikevich":   # Eqs. 3.29-3.32
        assert np.ravel(J[0][0]) == pytest.approx([6 + 0.08 * -60, 0.0, 6 + 0.8])
        assert J[0][1] == -1.0
        assert np.ravel(J[1][0]) == pytest.approx([0.004, 0.0, 0.004])
        assert J[1][1] == pytest.approx(0.98)
    else:                       # Eqs. 2.19-2.22 (ALIF), 3.17 (STDP-ALIF)
        alpha = math.exp(-1 / 20)
        expected_vv = alpha if neuron == "alif" else alpha * np.array([[1.0, 0.0, 0.0]])
        assert np.ravel(np.broadcast_to(J[0][0], (1, 3))) == pytest.approx(np.ravel(np.broadcast_to(expected_vv, (1, 3))))
        assert J[0][1] is None
        assert np.ravel(J[1][0]) == pytest.approx(np.ravel(rec["psi"]))
        assert np.ravel(J[1][1]) == pytest.approx(np.ravel(np.exp(-1 / 50) - 0.3 * rec["psi"]))
        D = model.spike_jacobian(rec, const)
        assert np.ravel(D[1]) == pytest.approx(np.ravel(-0.3 * rec["psi"]))   # Eq. 2.27
