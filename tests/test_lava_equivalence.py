"""Lava equivalence: Lava fixed_pt == our fixed-point code
bit for bit, floating_pt == the float engine. Marked ``lava``; skipped with a
reason when lava-nc is not importable. Lava runs are shared through
module-scoped fixtures (about 1-2 minutes on 2 cores)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.lava

if importlib.util.find_spec("lava") is None:  # pragma: no cover - depends on the environment
    pytest.skip("lava-nc is not installed (needs Python 3.10 and pip install 'eprop-lava[lava]')",
                allow_module_level=True)

from eprop_lava import lava_checks as C  # noqa: E402


@pytest.fixture(scope="module")
def lif_results():
    return C.check_lif_bitacc(steps=1500, timeout=240)


@pytest.fixture(scope="module")
def fixed_results():
    return C.check_networks_fixed(S=2, T=30, timeout=240)


@pytest.fixture(scope="module")
def float_results():
    return C.check_networks_float(S=2, T=25, timeout=240)


@pytest.mark.parametrize("case", list(C.LIF_CASES))
def test_lif_and_dense_match_lava_bit_accurate_models(lif_results, case):
    res = lif_results[case]
    assert res["mismatches"] == {"s": 0, "u": 0, "v": 0}
    assert res["steps"] == 1500 and res["negative_weights"] > 0


def test_lif_edge_cases_are_exercised(lif_results):
    edge = lif_results["wrap_saturate"]
    assert edge["u_wraps"] > 0 and edge["v_saturated"] > 0 and edge["spikes"] > 0
    assert lif_results["regular"]["spikes"] > 0 and lif_results["low_bits_inhibitory"]["spikes"] > 0


def test_lava_lif_hand_sequence():
    """Lava itself: weight 100, one spike at t=1 -> u(2)=6400, u(3)=5759 (du=409)."""
    x = np.zeros((4, 1), dtype=np.int64)
    x[0, 0] = 1
    case = (1, 1, 409, 0, 100000, 0, 0, 0, 8)
    out = C.lif_lava(x, np.array([[100]]), np.array([[0]]), case, timeout=120)
    assert out["u"][:, 0].tolist() == [0, 6400, 5759, 5182]
    assert np.array_equal(out["u"], C.lif_reference(x, np.array([[100]]), np.array([[0]]), case)["u"])


@pytest.mark.parametrize("case", [c[0] for c in C.NETWORK_CASES])
def test_fixed_networks_with_learning_match_engine(fixed_results, case):
    (key, res), = [(k, v) for k, v in fixed_results.items() if k.startswith(case + "/")]
    assert all(v == 0 for v in res["mismatches"].values()), (key, res["mismatches"])
    assert res["weights_changed"] > 0 and res["spikes"] > 0, key


@pytest.mark.parametrize("kind", ["lif", "alif", "stdp_alif", "izhikevich"])
def test_float_networks_match_float_engine(float_results, kind):
    res = float_results[kind]
    assert all(v == 0 for v in res["mismatches"].values())
    assert res["max_abs_y_error"] <= C.FLOAT_TOL and res["spikes"] > 0


def test_hierarchical_rsnn_process_matches_flat_graph():
    from eprop_lava.engine import fixed_engine as fe
    from eprop_lava.engine.network import init_params
    from eprop_lava.models.network import run_network

    spec = C._spec("lif")
    net = fe.quantize(spec, init_params(spec, 3), "loihi2")
    x, target, mask = C._data(spec, 1, 20, seed=2)
    out = run_network(x, net=net, hierarchical=True, timeout=120)
    run = fe.simulate(net.copy(), x[0][:, None])
    assert np.array_equal(out["z"][0], run.z[0][:, 0]) and np.array_equal(out["y"], run.y[:, 0])


def test_processes_validate_parameters():
    from eprop_lava.processes import EpropDense, EpropLIF

    with pytest.raises(ValueError, match="weights"):
        EpropDense(weights=np.zeros(3))
    with pytest.raises(ValueError, match="learn=True"):
        EpropDense(weights=np.zeros((2, 2)), learn=True)
    with pytest.raises(ValueError, match="fixed= .*layer="):
        EpropLIF(n=3)


@pytest.mark.parametrize("kind", ["stdp_alif", "izhikevich"])
def test_lava_learns_the_compiled_engines_weights_with_saturating_widths(kind):
    """Lava fixed_pt against the compiled engine (fe.train_online runs the
    compiled loops when numba is present) with widths chosen to clip: a 8-bit
    accumulator, 5-bit tags and traces, updates every 7 steps with stochastic
    rounding, over two samples. Every spike and every learned weight equal."""
    from eprop_lava import fixed as F
    from eprop_lava.engine import fixed_engine as fe
    from eprop_lava.engine.network import init_params
    from eprop_lava.models.network import run_network

    spec = C._spec(kind, "random", "cross_entropy")
    prof = F.loihi2_profile(update_interval=7, accumulator_bits=8, tag_bits=5, trace_bits=5, trace_impulse=12,
                            product_shift=0)
    net = fe.quantize(spec, init_params(spec, 3), prof)
    x, target, mask = C._data(spec, 2, 30, seed=5)
    engine = net.copy()
    acc = []
    runs = fe.train_online(engine, [(x[s][:, None], target[s][:, None], mask[s][:, None]) for s in range(2)])
    def record_then_update(n, si, sr, so, rngs, sl):  # the engine's own update, after a look at acc
        acc.extend(s["acc"].copy() for s in si)
        fe._update_all(n, si, sr, so, rngs, sl)

    fe.simulate(net.copy(), x[0][:, None], target[0][:, None], mask[0][:, None], learn=True,
                on_update=record_then_update)
    lo, hi = prof.accumulator_range
    assert any(np.any((a == lo) | (a == hi)) for a in acc)  # the accumulator did clip
    lava = run_network(x, net=net, target=target, mask=mask, learn=True, weights=True, timeout=240)
    for r in range(len(spec.layers)):
        np.testing.assert_array_equal(np.concatenate([ru.z[r][:, 0] for ru in runs]), lava["z"][r])
    changed = 0
    for k, w in engine.weights().items():
        if k != "feedback.b":  # B lags one update in Lava by design (lava_checks)
            np.testing.assert_array_equal(w, lava["weights"][k], err_msg=k)
            changed += int((w != net.weights()[k]).sum())
    assert changed > 0
