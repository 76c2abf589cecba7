"""The gradient checks: e-prop vs BPTT where exact, online vs fast, and the
analytic readout gradient against finite differences."""

import numpy as np
import pytest

from conftest import needs_torch
from eprop_lava.engine.gradients import eprop_gradient, eprop_gradient_online
from eprop_lava.engine.network import Batch, init_params, simulate
from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.verify import _batch, _network, relative_error, run_checks


@needs_torch
def test_verify_checks_all_pass():
    results = run_checks(steps=80, batch_size=3)
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    exact = [r for r in results if r.kind == "exact"]
    from eprop_lava.engine import fused

    assert len(exact) == 19 + (4 if fused.available() else 0)
    assert max(r.value for r in exact if r.name.startswith("eprop_vs_bptt")) < 1e-10
    cosines = [r.value for r in results if r.kind == "reported"]
    assert all(0.5 < c < 1.0 for c in cosines)   # e-prop is an approximation, and a good one here


@pytest.mark.parametrize("neuron", ["lif", "alif", "stdp_alif", "izhikevich"])
def test_online_equals_fast_with_random_feedback(neuron):
    spec = _network(neuron, layers=2, recurrent=True, timing="bellec", reset="subtract", regularization="bellec")
    spec = spec.replace(learning=spec.learning.__class__(variant="random"))
    params = init_params(spec)
    batch = _batch(spec, 50, 2, seed=5)
    _, fast, _ = eprop_gradient(spec, params, batch)
    _, online, _ = eprop_gradient_online(spec, params, batch)
    assert relative_error(fast, online) < 1e-10
    assert np.abs(online["layers.1.w_in"]).max() > 0


def test_readout_gradient_matches_finite_differences():
    spec = _network("alif", layers=1, recurrent=True, timing="bellec", reset="subtract")
    params = init_params(spec)
    batch = _batch(spec, 40, 2, seed=2)
    loss, grads, _ = eprop_gradient(spec, params, batch)
    ops = make_ops("numpy")
    for name, index in (("readout.w", (1, 3)), ("readout.b", (2,))):
        h = 1e-6
        p_plus = {k: v.copy() for k, v in params.items()}
        p_plus[name][index] += h
        p_minus = {k: v.copy() for k, v in params.items()}
        p_minus[name][index] -= h
        from eprop_lava.engine.gradients import total_loss

        lp = total_loss(spec, simulate(spec, p_plus, batch.x, ops), (batch.x, batch.target, batch.mask), ops)
        lm = total_loss(spec, simulate(spec, p_minus, batch.x, ops), (batch.x, batch.target, batch.mask), ops)
        assert grads[name][index] == pytest.approx((lp - lm) / (2 * h), rel=1e-6)


def test_no_recurrent_self_connections_and_symmetric_uses_readout():
    spec = _network("lif", layers=1, recurrent=True, timing="bellec", reset="subtract")
    params = init_params(spec)
    assert np.all(np.diag(params["layers.0.w_rec"]) == 0)
    _, grads, _ = eprop_gradient(spec, params, _batch(spec, 40, 2, seed=1))
    assert np.all(np.diag(grads["layers.0.w_rec"]) == 0)
    assert "feedback.b" not in params


def test_determinism_under_a_seed():
    spec = _network("alif", layers=1, recurrent=True, timing="bellec", reset="subtract")
    a = init_params(spec)
    b = init_params(spec)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    batch = _batch(spec, 30, 2, seed=1)
    g1 = eprop_gradient(spec, a, batch)[1]
    g2 = eprop_gradient(spec, b, batch)[1]
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


@needs_torch
def test_torch_backend_matches_numpy():
    spec = _network("alif", layers=2, recurrent=True, timing="loihi", reset="zero", regularization="bellec")
    params = init_params(spec)
    batch = _batch(spec, 40, 2, seed=3)
    _, g_np, _ = eprop_gradient(spec, params, batch)
    ops = make_ops("torch", dtype="float64")
    _, g_t, _ = eprop_gradient(spec, params, batch, ops)
    assert relative_error({k: ops.to_numpy(v) for k, v in g_t.items()}, g_np) < 1e-12


def test_online_rate_regularizer_sign_drives_rates_to_target():
    # A neuron firing above target must get a positive gradient (weights go down).
    spec = _network("lif", layers=1, recurrent=False, timing="bellec", reset="subtract", regularization="online")
    params = init_params(spec)
    batch = _batch(spec, 60, 2, seed=4)
    batch = Batch(batch.x, batch.target, np.zeros_like(batch.mask), batch.labels)  # only the regularizer
    _, grads, traj = eprop_gradient(spec, params, batch)
    rates = traj.z[0].mean(axis=(0, 1)) * 1000
    high = rates > 50
    assert high.any()
    assert np.all(grads["layers.0.w_in"][high] > 0)


def test_bidirectional_layer_reads_reversed_time():
    """The backward direction of a bidirectional layer equals a forward layer
    run on the time-reversed input, and the online formulation refuses it."""
    from eprop_lava.engine.gradients import eprop_gradient_online

    spec = _network("lif", layers=1, recurrent=True, timing="bellec", reset="subtract", bidirectional=True)
    params = init_params(spec)
    assert spec.n_neurons == 16 and params["layers.0.rev_w_in"].shape == (8, 6)
    batch = _batch(spec, 30, 2, seed=7)
    ops = make_ops("numpy")
    traj = simulate(spec, params, batch.x, ops)
    uni = _network("lif", layers=1, recurrent=True, timing="bellec", reset="subtract")
    p_rev = {"layers.0.w_in": params["layers.0.rev_w_in"], "layers.0.w_rec": params["layers.0.rev_w_rec"],
             "readout.w": params["readout.w"][:, 8:], "readout.b": params["readout.b"]}
    rev = simulate(uni, p_rev, batch.x[::-1].copy(), ops)
    np.testing.assert_array_equal(traj.z[0][:, :, 8:], rev.z[0][::-1])
    with pytest.raises(ValueError, match="bidirectional"):
        eprop_gradient_online(spec, params, batch)
