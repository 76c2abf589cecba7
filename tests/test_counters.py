"""Saturation, wrap and clipping counters of the fixed-point engine against
hand-built networks whose counts follow from the arithmetic by hand, in the
step engine and the compiled loops (which must agree)."""

from __future__ import annotations

import numpy as np
import pytest

from eprop_lava import fixed as F
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine import fused
from eprop_lava.neurons import fixed as fx
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, ReadoutSpec

V_MAX = (1 << 23) - 1


def _net(n_in: int, n: int, w_in: int, weight_exp: int = 0, vth: int = 131071, bias_mant: int = 0,
         w_out: int = 0, profile: F.FixedPointProfile | None = None, feedback: int = 1) -> fe.FixedNetwork:
    """One LIF layer (du = 4095: u is this step's input; dv = 0: v does not
    decay), no recurrence, every input weight ``w_in``, one readout."""
    spec = NetworkSpec(n_inputs=n_in, layers=(LayerSpec(n, "lif", recurrent=False),),
                       readout=ReadoutSpec(n_outputs=1), loss="mse", learning=LearningSpec(variant="random"),
                       timing="loihi", reset="zero")
    neuron = fx.FixedNeuronParams("lif", n, du=4095, dv=0, vth=vth, bias_mant=bias_mant)
    layer = fe.FixedLayer(neuron, np.full((n, n_in), w_in, np.int64), None, weight_exp,
                          F.LearningRate(0, 0))  # mantissa 0: the hidden weights never move
    readout = fe.FixedReadout(np.full((1, n), w_out, np.int64), F.decay_constant(0.9), np.zeros(1, np.int64), 1.0,
                              0, F.LearningRate(1, 0))
    prof = profile or F.loihi2_profile(update_rounding="toward_zero")
    return fe.FixedNetwork(spec, prof, [layer], readout, np.full((n, 1), feedback, np.int64), 0)


def _both(monkeypatch, net, x, **kw):
    """(step engine run, compiled run) of copies of ``net``."""
    monkeypatch.setenv("EPROP_LAVA_FUSED", "0")
    step = fe.simulate(net.copy(), x, **kw)
    monkeypatch.delenv("EPROP_LAVA_FUSED")
    if not fused.available():
        pytest.skip("needs numba")
    return step, fe.simulate(net.copy(), x, **kw)


def test_v_saturates_at_minus_2_23_after_64_inhibitory_steps(monkeypatch):
    # 8 inputs at weight -256 spike every step: from t = 1 (Dense delay) u = -256 * 8 << 6
    # = -131072 and v = -131072 t, first beyond -(2^23 - 1) at t = 64, held there after.
    T, B, N = 100, 2, 3
    net = _net(8, N, -256)
    step, comp = _both(monkeypatch, net, np.ones((T, B, 8)))
    layer = step.counters["layers.0"]
    assert layer == {"of": T * B * N, "v_saturated": B * N * (T - 64), "u_wrapped": 0, "a_in_wrapped": 0}
    assert comp.counters == step.counters
    assert "learning" not in step.counters  # inference counts neurons only


def test_u_wraps_one_sided_past_2_23(monkeypatch):
    # 600 inputs at 255: a_in << 6 = 153000 * 64 = 9792000 > 2^23, u wraps to
    # 9792000 - 2^24 = -6985216 at every step t >= 1; v = -6985216 t saturates from t = 2.
    T, B, N = 10, 1, 2
    net = _net(600, N, 255)
    step, comp = _both(monkeypatch, net, np.ones((T, B, 600)), record_state=False)
    assert step.counters["layers.0"] == {"of": T * B * N, "v_saturated": B * N * (T - 2),
                                         "u_wrapped": B * N * (T - 1), "a_in_wrapped": 0}
    assert comp.counters == step.counters
    monkeypatch.setenv("EPROP_LAVA_FUSED", "0")
    states = fe.simulate(net.copy(), np.ones((T, B, 600)), record_state=True).states[0]
    assert states["u"][1:, 0, 0].tolist() == [9792000 - (1 << 24)] * (T - 1)


def test_a_in_wraps_past_int32(monkeypatch):
    # weight_exp 14: a_in = 10 * 255 << 14 = 41779200; a_in << 6 = 2673868800 > 2^31 wraps to
    # -1621098496, the one-sided 24-bit wrap adds 2^24 once (-1604321280), v saturates:
    # all three limits act at every step t >= 1.
    T, B, N = 12, 3, 4
    net = _net(10, N, 255, weight_exp=14)
    step, comp = _both(monkeypatch, net, np.ones((T, B, 10)))
    n = B * N * (T - 1)
    assert step.counters["layers.0"] == {"of": T * B * N, "v_saturated": n, "u_wrapped": n, "a_in_wrapped": n}
    assert comp.counters == step.counters
    monkeypatch.setenv("EPROP_LAVA_FUSED", "0")
    u = fe.simulate(net.copy(), np.ones((T, B, 10)), record_state=True).states[0]["u"]
    assert int(u[1, 0, 0]) == 2673868800 - (1 << 32) + (1 << 24)


def test_no_counts_in_a_quiet_network(monkeypatch):
    step, comp = _both(monkeypatch, _net(5, 3, 10), np.ones((20, 2, 5)))
    assert step.counters["layers.0"] == {"of": 120, "v_saturated": 0, "u_wrapped": 0, "a_in_wrapped": 0}
    assert comp.counters == step.counters


def test_apply_update_counts_clipped_weights():
    prof = F.loihi2_profile(update_rounding="toward_zero")
    counts: dict = {}
    w = F.apply_update(np.array([250, 0, -250, 255]), np.array([-10, -10, 10, 1]), F.LearningRate(1, 0), prof, None,
                       counts)
    assert w.tolist() == [255, 10, -256, 254]  # 260 and -260 clip to [-256, 255]
    assert counts == {"clipped": 2, "of": 4}


def test_readout_weights_clip_at_their_width_during_learning(monkeypatch):
    # Readout weights at the top of their range (255), a target far above y: every error
    # saturates at -2^signal_bits, acc = sum (err zbar) >> 4 < 0 for every neuron that spiked,
    # and the update -acc > 0 is clipped: K * N weights per update interval. Input weight 100
    # with vth 1 (threshold 64): every neuron spikes at every step from t = 1.
    T, B, N, interval = 40, 1, 3, 10
    prof = F.loihi2_profile(update_rounding="toward_zero", update_interval=interval)
    net = _net(4, N, 100, vth=1, w_out=255, profile=prof)
    x = np.ones((T, B, 4))
    target = np.full((T, B, 1), 1e9)
    step, comp = _both(monkeypatch, net, x, target=target, learn=True)
    updates = T // interval
    assert step.counters["readout"]["w"] == {"clipped": updates * N, "of": updates * N}
    assert step.counters["layers.0"]["w_in"] == {"clipped": 0, "of": updates * N * 4}
    assert step.counters["learning"]["error_saturated"] == T * B
    assert step.counters["learning"]["error_values"] == T * B
    # L = 1 * (-128) >> 0 = -128 fits the 7-bit signal: every neuron's L is live, none clipped
    layer = step.counters["layers.0"]
    assert (layer["signal_values"], layer["signal_underflow"], layer["signal_saturated"]) == (T * B * N, 0, 0)
    assert comp.counters == step.counters


def test_learning_signal_saturation_counted_per_layer(monkeypatch):
    # The error saturates at -2^7 (7 fractional bits, target far above y); feedback 2 gives
    # B err = -256 < -2^7 with signal_shift 0: every L of every neuron at every step saturates.
    T, B, N = 20, 2, 3
    net = _net(4, N, 100, vth=1, feedback=2)
    step, comp = _both(monkeypatch, net, np.ones((T, B, 4)), target=np.full((T, B, 1), 1e9), learn=True)
    layer = step.counters["layers.0"]
    assert (layer["signal_values"], layer["signal_saturated"]) == (T * B * N, T * B * N)
    assert step.counters["learning"]["signal_saturated"] == T * B * N  # one layer: the network's count
    assert comp.counters == step.counters


@pytest.mark.parametrize("kinds", [("alif", "lif"), ("stdp_alif", "izhikevich")])
def test_step_and_compiled_counts_agree_in_a_random_network(monkeypatch, kinds):
    # A quantized random network, its Dense exponents raised so that v saturates and u and
    # a_in wrap in an irregular pattern; update intervals make the compiled path carry
    # state across blocks. No hand count here: the two engines must count the same.
    from eprop_lava.engine.network import init_params
    from eprop_lava.spec import NeuronParams, OptimizerSpec, RegularizationSpec

    spec = NetworkSpec(n_inputs=10, layers=(LayerSpec(12, kinds[0], params=NeuronParams(n_ref=2)),
                                            LayerSpec(8, kinds[1], params=NeuronParams(n_ref=2))),
                       timing="loihi", reset="zero", loss="mse", learning=LearningSpec(variant="symmetric"),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=1e-2))
    rng = np.random.default_rng(0)
    x = (rng.random((60, 3, 10)) < 0.3).astype(float)
    target = 0.3 * rng.standard_normal((60, 3, 2))
    net = fe.quantize(spec, init_params(spec), F.loihi2_profile(update_interval=15))
    for L in net.layers:
        L.weight_exp, L.weight_exp_rec = 16, 12
    step, comp = _both(monkeypatch, net, x, target=target, learn=True)
    assert comp.counters == step.counters
    for key in ("v_saturated", "a_in_wrapped") + (("u_wrapped",) if "izhikevich" not in kinds else ()):
        assert sum(step.counters[f"layers.{r}"][key] for r in range(2)) > 0, key
    assert step.counters["layers.0"]["of"] == 60 * 3 * 12
    assert step.counters["layers.0"]["w_in"]["of"] == 4 * 12 * 10  # 4 intervals of 15 steps
    for key in ("signal_values", "signal_underflow", "signal_saturated"):  # the layers split the network's
        assert sum(step.counters[f"layers.{r}"][key] for r in range(2)) == step.counters["learning"][key]
