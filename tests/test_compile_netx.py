"""netx HDF5 export: what netx cannot express is refused clearly; a LIF
network round-trips through lava.lib.dl.netx.hdf5.Network with 0 spike
mismatches against the fixed-point engine (Lava, marked)."""

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.compile.netx import NetxError, check_netx, compare_netx, export_netx
from eprop_lava.compile.quantize import quantize_network
from eprop_lava.engine.network import init_params
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec

needs_lava = pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc and lava-dl (Python 3.10)")


def net_of(neuron="lif", n_ref=0, layers=1, seed=3):
    ls = tuple(LayerSpec(size=16, neuron=neuron, params=NeuronParams(n_ref=n_ref, v_th=0.5)) for _ in range(layers))
    spec = NetworkSpec(n_inputs=8, layers=ls, readout=ReadoutSpec(n_outputs=3), timing="loihi", reset="zero",
                       seed=seed)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    params["layers.0.w_in"] *= 1.5
    params["readout.b"] = np.array([0.1, -0.2, 0.05])
    return quantize_network(spec, params, 8)[0]


def test_refusals_name_the_reason(tmp_path):
    with pytest.raises(NetxError, match="no adaptive-threshold neuron"):
        export_netx(net_of("alif"), tmp_path / "a.h5")
    with pytest.raises(NetxError, match="no Izhikevich neuron"):
        check_netx(net_of("izhikevich"))
    with pytest.raises(NetxError, match="refractory period of 5 steps"):
        check_netx(net_of(n_ref=5))
    with pytest.raises(NetxError, match="learning synapses"):
        check_netx(net_of(), learning=True)
    with pytest.raises(NetxError, match="layers other than the last"):
        check_netx(net_of(layers=2))
    net = net_of()
    net.layers[0].w_in[0, 0] = 3  # odd: off the mixed-sign 8-bit grid
    with pytest.raises(NetxError, match="not on Lava's 8-bit Dense grid"):
        check_netx(net)
    assert not (tmp_path / "a.h5").exists()


def test_file_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    net = net_of()
    info = export_netx(net, tmp_path / "n.h5")
    assert info["layers"] == 2 and info["readout_bias_rounding"] <= 32
    with h5py.File(tmp_path / "n.h5") as f:
        g = f["layer/0"]
        assert g["type"][0] == b"dense_rec"
        np.testing.assert_array_equal(g["weight"][()], net.layers[0].w_in)
        np.testing.assert_array_equal(g["weight_rec"][()], net.layers[0].w_rec)
        assert int(g["neuron/iDecay"][()]) == int(net.layers[0].neuron.du) + 1
        assert int(g["neuron/vThMant"][()]) == int(net.layers[0].neuron.vth)
        r = f["layer/1"]
        assert r["type"][0] == b"dense" and int(r["neuron/vThMant"][()]) == (1 << 17) - 1
        assert int(r["neuron/vDecay"][()]) == net.readout.d_kappa


@pytest.mark.lava
@needs_lava
def test_netx_round_trip_zero_spike_mismatches(tmp_path):
    net = net_of()
    export_netx(net, tmp_path / "n.h5")
    x = (np.random.default_rng(0).random((2000, 8)) < 0.1).astype(float)
    r = compare_netx(net, tmp_path / "n.h5", x)
    assert r["spikes_engine"] > 1000  # the comparison means something
    assert r["spike_mismatches"] == 0
    assert r["readout_mismatches"] == 0
