"""Stochastic rounding of the output error and of the learning signal
(profile fields ``error_rounding`` and ``signal_rounding``): unbiased against
the exact value, the same draws in the step engine, the compiled engine and
Lava, reproducible from the network's seed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import learn_compiled_and_step

from eprop_lava import fixed as F
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec

STOCHASTIC = dict(error_rounding="stochastic", signal_rounding="stochastic")


def _spec(kind, loss="cross_entropy", variant="random", sizes=(12, 8)):
    scale = 30.0 if kind == "izhikevich" else 3.0  # Izhikevich needs millivolt-sized input to spike
    return NetworkSpec(n_inputs=10, layers=tuple(LayerSpec(n, kind, params=NeuronParams(n_ref=2), weight_scale=scale)
                                                 for n in sizes),
                       timing="loihi", reset="zero", loss=loss, learning=LearningSpec(variant=variant),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=5e-2))


def _samples(n, T, B, seed=4, K=2):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = (rng.random((T, B, 10)) < 0.25).astype(float)
        target = np.zeros((T, B, K))
        target[..., rng.integers(0, K)] = 1.0
        mask = np.full((T, B), 1.0 / (T - T // 4))  # a loss window of mean weight, as tasks use
        mask[: T // 4] = 0.0
        out.append((x, target, mask))
    return out


def _binomial_tolerance(frac: np.ndarray, n: int) -> np.ndarray:
    """Five standard deviations of the mean of n draws of floor(v + r): each
    draw is floor(v) + Bernoulli(frac(v)), variance frac (1 - frac)."""
    return 5.0 * np.sqrt(frac * (1.0 - frac) / n) + 1e-12


def test_stochastic_learning_signal_is_unbiased():
    """The mean of L = (B err) >> s over many draws is B err / 2^s (computed
    here by hand), not the nearest-rounded value."""
    prof = F.loihi2_profile(signal_rounding="stochastic")
    B = np.array([[3, -5], [7, 1], [-2, 2], [1, 0]])
    err = np.array([5, 3])
    shift = 3
    exact = B @ err / 2.0 ** shift  # 0, 38/8, -4/8, 5/8
    n = 40000
    L = fe.learning_signal(np.tile(err, (n, 1)), B, shift, prof, rng=np.random.default_rng(7))
    assert L.shape == (n, 4)
    tol = _binomial_tolerance(exact - np.floor(exact), n)
    assert np.all(np.abs(L.mean(0) - exact) <= tol), (L.mean(0), exact)
    # each value is one of the two neighbours of the exact one
    assert np.all((L == np.floor(exact)) | (L == np.ceil(exact)))
    # nearest rounding is biased on the same inputs: 38/8 -> 5, 5/8 -> 1
    near = fe.learning_signal(err[None], B, shift, F.loihi2_profile())[0]
    assert list(near) == [0, 5, 0, 1]


def test_stochastic_output_error_is_unbiased():
    """MSE error mask (y / y_scale - target) 2^E: with y = 0, target -0.3,
    mask 0.5 and E = 3 the exact value is 1.2 levels; its stochastic rounding
    averages 1.2 (nearest gives 1), and a saturating value counts as such."""
    prof = F.loihi2_profile(error_rounding="stochastic")
    n = 40000
    y = np.zeros((n, 2), dtype=np.int64)
    target = np.tile([-0.3, 0.45], (n, 1))
    mask = np.full(n, 0.5)
    stats: dict = {}
    err = fe.output_error(y, target, mask, "mse", 1.0, prof, error_exp=3, stats=stats,
                          rng=np.random.default_rng(3))
    exact = np.array([1.2, -1.8])
    tol = _binomial_tolerance(exact - np.floor(exact), n)
    assert np.all(np.abs(err.mean(0) - exact) <= tol), (err.mean(0), exact)
    assert set(np.unique(err[:, 0])) == {1, 2} and set(np.unique(err[:, 1])) == {-2, -1}
    assert stats["error_values"] == 2 * n and stats["error_saturated"] == 0
    near = fe.output_error(y[:1], target[:1], mask[:1], "mse", 1.0, F.loihi2_profile(), error_exp=3)
    assert list(near[0]) == [1, -2]
    # beyond the range (127): clipped and counted
    stats = {}
    big = fe.output_error(np.zeros((1, 1)), np.array([[-40.0]]), np.ones(1), "mse", 1.0, prof, error_exp=3,
                          stats=stats, rng=np.random.default_rng(0))
    assert big[0, 0] == prof.signal_range[1] and stats["error_saturated"] == 1


def test_stochastic_rounding_needs_a_generator():
    prof = F.loihi2_profile(signal_rounding="stochastic")
    with pytest.raises(F.FixedPointError, match="rng"):
        fe.learning_signal(np.array([[1, 1]]), np.ones((3, 2), dtype=np.int64), 1, prof)


@pytest.mark.parametrize("field", ["error_rounding", "signal_rounding"])
def test_profile_rejects_unknown_rounding(field):
    with pytest.raises(F.FixedPointError) as info:
        F.loihi2_profile(**{field: "up"})
    msg = str(info.value)
    assert msg.startswith(f"{field}: unknown 'up'") and "stochastic" in msg and "\n" not in msg


def test_default_profiles_keep_nearest_rounding():
    for prof in (F.loihi2_profile(), F.wide_profile(), F.FixedPointProfile()):
        assert prof.error_rounding == "nearest" and prof.signal_rounding == "nearest"


def test_block_of_steps_draws_as_step_by_step():
    """learning_signal over a (T, B, K) block of errors (the compiled engine)
    equals T calls over (B, K) with the same generator (step engine, Lava),
    for odd B N, where numpy's generator leaves half a 64-bit word unused
    at the end of each call."""
    prof = F.loihi2_profile(signal_rounding="stochastic")
    rng = np.random.default_rng(0)
    err = rng.integers(-20, 20, size=(7, 1, 2))
    B = rng.integers(-90, 90, size=(3, 2))  # |B err| < 2^12: no saturation after >> 5
    block = fe.learning_signal(err, B, 5, prof, rng=np.random.default_rng(11))
    g = np.random.default_rng(11)
    steps = np.stack([fe.learning_signal(err[t], B, 5, prof, rng=g) for t in range(7)])
    np.testing.assert_array_equal(block, steps)
    exact = np.einsum("tbk,nk->tbn", err, B) / 32.0
    assert np.all((block == np.floor(exact)) | (block == np.ceil(exact)))


def _needs_numba():
    from eprop_lava.engine import fused

    if not fused.available():
        pytest.skip("numba is not installed: no compiled engine")


@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
def test_compiled_engine_equals_step_engine_with_stochastic_signal(kind):
    """Online learning with stochastic error and signal rounding (and update
    intervals, so the compiled engine runs several blocks), over two
    samples with the generators kept: the compiled loops and the step engine
    give the same errors, spikes and learned weights, and the result differs
    from nearest rounding (the streams are used)."""
    _needs_numba()
    spec = _spec(kind, variant="adaptive")
    prof = F.loihi2_profile(update_interval=9, **STOCHASTIC)
    net = fe.quantize(spec, init_params(spec, 2), prof, loss_mask=_samples(1, 40, 1)[0][2])
    assert fe.compiled_inference(net)
    samples = _samples(2, 40, 1)
    fast, ref, runs = learn_compiled_and_step(net, samples)
    errs = []
    for a, b in runs:
        np.testing.assert_array_equal(a.err, b.err)
        np.testing.assert_array_equal(a.y, b.y)
        for za, zb in zip(a.z, b.z):
            np.testing.assert_array_equal(za, zb)
        assert a.counters["learning"] == b.counters["learning"]
        errs.append(a.err)
    assert sum(int(z.sum()) for z in a.z) > 20
    wf, wr, w0 = fast.weights(), ref.weights(), net.weights()
    for k in wr:
        np.testing.assert_array_equal(wf[k], wr[k], err_msg=k)
    assert sum(int((wr[k] != w0[k]).sum()) for k in wr) > 10
    near = net.copy()
    near.profile = near.profile.with_(error_rounding="nearest", signal_rounding="nearest")
    rn = fe.update_rngs(near)
    near_err = [fe.simulate(near, x, t, m, learn=True, rngs=rn).err for x, t, m in samples]
    assert any(not np.array_equal(a, b) for a, b in zip(errs, near_err))


def test_same_seed_same_learning_other_seed_other():
    spec = _spec("alif")
    prof = F.loihi2_profile(update_interval=10, **STOCHASTIC)
    base = fe.quantize(spec, init_params(spec, 2), prof, loss_mask=_samples(1, 40, 1)[0][2])
    samples = _samples(2, 40, 2)

    def learned(seed):
        net = base.copy()
        net.seed = seed
        fe.train_online(net, samples)
        return net.weights()

    a, b, c = learned(5), learned(5), learned(6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_signal_streams_are_apart_from_the_update_streams():
    """The error and signal generators are keyed (seed, SIGNAL_KEY, 0/1):
    turning stochastic signal rounding on leaves the weight-update streams'
    numbers where they were."""
    spec = _spec("lif")
    net = fe.quantize(spec, init_params(spec, 2), F.loihi2_profile())
    rngs = fe.update_rngs(net)
    keys = set(rngs)
    assert {(fe.SIGNAL_KEY, 0), (fe.SIGNAL_KEY, 1)} <= keys
    first = {k: g.integers(0, 1 << 30) for k, g in rngs.items()}
    assert len(set(first.values())) == len(first)  # independent streams
    assert first[(0, 0)] == F.update_rng(net.seed, 0, 0).integers(0, 1 << 30)


@pytest.mark.lava
def test_lava_learns_the_engines_weights_with_stochastic_signal():
    """One small Lava run (two samples of 20 steps): Lava's LearningSignal
    draws the engine's error and signal rounding, so every spike, readout
    value and learned weight equals the engine's."""
    if importlib.util.find_spec("lava") is None:
        pytest.skip("lava-nc is not installed")
    from eprop_lava.models.network import run_network

    spec = _spec("alif", variant="random", sizes=(8, 5))
    prof = F.loihi2_profile(update_interval=7, **STOCHASTIC)
    net = fe.quantize(spec, init_params(spec, 3), prof, loss_mask=_samples(1, 20, 1)[0][2])
    samples = _samples(2, 20, 1, seed=5)
    engine = net.copy()
    runs = fe.train_online(engine, samples)
    x = np.stack([s[0][:, 0] for s in samples])
    target = np.stack([s[1][:, 0] for s in samples])
    mask = np.stack([s[2][:, 0] for s in samples])
    lava = run_network(x, net=net, target=target, mask=mask, learn=True, weights=True, timeout=240)
    for r in range(len(spec.layers)):
        np.testing.assert_array_equal(np.concatenate([ru.z[r][:, 0] for ru in runs]), lava["z"][r])
    np.testing.assert_array_equal(np.concatenate([ru.y[:, 0] for ru in runs]), lava["y"])
    changed = 0
    for k, w in engine.weights().items():
        np.testing.assert_array_equal(w, lava["weights"][k], err_msg=k)
        changed += int((w != net.weights()[k]).sum())
    assert changed > 0
    # the streams were used: nearest rounding learns other weights
    near = net.copy()
    near.profile = near.profile.with_(error_rounding="nearest", signal_rounding="nearest")
    fe.train_online(near, samples)
    assert any(not np.array_equal(w, near.weights()[k]) for k, w in engine.weights().items())


@pytest.mark.parametrize("mode, expected", [("floor", [1, -2]), ("toward_zero", [1, -1]), ("nearest", [1, -2])])
def test_deterministic_error_and_signal_roundings(mode, expected):
    """exact error levels 1.2 and -1.8 (MSE, y = 0, mask 0.5, E = 3) and
    B err / 2^s = 38/8, -4/8: each mode rounds them as its name says."""
    prof = F.loihi2_profile(error_rounding=mode, signal_rounding=mode)
    err = fe.output_error(np.zeros((1, 2)), np.array([[-0.3, 0.45]]), np.full(1, 0.5), "mse", 1.0, prof,
                          error_exp=3)
    assert list(err[0]) == expected
    L = fe.learning_signal(np.array([[5, 3]]), np.array([[7, 1], [-2, 2]]), 3, prof)
    assert list(L[0]) == {"floor": [4, -1], "toward_zero": [4, 0], "nearest": [5, 0]}[mode]


@pytest.mark.parametrize("mode, expected", [
    (F.ROUND_TOWARD_ZERO, [0, 0, 4, -4, 15, -16]), (F.ROUND_FLOOR, [0, -1, 4, -5, 15, -16]),
    (F.ROUND_NEAREST, [0, 0, 5, -5, 15, -16])])
def test_requantize_rounds_saturates_and_flags_by_hand(mode, expected):
    """x / 2^3 of 0, -3, 37, -37, 200, -200 into [-16, 15]: 37/8 = 4.625,
    +-200/8 = +-25 clip to 15 and -16; -3/8 underflows except under floor (-1)."""
    x = np.array([0, -3, 37, -37, 200, -200])
    out, flags = F.k_requantize(x, 0, 3, mode, -16, 15)
    assert out.tolist() == expected
    assert ((flags & F.FLAG_NONZERO) != 0).tolist() == [False, True, True, True, True, True]
    assert ((flags & F.FLAG_UNDERFLOW) != 0).tolist() == [False, mode != F.ROUND_FLOOR, False, False, False, False]
    assert ((flags & F.FLAG_SATURATED) != 0).tolist() == [False, False, False, False, True, True]


def test_requantize_stochastic_is_the_floor_of_x_plus_the_draw():
    # (37 + d) >> 3 for d = 0 .. 7: 4 for d <= 2, 5 for d >= 3 (37 = 4 * 8 + 5)
    out, flags = F.k_requantize(np.full(8, 37), np.arange(8), 3, F.ROUND_STOCHASTIC, -16, 15)
    assert out.tolist() == [4, 4, 4, 5, 5, 5, 5, 5]
    assert np.all(flags == F.FLAG_NONZERO)
    # -3 + d: -1 for d < 3, 0 (an underflow) from d = 3 on
    out, flags = F.k_requantize(np.full(8, -3), np.arange(8), 3, F.ROUND_STOCHASTIC, -16, 15)
    assert out.tolist() == [-1, -1, -1, 0, 0, 0, 0, 0]
    assert ((flags & F.FLAG_UNDERFLOW) != 0).tolist() == [False] * 3 + [True] * 5


def _signal_reference(err, B, shift, mode, lo, hi, rng):
    """L from the definition in int64 numpy, independent of the engine's code:
    acc = B err, then the rounding written out per mode, the clip, and the counts."""
    acc = np.einsum("tbk,nk->tbn", err.astype(np.int64), B.astype(np.int64))
    if mode == "stochastic":
        q = (acc + rng.integers(0, 1 << shift, size=acc.shape, dtype=np.int64)) // (1 << shift)
    elif mode == "floor":
        q = acc // (1 << shift)
    elif mode == "toward_zero":
        q = np.sign(acc) * (np.abs(acc) // (1 << shift))
    else:
        q = (acc + (1 << (shift - 1))) // (1 << shift)
    out = np.clip(q, lo, hi)
    counts = dict(values=acc != 0, underflow=(acc != 0) & (q == 0), saturated=q != out)
    return out, counts


@pytest.mark.parametrize("mode", ["nearest", "floor", "toward_zero", "stochastic"])
@pytest.mark.parametrize("threads", ["serial", "parallel"])
def test_compiled_learning_signal_equals_the_int64_definition(mode, threads, monkeypatch):
    """A block large enough for the compiled loop (40 steps x 16 samples x 60
    neurons, 5 outputs), errors and feedback chosen so that values saturate
    (signal_bits 7: |L| > 127) and underflow: the values, the stochastic
    stream (a generator seeded alike draws the same numbers) and the counts,
    totals and per layer, equal the definition; the numpy path (small
    blocks, Lava) gives the same."""
    _needs_numba()
    from eprop_lava.engine import fused

    if threads == "parallel":  # a block this small runs serially unless told otherwise
        monkeypatch.setattr(fused, "PARALLEL_MIN_ELEMENTS", 0)
    prof = F.loihi2_profile(signal_rounding=mode)
    lo, hi = prof.signal_range
    rng = np.random.default_rng(5)
    err = rng.integers(-127, 128, size=(40, 16, 5))
    err[:, :2] = 0  # samples without error: no values
    err[3, 4] = [1, 0, 0, 0, 0]  # one level: B err / 2^6 underflows
    B = rng.integers(-256, 256, size=(60, 5))
    shift = 6
    layers = [slice(0, 25), slice(25, 60)]
    expected, counts = _signal_reference(err, B, shift, mode, lo, hi, np.random.default_rng(9))
    assert counts["saturated"].sum() > 100 and counts["underflow"].sum() > 10
    results = {}
    for path, elements in (("compiled", 1), ("numpy", 1 << 40)):
        monkeypatch.setattr(fe, "COMPILED_SIGNAL_ELEMENTS", elements)
        stats, per_layer = {}, [(sl, {}) for sl in layers]
        L = fe.learning_signal(err, B, shift, prof, stats, per_layer, rng=np.random.default_rng(9))
        np.testing.assert_array_equal(L, expected, err_msg=path)
        assert L.dtype == np.int64
        # narrow: the same values in int8 (signal_bits 7: [-128, 127]), the stream drawn alike
        L8 = fe.learning_signal(err, B, shift, prof, rng=np.random.default_rng(9), narrow=True)
        assert L8.dtype == np.int8
        np.testing.assert_array_equal(L8, expected, err_msg=path)
        for name, flag in counts.items():
            assert stats[f"signal_{name}"] == int(flag.sum()), (path, name)
            for sl, c in per_layer:
                assert c[f"signal_{name}"] == int(flag[..., sl].sum()), (path, name, sl)
        results[path] = L
    np.testing.assert_array_equal(results["compiled"], results["numpy"])


def test_compiled_learning_signal_draws_as_step_by_step(monkeypatch):
    """The compiled loop takes the draws of one numpy call over the block: the
    same numbers as one call per step with the generator kept (Lava, the
    step engine)."""
    _needs_numba()
    monkeypatch.setattr(fe, "COMPILED_SIGNAL_ELEMENTS", 1)
    prof = F.loihi2_profile(signal_rounding="stochastic")
    rng = np.random.default_rng(1)
    err = rng.integers(-30, 30, size=(9, 3, 2))
    B = rng.integers(-200, 200, size=(7, 2))  # 3 x 7 = 21 draws a step: odd, half words carried
    block = fe.learning_signal(err, B, 5, prof, rng=np.random.default_rng(4))
    monkeypatch.setattr(fe, "COMPILED_SIGNAL_ELEMENTS", 1 << 40)
    g = np.random.default_rng(4)
    steps = np.stack([fe.learning_signal(err[t], B, 5, prof, rng=g) for t in range(9)])
    np.testing.assert_array_equal(block, steps)


def test_compiled_learning_signal_in_int64_where_the_sums_pass_int32(monkeypatch):
    """Feedback so large that sum_k err_k B_jk passes 2^31 (5 x 127 x 2^26):
    the compiled loop keeps int64 lanes and still equals the definition."""
    _needs_numba()
    prof = F.loihi2_profile(signal_rounding="nearest")
    lo, hi = prof.signal_range
    rng = np.random.default_rng(6)
    err = rng.integers(-127, 128, size=(30, 8, 5))
    B = rng.integers(-(1 << 26), 1 << 26, size=(40, 5))
    shift = 30
    assert 5 * 127 * int(np.abs(B).max()) > (1 << 31)
    expected, _ = _signal_reference(err, B, shift, "nearest", lo, hi, np.random.default_rng(0))
    monkeypatch.setattr(fe, "COMPILED_SIGNAL_ELEMENTS", 1)
    np.testing.assert_array_equal(fe.learning_signal(err, B, shift, prof), expected)
