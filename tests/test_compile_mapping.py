"""Compiler resource model and partitioner: every limit respected, spill onto
more chips, clear errors when a network cannot fit."""

import numpy as np
import pytest

from eprop_lava.compile.mapping import (
    LOIHI1, LOIHI2, MappingError, _evaluate, _violations, get_target, map_network, populations,
)
from eprop_lava.fixed import get_profile
from eprop_lava.neurons import fixed as fx
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec
from eprop_lava.tasks import get_task


def spec_of(*layers, n_inputs=20, outputs=2):
    return NetworkSpec(n_inputs=n_inputs, layers=tuple(layers), readout=ReadoutSpec(n_outputs=outputs),
                       timing="loihi", reset="zero")


def assert_within_limits(m, target):
    t = get_target(target)
    for c in m.cores:
        assert c.compartments <= t.neurons_per_core
        mem = c.synapse_bits + (c.neuron_bits if t.shared_neuron_memory else 0)
        assert mem <= t.synapse_bits_per_core
        assert c.in_axons <= t.in_axons_per_core and c.out_axons <= t.out_axons_per_core
        for name in ("compartment_configs", "vth_configs", "synapse_configs"):
            lim = getattr(t, name)
            assert lim is None or getattr(c, name) <= lim




def test_evidence_network_fits_one_core():
    spec = get_task("evidence").default_spec()
    for target in ("loihi1", "loihi2"):
        m = map_network(spec, target)
        assert m.n_cores == 1 and m.n_chips == 1
        c = m.cores[0]
        assert c.neurons == 102 and c.synapses == 100 * 140 + 2 * 100
    # Loihi 1: an adaptive neuron takes two compartments
    assert map_network(spec, "loihi1").cores[0].compartments == 100 + 50 + 2
    assert map_network(spec, "loihi2").cores[0].compartments == 102


def test_learning_synapses_cost_more():
    spec = get_task("evidence").default_spec()
    for target in ("loihi1", "loihi2"):
        static = map_network(spec, target, learning=False).cores[0]
        learn = map_network(spec, target, learning=True).cores[0]
        assert learn.synapse_bits > 4 * static.synapse_bits
        assert learn.learning_synapses == learn.synapses
    # Loihi 1: a learning synapse's axon takes two input-axon slots
    assert map_network(spec, "loihi1", learning=True).cores[0].in_axons == 2 * 140
    assert map_network(spec, "loihi2", learning=True).cores[0].in_axons == 140


def test_synapse_memory_formula():
    """ceil64(n (w + t) + 10) bits per presynaptic axon (nengo-loihi bits_per_axon)."""
    spec = spec_of(LayerSpec(size=10, neuron="lif", recurrent=False), n_inputs=3)
    pops = {p.key: p for p in populations(spec, 8, False)}
    from eprop_lava.compile.mapping import Block
    u = _evaluate([Block("layers.0", 0, 10)], pops, LOIHI1, get_profile("loihi2"))
    assert u.synapse_bits == 3 * 128  # 10 * 8 + 10 = 90 -> 128 bits per axon
    u4 = _evaluate([Block("layers.0", 0, 10)], {p.key: p for p in populations(spec, 4, False)}, LOIHI1,
                   get_profile("loihi2"))
    assert u4.synapse_bits == 3 * 64   # 10 * 4 + 10 = 50 -> 64


def test_large_network_spills_onto_several_chips():
    # fan-in 3500: synaptic memory limits a core to 30 neurons -> 134 cores -> 2 chips
    spec = spec_of(LayerSpec(size=4000, neuron="lif", recurrent=False), n_inputs=3500, outputs=4)
    m = map_network(spec, "loihi2", system="kapoho_point")
    assert m.n_chips > 1 and m.n_cores > LOIHI2.cores_per_chip
    assert_within_limits(m, "loihi2")
    covered = sorted((b.start, b.stop) for c in m.cores for b in c.blocks if b.pop == "layers.0")
    assert covered[0][0] == 0 and covered[-1][1] == 4000
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # contiguous, no neuron lost or doubled
    assert sum(c.neurons for c in m.cores) == 4000 + 4


def test_dense_recurrent_layer_beyond_the_axon_limit():
    """Every core of a dense recurrent layer receives all its neurons as input axons."""
    spec = spec_of(LayerSpec(size=5000, neuron="lif"), n_inputs=20)
    with pytest.raises(MappingError, match="5020 input axons > 4096"):
        map_network(spec, "loihi2")


def test_too_large_for_the_system_fails_clearly():
    spec = spec_of(LayerSpec(size=4000, neuron="lif", recurrent=False), n_inputs=3500)
    with pytest.raises(MappingError, match=r"system oheo_gulch has 1 chip .*choose a larger --system"):
        map_network(spec, "loihi2", system="oheo_gulch")
    with pytest.raises(MappingError, match="unknown 'nowhere'"):
        map_network(spec, "loihi2", system="nowhere")
    with pytest.raises(MappingError, match="built from loihi1 chips"):
        map_network(spec, "loihi2", system="nahuku32")


def test_single_neuron_too_large():
    spec = spec_of(LayerSpec(size=4, neuron="lif", recurrent=False), n_inputs=5000)
    with pytest.raises(MappingError, match="a single neuron does not fit one loihi1 core .*input axons"):
        map_network(spec, "loihi1")


def test_loihi1_compartment_limit_and_config_slots():
    spec = spec_of(LayerSpec(size=3000, neuron="lif", recurrent=False), n_inputs=4)
    m = map_network(spec, "loihi1")
    assert m.n_cores == 3 + (0 if m.cores[-1].neurons + 2 <= 1024 else 1)
    assert_within_limits(m, "loihi1")
    # 64 distinct thresholds: at most 8 threshold configurations per Loihi 1 core
    spec = spec_of(LayerSpec(size=64, neuron="lif", recurrent=False), n_inputs=4)
    p = fx.FixedNeuronParams("lif", 64, vth=np.arange(64) + 100)
    m = map_network(spec, "loihi1", neuron_params=[p])
    assert m.n_cores >= 8 and all(c.vth_configs <= 8 for c in m.cores)
    assert map_network(spec, "loihi2", neuron_params=[p]).n_cores == 1  # no such slot limit modelled on Loihi 2


def test_izhikevich_has_no_loihi1_form():
    spec = spec_of(LayerSpec(size=10, neuron="izhikevich"))
    with pytest.raises(MappingError, match="Izhikevich neurons have no loihi1 equivalent"):
        map_network(spec, "loihi1")
    assert map_network(spec, "loihi2").n_cores == 1


def test_multilayer_output_axons_and_roundtrip():
    spec = spec_of(LayerSpec(size=3000, neuron="lif"), LayerSpec(size=500, neuron="alif"), n_inputs=50)
    m = map_network(spec, "loihi1")
    assert_within_limits(m, "loihi1")
    # a layer-0 neuron sends one axon per core holding layer 0 (recurrent), layer 1 or the readout
    assert max(c.out_axons for c in m.cores) > 0
    d = m.to_dict()
    from eprop_lava.compile.mapping import Mapping
    assert Mapping.from_dict(d).to_dict() == d
    u = m.utilization()
    assert 0 < u["compartments"]["max"] <= 1


def test_every_core_within_limits_when_rechecked():
    spec = spec_of(LayerSpec(size=1500, neuron="alif"), n_inputs=300)
    for target, t in (("loihi1", LOIHI1), ("loihi2", LOIHI2)):
        for learning in (False, True):
            m = map_network(spec, target, learning=learning)
            pops = {p.key: p for p in populations(spec, 8, learning)}
            for c in m.cores:
                assert _violations(_evaluate(c.blocks, pops, t, get_profile("loihi2")), t) == []
