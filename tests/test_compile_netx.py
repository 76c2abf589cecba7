"""netx HDF5 export: what netx cannot express is refused clearly; every
crafted case that lava-dl 0.6 netx would run differently from the engine
(odd input weights next to mixed-sign recurrent ones, a 255, a saturating
readout, an off-grid readout bias) is refused with its reason or converted,
and the export only succeeds after the file, read back and run through
lava.lib.dl.netx.hdf5.Network, reproduced the engine (Lava tests, marked)."""

import json

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.compile import netx
from eprop_lava.compile.netx import NetxError, check_netx, compare_netx, export_netx, write_netx
from eprop_lava.compile.quantize import quantize_network
from eprop_lava.engine.network import init_params
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec

needs_lava = pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc and lava-dl (Python 3.10)")


def net_of(neuron="lif", n_ref=0, layers=1, seed=3, size=16, n_in=8, grid="netx", positive_input=False):
    ls = tuple(LayerSpec(size=size, neuron=neuron, params=NeuronParams(n_ref=n_ref, v_th=0.5)) for _ in range(layers))
    spec = NetworkSpec(n_inputs=n_in, layers=ls, readout=ReadoutSpec(n_outputs=3), timing="loihi", reset="zero",
                       seed=seed)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    params["layers.0.w_in"] *= 1.5
    if positive_input:
        params["layers.0.w_in"] = np.abs(params["layers.0.w_in"]) * 2
    params["readout.b"] = np.array([0.1, -0.2, 0.05])
    return quantize_network(spec, params, 8, grid=grid)[0]


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
    net.layers[0].w_in[0, 0] = 3  # odd in a mixed-sign matrix: off Lava's 8-bit Dense grid
    with pytest.raises(NetxError, match="not on Lava's 8-bit Dense grid"):
        check_netx(net)
    net = net_of()
    net.readout.bias[:] = [100, 0, 64]
    with pytest.raises(NetxError, match="bias 100 is not a multiple of 64"):
        export_netx(net, tmp_path / "a.h5")
    net.readout.bias[:] = [64 * 4096, 0, 64]  # on the grid, but the mantissa needs 14 bits
    with pytest.raises(NetxError, match="exceeds netx's range"):
        check_netx(net, round_bias=True)
    assert not list(tmp_path.iterdir())


def test_netx_grid_puts_the_readout_bias_on_multiples_of_64():
    dense, netx_grid = net_of(grid="dense"), net_of(grid="netx")
    assert np.any(dense.readout.bias % 64 != 0)  # the smallest exponent: off netx's grid
    assert np.all(netx_grid.readout.bias % 64 == 0)
    # the same float bias within half a grid step (32 y units)
    assert np.max(np.abs(netx_grid.readout.bias - dense.readout.bias)) <= 32


def test_file_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    net = net_of()
    write_netx(net, tmp_path / "n.h5")
    with h5py.File(tmp_path / "n.h5") as f:
        g = f["layer/0"]
        assert g["type"][0] == b"dense_rec"
        np.testing.assert_array_equal(g["weight"][()], net.layers[0].w_in)
        np.testing.assert_array_equal(g["weight_rec"][()], net.layers[0].w_rec)
        assert int(g["neuron/iDecay"][()]) == int(net.layers[0].neuron.du) + 1
        assert int(g["neuron/vThMant"][()]) == int(net.layers[0].neuron.vth)
        r = f["layer/1"]
        # 2^17: v (clipped to 2^23 - 1) can never exceed vth 2^6 = 2^23
        assert r["type"][0] == b"dense" and int(r["neuron/vThMant"][()]) == 1 << 17
        assert int(r["neuron/vDecay"][()]) == net.readout.d_kappa
        np.testing.assert_array_equal(r["bias"][()] * 64, net.readout.bias)
        desc = json.loads(f.attrs["eprop_lava"])
    assert desc["readout_layer"] == 1 and desc["y_scale"] == pytest.approx(net.readout.y_scale)


def _crafted_odd_input(net):
    """All-positive odd input weights; mixed-sign even recurrent weights up to 200."""
    rng = np.random.default_rng(0)
    L = net.layers[0]
    L.w_in[:] = rng.integers(0, 128, L.w_in.shape) * 2 + 1
    L.w_rec[:] = rng.integers(-100, 100, L.w_rec.shape) * 2
    L.w_rec[0, 1] = 200
    np.fill_diagonal(L.w_rec, 0)
    return net


@pytest.mark.lava
@needs_lava
def test_odd_input_weights_next_to_mixed_recurrent_are_refused(tmp_path):
    from lava.lib.dl.netx.utils import optimize_weight_bits

    net = _crafted_odd_input(net_of(size=6, n_in=4))
    L = net.layers[0]
    # lava-dl's own optimisation of [w_in | w_rec] asks for 9 bits
    assert optimize_weight_bits(np.hstack([L.w_in, L.w_rec]))[1] == 9
    with pytest.raises(NetxError, match=r"layer 0 w_in: netx sets num_weight_bits = 9.*loses every weight"):
        export_netx(net, tmp_path / "n.h5")
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left


@pytest.mark.lava
@needs_lava
def test_255_is_refused_and_the_netx_grid_converts_it(tmp_path):
    dense = net_of(size=6, n_in=4, grid="dense", positive_input=True)
    # per-Dense grid: the all-positive input Dense holds 255 and odd values exactly
    assert dense.layers[0].w_in.max() == 255 and np.any(dense.layers[0].w_in % 2) and dense.layers[0].w_rec.min() < 0
    conv = net_of(size=6, n_in=4, grid="netx", positive_input=True)  # one grid for [w_in | w_rec]
    assert conv.layers[0].w_in.max() == 254 and not np.any(conv.layers[0].w_in % 2)
    one = conv.copy()
    one.layers[0].w_in[0, 0] = 255  # a single 255: netx clips it
    with pytest.raises(NetxError, match=r"layer 0 w_in: 1 weight\(s\) differ, e.g. \[0, 0\]: "
                                        r"engine 255, netx applies 254"):
        export_netx(one, tmp_path / "n.h5")
    info = export_netx(conv, tmp_path / "n.h5")
    v = info["verified"]
    assert v["steps"] == netx.VERIFY_STEPS and v["spikes_engine"] > 100
    assert v["spike_mismatches"] == 0 and v["readout_mismatches"] == 0


@pytest.mark.lava
@needs_lava
def test_saturating_readout_is_exported_as_non_spiking(tmp_path, monkeypatch):
    net = net_of(size=6, n_in=4)
    net.readout.w[:, :] = 254
    net.readout.d_kappa = 20      # slow leak: y climbs to the 24-bit limit
    net.readout.bias[:] = 64 * 4000
    x = netx.verification_input(4, steps=120)
    info = export_netx(net, tmp_path / "n.h5", x=x)
    v = info["verified"]
    assert v["readout_saturated_steps"] > 20   # the engine's y sits at 2^23 - 1
    assert v["readout_mismatches"] == 0 and v["readout_spikes"] == 0 and v["spike_mismatches"] == 0
    # the threshold 2^17 - 1 netx readouts usually get: the saturated readout fires and resets
    monkeypatch.setattr(netx, "VTH_NEVER", (1 << 17) - 1)
    write_netx(net, tmp_path / "old.h5")
    old = compare_netx(net, tmp_path / "old.h5", x)
    assert old["readout_spikes"] > 0 and old["readout_mismatches"] > 0


@pytest.mark.lava
@needs_lava
def test_rounded_bias_and_readout_in_float_units(tmp_path):
    net = net_of(size=6, n_in=4)
    net.readout.bias[:] = [100, -30, 64]
    info = export_netx(net, tmp_path / "n.h5", round_bias=True)
    assert info["readout_bias_rounding"] == 30  # 100 -> 128 (28), -30 -> 0 (30), 64 stays
    assert info["verified"]["readout_mismatches"] == 0
    x = netx.verification_input(4, steps=60, seed=1)
    out = netx.netx_readout(tmp_path / "n.h5", x)
    ref = netx.netx_network(net)
    import eprop_lava.engine.fixed_engine as fe

    y = fe.simulate(ref, x[:, None, :]).y[:, 0, :] / net.readout.y_scale
    np.testing.assert_array_equal(out["y"], y)
    np.testing.assert_array_equal(out["argmax"], np.argmax(y, axis=1))


@pytest.mark.lava
@needs_lava
def test_trained_network_round_trip(tmp_path):
    from eprop_lava.tasks.evidence import EvidenceAccumulation
    from eprop_lava.training import TrainConfig, train

    task = EvidenceAccumulation(n_cues=3, cue_ms=20, spacing_ms=10, delay_ms=40, recall_ms=30)
    spec = task.default_spec()
    layer = spec.layers[0]
    layer = layer.__class__(**{**layer.__dict__, "size": 12, "neuron": "lif",
                               "params": NeuronParams(n_ref=0, v_th=layer.params.v_th)})
    spec = spec.replace(layers=(layer,), timing="loihi", reset="zero")
    cfg = TrainConfig(batch_size=4, iterations=3, validate_every=3, validation_batches=1, checkpoint_every=3,
                      progress=False, seed=5, dtype="float64")
    res = train(task, spec, cfg, tmp_path / "run", resume=False)
    net = quantize_network(spec, res.params, 8, grid="netx")[0]
    b = task.batch(np.random.default_rng(1), 4).x  # four samples back to back
    x = b.transpose(1, 0, 2).reshape(-1, b.shape[2])
    info = export_netx(net, tmp_path / "n.h5", x=x)
    v = info["verified"]
    assert v["steps"] == x.shape[0] and v["spikes_engine"] > 40, v
    assert v["spike_mismatches"] == 0 and v["readout_mismatches"] == 0


@pytest.mark.lava
@needs_lava
def test_two_layer_chain_round_trip(tmp_path):
    from eprop_lava.engine import fixed_engine as fe

    net = net_of(layers=2, size=8, n_in=5)
    net.readout.w[:, fe.layer_slices(net.spec)[0]] = 0  # netx's chain: only the last layer drives the readout
    x = netx.verification_input(5, steps=150, rate=0.3)
    assert all(z.sum() > 100 for z in fe.simulate(net, x[:, None, :]).z)  # both layers spike
    info = export_netx(net, tmp_path / "n.h5", x=x)
    v = info["verified"]
    assert info["layers"] == 3
    assert v["spike_mismatches"] == 0 and v["readout_mismatches"] == 0
