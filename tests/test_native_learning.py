"""Native on-chip e-prop (compile/native_learning.py): the closed-loop
learning-signal process against a hand computation from the readout it
read, its one-step delay, the LearningDense weight changes against a numpy
model of Lava's bit-approximate learning engine fed with the recorded post
factors and third factors, and what stays refused (Lava tests, marked)."""

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.compile.native import NativeError
from eprop_lava.compile.quantize import quantize_network
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, ReadoutSpec

needs_lava = pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")


def tiny_net(neuron="lif", layers=1, variant="random", loss="mse"):
    ls = tuple(LayerSpec(size=6, neuron=neuron, params=NeuronParams(n_ref=0, v_th=0.5)) for _ in range(layers))
    spec = NetworkSpec(n_inputs=5, layers=ls, readout=ReadoutSpec(n_outputs=2), timing="loihi", reset="zero",
                       seed=3, loss=loss, learning=LearningSpec(variant=variant))
    p = {k: np.asarray(v, dtype=np.float64) * 2 for k, v in init_params(spec).items()}
    net = quantize_network(spec, p, 8)[0]
    fe.set_learning_rates(net, 0.05)
    return net


def stream(T=40, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, 5)) < 0.25).astype(np.int64)
    target = np.zeros((T, 2))
    target[:, 0] = 1.0
    mask = np.full(T, 0.75)  # not an integer: the target stream must stay float
    return x, target, mask


def test_refusals_name_the_reason():
    from eprop_lava.compile.native_learning import check_native_learning

    check_native_learning(tiny_net())
    check_native_learning(tiny_net(layers=2))
    with pytest.raises(NativeError, match="layer 0 is alif; the learning-engine rule is built for LIF"):
        check_native_learning(tiny_net("alif"))
    with pytest.raises(NativeError, match="symmetric feedback makes B follow W_out"):
        check_native_learning(tiny_net(variant="symmetric"))


def test_rules_units():
    """The rule constants: psi tag increment (y1 d >> 5) 2^-2 = psi d / 2^7;
    the spike rule's y0 d 2^0 (psi_max / 2^7 ~= 1); lr m 2^(e + 5 - 4)."""
    from eprop_lava.compile.native_learning import rules

    net = tiny_net()
    lr = net.layers[0].lr
    r = rules(net, "eprop")
    value = lambda me: me[0] * 2.0 ** me[1]  # noqa: E731
    assert "*u0*y1*d - " in r["layers.0.w_in"].dt and value(r["layers.0.w_in"].tag_increment) == 2.0 ** -2
    assert value(r["layers.0.w_in"].lr) == lr.mantissa * 2.0 ** (lr.exponent + 1)
    s = rules(net, "standard")["layers.0.w_in"]
    assert "*y0*d - " in s.dt and "y1" not in s.dt and value(s.tag_increment) == 1.0
    ro = r["readout.w.0"]
    assert (ro.dd, ro.dt) == ("u0*x1 - u0*d", "u0*d - u0*t")
    assert value(ro.lr) == net.readout.lr.mantissa * 2.0 ** (net.readout.lr.exponent + 1)
    assert np.isclose(np.exp(-1.0 / ro.x1_tau), (4096 - net.readout.d_kappa) / 4096)


@pytest.mark.lava
@needs_lava
def test_closed_loop_signal_delay_and_weight_changes():
    """One closed-loop run (EpropLearningLIF, 40 steps, everything learning):
    L^t equals the MSE rule computed by hand from the readout v^t the process
    read; the neurons receive it one step later; the input, recurrent and
    readout LearningDenses end where a numpy model of Lava's bit-approximate
    learning engine, fed with the recorded psi, spikes and third factors,
    ends (bit for bit)."""
    from eprop_lava.compile.native_learning import rules, run_sample
    from eprop_lava.models.learning_engine import emulate_learning_engine

    net = tiny_net()
    x, target, mask = stream()
    r = run_sample(net, x, target, mask, neuron="eprop", record=True, timeout=120)
    T = x.shape[0]
    # the learning signal by hand: err = rint((y / y_scale - target) 2^error_bits), L = rint(B err / 2^shift)
    err = np.rint(mask[:, None] * (r["y"] / net.readout.y_scale - target) * 2.0 ** net.error_bits)
    lo, hi = net.profile.signal_range
    err = np.clip(err, lo, hi)
    acc = err @ net.feedback.T.astype(float)
    L = np.clip(np.floor(acc / 2.0 ** net.signal_shift + 0.5), lo, hi).astype(np.int64)
    assert np.array_equal(r["err"], err.astype(np.int64))
    assert np.array_equal(r["signal.0"], L)
    assert np.abs(L).sum() > 0
    # one step late at the neurons
    assert np.array_equal(r["received.0"][0], np.zeros(6)) and np.array_equal(r["received.0"][1:], L[:-1])
    R = rules(net, "eprop", 0)
    L0 = net.layers[0]
    em_in = emulate_learning_engine(x, r["psi.0"], r["received.0"], L0.w_in, R["layers.0.w_in"])
    assert np.array_equal(r["layers.0.w_in"], em_in["weights"])
    assert np.abs(r["layers.0.w_in"] - L0.w_in).sum() > 0
    em_rec = emulate_learning_engine(r["z.0"], r["psi.0"], r["received.0"], L0.w_rec, R["layers.0.w_rec"])
    w_rec = em_rec["weights"].copy()
    np.fill_diagonal(w_rec, 0)
    assert np.array_equal(r["layers.0.w_rec"], w_rec)
    # readout: third factor err one step late, on its own LearningDense (y1 unused: psi 0)
    e_late = np.vstack([np.zeros((1, 2), dtype=np.int64), r["err"][:-1]])
    em_out = emulate_learning_engine(r["z.0"], np.zeros((T, 2), dtype=np.int64), e_late, net.readout.w,
                                     R["readout.w.0"])
    assert np.array_equal(r["readout.w"], em_out["weights"])


@pytest.mark.lava
@needs_lava
def test_standard_learning_lif_rule_on_post_spikes():
    """Lava's own LearningLIF (its model sends spikes only): the rule's post
    factor is the post spike (y0), the third factor reaches the LearningDense's
    y2 / y3 ports from the learning-signal process directly, one step late;
    the input matrix ends where the learning-engine model ends, fed with the
    spikes and that signal; the spikes start equal to the engine's (LIF
    dynamics bit-exact until the first weight change acts)."""
    from eprop_lava.compile.native_learning import rules, run_sample
    from eprop_lava.models.learning_engine import emulate_learning_engine

    net = tiny_net()
    x, target, mask = stream(seed=1)
    r = run_sample(net, x, target, mask, neuron="standard", record=True, timeout=120)
    late = np.vstack([np.zeros((1, 6), dtype=np.int64), r["signal.0"][:-1]])
    em = emulate_learning_engine(x, r["z.0"], late, net.layers[0].w_in, rules(net, "standard", 0)["layers.0.w_in"])
    w = r["layers.0.w_in"]
    assert np.array_equal(w, em["weights"]) and np.abs(w - net.layers[0].w_in).sum() > 0
    run = fe.simulate(net, x[:, None], target[:, None], mask[:, None])
    assert np.array_equal(r["z.0"][:2], run.z[0][:2, 0])  # weights change from step 2 on (L^0 arrives at 1)


@pytest.mark.lava
@needs_lava
def test_compile_native_learning_cli(tmp_path, capsys):
    """compile --deploy native --learning: the artifact lists every process of
    the learning graph, standard or not, and where it runs; an ALIF network
    is refused in one line with exit code 2 and no artifact."""
    import json

    from eprop_lava.cli import main
    from test_compile_artifact import make_checkpoint, small_spec

    ck = make_checkpoint(tmp_path, small_spec("lif"))
    out = tmp_path / "nat"
    assert main(["compile", str(ck), "--deploy", "native", "--learning", "--lr", "0.05", "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    rows = man["native"]["learning_placement"]
    custom = {n: [r["process"] for r in rs if not r["standard"]] for n, rs in rows.items()}
    ls, tgt = "ClosedLoopLearningSignal 0 (rows of B for layer 0)", "TargetSource (target, mask)"
    assert custom == {"eprop": ["EpropLearningLIF layer0 (16)", ls, tgt],
                      "eprop_cut": ["EpropLearningLIF layer0 (16)", ls, tgt], "standard": [ls, tgt]}
    assert {r["where"] for r in rows["eprop"]} == {"host", "neurocore", "neurocore (custom neuron program)",
                                                   "embedded CPU or host"}
    assert "On-chip e-prop, standard neuron" in (out / "report.md").read_text()
    capsys.readouterr()
    alif = make_checkpoint(tmp_path, small_spec("alif"))
    assert main(["compile", str(alif), "--deploy", "native", "--learning", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "three synaptic variables" in err and not (tmp_path / "a").exists()


@pytest.mark.lava
@needs_lava
def test_two_layers_each_with_its_own_signal():
    """Two hidden layers: each layer's learning-signal process sends its own
    rows of B err (by hand from the readout it read), one step late; layer
    1's input matrix (fed by layer 0's spikes) ends where the learning-engine
    model ends."""
    from eprop_lava.compile.native_learning import rules, run_sample
    from eprop_lava.models.learning_engine import emulate_learning_engine

    net = tiny_net(layers=2)
    x, target, mask = stream(T=30, seed=2)
    r = run_sample(net, x, target, mask, neuron="eprop", record=True, timeout=120)
    err = r["err"].astype(float)
    lo, hi = net.profile.signal_range
    for layer, rows in enumerate((slice(0, 6), slice(6, 12))):
        L = np.clip(np.floor(err @ net.feedback[rows].T.astype(float) / 2.0 ** net.signal_shift + 0.5), lo, hi)
        assert np.array_equal(r[f"signal.{layer}"], L.astype(np.int64))
        assert np.array_equal(r[f"received.{layer}"][1:], r[f"signal.{layer}"][:-1])
    assert np.abs(r["signal.1"]).sum() > 0
    w0 = net.layers[1].w_in
    em = emulate_learning_engine(r["z.0"], r["psi.1"], r["received.1"], w0, rules(net, "eprop", 0)["layers.1.w_in"])
    assert np.array_equal(r["layers.1.w_in"], em["weights"]) and np.abs(r["layers.1.w_in"] - w0).sum() > 0


def float_eprop(x, z, psi, signal, w, alpha, kappa, lr, cut, impulse=16, psi_bits=7, product_shift=4):
    """Float e-prop of one LIF matrix on a recorded stream (seed 002 Eq. 2.37,
    Loihi timing): eps^t = alpha eps^{t-1} [1 - z_j^{t-1}] + impulse pre^{t-1},
    dW = -lr sum_t L^t e-bar^{t-1} / 2^product_shift,
    e-bar^t = kappa e-bar^{t-1} + psi^t eps^t / 2^psi_bits."""
    T, n_pre = x.shape
    eps = np.zeros(w.shape)
    ebar = np.zeros(w.shape)
    grad = np.zeros(w.shape)
    for t in range(T):
        keep = (1.0 - z[t - 1][:, None]) if (cut and t > 0) else 1.0
        eps = alpha * eps * keep + impulse * (x[t - 1][None, :] if t > 0 else 0.0)
        grad += signal[t][:, None] * ebar / 2.0 ** product_shift
        ebar = kappa * ebar + psi[t][:, None] * eps / 2.0 ** psi_bits
    return -lr * grad


@pytest.mark.lava
@needs_lava
def test_eligibility_reset_rule_follows_eprop_with_the_reset():
    """neuron="eprop_cut": d holds x1 at the post neuron's last spike, the
    neuron sends psi alpha^(t - t_j), L arrives offset-binary: the input
    update of a 200-step run follows float e-prop *with* the eligibility
    reset at post spikes on the run's own stream (cosine > 0.95, gain within
    15 %), where the plain rule follows e-prop without it."""
    from eprop_lava.compile.native_learning import run_sample
    from eprop_lava.models.learning_engine import agreement

    net = tiny_net()
    x, target, mask = stream(T=200)
    L, ro = net.layers[0], net.readout
    alpha, kappa = (4096 - int(np.max(L.neuron.dv))) / 4096, (4096 - ro.d_kappa) / 4096
    out = {}
    for neuron in ("eprop_cut", "eprop"):
        r = run_sample(net, x, target, mask, neuron=neuron, record=True, timeout=120)
        out[neuron] = {cut: agreement(r["layers.0.w_in"] - L.w_in,
                                      float_eprop(x, r["z.0"], r["psi.0"], r["received.0"], L.w_in, alpha, kappa,
                                                  L.lr.value, cut))
                       for cut in (True, False)}
    with_cut = out["eprop_cut"][True]
    assert with_cut["cosine"] > 0.95 and 0.85 < with_cut["gain"] < 1.15
    assert out["eprop"][False]["cosine"] > 0.9 and out["eprop"][True]["cosine"] < 0.8
