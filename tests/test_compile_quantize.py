"""Compiler quantization: Loihi's weight grid, known values, error bounds, search."""

import math

import numpy as np
import pytest

from eprop_lava.compile.quantize import (
    QuantizationError, WeightGrid, dequantize, quantize_bias, quantize_network, sign_mode_of,
)
from eprop_lava.engine.network import init_params
from eprop_lava.fixed import dense_weights
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec


def lif_spec(**kw):
    layer = LayerSpec(size=kw.pop("size", 20), neuron=kw.pop("neuron", "lif"),
                      params=NeuronParams(v_th=0.5, n_ref=0, tau_m=20.0))
    return NetworkSpec(n_inputs=kw.pop("n_inputs", 10), layers=(layer,), readout=ReadoutSpec(n_outputs=3),
                       timing="loihi", reset="zero", seed=1, **kw)


def params_for(spec, scale=1.0):
    return {k: np.asarray(v, dtype=np.float64) * (scale if k != "readout.b" else 1.0)
            for k, v in init_params(spec).items()}


def test_grid_known_values():
    g = WeightGrid(8, "mixed")
    assert (g.step, g.lo, g.hi) == (2, -256, 254)
    assert g.round(np.array([3.0, 2.9, -257.0, 300.0, 0.9])).tolist() == [4, 2, -256, 254, 0]
    g4 = WeightGrid(4, "mixed")
    assert (g4.step, g4.lo, g4.hi) == (32, -256, 224)
    e = WeightGrid(8, "excitatory")
    assert (e.step, e.lo, e.hi) == (1, 0, 255)
    i = WeightGrid(6, "inhibitory")
    assert (i.step, i.lo, i.hi) == (4, -252, 0)
    with pytest.raises(QuantizationError, match="1..8 bits"):
        WeightGrid(9, "mixed")


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("mode", ["mixed", "excitatory", "inhibitory"])
def test_grid_is_what_lava_dense_keeps(bits, mode):
    """Rounding onto the grid makes Lava's clip-and-truncate the identity."""
    rng = np.random.default_rng(bits)
    x = rng.normal(0, 150, 500)
    if mode == "excitatory":
        x = np.abs(x)
    elif mode == "inhibitory":
        x = -np.abs(x)
    q = WeightGrid(bits, mode).round(x)
    np.testing.assert_array_equal(dense_weights(q, bits, mode), q)


def test_sign_mode():
    assert sign_mode_of(np.array([0.1, 0.2])) == "excitatory"
    assert sign_mode_of(np.array([-0.1, 0.0])) == "inhibitory"
    assert sign_mode_of(np.array([-0.1, 0.2]), None) == "mixed"


def test_known_neuron_constants():
    """max|w| = 1 exactly, max-abs scaling: w_scale = 255 -> vth = round(0.5 * 255) = 128,
    dv = 4096 - round(4096 exp(-1/20)) = 200."""
    spec = lif_spec()
    p = params_for(spec)
    for k in ("layers.0.w_in", "layers.0.w_rec"):
        p[k] = p[k] / np.abs(np.concatenate([p["layers.0.w_in"].ravel(), p["layers.0.w_rec"].ravel()])).max()
    net, rep = quantize_network(spec, p, 8, search=False)
    L = net.layers[0]
    assert L.w_scale == pytest.approx(255.0)
    assert int(L.neuron.vth) == 128
    assert int(L.neuron.dv) == 200
    assert rep.layers[0].alpha_fixed == pytest.approx(3896 / 4096)
    # every integer weight is on the 8-bit mixed grid and the rounding error is at most half a step
    for name in ("w_in", "w_rec"):
        w = getattr(L, name)
        assert np.all(w % 2 == 0) and w.min() >= -256 and w.max() <= 254
        err = np.abs(w / L.w_scale - p[f"layers.0.{name}"])
        if name == "w_rec":
            np.fill_diagonal(err, 0)
        assert err.max() <= 1.0 / 255 + 1e-12  # half a step (step 2 / 255)


def test_bias_mantissa_exponent():
    mant, exp, value = quantize_bias(np.array([100, 5000, -9000, 4095, 10**6]))
    assert mant.tolist()[:4] == [100, 2500, -2250, 4095]
    assert exp.tolist()[:4] == [0, 1, 2, 0]
    assert value.tolist()[:4] == [100, 5000, -9000, 4095]
    assert exp[4] == 7 and abs(mant[4]) <= 4095  # saturates at the largest exponent


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_error_bounds_and_search(bits):
    spec = lif_spec(size=40, n_inputs=30)
    p = params_for(spec)
    rng = np.random.default_rng(5)
    p["layers.0.w_in"] = rng.standard_t(3, size=p["layers.0.w_in"].shape) * 0.3  # heavy tails: outliers
    net_s, rep_s = quantize_network(spec, p, bits, search=True)
    net_m, rep_m = quantize_network(spec, p, bits, search=False)

    def group_sse(rep):
        return sum((m.rel_rms_error ** 2) * float(np.sum(p[m.name] ** 2)) for m in rep.matrices
                   if m.name.startswith("layers.0"))
    assert group_sse(rep_s) <= group_sse(rep_m) * (1 + 1e-9)  # max-abs is one of the candidates
    for m in rep_s.matrices:
        assert 0.0 <= m.clipped_fraction < 0.2
        assert m.bits == bits
    if bits == 8:
        # the input and recurrent matrices share one scale (one weight_exp per layer in the engine), so the
        # bound holds for the group: the smaller-valued recurrent matrix alone is coarser
        energy = float(np.sum(p["layers.0.w_in"] ** 2) + np.sum(p["layers.0.w_rec"] ** 2))
        assert math.sqrt(group_sse(rep_s) / energy) < 0.05  # heavy-tailed weights; Gaussian: < 0.02 below
    if bits == 2:  # with outliers, clipping beats max-abs at low precision
        assert group_sse(rep_s) < 0.8 * group_sse(rep_m)
        assert any(m.clipped_fraction > 0 for m in rep_s.matrices)


def test_error_falls_with_bits():
    spec = lif_spec()
    p = params_for(spec)
    errs = [quantize_network(spec, p, b)[1].worst().rel_rms_error for b in (2, 4, 6, 8)]
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 0.02


def test_per_group_bits_and_dequantize():
    spec = lif_spec()
    p = params_for(spec)
    net, rep = quantize_network(spec, p, {"layers.0": 5, "readout": 8})
    assert {m.name: m.bits for m in rep.matrices} == {"layers.0.w_in": 5, "layers.0.w_rec": 5, "readout.w": 8}
    assert np.all(net.layers[0].w_in % 16 == 0)  # 5-bit mixed: multiples of 2^(9-5)
    d = dequantize(net)
    rel = np.linalg.norm(d["readout.w"] - p["readout.w"]) / np.linalg.norm(p["readout.w"])
    assert rel == pytest.approx(rep.matrices[-1].rel_rms_error, rel=1e-6)
    with pytest.raises(QuantizationError, match="unknown group"):
        quantize_network(spec, p, {"layers.3": 4})
    with pytest.raises(QuantizationError, match="1..8 bits"):
        quantize_network(spec, p, 0)


def test_alif_learning_constants():
    spec = lif_spec(neuron="alif")
    net, rep = quantize_network(spec, params_for(spec), 8)
    L = net.layers[0]
    assert np.all(L.neuron.theta_step[spec.layers[0].size - spec.layers[0].n_adaptive:] > 0)
    q = rep.layers[0]
    assert q.lr_mantissa is not None and -8 <= q.lr_mantissa <= 7
    assert q.lr_rel_error < 0.1  # m 2^e with a 4-bit mantissa is within 1/15 of the asked rate
    assert rep.learning["psi_bits"] == 7 and rep.learning["trace_impulse"] == 16


def test_bellec_timing_is_refused_with_advice():
    spec = lif_spec().replace(timing="bellec", reset="subtract")
    with pytest.raises(QuantizationError, match="--loihi-timing"):
        quantize_network(spec, params_for(spec))


def test_non_finite_weights_are_refused():
    spec = lif_spec()
    p = params_for(spec)
    p["layers.0.w_in"][0, 0] = math.inf
    with pytest.raises(QuantizationError, match="not finite"):
        quantize_network(spec, p)


def crafted_params(spec):
    """All-positive input weights (odd values and 255 on their own grid),
    mixed-sign recurrent weights, an all-negative readout."""
    rng = np.random.default_rng(7)
    p = params_for(spec)
    p["layers.0.w_in"] = rng.uniform(0.0, 1.0, p["layers.0.w_in"].shape)
    p["layers.0.w_in"][0, 0] = 1.0
    p["layers.0.w_rec"] = rng.uniform(-0.7, 0.7, p["layers.0.w_rec"].shape)
    p["readout.w"] = -rng.uniform(0.05, 1.0, p["readout.w"].shape)
    return p


def test_per_dense_grid_and_netx_grid():
    spec = lif_spec(size=8, n_inputs=6)
    dense, rep = quantize_network(spec, crafted_params(spec), 8, grid="dense")
    modes = {m["name"]: m["sign_mode"] for m in rep.to_dict()["matrices"]}
    assert modes == {"layers.0.w_in": "excitatory", "layers.0.w_rec": "mixed", "readout.w": "inhibitory"}
    L = dense.layers[0]
    assert L.w_in.max() == 255 and np.any(L.w_in % 2 == 1) and np.all(L.w_rec % 2 == 0)
    netx_grid, rep = quantize_network(spec, crafted_params(spec), 8, grid="netx")
    assert {m["sign_mode"] for m in rep.to_dict()["matrices"] if m["name"].startswith("layers")} == {"mixed"}
    assert np.all(netx_grid.layers[0].w_in % 2 == 0) and netx_grid.layers[0].w_in.max() <= 254
    with pytest.raises(QuantizationError, match="grid: expected one of dense, netx"):
        quantize_network(spec, crafted_params(spec), 8, grid="nearest")


@pytest.mark.lava
@pytest.mark.parametrize("bits", [8, 5])
def test_compiled_weights_are_bit_exact_in_lavas_dense(bits):
    """Each compiled matrix, given to Lava's own Dense (bit-accurate model,
    sign mode determined by Lava, num_weight_bits = the grid's), produces
    exactly W s: no weight is changed by Lava's clipping or truncation."""
    pytest.importorskip("lava")
    from eprop_lava.compile.deploy import import_lava

    import_lava("lava.magma.core.process.process")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.dense.process import Dense

    spec = lif_spec(size=8, n_inputs=6)
    net, rep = quantize_network(spec, crafted_params(spec), bits, grid="dense")
    mats = {"layers.0.w_in": net.layers[0].w_in, "layers.0.w_rec": net.layers[0].w_rec, "readout.w": net.readout.w}
    T = 6
    rng = np.random.default_rng(1)
    for name, w in mats.items():  # three unconnected graphs: one Lava run each
        s = (rng.random((w.shape[1], T)) < 0.5).astype(float)
        src = io.source.RingBuffer(data=s)
        d = Dense(weights=w.copy(), num_weight_bits=bits, weight_exp=0)
        sink = io.sink.RingBuffer(shape=(w.shape[0],), buffer=T)
        src.s_out.connect(d.s_in)
        d.a_out.connect(sink.a_in)
        src.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        try:
            got = np.rint(sink.data.get()).astype(np.int64)
        finally:
            src.stop()
        want = w @ s.astype(np.int64)
        assert np.any(want != 0)
        np.testing.assert_array_equal(got[:, 1:], want[:, :-1], err_msg=name)  # Dense delays one step


def _rec_exp_pair():
    """A network and its twin whose recurrent Dense holds 2 w_rec with
    weight_exp_rec = -1: (sum 2 w) >> 1 = sum w, so both must run identically."""
    from dataclasses import replace

    spec = lif_spec(size=12, n_inputs=6)
    net = quantize_network(spec, params_for(spec, 3.0), 8)[0]
    rng = np.random.default_rng(4)
    L = net.layers[0]
    L.w_rec[:] = rng.integers(-60, 61, L.w_rec.shape) * 2
    np.fill_diagonal(L.w_rec, 0)
    twin = net.copy()
    twin.layers[0] = replace(twin.layers[0], w_rec=L.w_rec * 2, weight_exp_rec=-1)
    return net, twin


def test_separate_recurrent_exponent_is_exact():
    from eprop_lava.engine import fixed_engine as fe

    net, twin = _rec_exp_pair()
    assert twin.layers[0].rec_exp == -1 and twin.layers[0].weight_exp == 0
    lr = twin.layers[0].lr
    assert twin.layers[0].rec_lr.exponent == lr.exponent + 1 and twin.layers[0].rec_lr.mantissa == lr.mantissa
    x = (np.random.default_rng(0).random((300, 2, 6)) < 0.2).astype(float)
    a, b = fe.simulate(net, x), fe.simulate(twin, x)
    assert sum(int(z.sum()) for z in a.z) > 100
    for za, zb in zip(a.z, b.z):
        np.testing.assert_array_equal(za, zb)
    np.testing.assert_array_equal(a.y, b.y)
    # the step-by-step path (record_state) and the compiled loops agree too
    np.testing.assert_array_equal(fe.simulate(twin, x, record_state=True).y, b.y)


@pytest.mark.lava
def test_separate_recurrent_exponent_in_the_lava_graph():
    """The Lava process graph gives the recurrent EpropDense its own exponent:
    an odd-valued w_rec with weight_exp_rec = -1 (floor shifts) runs bit
    exactly against the engine."""
    pytest.importorskip("lava")
    from dataclasses import replace

    from eprop_lava.compile import deploy
    from eprop_lava.engine import fixed_engine as fe

    _, twin = _rec_exp_pair()
    twin.layers[0] = replace(twin.layers[0], w_rec=twin.layers[0].w_rec + np.sign(twin.layers[0].w_rec))
    x = (np.random.default_rng(0).random((200, 1, 6)) < 0.2).astype(float)
    lv = deploy.lava_run(twin, x)
    run = fe.simulate(twin, x)
    assert int(run.z[0].sum()) > 50
    np.testing.assert_array_equal(lv["y"], run.y[:, 0, :])
    np.testing.assert_array_equal(lv["z"][0], run.z[0][:, 0, :])
