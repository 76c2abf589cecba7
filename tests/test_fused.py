"""The compiled time loops (engine/fused.py) against the reference loops: the
same trajectories and gradients from two independent computations."""

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_gradients_match, learn_compiled_and_step

from eprop_lava.engine import fused
from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import eprop_gradient
from eprop_lava.engine.network import Batch, init_params, simulate
from eprop_lava.engine.verify import _batch, _network

needs_numba = pytest.mark.skipif(not fused.available(), reason="needs numba")


def _sparse_batch(spec, steps, size, seed, rate=0.03):
    b = _batch(spec, steps, size, seed)
    x = (np.random.default_rng(seed + 100).random(b.x.shape) < rate).astype(float)
    return Batch(x=x, target=b.target, mask=b.mask, labels=b.labels)


@needs_numba
@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("timing,reset", [("bellec", "subtract"), ("loihi", "zero")])
@pytest.mark.parametrize("density", ["dense", "sparse"])
def test_compiled_equals_reference(neuron, timing, reset, density):
    spec = _network(neuron, layers=2, recurrent=True, timing=timing, reset=reset, regularization="bellec", n=12)
    spec = spec.replace(learning=spec.learning.__class__(variant="random"))
    params = init_params(spec)
    batch = (_sparse_batch if density == "sparse" else _batch)(spec, 200, 3, seed=4)
    ref_ops, fast_ops = make_ops("numpy", fused=False), make_ops("numpy", fused=True)
    loss_r, grads_r, traj_r = eprop_gradient(spec, params, batch, ref_ops)
    loss_f, grads_f, traj_f = eprop_gradient(spec, params, batch, fast_ops)
    spikes = sum(float(z.sum()) for z in traj_r.z)
    assert spikes > 50  # the comparison means something only if neurons fire
    for r in range(2):
        np.testing.assert_array_equal(traj_f.z[r], traj_r.z[r])
        for key in ("x", "psi", "free", "z"):
            np.testing.assert_allclose(traj_f.records[r][key], traj_r.records[r][key], rtol=0, atol=1e-12)
    assert loss_f == pytest.approx(loss_r, rel=1e-12)
    assert_gradients_match(grads_f, grads_r)


@needs_numba
@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("timing,reset", [("bellec", "subtract"), ("loihi", "zero")])
def test_compiled_equals_reference_under_tf_conventions(neuron, timing, reset):
    # The (1 - alpha) input gain, TF's refractory count and psi / v_th enter the
    # compiled loop through the same constants as the reference step functions.
    spec = _network(neuron, layers=2, recurrent=True, timing=timing, reset=reset, regularization="bellec", n=12,
                    conventions="tf")
    assert spec.layers[0].params.n_ref == 2  # one blocked step under t_ref_steps
    params = init_params(spec)
    batch = _batch(spec, 200, 3, seed=4)
    loss_r, grads_r, traj_r = eprop_gradient(spec, params, batch, make_ops("numpy", fused=False))
    loss_f, grads_f, traj_f = eprop_gradient(spec, params, batch, make_ops("numpy", fused=True))
    assert sum(float(z.sum()) for z in traj_r.z) > 50
    for r in range(2):
        np.testing.assert_array_equal(traj_f.z[r], traj_r.z[r])
        for key in ("x", "psi", "free"):
            np.testing.assert_allclose(traj_f.records[r][key], traj_r.records[r][key], rtol=0, atol=1e-12)
    assert loss_f == pytest.approx(loss_r, rel=1e-12)
    assert_gradients_match(grads_f, grads_r)


@needs_numba
@pytest.mark.parametrize("neuron", ["stdp_alif", "izhikevich"])
def test_compiled_adjoint_serves_every_model(neuron):
    # These neurons keep the reference forward loop; the compiled adjoint takes
    # their own Jacobians, so the gradients must not change.
    spec = _network(neuron, layers=1, recurrent=True, timing="bellec", reset="subtract", n=10)
    params = init_params(spec)
    batch = _batch(spec, 120, 2, seed=7)
    _, g_r, _ = eprop_gradient(spec, params, batch, make_ops("numpy", fused=False))
    _, g_f, _ = eprop_gradient(spec, params, batch, make_ops("numpy", fused=True))
    for k in g_r:
        assert np.abs(g_f[k] - g_r[k]).max() <= 1e-10 * max(np.abs(g_r[k]).max(), 1e-300), k
    assert np.abs(g_r["layers.0.w_in"]).max() > 0


@needs_numba
def test_bidirectional_layer_runs_compiled():
    spec = _network("alif", layers=1, recurrent=True, timing="bellec", reset="subtract", bidirectional=True)
    params = init_params(spec)
    batch = _sparse_batch(spec, 150, 2, seed=3, rate=0.05)
    _, g_r, t_r = eprop_gradient(spec, params, batch, make_ops("numpy", fused=False))
    _, g_f, t_f = eprop_gradient(spec, params, batch, make_ops("numpy", fused=True))
    np.testing.assert_array_equal(t_f.z[0], t_r.z[0])
    for k in g_r:
        assert np.abs(g_f[k] - g_r[k]).max() <= 1e-10 * max(np.abs(g_r[k]).max(), 1e-300), k


@needs_numba
def test_event_products_equal_dense_products():
    rng = np.random.default_rng(0)
    spikes = (rng.random((40, 5, 30)) < 0.04) * rng.choice([1.0, 2.5], size=(40, 5, 30))
    delta = rng.standard_normal((40, 5, 7))
    w_t = rng.standard_normal((30, 7))
    dense = delta.reshape(-1, 7).T @ spikes.reshape(-1, 30)
    np.testing.assert_allclose(fused.sum_outer_events(delta, spikes), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fused.project_events(spikes, w_t), spikes @ w_t, rtol=1e-12, atol=1e-12)
    # dense inputs are left to BLAS
    full = rng.standard_normal((40, 5, 30))
    assert fused.sum_outer_events(delta, full) is None
    assert fused.project_events(full, w_t) is None


@needs_numba
def test_event_lists_hold_exactly_the_nonzero_values():
    # the forward loops' event lists against np.nonzero of the arrays they describe
    rng = np.random.default_rng(5)
    x = (rng.random((60, 4, 9)) < 0.06) * rng.choice([1.0, -0.5, 3.0], size=(60, 4, 9))
    w_t = rng.standard_normal((9, 6))
    out, rows = fused.project_events(x, w_t, events=True)
    np.testing.assert_allclose(out, x @ w_t, rtol=1e-12, atol=1e-12)
    for b in range(4):
        t_ev, i_ev = np.nonzero(x[:, b])  # time-major, then increasing position
        assert rows.end[-1, b] == len(i_ev)
        np.testing.assert_array_equal(rows.index[b, :len(i_ev)], i_ev)
        np.testing.assert_array_equal(rows.value[b, :len(i_ev)], x[t_ev, b, i_ev])
        np.testing.assert_array_equal(rows.end[:, b], np.searchsorted(t_ev, np.arange(60), side="right"))
    spec = _network("alif", layers=1, recurrent=True, timing="bellec", reset="subtract", n=12)
    traj = simulate(spec, init_params(spec), _sparse_batch(spec, 120, 3, seed=2, rate=0.05).x,
                    make_ops("numpy", fused=True))
    z = traj.pop_z[0]
    assert z.sum() > 20
    np.testing.assert_array_equal(traj.pop_events[0]["z"].dense(z.shape[2]), z)
    np.testing.assert_array_equal(traj.pop_events[0]["z"].counts(z.shape[2]), z.sum(0))
    np.testing.assert_allclose(rows.counts(9), x.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(traj.pop_events[0]["pre_in"].dense(traj.pop_pre_in[0].shape[2]),
                                  traj.pop_pre_in[0])


@needs_numba
def test_projection_from_event_lists_equals_the_matrix_product():
    # two column blocks, the second from a population run backwards in time, one step of delay
    rng = np.random.default_rng(6)
    T, B = 50, 3
    s = (rng.random((T, B, 11)) < 0.07).astype(float)
    w_t = rng.standard_normal((11, 4))
    _, first = fused.project_events(s[:, :, :7], np.zeros((7, 1)), events=True)
    _, second = fused.project_events(np.ascontiguousarray(s[::-1, :, 7:]), np.zeros((4, 1)), events=True)
    delayed = np.zeros_like(s)
    delayed[1:] = s[:-1]
    got = fused.project_listed([(first, 0, False), (second, 7, True)], w_t, T, B, shift=1)
    np.testing.assert_allclose(got, delayed @ w_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fused.project_listed([(first, 0, False), (second, 7, True)], w_t, T, B), s @ w_t,
                               rtol=1e-12, atol=1e-12)


@needs_numba
def test_backward_pass_reads_the_event_lists_with_the_same_result():
    spec = _network("alif", layers=1, recurrent=True, timing="bellec", reset="subtract", n=12)
    params = init_params(spec)
    batch = _sparse_batch(spec, 150, 3, seed=8, rate=0.08)
    calls = []
    real = fused.traced_adjoint_gradients

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    fused.traced_adjoint_gradients = spy
    try:
        _, g_list, _ = eprop_gradient(spec, params, batch, make_ops("numpy", fused=True))
    finally:
        fused.traced_adjoint_gradients = real
    assert calls and calls[0]["pre_events"] is not None and calls[0]["spike_events"] is not None
    _, g_ref, _ = eprop_gradient(spec, params, batch, make_ops("numpy", fused=False))
    for k in g_ref:
        assert np.abs(g_list[k] - g_ref[k]).max() <= 1e-10 * max(np.abs(g_ref[k]).max(), 1e-300), k


@needs_numba
def test_float32_forward_stays_float32_and_agrees():
    spec = _network("alif", layers=1, recurrent=True, timing="bellec", reset="subtract", n=12)
    params = init_params(spec)
    batch = _sparse_batch(spec, 100, 2, seed=1, rate=0.1)
    outs = []
    for f in (False, True):
        ops = make_ops("numpy", dtype="float32", fused=f)
        traj = simulate(spec, {k: ops.asarray(v) for k, v in params.items()}, ops.asarray(batch.x), ops)
        outs.append(traj)
    assert outs[1].z[0].dtype == np.float32 and outs[1].records[0]["psi"].dtype == np.float32
    np.testing.assert_array_equal(outs[1].z[0], outs[0].z[0])
    np.testing.assert_allclose(outs[1].records[0]["x"], outs[0].records[0]["x"], rtol=0, atol=1e-5)


def test_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv("EPROP_LAVA_FUSED", "0")
    assert not fused.available()
    assert make_ops("numpy").fused is False


# ----------------------------------------------------------------- fixed point
from eprop_lava.engine import fixed_engine as fe  # noqa: E402
from eprop_lava.fixed import wrap_int32  # noqa: E402
from eprop_lava.neurons import fixed as fx  # noqa: E402


def _reference_layer(p, ext, w_rec, weight_exp):
    """The step-by-step numpy engine's equations for one layer."""
    T, B, N = ext.shape
    state = fx.initial_state(p, B)
    zs, psis = [], []
    for t in range(T):
        rec = 0 if w_rec is None else fe.dense_output(w_rec, state["z"], weight_exp)
        z, post, state = fx.step(wrap_int32(ext[t] + rec), state, p)
        zs.append(z)
        psis.append(post["psi"])
    return np.stack(zs), np.stack(psis)


@needs_numba
@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
@pytest.mark.parametrize("case", ["lava_lif", "leaky_u_refractory", "extremes"])
def test_compiled_fixed_layer_is_bit_exact(kind, case):
    rng = np.random.default_rng(11)
    N, T, B = 9, 400, 3
    kw = dict(kind=kind, size=N, vth=rng.integers(20, 200, N), psi_bits=7)
    if kind in ("alif", "stdp_alif"):
        kw.update(d_theta=rng.integers(1, 400, N), theta_step=rng.integers(0, 4000, N))
    if case == "lava_lif":          # Lava's LIF: memoryless u, no bias, no refractoriness
        kw.update(du=4095, dv=rng.integers(0, 800, N), n_ref=1 if kind == "stdp_alif" else 0)
        ext = rng.integers(-300, 900, (T, B, N))
        w_rec, wexp = rng.integers(-255, 256, (N, N)), 0
    elif case == "leaky_u_refractory":
        kw.update(du=rng.integers(0, 4000, N), dv=rng.integers(0, 4000, N), bias_mant=rng.integers(-50, 50, N),
                  bias_exp=2, n_ref=3)
        ext = rng.integers(-400, 1200, (T, B, N))
        w_rec, wexp = rng.integers(-255, 256, (N, N)), -2
    else:                           # drive u past its 24-bit wrap, v into saturation, a_in past int32
        kw.update(du=rng.integers(0, 4096, N).clip(0, 4095), dv=rng.integers(0, 100, N), n_ref=1)
        ext = rng.integers(-(1 << 31), (1 << 31) - 1, (T, B, N))
        ext[::3] = rng.integers(-(1 << 18), 1 << 18, ext[::3].shape)
        w_rec, wexp = rng.integers(-255, 256, (N, N)) * 64, 6
    if kind == "izhikevich":        # millivolt-sized input: Q14 mV is 2^8 Dense units per mV
        kw = dict(kind=kind, size=N, psi_bits=7)
        ext = ext if case == "extremes" else ext * 4
    p = fx.FixedNeuronParams(**kw)
    np.fill_diagonal(w_rec, 0)
    z_ref, psi_ref = _reference_layer(p, ext, w_rec, wexp)
    out = fused.run_fixed_layer(p, ext, w_rec, wexp, fx.initial_state(p, B))
    assert 0 < z_ref.mean() < 0.9
    np.testing.assert_array_equal(out["z"], z_ref)
    np.testing.assert_array_equal(out["psi"], psi_ref)
    if case == "extremes":          # the edge cases were really reached
        a = ext.astype(np.int64)
        assert np.any(np.left_shift(wrap_int32(a), 6) > (1 << 23))


def _dense_definition(w, s, weight_exp):
    """Dense output from its definition in int64: sum_i w_ji s_i, times 2^e or
    floor-divided by 2^-e, wrapped to int32 (two's complement)."""
    total = np.einsum("...i,ji->...j", np.asarray(s, np.int64), np.asarray(w, np.int64))
    shifted = total * (1 << weight_exp) if weight_exp >= 0 else total // (1 << -weight_exp)
    return (shifted + (1 << 31)) % (1 << 32) - (1 << 31)


@pytest.mark.parametrize("outputs", [2, 30])
@pytest.mark.parametrize("rows", [3, 5000])
@pytest.mark.parametrize("density", [0.05, 0.6])
@pytest.mark.parametrize("weights", ["8bit", "8bit_exp-2", "wrapping"])
def test_dense_output_equals_its_int64_definition(outputs, rows, density, weights):
    """Every path of dense_output (few outputs, events, small products, BLAS
    for large dense ones; int32 and int64 sums) gives the definition's
    integers, including floor shifts and int32 wraps."""
    rng = np.random.default_rng(rows + outputs)
    s = (rng.random((rows, 40)) < density).astype(np.int8)
    w = rng.integers(-256, 255, (outputs, 40))
    exp = {"8bit": 0, "8bit_exp-2": -2, "wrapping": 9}[weights]
    if weights == "wrapping":
        w = w << 14  # sums to 2^27, shifted by 2^9: past int32
    expected = _dense_definition(w, s, exp)
    if weights == "wrapping":
        assert np.abs(_dense_definition(w, s, 0) * (1 << exp)).max() >= 1 << 31
    for as_int32 in (False, True):
        got = fe.dense_output(w, s, exp, as_int32=as_int32)
        assert got.dtype == (np.int32 if as_int32 else np.int64)
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(fe.dense_output(w, s.astype(float), exp), expected)  # the step engine's input


@needs_numba
@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
@pytest.mark.parametrize("weights", ["8bit", "8bit_exp-2", "wrapping"])
def test_input_dense_inside_the_layer_loop_is_bit_exact(kind, weights):
    """run_fixed_layer summing its input Dense from the spikes (the compiled
    engine) equals the layer fed with the Dense output of the int64
    definition (and so the step engine's equations), the first step taking
    the output sent before the block."""
    rng = np.random.default_rng(5)
    N, I, T, B = 11, 16, 200, 3
    kw = dict(kind=kind, size=N, vth=rng.integers(20, 200, N), psi_bits=7, du=4095, dv=rng.integers(0, 800, N),
              n_ref=2)
    if kind in ("alif", "stdp_alif"):
        kw.update(d_theta=rng.integers(1, 400, N), theta_step=rng.integers(0, 4000, N))
    if kind == "izhikevich":
        kw = dict(kind=kind, size=N, psi_bits=7)
    p = fx.FixedNeuronParams(**kw)
    pre = (rng.random((T, B, I)) < 0.3).astype(np.int8)
    w_in = rng.integers(-120, 255, (N, I)) * (8 if kind == "izhikevich" else 1)
    exp = {"8bit": 0, "8bit_exp-2": -2, "wrapping": 12}[weights]
    if weights == "wrapping":
        w_in = w_in << 12
    w_rec = rng.integers(-255, 256, (N, N))
    np.fill_diagonal(w_rec, 0)
    first = rng.integers(-500, 500, (B, N))
    ext = _dense_definition(w_in, pre, exp)
    ext[0] = first
    state_a, state_b = fx.initial_state(p, B), fx.initial_state(p, B)
    fed = fused.run_fixed_layer(p, ext, w_rec, 0, state_a)
    summed = fused.run_fixed_layer(p, None, w_rec, 0, state_b, inputs=(pre, w_in, exp, first))
    z_ref, psi_ref = _reference_layer(p, ext, w_rec, 0)
    assert 0 < z_ref.mean() < 0.9
    for key in ("z", "psi", "counts"):
        np.testing.assert_array_equal(summed[key], fed[key], err_msg=key)
    np.testing.assert_array_equal(summed["z"], z_ref)
    np.testing.assert_array_equal(summed["psi"], psi_ref)
    for k in state_a:
        np.testing.assert_array_equal(state_a[k], state_b[k], err_msg=k)
    if weights == "wrapping":
        assert summed["counts"][2] > 0  # a_in wrapped: counted as the step engine counts it


def _fixed_network(kind, loss="cross_entropy", variant="random", sizes=(20, 15)):
    from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec

    params = NeuronParams(n_ref=2)
    scale = 30.0 if kind == "izhikevich" else 3.0  # Izhikevich needs millivolt-sized input
    return NetworkSpec(n_inputs=10, layers=tuple(LayerSpec(n, kind, params=params, weight_scale=scale) for n in sizes),
                       timing="loihi", reset="zero", loss=loss, learning=LearningSpec(variant=variant),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=5e-2))


@needs_numba
@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
@pytest.mark.parametrize("block_elements", [None, 200])
def test_compiled_fixed_network_equals_step_engine(kind, block_elements, monkeypatch):
    # 200: inference in blocks of 2 steps (5 samples x 20 neurons), every boundary carried
    if block_elements is not None:
        monkeypatch.setattr(fe, "INFERENCE_BLOCK_ELEMENTS", block_elements)
    spec = _fixed_network(kind)
    net = fe.quantize(spec, init_params(spec, 1), "loihi2")
    assert fe.compiled_inference(net)
    rng = np.random.default_rng(0)
    x = (rng.random((120, 5, 10)) < 0.2).astype(float)
    target = np.zeros((120, 5, 2))
    target[..., 0] = 1.0
    fast = fe.simulate(net, x, target)
    ref = fe._simulate(net, x, target, None, False, None, False, None, fe.PER_SYNAPSE)
    assert sum(int(z.sum()) for z in ref.z) > 100
    for a, b in zip(fast.z, ref.z):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast.psi, ref.psi):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.y, ref.y)
    np.testing.assert_array_equal(fast.err, ref.err)




@needs_numba
@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
@pytest.mark.parametrize("case", ["loihi2_interval", "wide_minibatch", "saturating"])
def test_compiled_learning_is_bit_exact_to_step_engine(kind, case):
    """Compiled online e-prop (eligibility, filtered trace, accumulator, update
    with stochastic rounding streams) against the step engine: every spike,
    readout value, error and learned weight equal. 'saturating' shrinks the
    accumulator, tags and traces so that they clip, and checks that they did."""
    from eprop_lava import fixed as F

    variant = {"loihi2_interval": "adaptive", "wide_minibatch": "symmetric", "saturating": "random"}[case]
    spec = _fixed_network(kind, loss="mse" if case == "wide_minibatch" else "cross_entropy", variant=variant)
    prof = {"loihi2_interval": F.loihi2_profile(update_interval=7),
            "wide_minibatch": F.wide_profile(update_interval=25, product_rounding="nearest"),
            "saturating": F.loihi2_profile(update_interval=11, accumulator_bits=8, tag_bits=5, trace_bits=5,
                                           trace_impulse=12, product_shift=0)}[case]
    net = fe.quantize(spec, init_params(spec, 2), prof)
    rng = np.random.default_rng(4)
    B = 4 if case == "wide_minibatch" else 1
    samples = []
    for _ in range(2):
        x = (rng.random((60, B, 10)) < 0.25).astype(float)
        target = np.zeros((60, B, 2))
        target[..., rng.integers(0, 2)] = 1.0
        samples.append((x, target, None))
    fast, ref, runs = learn_compiled_and_step(net, samples)
    for a, b in runs:
        for za, zb in zip(a.z, b.z):
            np.testing.assert_array_equal(za, zb)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.err, b.err)
    assert sum(int(z.sum()) for a, _ in runs for z in a.z) > 50
    wf, wr, w0 = fast.weights(), ref.weights(), net.weights()
    for k in wr:
        np.testing.assert_array_equal(wf[k], wr[k], err_msg=k)
    assert sum(int((wr[k] != w0[k]).sum()) for k in wr) > 10  # learning happened
    if case == "saturating":  # the clipped accumulator: one update moves a weight by at most |m| 2^e 255
        captured = {}

        def grab(netx, syn_in, syn_rec, syn_out, rngs, slices):
            captured["acc"] = [s["acc"].copy() for s in syn_in]

        probe = net.copy()
        fe.simulate(probe, *samples[0], learn=True, on_update=grab)
        lo, hi = prof.accumulator_range
        assert any(np.any((a == lo) | (a == hi)) for a in captured["acc"])


@needs_numba
@pytest.mark.parametrize("kind", ["alif", "stdp_alif"])
def test_parallel_loops_learn_as_the_step_engine(kind, monkeypatch):
    """The compiled learning signal and readout synapses split over threads
    (as for large blocks; a small one runs on one thread), with stochastic
    signal rounding and a batch of 4: the step engine's errors and weights."""
    from eprop_lava import fixed as F

    monkeypatch.setattr(fused, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(fe, "COMPILED_SIGNAL_ELEMENTS", 1)
    spec = _fixed_network(kind, variant="adaptive")
    prof = F.loihi2_profile(update_interval=13, signal_rounding="stochastic", error_rounding="stochastic")
    mask = np.full((50, 4), 1.0 / 40)
    mask[:10] = 0.0
    net = fe.quantize(spec, init_params(spec, 3), prof, loss_mask=mask)
    rng = np.random.default_rng(8)
    samples = []
    for _ in range(2):
        x = (rng.random((50, 4, 10)) < 0.25).astype(float)
        target = np.zeros((50, 4, 2))
        target[..., rng.integers(0, 2)] = 1.0
        samples.append((x, target, mask))
    fast, ref, runs = learn_compiled_and_step(net, samples)
    for a, b in runs:
        np.testing.assert_array_equal(a.err, b.err)
        assert a.counters == b.counters
    assert sum(int(z.sum()) for a, _ in runs for z in a.z) > 50
    wf, wr, w0 = fast.weights(), ref.weights(), net.weights()
    for k in wr:
        np.testing.assert_array_equal(wf[k], wr[k], err_msg=k)
    assert sum(int((wr[k] != w0[k]).sum()) for k in wr) > 10


@needs_numba
@pytest.mark.parametrize("rounding", ["toward_zero", "floor", "nearest"])
@pytest.mark.parametrize("threads", ["serial", "parallel"])
@pytest.mark.parametrize("K, lanes", [(3, 32), (3, 64), (6, 32)])
def test_readout_synapses_equal_their_int64_definition(rounding, threads, K, lanes, monkeypatch):
    """zbar^t = clip(sgn(y)(|y| >> 12) + 16 z^{t-1}, 0, 127) with y = zbar^{t-1} (4096 - d),
    acc = clip(acc + sum_b round(err zbar / 2^4), +-(2^15 - 1)) per step, written
    out here in int64 numpy: errors large enough to saturate the accumulator,
    masked (zero-error) steps, and a block that continues the previous one.
    The loop's forms: 32-bit lanes (loihi2 fits) or int64 lanes (the rule
    switched off), and the one-pass row for up to 4 outputs or the loop per
    output (K = 6)."""
    from eprop_lava.fixed import loihi2_profile
    from eprop_lava.neurons import fixed as fixed_neurons

    if threads == "parallel":
        monkeypatch.setattr(fused, "PARALLEL_MIN_ELEMENTS", 0)
    if lanes == 64:
        monkeypatch.setattr(fixed_neurons, "readout_synapse_fits_int32", lambda *a: False)
    prof = loihi2_profile(product_rounding=rounding)
    rng = np.random.default_rng(2)
    S, B, I, d = 60, 5, 13, 600
    pre = (rng.random((S, B, I)) < 0.3).astype(np.int8)
    err = rng.integers(-127, 128, (S, B, K))
    err[10:20] = 0
    err[40:] = 127  # pushes acc into saturation
    syn = dict(zbar=np.zeros((B, I), np.int64), acc=np.zeros((K, I), np.int64))
    fused.run_fixed_readout_synapses(syn, pre[:30], err[:30], d, prof)
    fused.run_fixed_readout_synapses(syn, pre[30:], err[30:], d, prof)
    zbar, acc = np.zeros((B, I), np.int64), np.zeros((K, I), np.int64)
    hi = (1 << 15) - 1
    for t in range(S):
        y = zbar * (4096 - d)
        zbar = np.clip(np.sign(y) * (np.abs(y) // 4096) + 16 * pre[t], 0, 127)
        prod = err[t][:, :, None] * zbar[:, None, :]  # (B, K, I)
        q = {"toward_zero": np.sign(prod) * (np.abs(prod) // 16), "floor": prod // 16,
             "nearest": (prod + 8) // 16}[rounding]
        acc = np.clip(acc + q.sum(0), -hi, hi)
    np.testing.assert_array_equal(syn["zbar"], zbar)
    np.testing.assert_array_equal(syn["acc"], acc)
    assert np.any(np.abs(acc) == hi) and np.any(np.abs(acc) < hi)


def test_retain_freed_memory_switch(monkeypatch):
    import platform

    from eprop_lava.engine import memory

    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setenv("EPROP_LAVA_RETAIN_MEMORY", "0")
    assert memory.retain_freed_memory() is False
    monkeypatch.delenv("EPROP_LAVA_RETAIN_MEMORY")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert memory.retain_freed_memory() is True


@needs_numba
def test_compiled_loops_leave_multiprocessing_start_method_unset():
    """Lava sets the 'fork' start method at import and fails if it is already
    set; numba's thread launch would set it. A fresh interpreter checks it."""
    import subprocess
    import sys

    code = ("import multiprocessing as mp, numpy as np\n"
            "from eprop_lava.engine import fused\n"
            "x = np.zeros((100, 5)); x[3, 1] = 1.0\n"
            "assert fused.project_events(x, np.ones((5, 3))) is not None\n"
            "assert fused._threads_launched\n"
            "print(mp.get_start_method(allow_none=True))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    # the fixed-point engine's first compiled loop (the input check) launches them as well
    code = ("import multiprocessing as mp, sys, numpy as np\n"
            "from eprop_lava.engine import fused, fixed_engine as fe\n"
            "from eprop_lava.engine.network import init_params\n"
            "sys.path.insert(0, 'tests'); from test_fused import _fixed_network\n"
            "spec = _fixed_network('lif')\n"
            "net = fe.quantize(spec, init_params(spec, 1), 'loihi2')\n"
            "fe.simulate(net, np.zeros((5, 2, spec.n_inputs)))\n"
            "assert fused._threads_launched\n"
            "print(mp.get_start_method(allow_none=True))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "None"


@pytest.mark.parametrize("kind", ["stdp_alif", "izhikevich"])
def test_step_engine_threads_over_the_batch_give_one_pass_results(kind, monkeypatch):
    from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec

    params = NeuronParams(n_ref=2)
    scale = 80.0 if kind == "izhikevich" else 3.0  # Izhikevich needs millivolt-sized input
    spec = NetworkSpec(n_inputs=10, layers=(LayerSpec(12, kind, params=params, weight_scale=scale),),
                       timing="loihi", reset="zero", loss="mse", learning=LearningSpec(variant="symmetric"),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=1e-3))
    net = fe.quantize(spec, init_params(spec, 1), "loihi2")
    monkeypatch.setenv("EPROP_LAVA_FUSED", "0")
    assert not fe.compiled_inference(net)  # switched off: the step engine
    rng = np.random.default_rng(2)
    x = (rng.random((40, 2 * fe.MIN_SAMPLES_PER_THREAD, 10)) < 0.2).astype(float)
    monkeypatch.setenv("EPROP_LAVA_THREADS", "2")
    assert len(fe._inference_chunks(x.shape[1], False)) == 2
    threaded = fe.simulate(net, x)
    one = fe._simulate(net, x, None, None, False, None, False, None, fe.PER_SYNAPSE)
    assert one.z[0].sum() > 0
    np.testing.assert_array_equal(threaded.z[0], one.z[0])
    np.testing.assert_array_equal(threaded.psi[0], one.psi[0])
    np.testing.assert_array_equal(threaded.y, one.y)


@needs_numba
def test_without_numba_the_same_kernels_run_in_numpy():
    """A fresh interpreter where numba cannot be imported runs online learning
    with the kernels in plain numpy (the step engine) and gets the weights the
    compiled loops get here."""
    import json
    import subprocess
    import sys

    code = ("import sys, json; sys.modules['numba'] = None\n"
            "import numpy as np\n"
            "from eprop_lava.engine import fused, fixed_engine as fe\n"
            "from eprop_lava.engine.network import init_params\n"
            "sys.path.insert(0, 'tests'); from test_fused import _fixed_network, _learning_sample\n"
            "assert not fused.available()\n"
            "spec = _fixed_network('alif', variant='adaptive')\n"
            "net = fe.quantize(spec, init_params(spec, 2), 'loihi2')\n"
            "fe.train_online(net, [_learning_sample()] * 2)\n"
            "print(json.dumps({k: v.tolist() for k, v in net.weights().items()}))\n")
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    spec = _fixed_network("alif", variant="adaptive")
    net = fe.quantize(spec, init_params(spec, 2), "loihi2")
    initial = net.weights()
    fe.train_online(net, [_learning_sample()] * 2)
    assert fe.compiled_inference(net)
    changed = 0
    for k, w in net.weights().items():
        np.testing.assert_array_equal(w, np.array(plain[k]), err_msg=k)
        changed += int((w != initial[k]).sum())
    assert changed > 0


def _learning_sample(T=60, B=1, seed=6):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, 10)) < 0.25).astype(float)
    target = np.zeros((T, B, 2))
    target[..., 1] = 1.0
    return x, target, None


@needs_numba
def test_32_bit_lane_primitives_equal_the_int64_ones():
    # every rounding mode and shift the kernels use, on values whose intermediates fit int32
    from numba import njit

    from eprop_lava import fixed as fixed_arith

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.integers(-(1 << 18), 1 << 18, 20000), np.arange(-5000, 5000)]).astype(np.int64)
    factor = rng.integers(0, 4097, x.size).astype(np.int64)
    narrow = fused._NARROW_PRIMITIVES

    @njit
    def apply(fn, a, b, c, out):  # pragma: no cover - compiled
        for i in range(a.size):
            out[i] = fn(a[i], b, c)

    @njit
    def apply_decay(fn, a, f, out):  # pragma: no cover - compiled
        for i in range(a.size):
            out[i] = fn(a[i], f[i])

    out = np.empty_like(x)
    apply_decay(narrow["k_decay"], x >> 6, factor, out)  # |x f| < 2^25
    np.testing.assert_array_equal(out, fixed_arith.k_decay(x >> 6, factor))
    for mode in (fixed_arith.ROUND_TOWARD_ZERO, fixed_arith.ROUND_FLOOR, fixed_arith.ROUND_NEAREST):
        for shift in (0, 1, 4, 7, 12):
            apply(narrow["k_shift"], x, shift, mode, out)
            np.testing.assert_array_equal(out, fixed_arith.k_shift(x, shift, mode))
    apply(narrow["k_clip"], x, -1000, 777, out)
    np.testing.assert_array_equal(out, np.clip(x, -1000, 777))


@needs_numba
def test_16_bit_lane_primitives_equal_the_int64_ones():
    """The 16-bit forms against fixed.py's int64 k_decay / k_shift / k_clip over
    the whole range lif_synapse_fits_int16 admits, exhaustively: the decay for
    every x in [0, 2047] and every factor in [0, 4096]; the shift for every
    int16 value, each rounding mode and the shifts the LIF synapse uses; the
    clip for every non-negative int16 value."""
    from numba import njit

    from eprop_lava import fixed as fixed_arith

    narrow = fused._NARROW16_PRIMITIVES

    @njit
    def decay_table(fn, xs, fs, out):  # pragma: no cover - compiled
        for a in range(xs.size):
            for b in range(fs.size):
                out[a, b] = fn(xs[a], fs[b])

    @njit
    def apply(fn, a, b, c, out):  # pragma: no cover - compiled
        for i in range(a.size):
            out[i] = fn(a[i], b, c)

    xs, fs = np.arange(0, 2048, dtype=np.int64), np.arange(0, 4097, dtype=np.int64)
    out = np.empty((xs.size, fs.size), np.int64)
    decay_table(narrow["k_decay"], xs, fs, out)
    np.testing.assert_array_equal(out, fixed_arith.k_decay(xs[:, None], fs[None, :]))
    # hand-computed: 255 decays by d_kappa = 200 to floor(255 * 3896 / 4096) = 242; 2047 by 1 to 2046
    assert out[255, 4096 - 200] == 242 and out[2047, 4095] == 2046 and out[2047, 4096] == 2047 and out[2047, 0] == 0
    every = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
    res = np.empty_like(every)
    for mode in (fixed_arith.ROUND_TOWARD_ZERO, fixed_arith.ROUND_FLOOR, fixed_arith.ROUND_NEAREST):
        for shift in (0, 1, 4, 7, 12):
            if mode == fixed_arith.ROUND_NEAREST and shift > 0:  # x + 2^(shift-1) must fit: the rule's offset bound
                x = every[every < (1 << 15) - (1 << (shift - 1))]
            else:
                x = every
            apply(narrow["k_shift"], x, shift, mode, res[:x.size])
            np.testing.assert_array_equal(res[:x.size], fixed_arith.k_shift(x, shift, mode))
    nonnegative = every[every >= 0]  # the clip's form for x >= 0 >= lo
    apply(narrow["k_clip"], nonnegative, -256, 255, res[:nonnegative.size])
    np.testing.assert_array_equal(res[:nonnegative.size], np.clip(nonnegative, -256, 255))


def test_16_bit_lanes_only_where_every_intermediate_fits():
    from eprop_lava.fixed import loihi2_profile, wide_profile
    from eprop_lava.neurons.fixed import FixedNeuronParams, lif_synapse_fits_int16

    lif = FixedNeuronParams("lif", 3, dv=200)
    # loihi2 (hand bounds): eps_v psi <= 127 * 127 = 16129, ebar L <= 255 * 128 = 32640 (ebar >= 0), decays of x <= 255
    assert lif_synapse_fits_int16(lif, loihi2_profile(), 64, 200)
    assert lif_synapse_fits_int16(lif, loihi2_profile(), 64, 4096)  # the decay form takes any f in [0, 4096]
    # 8-bit signal: 255 * 256 = 65280 > 2^15
    assert not lif_synapse_fits_int16(lif, loihi2_profile(signal_bits=8), 64, 200)
    # 9-bit tags: ebar up to 511, 511 * 128 = 65408 > 2^15
    assert not lif_synapse_fits_int16(lif, loihi2_profile(tag_bits=9), 64, 200)
    # 9-bit tags with a 6-bit signal: 511 * 64 + 16 = 32720 < 2^15
    assert lif_synapse_fits_int16(lif, loihi2_profile(tag_bits=9, signal_bits=6), 64, 200)
    # 11-bit tags, 3-bit signal: 2047 * 8 fits and 2047 is the decay form's largest x; 12-bit tags leave it (4095)
    assert lif_synapse_fits_int16(lif, loihi2_profile(tag_bits=11, signal_bits=3), 64, 200)
    assert not lif_synapse_fits_int16(lif, loihi2_profile(tag_bits=12, signal_bits=2), 64, 200)
    # 8-bit traces: eps_v psi <= 255 * 127 = 32385 (+128 rounding offset) fits; 9-bit: 511 * 127 does not
    assert lif_synapse_fits_int16(lif, loihi2_profile(trace_bits=8), 64, 200)
    assert not lif_synapse_fits_int16(lif, loihi2_profile(trace_bits=9), 64, 200)
    # the batch sum in int32: (2^31 - 1) // 2041 samples of products 2041 (+ the accumulator) overflow it
    assert not lif_synapse_fits_int16(lif, loihi2_profile(), (1 << 31) // 2041 + 1, 200)
    assert not lif_synapse_fits_int16(lif, loihi2_profile(), 64, 4097)  # no decay factor below 0
    assert not lif_synapse_fits_int16(FixedNeuronParams("alif", 3), loihi2_profile(), 64, 200)
    assert not lif_synapse_fits_int16(lif, wide_profile(), 1, 200)


@needs_numba
@pytest.mark.parametrize("rounding, psi_bits, recurrent, impulse", [
    ("toward_zero", 7, True, None), ("floor", 7, True, None), ("nearest", 7, True, None),
    ("toward_zero", 9, True, None), ("toward_zero", 7, False, None), ("toward_zero", 7, True, 200),
    ("floor", 7, False, 200)])
def test_16_bit_synapse_loop_is_bit_exact_to_step_engine(rounding, psi_bits, recurrent, impulse):
    """The 16-bit LIF synapse loop (a batch of 5, 13 inputs and 9 recurrent
    synapses per row in one pass, rows whose post neuron spiked or has psi =
    0, every product rounding) against the step engine, with tags and accumulator saturating: weights, errors and spikes
    equal, and the tag and accumulator limits reached. psi_bits = 9: eps_v
    psi reaches 127 * 511 > 2^15, so the same int16 state runs the 32-bit-lane
    loop. Without recurrence the input matrix runs the 16-bit loop alone.
    impulse = 200 (8-bit traces): above int8, so the loop receives 0/1 spikes
    and multiplies, instead of int8 impulses."""
    from eprop_lava import fixed as F
    from eprop_lava.neurons.fixed import lif_synapse_fits_int16
    from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec

    spec = NetworkSpec(n_inputs=13, layers=(LayerSpec(9, "lif", params=NeuronParams(n_ref=1), weight_scale=3.0,
                                                      recurrent=recurrent),),
                       timing="loihi", reset="zero", loss="cross_entropy", learning=LearningSpec(variant="random"),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=5e-2))
    extra = {} if impulse is None else dict(trace_bits=8, trace_impulse=impulse)
    prof = F.loihi2_profile(update_interval=40, accumulator_bits=9, tag_bits=6, product_rounding=rounding,
                            psi_bits=psi_bits, **extra)
    assert fused.impulses_fit_int8(prof) == (impulse is None)
    net = fe.quantize(spec, init_params(spec, 3), prof)
    B = 5
    assert lif_synapse_fits_int16(net.layers[0].neuron, prof, B, net.readout.d_kappa) == (psi_bits == 7)
    assert fused.new_compiled_synapse(net.layers[0].neuron, B, 13, prof)["eps_v"].dtype == np.int16
    rng = np.random.default_rng(8)
    samples = []
    for _ in range(2):
        x = (rng.random((80, B, 13)) < 0.3).astype(float)
        target = np.zeros((80, B, 2))
        target[..., 0] = 1.0
        samples.append((x, target, None))
    seen = {}

    def grab(netx, syn_in, syn_rec, syn_out, rngs, slices):
        seen["joint"] = "joint" in syn_in[0]  # input and recurrent synapses in one pass
        seen["rows"] = syn_in[0]["joint"]["eps_v"].shape if seen["joint"] else None
        seen.setdefault("ebar", []).append(int(max(s["ebar"].max() for s in (syn_in[0], syn_rec[0]) if s is not None)))
        seen.setdefault("acc", []).append(syn_in[0]["acc"].copy())

    fast, ref, runs = learn_compiled_and_step(net, samples)
    for a, b in runs:
        np.testing.assert_array_equal(a.err, b.err)
        for za, zb in zip(a.z, b.z):
            np.testing.assert_array_equal(za, zb)
    wf, wr, w0 = fast.weights(), ref.weights(), net.weights()
    for k in wr:
        np.testing.assert_array_equal(wf[k], wr[k], err_msg=k)
    assert sum(int((wr[k] != w0[k]).sum()) for k in wr) > 10  # learning happened
    probe = net.copy()
    fe.simulate(probe, *samples[0], learn=True, on_update=grab)
    assert seen["joint"] == (psi_bits == 7 and recurrent)
    if seen["joint"]:  # (post, batch, pre): 13 + 9 synapses per row, padded to 32; the states are views of it
        assert seen["rows"] == (9, B, 32)
    assert max(seen["ebar"]) == prof.tag_range[1]  # ebar saturated at the tag range (it is never negative)
    lo, hi = prof.accumulator_range
    assert any(np.any((a == lo) | (a == hi)) for a in seen["acc"])


def test_readout_synapses_in_32_bit_lanes_only_where_every_value_fits():
    from eprop_lava.fixed import loihi2_profile, wide_profile
    from eprop_lava.neurons.fixed import readout_synapse_fits_int32

    prof = loihi2_profile()
    assert readout_synapse_fits_int32(prof, 4096)
    # loihi2: |err zbar| >> 4 <= (128 127 >> 4) + 1 = 1017 per sample; the batch sum passes 2^31 beyond
    prod = (128 * 127 >> 4) + 1
    assert readout_synapse_fits_int32(prof, ((1 << 31) - 2 - (1 << 15)) // prod - 1)
    assert not readout_synapse_fits_int32(prof, (1 << 31) // prod + 1)
    assert not readout_synapse_fits_int32(wide_profile(), 1)  # 32-bit traces: int64 lanes


@needs_numba
def test_spikes_to_int8_converts_and_counts_what_is_not_a_spike():
    x = np.zeros((3, 2, 5))
    x[0, 1, 2] = x[2, 0, 4] = 1
    out = np.full((3, 2, 5), 7, np.int8)
    assert fused.spikes_to_int8(x, out) == 0
    np.testing.assert_array_equal(out, x.astype(np.int8))
    for dtype in (np.bool_, np.int32, np.uint8, np.float32):
        out[...] = 7
        assert fused.spikes_to_int8(x.astype(dtype), out) == 0
        np.testing.assert_array_equal(out, x.astype(np.int8))
    bad = x.copy()
    bad[1, 1, 1], bad[2, 1, 0], bad[0, 0, 0] = 0.5, np.nan, -1
    assert fused.spikes_to_int8(bad, out) == 3
    assert fused.spikes_to_int8(np.full((1, 1, 4), 2, np.int64), out[:1, :1, :4]) == 4
    spec = _fixed_network("lif")
    net = fe.quantize(spec, init_params(spec, 1), "loihi2")
    with pytest.raises(fe.FixedPointError, match="x: the fixed-point engine takes 0/1 input spikes"):
        fe.simulate(net, np.full((4, 1, spec.n_inputs), np.nan))


def test_32_bit_lanes_only_where_every_intermediate_fits():
    from eprop_lava.fixed import loihi2_profile, wide_profile
    from eprop_lava.neurons.fixed import lif_synapse_fits_int32

    spec = _fixed_network("lif")
    lif = fe.quantize(spec, init_params(spec, 1), "loihi2").layers[0].neuron
    # loihi2: |ebar L| <= 2^8 2^7, |eps_v| 4096 <= 2^7 2^12: far inside int32, for any practical batch
    assert lif_synapse_fits_int32(lif, loihi2_profile(), 4096)
    # a batch so large that the batch sum of the products could pass 2^31
    prod = (256 * 128 >> loihi2_profile().product_shift) + 1
    assert not lif_synapse_fits_int32(lif, loihi2_profile(), (1 << 31) // prod + 1)
    alif = fe.quantize(_fixed_network("alif"), init_params(_fixed_network("alif"), 1), "loihi2").layers[0].neuron
    assert not lif_synapse_fits_int32(alif, loihi2_profile(), 16)  # ALIF's threshold trace: int64 lanes
    wide = wide_profile()  # 32-bit traces (trace_max 2^32 - 1): int64 lanes
    assert not lif_synapse_fits_int32(fe.quantize(spec, init_params(spec, 1), wide).layers[0].neuron, wide, 1)
