"""On-chip (fixed-point, online) learning: the output error's exponent and the
learning signal's shift chosen from the loss mask, underflow/saturation
counts, learning on held-out data, `run --learn --json`, and the one-update
lag of Lava's feedback B."""

import json
import math

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.compile import deploy
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.fixed import loihi2_profile
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, ReadoutSpec
from eprop_lava.tasks.evidence import EvidenceAccumulation


def test_error_exponent_for_the_evidence_mask_by_hand():
    """Mask 1/150 over 150 recall steps, loihi2 (7-bit signal: +-127, 15-bit
    accumulator, 7-bit trace, product shift 4):
    no error saturation: 2^E / 150 <= 127 -> E <= floor(log2 19050) = 14;
    no readout-accumulator saturation over a sample: 2^E * 1 * 127 / 16 <= 32767
    -> E <= floor(log2 4128.1) = 12. So E = 12."""
    prof = loihi2_profile()
    mask = np.zeros((2250, 3))
    mask[-150:] = 1 / 150
    assert fe.mask_extent(mask) == pytest.approx((1 / 150, 1.0))
    assert fe.error_exponent(prof, 1 / 150, 1.0) == 12
    # a 0/1 mask over 300 steps: accumulator bound 32767 * 16 / (300 * 127) = 13.8 -> E = 3
    assert fe.error_exponent(prof, 1.0, 300.0) == 3
    # softmax (0.7, 0.3) against target (0, 1) at a masked step: err = +-0.7 / 150
    y_scale = 65536.0
    y = np.array([[int(round(math.log(0.7 / 0.3) * y_scale)), 0]])
    target = np.array([[0.0, 1.0]])
    m = np.array([1 / 150])
    err = fe.output_error(y, target, m, "cross_entropy", y_scale, prof, error_exp=12)
    assert err.tolist() == [[19, -19]]  # 0.7 * 4096 / 150 = 19.11
    # the profile's fixed 7 fractional bits: 0.7 * 128 / 150 = 0.597 -> one level, and 0.45 -> nothing
    assert fe.output_error(y, target, m, "cross_entropy", y_scale, prof).tolist() == [[1, -1]]
    y45 = np.array([[int(round(math.log(0.45 / 0.55) * y_scale)), 0]])
    assert fe.output_error(y45, target, m, "cross_entropy", y_scale, prof).tolist() == [[0, 0]]
    assert fe.output_error(y45, target, m, "cross_entropy", y_scale, prof, error_exp=12).tolist() == [[12, -12]]
    # the learning signal's shift: rows |100|+|-50| = 150 and 255+255 = 510; the largest
    # error is ceil(4096/150) = 28 levels: 510 * 28 = 14280 > 127 * 2^6 -> shift 7
    B = np.array([[100, -50], [255, 255]])
    assert fe.signal_shift_for(B, 28, prof) == 7
    # L = (B err) >> 7, nearest: (100*19 + 50*19) = 2850 -> (2850 + 64) >> 7 = 22; 255*19 - 255*19 = 0
    assert fe.learning_signal(np.array([[19, -19]]), B, 7, prof).tolist() == [[22, 0]]


def _readout_gradient_by_hand(net, b):
    """dE/dW_out = sum_t err^t zbar^t (seed 002 Eq. 2.38) from the fixed-point
    run's own outputs and spikes, in float: softmax error, kappa-filtered
    spikes (the readout at t sees z^{t-1}, Loihi timing)."""
    run = fe.simulate(net, b.x)
    yf = run.y / net.readout.y_scale
    p = np.exp(yf - yf.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    err = b.mask[..., None] * (p - b.target)                      # (T, B, K)
    z = run.z[0].astype(np.float64)
    kappa = 1 - net.readout.d_kappa / 4096.0
    zbar = np.zeros_like(z[0])
    want = np.zeros((2, z.shape[2]))
    for t in range(z.shape[0]):
        zbar = kappa * zbar + (z[t - 1] if t else 0.0)
        want += err[t].T @ zbar
    return want


def test_quantize_takes_the_exponent_from_the_mask_and_keeps_the_gradient_step():
    """The compiler's exponent for a 1/150 mask, and the learning rate that
    follows it: the readout accumulator times grad_scale is the float readout
    gradient computed by hand (wide profile: norm ratio 1 within 3%, so the
    update means the same gradient step whatever exponent is chosen; loihi2:
    the direction, the size shrinks with the 7-bit trace's rounding). With
    the profile's fixed 7 bits a third of the loihi2 error values round to 0."""
    task = EvidenceAccumulation(n_cues=1, cue_ms=40, spacing_ms=0, delay_ms=0, recall_ms=150)
    spec = _small_spec()
    params = _params(spec)
    b = deploy.draw(task, 0, deploy.TEST_STREAM, 4)
    wide = fe.quantize(spec, params, "wide", lr=0.01, loss_mask=b.mask)
    assert wide.error_bits == 24  # floor(log2((2^20 - 1) 150)) = 27, capped at 24; the accumulator does not bind
    want = _readout_gradient_by_hand(wide, b)
    got = fe.accumulated_gradients(wide, b.x, b.target, b.mask)["readout.w"]
    assert 0.97 <= np.linalg.norm(got) / np.linalg.norm(want) <= 1.03
    assert np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.999
    chosen = fe.quantize(spec, params, "loihi2", lr=0.01, loss_mask=b.mask)
    plain = fe.quantize(spec, params, "loihi2", lr=0.01)
    assert chosen.error_bits == 12 and plain.error_bits == 7
    want = _readout_gradient_by_hand(chosen, b)
    got = fe.accumulated_gradients(chosen, b.x, b.target, b.mask)["readout.w"]
    assert np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.98
    under = {}
    for name, net in (("chosen", chosen), ("plain", plain)):
        stats = {}
        fe.simulate(net.copy(), b.x, b.target, b.mask, learn=True, stats=stats)
        under[name] = stats["error_underflow"] / stats["error_values"]
    assert under["chosen"] == 0.0 and under["plain"] > 0.3, under  # measured: 0.0 and 0.36
    # the learning rate follows the scale: lr_fx = lr * w_scale * grad_scale, 2^(12-7) smaller
    assert chosen.readout.grad_scale * 2 ** 12 == pytest.approx(plain.readout.grad_scale * 2 ** 7)


def test_underflow_and_saturation_counts_on_a_crafted_case():
    prof = loihi2_profile()
    stats = {}
    # MSE, y_scale 1, error_exp 2: exact levels 4 (0 - t) = -0.4, -0.8, -0.2, -160, 0
    err = fe.output_error(np.zeros((1, 5)), np.array([[0.1, 0.2, 0.05, 40.0, 0.0]]), np.ones(1), "mse", 1.0,
                          prof, error_exp=2, stats=stats)
    assert err.tolist() == [[0, -1, 0, -128, 0]]
    assert (stats["error_values"], stats["error_underflow"], stats["error_saturated"]) == (4, 2, 1)
    # L = (B err) >> 3: B err = [3, 12, -5, 4000, 0] -> nearest [0, 2, -1, 500 -> 127, 0]
    B = np.array([[3], [12], [-5], [4000], [0]])
    sig = fe.learning_signal(np.array([[1]]), B, 3, prof, stats)
    assert sig.tolist() == [[0, 2, -1, 127, 0]]  # (3 + 4) >> 3 = 0, (12 + 4) >> 3 = 2, (-5 + 4) >> 3 = -1
    assert (stats["signal_values"], stats["signal_underflow"], stats["signal_saturated"]) == (4, 1, 1)
    s = deploy.signal_summary(stats)
    assert s["signal"]["underflow_fraction"] == 0.25 and s["error"]["saturated_fraction"] == 0.25


def _small_spec(variant="symmetric"):
    return NetworkSpec(n_inputs=40, layers=(LayerSpec(size=24, neuron="lif", params=NeuronParams(n_ref=0)),),
                       readout=ReadoutSpec(n_outputs=2), timing="loihi", reset="zero", seed=2,
                       learning=LearningSpec(variant=variant))


def _params(spec):
    params = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    params["layers.0.w_in"] *= 3.0  # make it spike
    return params


def test_online_learning_lowers_the_held_out_error():
    """A 24-neuron LIF network, one 40 ms cue then a 20 ms recall window (mask
    1/20): 40 online samples (learning stream) take the held-out error (test
    stream, 64 samples) from 0.375 to at most 0.2, and the samples learned on
    are not test samples."""
    task = EvidenceAccumulation(n_cues=1, cue_ms=40, spacing_ms=0, delay_ms=0, recall_ms=20)
    spec = _small_spec()
    test = deploy.draw(task, 0, deploy.TEST_STREAM, 64)
    train = deploy.draw(task, 0, deploy.LEARN_STREAM, 40)
    assert not any(np.array_equal(train.x[:, i], test.x[:, j]) for i in range(40) for j in range(64))
    net = fe.quantize(spec, _params(spec), "loihi2", lr=0.05, loss_mask=test.mask)
    before = net.weights()
    r = deploy.learn_run(net, train, test, task, every=10)
    assert r["error_before"] == pytest.approx(0.375)
    assert r["error_after"] <= 0.2
    assert [c["samples"] for c in r["curve"]] == [0, 10, 20, 30, 40]
    assert sum(r["changed_weights"].values()) > 100
    assert all(np.array_equal(v, before[k]) for k, v in net.weights().items())  # the input net is untouched
    assert r["signal"]["signal"]["values"] > 0 and r["signal"]["signal"]["underflow_fraction"] < 0.2


def test_run_learn_json_keys(tmp_path, capsys):
    from eprop_lava.cli import main
    from eprop_lava.compile.pipeline import compile_checkpoint
    from test_compile_artifact import make_checkpoint, small_spec

    ck = make_checkpoint(tmp_path, small_spec("lif"))
    compile_checkpoint(ck, tmp_path / "art", target="loihi2", learning=True, lr=0.05)
    fig = tmp_path / "curve.png"
    assert main(["run", str(tmp_path / "art"), "--samples", "4", "--no-lava", "--learn", "--learn-samples", "3",
                 "--curve-every", "1", "--figure", str(fig), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    L = r["learning"]
    assert L["samples"] == 3 and L["test_samples"] == 4
    assert L["error_before"] == r["fixed_error"]  # the same held-out samples, before learning
    assert 0.0 <= L["error_after"] <= 1.0
    assert isinstance(L["weights_changed"], int) and L["weights_changed"] == sum(L["changed_weights"].values())
    assert 0.0 <= L["signal_underflow"] <= 1.0
    assert L["signal_counts"]["signal"]["values"] >= L["signal_counts"]["signal"]["underflow"]
    assert L["error_exp"] == 12
    assert [c["samples"] for c in L["curve"]] == [0, 1, 2, 3]
    assert L["curve"][0]["error"] == L["error_before"] and L["curve"][-1]["error"] == L["error_after"]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sat = r["saturation"]["layers.0"]
    assert sat["of"] == 4 * 2250 * 16  # every test sample, every step, every neuron
    assert 0 <= sat["v_saturated"] <= sat["of"]
    clip = L["saturation"]["readout"]["w"]
    assert clip["of"] > 0 and 0 <= clip["clipped"] <= clip["of"]
    # bad input: one line, exit 2
    assert main(["run", str(tmp_path / "art"), "--learn", "--learn-samples", "0"]) == 2
    assert "--learn-samples" in capsys.readouterr().err


def test_feedback_is_compared_after_the_one_update_lag():
    """compare_learned: Lava's B equals the engine's B before its last update
    (symmetric/adaptive); a B that equals the final one (no lag) would be a
    mismatch; random feedback is compared directly."""
    from eprop_lava.compile.pipeline import compare_learned

    task = EvidenceAccumulation(n_cues=1, cue_ms=40, spacing_ms=0, delay_ms=0, recall_ms=20)
    spec = _small_spec("symmetric")
    train = deploy.draw(task, 0, deploy.LEARN_STREAM, 2)
    net = fe.quantize(spec, _params(spec), "loihi2", lr=0.5, loss_mask=train.mask)
    eng = deploy.learn_run(net, train)
    final = eng["net"].weights()
    # B moved in the last update (otherwise the lag would be invisible)
    assert np.any(eng["feedback_before_last_update"] != final["feedback.b"])
    lagged = {**final, "feedback.b": eng["feedback_before_last_update"].copy()}
    ok = compare_learned(lagged, eng, feedback_follows=True)
    assert ok["bit_exact"] and ok["weight_mismatches"]["feedback.b"] == 0
    no_lag = compare_learned(final, eng, feedback_follows=True)
    assert not no_lag["bit_exact"] and no_lag["weight_mismatches"]["feedback.b"] > 0
    assert compare_learned(final, eng, feedback_follows=False)["bit_exact"]


@pytest.mark.lava
@pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")
def test_lava_learning_with_symmetric_feedback_is_bit_exact_after_the_lag():
    """Lava's fixed_pt learning graph, symmetric feedback, two 60-step samples:
    every weight and B (after its lag) equal the engine's."""
    from eprop_lava.compile.pipeline import lava_learning

    task = EvidenceAccumulation(n_cues=1, cue_ms=40, spacing_ms=0, delay_ms=0, recall_ms=20)
    spec = _small_spec("symmetric")
    train = deploy.draw(task, 0, deploy.LEARN_STREAM, 2)
    net = fe.quantize(spec, _params(spec), "loihi2", lr=0.5, loss_mask=train.mask)
    r = lava_learning(net, train, steps=2 * task.steps)
    assert r["samples"] == 2 and r["bit_exact"], r["weight_mismatches"]
    assert deploy.learn_run(net, train)["changed_weights"]["feedback.b"] > 0  # B did move
    # the lag is real: Lava's B is not the engine's final B
    assert "feedback.b" in r["notes"] and " 0 values differ" not in r["notes"]["feedback.b"]


def test_evidence_task_with_swapped_cue_sides():
    """swap_sides: a left cue drives the population that carried right cues;
    labels (the side with more cues) unchanged. With cue rate 1000 Hz and no
    noise the spikes are deterministic, so the swap is exact."""
    from eprop_lava.tasks import get_task

    kw = dict(n_cues=3, cue_ms=5, spacing_ms=2, delay_ms=3, recall_ms=4, cue_hz=1000.0, noise_hz=0.0)
    a = get_task("evidence", **kw).batch(np.random.default_rng(7), 6)
    b = get_task("evidence", swap_sides=True, **kw).batch(np.random.default_rng(7), 6)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.x[:, :, :10], b.x[:, :, 10:20])
    np.testing.assert_array_equal(a.x[:, :, 10:20], b.x[:, :, :10])
    np.testing.assert_array_equal(a.x[:, :, 20:], b.x[:, :, 20:])
    assert a.x[:, :, :20].sum() > 0
    with pytest.raises(ValueError, match="swap_sides"):
        get_task("evidence", swap_sides="yes")


def test_run_exit_status_follows_every_comparison(monkeypatch, tmp_path, capsys):
    """`run` exits 0 only when the inference and the learning comparisons are
    both bit-exact, 1 when either differs."""
    from eprop_lava.cli import main
    from eprop_lava.compile import pipeline

    def fake(inference_exact, learning_exact):
        def run_artifact(*args, **kwargs):
            return {"lava": {"comparison": {"bit_exact": inference_exact},
                             "learning": {"bit_exact": learning_exact}}}
        return run_artifact

    for inference_exact, learning_exact, status in ((True, True, 0), (True, False, 1), (False, True, 1)):
        monkeypatch.setattr(pipeline, "run_artifact", fake(inference_exact, learning_exact))
        assert main(["run", str(tmp_path), "--learn", "--json"]) == status
    capsys.readouterr()
