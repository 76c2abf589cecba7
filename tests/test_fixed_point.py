"""Fixed-point specification, neuron steps and the batched fixed-point engine
(no Lava needed). Values are hand-computed Loihi sequences."""

from __future__ import annotations

import numpy as np
import pytest

from eprop_lava import fixed as F
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.gradients import eprop_gradient
from eprop_lava.engine.network import Batch, init_params
from eprop_lava.neurons import fixed as fx
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec


# ----------------------------------------------------------------- profiles
def test_profiles_declare_loihi2_widths():
    p = F.loihi2_profile()
    assert (p.trace_bits, p.weight_bits, p.tag_bits, p.accumulator_bits) == (7, 8, 8, 15)
    assert p.weight_range == (-256, 255) and p.trace_max == 127 and p.lr_mantissa_range == (-8, 7)
    w = F.wide_profile(trace_bits=20)
    assert w.trace_bits == 20 and w.name == "wide"


@pytest.mark.parametrize("field,value", [("trace_bits", 0), ("weight_bits", "8"), ("update_rounding", "up"),
                                         ("trace_impulse", 200), ("update_interval", 0),
                                         ("product_rounding", "stochastic")])
def test_profile_rejects_bad_fields_by_name(field, value):
    with pytest.raises(F.FixedPointError, match=field):
        F.loihi2_profile(**{field: value})


def test_unknown_profile_field_is_named():
    with pytest.raises(F.FixedPointError, match="trace_width"):
        F.loihi2_profile(trace_width=3)


# ----------------------------------------------------------------- arithmetic
def test_decay_rounds_toward_zero():
    assert F.decay(np.array([6400, -6400]), 409, offset=1).tolist() == [5759, -5759]  # 6400*3686/4096 = 5759.4
    assert F.decay(np.array([7, -7]), 2048).tolist() == [3, -3]
    assert F.decay(np.array([100]), 4095, offset=1).tolist() == [0]  # du = 4095: no memory


def test_wrap_and_saturation():
    m = 1 << 23
    assert F.wrap_u24(np.array([m, m + 1, -m, -m - 5])).tolist() == [m, -m + 1, m, m - 5]
    assert F.clip_v24(np.array([m + 10, -m - 10])).tolist() == [m - 1, -(m - 1)]
    assert F.wrap_int32(np.array([2 ** 31])).tolist() == [-(2 ** 31)]


def test_rounding_helpers():
    x = np.array([7, -7, 5, -5])
    assert F.shift_toward_zero(x, 1).tolist() == [3, -3, 2, -2]
    assert F.shift_floor(x, 1).tolist() == [3, -4, 2, -3]
    assert F.shift_nearest(x, 1).tolist() == [4, -3, 3, -2]
    rng = np.random.default_rng(0)
    draws = F.shift_stochastic(np.full(200000, 3), 2, rng)  # 3/4 = 0.75
    assert set(np.unique(draws)) == {0, 1} and abs(draws.mean() - 0.75) < 0.01
    with pytest.raises(F.FixedPointError, match="Generator"):
        F.shift_round(x, 1, "stochastic")


def test_dense_weights_follow_lava_truncation():
    w = np.array([[-300, -3, 3, 255, 300]])
    assert F.dense_weights(w).tolist() == [[-256, -4, 2, 254, 254]]  # mixed: even, [-256, 254]
    assert F.dense_weights(np.array([[3, 255, 300]])).tolist() == [[3, 255, 255]]  # excitatory keeps 8 bits
    assert F.dense_weights(np.array([[37, 200]]), num_weight_bits=4).tolist() == [[32, 192]]  # drops 4 bits


def test_learning_rate_is_mantissa_times_power_of_two():
    p = F.loihi2_profile()
    lr = F.learning_rate(0.001, p)
    assert -8 <= lr.mantissa <= 7 and abs(lr.value - 0.001) / 0.001 < 0.08
    assert F.learning_rate(7 * 2.0 ** -10, p).to_dict() == {"mantissa": 7, "exponent": -10}
    with pytest.raises(F.FixedPointError, match="learning rate"):
        F.learning_rate(-1.0, p)


# ----------------------------------------------------------------- neurons
def test_lif_hand_computed_sequence():
    """Weight 100 spike at t=1 -> u(2)=6400, u(3)=floor(6400*3686/4096)=5759 (du=409)."""
    p = fx.FixedNeuronParams("lif", 1, du=409, dv=0, vth=20000)
    s = fx.initial_state(p, 1)
    us, vs = [], []
    for a in [0, 100, 0, 0]:
        _, _, s = fx.lif_step(np.array([[a]]), s, p)
        us.append(int(s["u"][0, 0])), vs.append(int(s["v"][0, 0]))
    assert us == [0, 6400, 5759, 5182]
    assert vs == [0, 6400, 12159, 17341]


def test_lif_strict_threshold_and_reset_to_zero():
    p = fx.FixedNeuronParams("lif", 2, du=4095, dv=0, vth=1)  # threshold 64
    s = fx.initial_state(p, 1)
    z, post, s = fx.lif_step(np.array([[1, 2]]), s, p)  # u = 64 and 128
    assert z.tolist() == [[0, 1]]          # v = 64 is not > 64
    assert s["v"].tolist() == [[64, 0]]    # the spiking neuron resets to 0
    assert post["psi"][0, 0] == p.psi_max  # exactly at threshold: psi maximal


def test_fixed_params_validation_names_fields():
    with pytest.raises(F.FixedPointError, match="du"):
        fx.FixedNeuronParams("lif", 3, du=5000)
    with pytest.raises(F.FixedPointError, match="vth"):
        fx.FixedNeuronParams("lif", 3, vth=1 << 17)
    with pytest.raises(F.FixedPointError, match="n_ref"):
        fx.FixedNeuronParams("stdp_alif", 3, n_ref=0)
    with pytest.raises(F.FixedPointError, match="kind"):
        fx.FixedNeuronParams("hh", 3)


def test_alif_threshold_adapts_and_decays():
    p = fx.FixedNeuronParams("alif", 1, du=4095, dv=0, vth=1, theta_step=1000, d_theta=2048)
    s = fx.initial_state(p, 1)
    z, _, s = fx.alif_step(np.array([[2]]), s, p)       # v = 128 > 64: spike
    assert z[0, 0] == 1
    _, _, s = fx.alif_step(np.array([[0]]), s, p)       # theta = 0/2 + 1000
    assert s["theta"][0, 0] == 1000
    _, _, s = fx.alif_step(np.array([[0]]), s, p)
    assert s["theta"][0, 0] == 500


def test_stdp_alif_resets_at_end_of_refractory_and_psi_negative():
    p = fx.FixedNeuronParams("stdp_alif", 1, du=4095, dv=0, vth=1, n_ref=2)
    s = fx.initial_state(p, 1)
    z, post, s = fx.stdp_alif_step(np.array([[2]]), s, p)
    assert z[0, 0] == 1
    z, post, s = fx.stdp_alif_step(np.array([[1]]), s, p)   # refractory (ref=2)
    assert z[0, 0] == 0 and post["psi"][0, 0] == -p.psi_max and s["v"][0, 0] == 64
    z, post, s = fx.stdp_alif_step(np.array([[1]]), s, p)   # ref=1: period ends, v reset
    assert post["psi"][0, 0] == -p.psi_max and s["v"][0, 0] == 0 and s["end"][0, 0] == 1


def test_izhikevich_rest_step():
    """v = c = -65 mV (Q14: -1064960), u = b c = -13 mV: one step without input,
    v' = v + 0.04 v^2 + 5 v + 140 - u = -65 + 169 - 325 + 140 + 13 = -68 mV,
    exactly: 0.04 is round(0.04 2^28) / 2^28 and 4225 (0.04 - that) 2^14 < 0.5
    of a Q14 unit. u' = u + 0.004 v - 0.02 u = u (ab v and a u both round to
    -4260 units)."""
    p = fx.FixedNeuronParams("izhikevich", 1)
    s = fx.initial_state(p, 1)
    z, post, s = fx.izhikevich_step(np.array([[0]]), s, p)
    assert s["v"][0, 0] == -68 * 2 ** 14 and s["u"][0, 0] == -13 * 2 ** 14
    assert z[0, 0] == 0 and post["psi"][0, 0] == round(127 * np.exp(-98 / 30))
    assert post["jac"][0, 0] == round((6 - 0.08 * 68) * 2 ** 16)  # 6 + 0.08 v in Q16


# ----------------------------------------------------------------- engine
def _spec(kind: str, loss: str = "mse", variant: str = "symmetric", weight_scale: float = 3.0) -> NetworkSpec:
    params = NeuronParams(n_ref=2)
    return NetworkSpec(n_inputs=10, layers=(LayerSpec(20, kind, params=params, weight_scale=weight_scale),
                                            LayerSpec(15, kind, params=params, weight_scale=weight_scale)),
                       timing="loihi", reset="zero", loss=loss, learning=LearningSpec(variant=variant),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=1e-3))


def _batch(T=60, B=4, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, 10)) < 0.2).astype(float)
    return x, 0.3 * rng.standard_normal((T, B, 2)), np.ones((T, B))


def test_quantize_rejects_bellec_timing():
    spec = _spec("lif").replace(timing="bellec")
    with pytest.raises(F.FixedPointError, match="timing"):
        fe.quantize(spec, init_params(spec, 1))


def test_batch_equals_single_samples_bit_for_bit():
    spec = _spec("alif")
    net = fe.quantize(spec, init_params(spec, 1), "loihi2")
    x, _, _ = _batch(B=3)
    full = fe.simulate(net, x)
    for b in range(3):
        one = fe.simulate(net, x[:, b:b + 1])
        assert all(np.array_equal(full.z[r][:, b], one.z[r][:, 0]) for r in range(2))
        assert np.array_equal(full.y[:, b], one.y[:, 0])


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
def test_fixed_eprop_matches_float_eprop_in_wide_profile(kind, seed):
    """The fixed-point accumulators of one batch, scaled back, equal the float
    e-prop gradient of the same (dequantized) network: cosine >= 0.99 and norm
    ratio 0.9-1.1 for every learned matrix, with spiking neurons (Izhikevich
    needs weight_scale 30 to spike)."""
    from eprop_lava.compile.quantize import dequantize

    spec = _spec(kind, weight_scale=30.0 if kind == "izhikevich" else 3.0)
    params = init_params(spec, seed)
    x, target, mask = _batch()
    net = fe.quantize(spec, params, F.wide_profile())
    same = {**params, **dequantize(net)}
    g_fx = fe.accumulated_gradients(net, x, target, mask)
    _, g, traj = eprop_gradient(spec, same, Batch(x, target, mask))
    run = fe.simulate(net, x)
    for r in range(2):
        assert run.z[r].mean() > 0.02, (r, run.z[r].mean())  # the neurons do spike
        if kind == "izhikevich":  # Q14 millivolts: the same spikes as the float model
            assert np.array_equal(np.asarray(traj.z[r]), run.z[r]), r
    for key in ("layers.0.w_in", "layers.0.w_rec", "layers.1.w_in", "layers.1.w_rec", "readout.w"):
        a, b = g_fx[key].ravel(), g[key].ravel()
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        ratio = np.linalg.norm(a) / np.linalg.norm(b)
        assert cos >= 0.99 and 0.9 <= ratio <= 1.1, (key, cos, ratio)


def test_online_learning_changes_weights_reproducibly():
    spec = _spec("lif", loss="cross_entropy", variant="random")
    net = fe.quantize(spec, init_params(spec, 2), F.loihi2_profile(update_interval=20))
    x, _, mask = _batch(T=40, B=1)
    target = np.zeros((40, 1, 2))
    target[..., 0] = 1
    a, b = net.copy(), net.copy()
    fe.train_online(a, [(x, target, mask)] * 2)
    fe.train_online(b, [(x, target, mask)] * 2)
    assert all(np.array_equal(a.weights()[k], b.weights()[k]) for k in a.weights())
    changed = sum(int((a.weights()[k] != net.weights()[k]).sum()) for k in a.weights())
    assert changed > 0
    lo, hi = net.profile.weight_range
    assert all(w.min() >= lo and w.max() <= hi for w in a.weights().values())
    assert np.all(np.diag(a.layers[0].w_rec) == 0)


def test_engine_rejects_non_spike_input():
    spec = _spec("lif")
    net = fe.quantize(spec, init_params(spec, 1))
    with pytest.raises(F.FixedPointError, match="0/1"):
        fe.simulate(net, np.full((5, 1, 10), 0.5))


# ----------------------------------------------------------------- narrow synapse state
def test_narrow_eligibility_storage_only_where_widths_allow():
    lif = fx.FixedNeuronParams("lif", 4)
    # loihi2: |eps_v| <= 127, ebar in [-256, 255]
    assert fx.eligibility_dtypes(lif, F.loihi2_profile()) == (np.int16, np.int16)
    # 15-bit traces: 32767 still int16; 16-bit tags: [-65536, 65535] needs int32
    assert fx.eligibility_dtypes(lif, F.loihi2_profile(trace_bits=15, tag_bits=16)) == (np.int16, np.int32)
    assert fx.eligibility_dtypes(lif, F.loihi2_profile(trace_bits=16, tag_bits=15)) == (np.int32, np.int16)
    assert fx.eligibility_dtypes(lif, F.wide_profile()) == (np.int64, np.int64)  # 2^32 - 1, 34-bit tags
    assert fx.eligibility_dtypes(fx.FixedNeuronParams("alif", 4), F.loihi2_profile()) == (np.int64, np.int64)


def test_narrow_synapse_state_gives_the_int64_integers(monkeypatch):
    """The compiled loops store LIF eligibility state as int16 where it fits
    (and then run the 16-bit-lane loop); forcing int64 storage (the 32-bit-lane
    loop) gives the same spikes, outputs and weights."""
    from eprop_lava.engine import fused

    if not fused.available():
        pytest.skip("numba is not installed: the compiled loops are not used")
    spec = NetworkSpec(n_inputs=7, layers=(LayerSpec(9, "lif", params=NeuronParams(n_ref=1), weight_scale=3.0),
                                           LayerSpec(6, "lif", params=NeuronParams(n_ref=0), weight_scale=3.0)),
                       timing="loihi", reset="zero", loss="cross_entropy", learning=LearningSpec(variant="adaptive"),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=5e-2))
    rng = np.random.default_rng(3)
    x = (rng.random((50, 4, 7)) < 0.4).astype(np.float64)
    target = np.zeros((50, 4, 2))
    target[..., 1] = 1.0
    results = []
    for fits in (True, False):
        if not fits:
            monkeypatch.setattr(fx, "eligibility_dtypes", lambda p, profile: (np.int64, np.int64))
        net = fe.quantize(spec, init_params(spec, 2), F.loihi2_profile(update_interval=9))
        assert fused.new_compiled_synapse(net.layers[0].neuron, 1, 7, net.profile)["ebar"].dtype == (
            np.int16 if fits else np.int64)
        runs = fe.train_online(net, [(x, target, None), (x[::-1].copy(), target, None)])
        results.append(([r.z[k] for r in runs for k in range(2)], [r.y for r in runs], net.weights()))
    (z16, y16, w16), (z64, y64, w64) = results
    assert all(np.array_equal(a, b) for a, b in zip(z16, z64)) and all(np.array_equal(a, b) for a, b in zip(y16, y64))
    assert all(np.array_equal(w16[k], w64[k]) for k in w64)
    assert any(not np.array_equal(w64[k], fe.quantize(spec, init_params(spec, 2), F.loihi2_profile()).weights()[k])
               for k in w64)  # learning happened
