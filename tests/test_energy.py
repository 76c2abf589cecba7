"""Energy and latency from counted events: the counts of a tiny network with
known spike trains (2 inputs, 3 LIF neurons, 1 readout, on three cores in
three tiles) against hand-computed values, and their price against the
per-event figures done by hand."""

from dataclasses import replace

import numpy as np
import pytest

from eprop_lava.compile.mapping import Block, CoreUsage, Mapping, get_target, map_network
from eprop_lava.compile.quantize import quantize_network
from eprop_lava.compile.report import LOIHI1, core_xy, count_events, price_events, step_latency_ns
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec

F = {k: f.value for k, f in LOIHI1.items()}


def tiny_net():
    """Input i drives neuron i with weight 254 (one input spike -> one spike a
    step later: u = 254 << 6 > vth << 6 = 64); neuron 2 has no input; no
    recurrent weights; the readout reads neuron 0 with weight 2 and forgets
    within a step (d_kappa = 4095)."""
    spec = NetworkSpec(n_inputs=2, layers=(LayerSpec(size=3, neuron="lif", params=NeuronParams(n_ref=0)),),
                       readout=ReadoutSpec(n_outputs=1), timing="loihi", reset="zero", seed=0)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    net = quantize_network(spec, params, 8)[0]
    L = net.layers[0]
    L.neuron = replace(L.neuron, vth=1)
    L.w_in[:] = [[254, 0], [0, 254], [0, 0]]
    L.w_rec[:] = 0
    net.readout = replace(net.readout, w=np.array([[2, 0, 0]]), d_kappa=4095, bias=np.zeros(1, dtype=np.int64))
    return net


def three_core_mapping():
    """layers.0[0:2] on core 0 (tile 0 at (0, 0)), layers.0[2] on core 5
    (tile 1 at (1, 0)), the readout on core 36 (tile 9 at (1, 1))."""
    cores = [CoreUsage(0, 0, [Block("layers.0", 0, 2)]), CoreUsage(5, 0, [Block("layers.0", 2, 3)]),
             CoreUsage(36, 0, [Block("readout", 0, 1)])]
    layers = {"layers.0": {"cores": [0, 5], "sources": [["input", 2], ["layers.0", 3]]},
              "readout": {"cores": [36], "sources": [["layers.0", 3]]}}
    return Mapping("loihi1", "test", 1, False, cores, layers, get_target("loihi1").to_dict())


X = np.zeros((6, 1, 2))
X[[0, 2], 0, 0] = 1   # input 0 spikes at t = 0, 2
X[1, 0, 1] = 1        # input 1 spikes at t = 1


def test_tile_coordinates():
    assert core_xy(0) == (0, 0, 0) and core_xy(5) == (0, 1, 0) and core_xy(36) == (0, 1, 1)
    assert core_xy(128 + 33) == (1, 0, 1)


def test_spike_trains_are_the_hand_computed_ones():
    run = fe.simulate(tiny_net(), X, record_state=True)
    z = run.z[0][:, 0, :]
    assert [list(np.flatnonzero(z[:, j])) for j in range(3)] == [[1, 3], [2], []]
    assert list(run.y[:, 0, 0]) == [0, 0, 128, 0, 128, 0]  # y^t = decay(y^{t-1}) + (2 z_0^{t-1} << 6)


def test_counts_match_the_hand_computed_network():
    ev = count_events(tiny_net(), three_core_mapping(), X)
    # neuron 0: inactive t0, spikes t1 t3, active t2 t4 (its u of the spike step decays), inactive t5;
    # neuron 1: spikes t2, active t3, inactive otherwise; neuron 2: inactive;
    # readout: active t2..t5 (y non-zero at t2, t4 or the step before), inactive t0, t1
    assert ev.neurons_spiking == 3
    assert ev.neurons_active == 2 + 1 + 4
    assert ev.neurons_inactive == 2 + 4 + 6 + 2
    # dense synapse lists: 3 input spikes x 3 neurons + 3 hidden spikes x (3 recurrent + 1 readout)
    assert ev.synaptic_events == 3 * 3 + 3 * 3 + 3 * 1
    # every hidden spike leaves core 0 for cores 0, 5 and 36; input spikes enter cores 0 and 5
    assert ev.packets == 3 * 3 and ev.input_packets == 3 * 2
    assert ev.hops_ew == 3 * (0 + 1 + 1) and ev.hops_ns == 3 * (0 + 0 + 1) and ev.chip_crossings == 0
    assert ev.barriers == 6 and ev.learning_updates == 0


def test_price_is_the_sum_of_the_figures():
    ev = count_events(tiny_net(), three_core_mapping(), X)
    out = price_events(ev, "loihi1")
    e = out["energy_pj"]
    assert e["synaptic_pj"] == pytest.approx(21 * 35.5)
    assert e["neuron_pj"] == pytest.approx(24 * 51.2 + (7 + 3) * 21.6 + 3 * 69.3)
    assert e["packet_pj"] == pytest.approx(9 * 76.8)
    assert e["hop_pj"] == pytest.approx(6 * 3.0 + 3 * 4.2)
    assert e["total_pj"] == pytest.approx(3120.0)
    assert out["per_inference"]["energy_uj"] == pytest.approx(3120.0e-6)
    lat = step_latency_ns(ev)[:, 0]
    # t0: core 0 reads 2 compartments (12 ns) and 1 input spike's list of 2 synapses (8 ns); no packets
    assert lat[0] == pytest.approx(12 + 8 + 299)
    # t1: core 0: 2 accesses 12, 1 update 3.7, 1 spike 30, (1 input + 1 hidden spike) x 2 synapses 16,
    # 3 packets 22.8; the farthest packet (core 0 -> 36) 2.1 + 4.1 + 6.5 ns; the barrier 299 ns
    assert lat[1] == pytest.approx(12 + 3.7 + 30 + 16 + 22.8 + 2.1 + 4.1 + 6.5 + 299)
    assert out["per_step"]["latency_ns"] == pytest.approx(lat.mean())
    assert all(not f["assumed_for_loihi2"] for f in out["figures"].values())
    l2 = price_events(ev, "loihi2")
    assert all(f["assumed_for_loihi2"] for f in l2["figures"].values())
    assert "not public" in l2["assumptions"][0]


def test_one_core_mapping_has_no_hops_and_learning_counts_synapses():
    net = tiny_net()
    m = map_network(net.spec, "loihi1", learning=True)
    assert [c.index for c in m.cores] == [0]
    ev = count_events(net, m, X)
    assert ev.hops_ew == ev.hops_ns == 0 and ev.packets == 3 * 1
    # learning synapses: 2 x 3 input + 3 x 3 recurrent + 3 x 1 readout, each updated every step
    assert ev.learning_updates == (6 + 9 + 3) * 6
    assert price_events(ev)["energy_pj"]["learning_pj"] == pytest.approx(18 * 6 * 120.0)


@pytest.mark.parametrize("target", ["loihi1", "loihi2"])
def test_compartment_steps_are_the_mappers_compartments(target):
    """Every compartment the mapper placed is accessed once per step: on Loihi
    1 an ALIF neuron's second compartment too."""
    spec = NetworkSpec(n_inputs=5, layers=(LayerSpec(size=10, neuron="alif", adaptive_fraction=0.4,
                                                     params=NeuronParams(n_ref=0)),),
                       readout=ReadoutSpec(n_outputs=2), timing="loihi", reset="zero", seed=1)
    params = {k: np.asarray(v, dtype=np.float64) * (3.0 if k.endswith("w_in") else 1.0)
              for k, v in init_params(spec).items()}
    net = quantize_network(spec, params, 8)[0]
    m = map_network(spec, target)
    x = (np.random.default_rng(0).random((50, 2, 5)) < 0.3).astype(float)
    ev = count_events(net, m, x)
    n_comp = sum(c.compartments for c in m.cores)
    assert n_comp == (10 + 4 + 2 if target == "loihi1" else 10 + 2)
    assert ev.neurons_inactive + ev.neurons_active + ev.neurons_spiking == n_comp * 50 * 2
    assert ev.neurons_spiking > 0
