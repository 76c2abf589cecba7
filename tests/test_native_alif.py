"""Why native inference refuses ALIF: Lava's ATRLIF, with the closest
parameter mapping, against the engine's fixed-point ALIF (small Lava runs).
A hand-computed single neuron shows the reset difference; a 6-neuron layer
reproduces the measurement quoted by the refusal and docs/compiler.md."""

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.compile.native import NativeError, check_native
from eprop_lava.compile.native_alif import ATRLIF_MISMATCH, AtrlifMappingError, atrlif_params
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.neurons import fixed as fx
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec

needs_lava = pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")


def _alif_net(n: int, n_in: int, recurrent: bool = True) -> fe.FixedNetwork:
    ls = (LayerSpec(size=n, neuron="alif", recurrent=recurrent, params=NeuronParams(v_th=0.5, n_ref=0)),)
    spec = NetworkSpec(n_inputs=n_in, layers=ls, readout=ReadoutSpec(n_outputs=2), timing="loihi", reset="zero",
                       seed=3)
    return fe.quantize(spec, init_params(spec), "loihi2")


def test_mapping_by_hand_and_what_has_none():
    p = fx.FixedNeuronParams("alif", 3, du=4095, dv=200, vth=43, theta_step=7 * 64, d_theta=20)
    assert atrlif_params(p) == dict(delta_i=4095 / 4096, delta_v=200 / 4096, delta_theta=20 / 4096,
                                    delta_r=200 / 4096, theta_0=43, theta=43, theta_step=7)
    with pytest.raises(AtrlifMappingError, match="theta_step: ATRLIF's is a multiple of 2\\^6"):
        atrlif_params(fx.FixedNeuronParams("alif", 3, theta_step=100))
    with pytest.raises(AtrlifMappingError, match="theta_step: ATRLIF holds one value per process"):
        atrlif_params(fx.FixedNeuronParams("alif", 3, theta_step=[0, 64, 128]))


def test_refusal_states_the_measured_reason():
    net = _alif_net(4, 3)
    with pytest.raises(NativeError) as err:
        check_native(net)
    msg = str(err.value)
    assert msg.startswith("layer 0 is alif: no standard Lava process matches the engine's ALIF: ")
    assert ATRLIF_MISMATCH in msg and "\n" not in msg
    assert "45 spike mismatches against 195 engine spikes" in msg and "resets v to 0" in msg


@pytest.mark.lava
@needs_lava
def test_atrlif_under_constant_drive_by_hand():
    """One neuron, no leak (dv = 0), no adaptation (theta_step 0), an input
    spike every step through a weight of 15: a = 15 << 6 = 960 per step from
    step 1 (Dense delay), threshold 10 << 6 = 640.
    Engine: v = 960 > 640 at every step, reset to 0: it fires at steps 1..8.
    ATRLIF (delta_r = delta_v = 0): v grows by 960, r by 2 theta = 1280 per
    spike, v - r = 960, 640 (>= 640 fires), 320, 1280, 960, 640, 320, 1280:
    fires at 1, 2, 4, 5, 6, 8, i.e. at the rate 960 / 1280 = 3/4."""
    from eprop_lava.compile.native_alif import compare_atrlif

    net = _alif_net(1, 1, recurrent=False)
    L = net.layers[0]
    L.w_in = np.array([[15]])
    L.neuron = fx.FixedNeuronParams("alif", 1, du=4095, dv=0, vth=10, theta_step=0, d_theta=0)
    x = np.ones((9, 1))
    res = compare_atrlif(net, x)
    assert res["spikes_engine"] == 8 and res["spikes_atrlif"] == 6 and res["spike_mismatches"] == 2
    assert res["exact_before_first_spike"]
    fm = res["first_mismatch"]
    assert (fm["step"], fm["engine_spike"], fm["atrlif_spike"], fm["previous_spike"]) == (3, 1, 0, 2)
    assert fm["v_engine"] == 960 and fm["v_minus_r_atrlif"] == 320      # 3 * 960 - 2 * 1280
    assert fm["threshold_engine"] == fm["threshold_atrlif"] == 640
    assert "engine reset v to 0" in fm["reason"]


@pytest.mark.lava
@needs_lava
def test_six_neuron_alif_layer_measurement():
    """The measurement the refusal quotes: 6 recurrent ALIF neurons (dv 200,
    vth 43, theta_step 7 << 6, d_theta 20), integer weights from rng seed 0
    (w_in 0..255, w_rec even in [-256, 254]), 60 steps of 30 % input spikes.
    The mapping is exact up to the layer's first spike (i, v, resting
    threshold); the first mismatch is the step after a neuron's spike, where
    both its voltage (reset against 2 theta subtracted) and its threshold
    (the increment decayed once in ATRLIF) differ."""
    from eprop_lava.compile.native_alif import compare_atrlif

    N, n_in, T = 6, 5, 60
    net = _alif_net(N, n_in)
    L = net.layers[0]
    rng = np.random.default_rng(0)
    L.w_in = rng.integers(0, 256, size=(N, n_in))
    w_rec = 2 * rng.integers(-128, 128, size=(N, N))
    np.fill_diagonal(w_rec, 0)
    L.w_rec = w_rec
    L.neuron = fx.FixedNeuronParams("alif", N, du=4095, dv=200, vth=43, theta_step=7 * 64, d_theta=20)
    x = (rng.random((T, n_in)) < 0.3).astype(np.float64)
    res = compare_atrlif(net, x)
    assert res["exact_before_first_spike"]
    assert (res["spikes_engine"], res["spikes_atrlif"], res["spike_mismatches"]) == (195, 198, 45)
    fm = res["first_mismatch"]
    assert (fm["step"], fm["neuron"], fm["previous_spike"]) == (4, 2, 3)
    assert fm["v_engine"] != fm["v_minus_r_atrlif"]
    # the threshold one step after a spike: engine 2752 + 448, ATRLIF 2752 + decay(448, 20) = 2752 + 445
    assert (fm["threshold_engine"], fm["threshold_atrlif"]) == (3200, 3197)
