"""Native deployment target: inference as a graph of Lava's standard
processes only (Dense, LIF), bit exact against the fixed-point engine on
crafted networks the netx chain cannot hold (two layers both driving the
readout, odd input weights and 255 next to mixed recurrent ones, an
off-2^6 readout bias, a recurrent Dense with its own exponent), what it
refuses, and where each process would run (Lava tests, marked)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.cli import main
from eprop_lava.compile.native import NativeError, bias_mant_exp, check_native, placement, weight_bits
from eprop_lava.compile.quantize import quantize_network
from eprop_lava.engine.network import init_params
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec

needs_lava = pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")


def two_layer_net(neuron="lif", n_ref=0):
    ls = tuple(LayerSpec(size=s, neuron=neuron, params=NeuronParams(n_ref=n_ref, v_th=0.5)) for s in (8, 6))
    spec = NetworkSpec(n_inputs=5, layers=ls, readout=ReadoutSpec(n_outputs=3), timing="loihi", reset="zero",
                       seed=4)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    p["layers.0.w_in"] = np.abs(p["layers.0.w_in"]) * 2   # all positive: odd values and 255 on its own grid
    p["layers.1.w_in"] *= 2
    p["readout.b"] = np.array([0.1, -0.2, 0.05])
    return quantize_network(spec, p, 8)[0]


def test_helpers_known_values():
    assert weight_bits(np.array([[255, 3]])) == 8
    assert weight_bits(np.array([[64, -128]])) == 3     # mixed b bits: multiples of 2^(9-b)
    assert weight_bits(np.array([[128, -256]])) == 2
    assert weight_bits(np.array([[0, 0]])) == 1
    with pytest.raises(NativeError, match="not on Lava's 8-bit Dense grid"):
        weight_bits(np.array([[3, -2]]))
    mant, exp = bias_mant_exp([2767, -5536, 0, 4095 * 128], 4, "readout")
    assert mant.tolist() == [2767, -2768, 0, 4095] and exp.tolist() == [0, 1, 0, 7]
    with pytest.raises(NativeError, match="bias 8191"):
        bias_mant_exp([8191], 1, "readout")


def test_refusals_name_the_reason():
    with pytest.raises(NativeError, match="layer 0 is alif: no standard Lava process matches"):
        check_native(two_layer_net("alif"))
    with pytest.raises(NativeError, match="izhikevich"):
        check_native(two_layer_net("izhikevich"))
    with pytest.raises(NativeError, match="refractory period"):
        check_native(two_layer_net(n_ref=3))
    check_native(two_layer_net(), learning=True)  # on-chip e-prop of LIF layers: native_learning
    net = two_layer_net()
    net.layers[1].w_rec[0, 1] = 3  # odd in a mixed-sign matrix
    with pytest.raises(NativeError, match="layer 1 w_rec: weights are not on Lava's 8-bit Dense grid"):
        check_native(net)


def test_placement_names_every_process():
    rows = placement(two_layer_net())
    names = [r["process"] for r in rows]
    assert sum(n.startswith("Dense") for n in names) == 6 and sum(n.startswith("LIF") for n in names) == 3
    assert all(r["where"] == "neurocore" for r in rows if r["process"].startswith(("Dense", "LIF")))
    assert {r["where"] for r in rows} == {"neurocore", "host"} and all(r["why"] for r in rows)


@pytest.mark.lava
@needs_lava
def test_native_graph_is_bit_exact_on_crafted_networks():
    from eprop_lava.compile.native import compare_native, run_native

    net = two_layer_net()
    assert net.layers[0].w_in.max() == 255 and np.any(net.layers[0].w_in % 2)
    assert np.any(net.readout.bias % 64 != 0) and np.any(net.readout.w[:, :8] != 0)  # layer 0 drives the readout
    # the recurrent Dense of layer 1 with its own exponent -2: Lava's Dense and
    # the engine both floor (sum w) / 4, and sums of even weights can be 2 mod 4
    L = net.layers[1]
    w_rec = np.random.default_rng(2).integers(-125, 126, L.w_rec.shape) * 2
    np.fill_diagonal(w_rec, 0)
    net.layers[1] = replace(L, w_rec=w_rec, weight_exp_rec=-2)
    x = (np.random.default_rng(0).random((150, 5)) < 0.2).astype(float)
    r = compare_native(net, x)
    assert r["spikes_engine"] > 300
    assert r["spike_mismatches"] == 0 and r["readout_mismatches"] == 0
    out = run_native(net, x[:20])
    assert out["y"].shape == (20, 3) and np.any(out["y"] != 0)
    assert "Loihi2SimCfg" in out["backend"]  # no Loihi system here


@pytest.mark.lava
@needs_lava
def test_compile_deploy_native_and_run(tmp_path, capsys):
    from test_compile_artifact import make_checkpoint, small_spec

    ck = make_checkpoint(tmp_path, small_spec("lif"))
    assert main(["compile", str(ck), "--deploy", "native", "--out", str(tmp_path / "nat")]) == 0
    man = json.loads((tmp_path / "nat" / "manifest.json").read_text())
    assert man["target"]["deploy"] == "native" and man["native"]["placement"]
    assert "what runs where" in (tmp_path / "nat" / "report.md").read_text()
    capsys.readouterr()
    assert main(["run", str(tmp_path / "nat"), "--samples", "1", "--steps", "300", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["native"]
    assert r["steps"] == 300 and r["bit_exact"] and r["spikes_engine"] > 0
    alif = make_checkpoint(tmp_path, small_spec("alif"))
    assert main(["compile", str(alif), "--deploy", "native", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no standard Lava process" in err and not (tmp_path / "a").exists()
