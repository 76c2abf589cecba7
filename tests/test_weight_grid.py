"""One weight grid: every compiled weight matrix lies on the grid of the Lava
``Dense`` that holds it, checked against Lava's own weight handling
(``lava/utils/weightutils.py``: ``determine_sign_mode``, ``clip_weights``,
``truncate_weights``, the calls ``PyDenseModelBitAcc.run_spk`` makes on its
first step), over many crafted and random float networks; and where learned
weights live (Lava's ``LearningDense`` saturation as the reference)."""

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.compile.quantize import WeightGrid, quantize_network
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.fixed import FixedPointError, dense_grid, loihi2_profile, round_to_dense_grid, wide_profile
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec

pytestmark = pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")


def lava_dense(w: np.ndarray, num_weight_bits: int = 8, sign_mode=None) -> np.ndarray:
    """The weights Lava's bit-accurate Dense applies (PyDenseModelBitAcc.run_spk)."""
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    mode = sign_mode or determine_sign_mode(w)
    return truncate_weights(clip_weights(w, mode, num_bits=8), mode, num_weight_bits).astype(np.int64)


def test_dense_grid_is_exactly_what_lava_keeps():
    """For every sign mode and 1..8 bits, the integers of [-256, 255] that
    Lava's clip-and-truncate leaves unchanged are exactly lo, lo + step, ..., hi."""
    from lava.utils.weightutils import SignMode

    modes = {"mixed": SignMode.MIXED, "excitatory": SignMode.EXCITATORY, "inhibitory": SignMode.INHIBITORY}
    every = np.arange(-256, 256).reshape(1, -1)
    for name, mode in modes.items():
        for bits in range(1, 9):
            kept = every[lava_dense(every, bits, mode) == every]
            step, lo, hi = dense_grid(name, bits)
            assert kept.tolist() == list(range(lo, hi + 1, step)), (name, bits)
    # 8 bits by hand: mixed even in [-256, 254]; excitatory 0..255; inhibitory -255..0 (Lava clips -256)
    assert dense_grid("mixed") == (2, -256, 254)
    assert dense_grid("excitatory") == (1, 0, 255) and dense_grid("inhibitory") == (1, -255, 0)
    # a group's mixed grid intersected with an all-negative matrix's own grid
    assert dense_grid("mixed", 8, "inhibitory") == (2, -254, 0)
    assert dense_grid("mixed", 3, "inhibitory") == (64, -192, 0)


def test_round_to_dense_grid_by_hand():
    x = np.array([[-256.4, -3.0, 1.0, 3.0, 254.9, 255.2]])
    assert round_to_dense_grid(x).tolist() == [[-256, -4, 0, 4, 254, 254]]   # mixed: even, ties to even multiple
    assert round_to_dense_grid(np.abs(x)).tolist() == [[255, 3, 1, 3, 255, 255]]  # excitatory keeps odd and 255
    assert round_to_dense_grid(-np.abs(x)).tolist() == [[-255, -3, -1, -3, -255, -255]]
    # values above -1/2 round to 0 and do not make the matrix mixed: 255 stays
    assert round_to_dense_grid(np.array([[-0.4, 255.0]])).tolist() == [[0, 255]]
    with pytest.raises(FixedPointError, match="num_weight_bits"):
        round_to_dense_grid(x, 9)


# ------------------------------------------------------------------ crafted networks
KINDS = ("positive", "negative", "mixed", "zero", "tiny", "odd", "extremes", "one_negative")


def _matrix(kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    w = rng.normal(size=shape)
    if kind == "positive":
        return np.abs(w)
    if kind == "negative":
        return -np.abs(w)
    if kind == "zero":
        return np.zeros(shape)
    if kind == "tiny":        # a range far below the group's scale: everything rounds to 0 or 1 step
        return w * 1e-3
    if kind == "odd":         # values that land on odd integers at max-abs scaling
        return rng.integers(-255, 256, size=shape) / 255.0
    if kind == "extremes":    # only the two ends of the 8-bit range: 255 and -256 at max-abs scaling
        return np.where(rng.random(shape) < 0.5, 1.0, -256 / 255.0)
    if kind == "one_negative":  # all positive but one weight: mixed, 255 must become 254
        w = np.abs(w)
        w.flat[0] = -0.5 * w.max()
        return w
    return w


def _spec(neuron: str, sizes: tuple) -> NetworkSpec:
    ls = tuple(LayerSpec(size=s, neuron=neuron, params=NeuronParams(v_th=0.5)) for s in sizes)
    return NetworkSpec(n_inputs=5, layers=ls, readout=ReadoutSpec(n_outputs=3), timing="loihi", reset="zero",
                       seed=2)


def _networks(spec: NetworkSpec, rng: np.random.Generator, n: int):
    """n float parameter sets, every weight matrix of a random kind; a layer
    never has only zero/tiny weights (its threshold would exceed 17 bits)."""
    base = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    for _ in range(n):
        p = {k: v.copy() for k, v in base.items()}
        for r, _ls in enumerate(spec.layers):
            a, b = rng.choice(KINDS, 2)
            if a in ("zero", "tiny") and b in ("zero", "tiny"):
                b = "mixed"
            p[f"layers.{r}.w_in"] = _matrix(a, p[f"layers.{r}.w_in"].shape, rng) * rng.choice([0.05, 1.0, 4.0])
            p[f"layers.{r}.w_rec"] = _matrix(b, p[f"layers.{r}.w_rec"].shape, rng) * rng.choice([0.05, 1.0, 4.0])
        kind = rng.choice([k for k in KINDS if k not in ("zero", "tiny")])
        p["readout.w"] = _matrix(kind, p["readout.w"].shape, rng)
        yield p


def _stored(net: fe.FixedNetwork) -> dict:
    out = {}
    for r, L in enumerate(net.layers):
        out[f"layers.{r}.w_in"] = L.w_in
        if L.w_rec is not None:
            out[f"layers.{r}.w_rec"] = L.w_rec
    out["readout.w"] = net.readout.w
    return out


def _off_grid(net: fe.FixedNetwork, bits: int) -> list:
    return [(name, int(np.sum(lava_dense(w, bits) != w))) for name, w in _stored(net).items()
            if not np.array_equal(lava_dense(w, bits), w)]


@pytest.mark.parametrize("neuron,sizes", [("lif", (6,)), ("alif", (6, 4)), ("izhikevich", (5, 4))])
def test_every_compiled_matrix_is_on_its_dense_grid(neuron, sizes):
    """fe.quantize (loihi2) and the compiler's quantizer (grids dense and netx,
    8 and 3 bits) over 25 crafted networks each: Lava's Dense truncation of
    every compiled matrix returns it unchanged. Before the fix fe.quantize
    left odd values in every mixed-sign matrix, and grid="netx" put -256 into
    an all-negative matrix next to a mixed-sign one (Lava clips it to -255)."""
    spec = _spec(neuron, sizes)
    rng = np.random.default_rng(sum(sizes) + len(neuron))
    checked = 0
    for p in _networks(spec, rng, 25):
        nets = [(fe.quantize(spec, p, "loihi2"), 8)]
        for grid in ("dense", "netx"):
            nets.append((quantize_network(spec, p, 8, grid=grid, search=False)[0], 8))
            nets.append((quantize_network(spec, p, 3, grid=grid, search=False)[0], 3))
        for net, bits in nets:
            assert _off_grid(net, bits) == [], (neuron, bits)
            checked += len(_stored(net))
    assert checked >= 25 * 5 * (2 * len(sizes) + 1)


def test_the_two_former_off_grid_cases():
    spec = _spec("lif", (4,))
    p = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    # 1. fe.quantize of a mixed-sign matrix: max |w| maps to 255 (odd); now even, in [-256, 254]
    p["layers.0.w_in"] = np.array([[1.0, -0.5, 0.3, 0.2, -0.1]] * 4)
    p["layers.0.w_rec"] = np.zeros((4, 4))
    net = fe.quantize(spec, p, "loihi2")
    w = net.layers[0].w_in
    scale = net.layers[0].w_scale
    assert scale == pytest.approx(255.0)                       # 64 * 255 / max|w| / 2^6
    assert w[0].tolist() == [254, -128, 76, 52, -26]           # nearest even of 255, -127.5, 76.5, 51, -25.5
    assert np.array_equal(lava_dense(w), w)
    # 2. grid="netx": an all-negative w_in next to a mixed-sign w_rec whose scale maps w_in's end to -256
    p["layers.0.w_in"] = -np.abs(np.array([[1.0, 0.5, 0.3, 0.2, 0.1]] * 4))
    p["layers.0.w_rec"] = np.array([[0.0, 0.5, -0.5, 0.2]] * 4) * 0.9
    net, rep = quantize_network(spec, p, 8, grid="netx", search=False)
    w = net.layers[0].w_in
    assert rep.matrices[0].sign_mode == "mixed"                 # the group's sign mode
    assert w.min() == -254 and np.array_equal(lava_dense(w), w)  # -255 would be odd, -256 is clipped by Lava
    assert WeightGrid(8, "mixed").round(np.array([-256.0])).tolist() == [-256]
    assert WeightGrid(8, "mixed", "inhibitory").round(np.array([-256.0])).tolist() == [-254]


def test_wide_profile_keeps_every_integer():
    """The wide study profile (12-bit weights) is not a Lava Dense width: its
    weights keep unit resolution (|w_int - w S| <= 1/2)."""
    spec = _spec("lif", (6,))
    p = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    net = fe.quantize(spec, p, wide_profile())
    L = net.layers[0]
    assert np.abs(L.w_in - p["layers.0.w_in"] * L.w_scale).max() <= 0.5
    assert np.abs(L.w_in).max() == (1 << 12) - 1


def test_fe_quantize_rounds_to_nearest_on_the_grid():
    """Within the range, each integer weight is the nearest grid value:
    |w_int - w S| <= step / 2 (step 2 for mixed-sign, 1 otherwise)."""
    spec = _spec("alif", (6,))
    rng = np.random.default_rng(7)
    for p in _networks(spec, rng, 10):
        net = fe.quantize(spec, p, loihi2_profile())
        L = net.layers[0]
        for name, w in (("w_in", L.w_in), ("w_rec", L.w_rec)):
            x = p[f"layers.0.{name}"] * L.w_scale
            step = 2 if (np.rint(x).min() < 0 < np.rint(x).max()) else 1   # the sign mode Lava would see
            inside = (x >= -256) & (x <= 256 - step)
            if name == "w_rec":
                np.fill_diagonal(inside, False)   # the recurrent diagonal is set to 0
            assert np.abs(w - x)[inside].max(initial=0) <= step / 2 + 1e-9, name


# ------------------------------------------------------------------ learned weights
def test_learned_weights_leave_the_static_dense_grid_as_in_lavas_learning_dense():
    """On-chip e-prop updates a mixed-sign matrix in unit steps and clips to
    [-256, 255] (fixed.apply_update): after learning the matrix holds odd
    values, which a static Dense would floor by one. That is the grid of Lava's
    own learning synapse: LearningDense's bit-approximate model saturates
    weights with clip_weights(w, sign_mode, num_bits=8), learning_simulation
    off (connection.py _saturate_synaptic_variable), which keeps every odd
    value and 255. Before a static Dense holds learned weights they must be
    rounded back onto its grid (round_to_dense_grid: at most one unit each)."""
    from lava.utils.weightutils import SignMode, clip_weights

    spec = NetworkSpec(n_inputs=4, layers=(LayerSpec(size=6, neuron="lif", params=NeuronParams(v_th=0.3)),),
                       readout=ReadoutSpec(n_outputs=2), timing="loihi", reset="zero", seed=5)
    net = fe.quantize(spec, init_params(spec, 1), loihi2_profile(update_rounding="nearest"), lr=2.0)
    before = {k: v.copy() for k, v in _stored(net).items()}
    assert _off_grid(net, 8) == []
    rng = np.random.default_rng(3)
    T = 40
    samples = []
    for _ in range(4):
        x = (rng.random((T, 1, 4)) < 0.4).astype(np.float64)
        target = np.zeros((T, 1, 2))
        target[:, :, rng.integers(2)] = 1.0
        samples.append((x, target, np.ones((T, 1))))
    fe.train_online(net, samples)
    learned = _stored(net)
    changed = {k: int(np.sum(learned[k] != before[k])) for k in learned}
    assert sum(changed.values()) > 0
    off = dict(_off_grid(net, 8))
    assert off, "some learned mixed-sign matrix holds odd values"
    for name in off:
        w = learned[name]
        assert np.array_equal(clip_weights(w, SignMode.MIXED, num_bits=8), w)   # LearningDense keeps them
        back = round_to_dense_grid(w)
        assert np.abs(back - w).max() <= 1 and np.array_equal(lava_dense(back), back)


def test_tiny_weight_ranges_are_refused_or_searched_within_the_threshold_mantissa():
    """vth = round(v_th 255 / max|w|) must fit 17 bits. All-zero or tiny
    weights in a layer: a one-line QuantizationError (exit 2 on the command
    line), not a traceback. max|w| = 0.5 * 255 / 120000: max-abs gives
    vth = 120000, every lower clip level of the search would exceed 2^17 - 1,
    so the search stops there instead of failing."""
    from eprop_lava.compile.quantize import QuantizationError

    spec = _spec("lif", (4,))
    p = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    p["layers.0.w_in"] = np.zeros((4, 5))
    p["layers.0.w_rec"] = np.zeros((4, 4))
    with pytest.raises(QuantizationError, match="too small against its threshold") as err:
        quantize_network(spec, p, 8)
    assert "\n" not in str(err.value)
    rng = np.random.default_rng(1)
    p["layers.0.w_in"] = rng.normal(size=(4, 5))
    p["layers.0.w_in"] *= 0.5 * 255 / 120000 / np.abs(p["layers.0.w_in"]).max()
    net, rep = quantize_network(spec, p, 8)
    assert int(net.layers[0].neuron.vth) == 120000 and rep.matrices[0].search_index == 0
    assert _off_grid(net, 8) == []


@pytest.mark.lava
def test_lavas_learning_dense_holds_odd_weights_and_255_in_mixed_mode():
    """A Lava LearningDense run (sign mode mixed, rule dw = x0: one unit per
    presynaptic spike, a spike every step): [2, -4, 254] learns to
    [5, -1, 255], values a static Dense truncates to [4, -2, 254]. Learned
    weights on Loihi's learning synapse in simulation have unit resolution,
    like the engine's."""
    from eprop_lava.lava_import import import_lava

    import_lava("lava.magma.core.process.process")
    from lava.magma.core.learning.learning_rule import Loihi2FLearningRule
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.dense.process import LearningDense
    from lava.proc.lif.process import LIF
    from lava.utils.weightutils import SignMode

    T = 3
    rule = Loihi2FLearningRule(dw="x0", x1_impulse=0, x1_tau=0, t_epoch=1, rng_seed=0)
    src = io.source.RingBuffer(data=np.ones((3, T)))
    dense = LearningDense(weights=np.array([[2, -4, 254]], dtype=np.int32), learning_rule=rule,
                          sign_mode=SignMode.MIXED)
    post = LIF(shape=(1,), du=4095, dv=0, vth=1 << 16)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(post.a_in)
    try:
        src.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        learned = np.rint(dense.weights.get()).astype(np.int64)
    finally:
        src.stop()
    assert learned.tolist() == [[5, -1, 255]]
    assert lava_dense(learned).tolist() == [[4, -2, 254]]
    assert round_to_dense_grid(learned).tolist() == [[4, 0, 254]]   # nearest even (ties to even multiple)


def test_qat_fake_quantization_is_the_grid_the_network_holds_at_8_bits():
    """The float weights QAT trains on at 8 bits are the integers of
    fe.quantize (on the Dense grid) over the same scale."""
    from eprop_lava.studies import qat

    spec = _spec("lif", (6,))
    p = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    prof = loihi2_profile()
    net = fe.quantize(spec, p, prof)
    fq = qat.fake_quantize(spec, p, prof)
    L = net.layers[0]
    np.testing.assert_allclose(fq["layers.0.w_in"] * L.w_scale, L.w_in, atol=1e-9)
    np.testing.assert_allclose(fq["readout.w"] * net.readout.y_scale / 64.0, net.readout.w, atol=1e-9)
    assert L.w_in.min() < 0 < L.w_in.max() and np.all(L.w_in % 2 == 0)  # mixed-sign: even values


def test_study_stochastic_roundings_stay_on_the_grid_at_8_bits():
    """PTQ with stochastic rounding and stochastic requantization at 8 bits
    round on the Dense grid (steps of 2 in a mixed-sign matrix), unbiased:
    the mean over 400 draws is within 0.1 of w S."""
    from eprop_lava.studies import qat

    spec = _spec("lif", (6,))
    p = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    prof = loihi2_profile()
    net = qat.ptq_network(spec, p, prof, "stochastic", rng=np.random.default_rng(0))
    assert _off_grid(net, 8) == []
    ref = fe.quantize(spec, p, prof)
    draws = [qat.stochastic_requantize(ref, p, np.random.default_rng(s)) for s in range(400)]
    assert all(_off_grid(d, 8) == [] for d in draws[:20])
    mean = np.mean([d.layers[0].w_in for d in draws], axis=0)
    exact = p["layers.0.w_in"] * ref.layers[0].w_scale
    inside = (exact > -256) & (exact < 254)
    assert np.abs(mean - exact)[inside].mean() < 0.1
