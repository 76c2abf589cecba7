import math

import pytest

from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec, SpecError


def small_spec(**kw):
    return NetworkSpec(n_inputs=4, layers=(LayerSpec(size=5),), **kw)


def test_json_and_toml_round_trip():
    spec = NetworkSpec(n_inputs=3, layers=(LayerSpec(size=4, neuron="lif"),
                                           LayerSpec(size=6, neuron="izhikevich", recurrent=False,
                                                     params=NeuronParams(tau_a_max=3000.0))),
                       readout=ReadoutSpec(n_outputs=5, kappa=0.9), timing="loihi", reset="zero")
    assert NetworkSpec.from_json(spec.to_json()) == spec
    assert NetworkSpec.from_toml(spec.to_toml()) == spec
    assert spec.layer_offsets() == [(0, 4), (4, 10)]


@pytest.mark.parametrize("data,field", [
    ({"n_inputs": 4, "layers": [{"size": -1}]}, "layers[0].size"),
    ({"n_inputs": 4, "layers": [{"size": 5}], "readout": {"kappa": 1.2}}, "readout.kappa"),
    ({"n_inputs": 4, "layers": [{"size": 5, "neuron": "hodgkin"}]}, "layers[0].neuron"),
    ({"n_inputs": 4, "layers": [{"size": 5, "params": {"tau_m": float("nan")}}]}, "layers[0].params.tau_m"),
    ({"n_inputs": 4, "layers": [{"size": 5}], "timing": "lava"}, "timing"),
    ({"n_inputs": 4, "layers": [{"size": 5}], "learning": {"variant": "magic"}}, "learning.variant"),
    ({"n_inputs": 4, "layers": [{"size": 5}], "optimizer": {"beta1": 1.5}}, "optimizer.beta1"),
    ({"n_inputs": 4, "layers": [{"size": 5}], "regularization": {"coefficient": -1}}, "regularization.coefficient"),
    ({"n_inputs": 4, "layers": [{"size": 5, "colour": 3}]}, "layers[0].colour"),
    ({"n_inputs": 4, "layers": []}, "layers"),
    ({"n_inputs": 0, "layers": [{"size": 5}]}, "n_inputs"),
])
def test_bad_specs_name_the_field(data, field):
    with pytest.raises(SpecError) as info:
        NetworkSpec.from_dict(data)
    assert str(info.value).startswith(field), str(info.value)


def test_stdp_alif_needs_refractory_period():
    with pytest.raises(SpecError, match="n_ref"):
        NetworkSpec(n_inputs=2, layers=(LayerSpec(size=2, neuron="stdp_alif", params=NeuronParams(n_ref=0)),))


def test_malformed_text():
    with pytest.raises(SpecError, match="JSON"):
        NetworkSpec.from_json("{not json")
    with pytest.raises(SpecError, match="TOML"):
        NetworkSpec.from_toml("= broken")


def test_defaults_are_the_official_evidence_network():
    spec = small_spec()
    assert spec.readout.kappa == pytest.approx(math.exp(-1 / 20))
    assert spec.optimizer.lr == 5e-3 and spec.optimizer.kind == "adam"
