"""Native on-chip e-prop (compile/native_learning.py): the closed-loop
learning-signal process against a hand computation from the readout it
read, its one-step delay, the LearningDense weight changes against a numpy
model of Lava's bit-approximate learning engine fed with the recorded post
factors and third factors, and what stays refused (Lava tests, marked)."""

from dataclasses import replace

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
    with pytest.raises(NativeError, match="layer 0 is alif; the learning-engine rule is built for LIF"):
        check_native_learning(tiny_net("alif"))
    with pytest.raises(NativeError, match="2 hidden layers; it is built for one"):
        check_native_learning(tiny_net(layers=2))
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
    assert "*u0*y1*d - " in r["w_in"].dt and value(r["w_in"].tag_increment) == 2.0 ** -2
    assert value(r["w_in"].lr) == lr.mantissa * 2.0 ** (lr.exponent + 1)
    s = rules(net, "standard")["w_in"]
    assert "*y0*d - " in s.dt and "y1" not in s.dt and value(s.tag_increment) == 1.0
    ro = r["w_out"]
    assert (ro.dd, ro.dt) == ("u0*x1 - u0*d", "u0*d - u0*t")
    assert value(ro.lr) == net.readout.lr.mantissa * 2.0 ** (net.readout.lr.exponent + 1)
    assert np.isclose(np.exp(-1.0 / ro.x1_tau), (4096 - net.readout.d_kappa) / 4096)


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
    assert np.array_equal(r["signal"], L)
    assert np.abs(L).sum() > 0
    # one step late at the neurons
    assert np.array_equal(r["received"][0], np.zeros(6)) and np.array_equal(r["received"][1:], L[:-1])
    R = rules(net, "eprop", 0)
    L0 = net.layers[0]
    em_in = emulate_learning_engine(x, r["psi"], r["received"], L0.w_in, R["w_in"])
    assert np.array_equal(r["w_in"], em_in["weights"])
    assert np.abs(r["w_in"] - L0.w_in).sum() > 0
    em_rec = emulate_learning_engine(r["z"], r["psi"], r["received"], L0.w_rec, R["w_rec"])
    w_rec = em_rec["weights"].copy()
    np.fill_diagonal(w_rec, 0)
    assert np.array_equal(r["w_rec"], w_rec)
    # readout: third factor err one step late, on its own LearningDense (y1 unused: psi 0)
    e_late = np.vstack([np.zeros((1, 2), dtype=np.int64), r["err"][:-1]])
    em_out = emulate_learning_engine(r["z"], np.zeros((T, 2), dtype=np.int64), e_late, net.readout.w, R["w_out"])
    assert np.array_equal(r["w_out"], em_out["weights"])
