"""The learning-engine variant of the e-prop synapse (Loihi3FLearningRule on
LearningDense, EpropLearningLIF) and the import-safety helper. Marked
``lava``; about 15 s on 2 cores."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.lava

if importlib.util.find_spec("lava") is None:  # pragma: no cover - depends on the environment
    pytest.skip("lava-nc is not installed (needs Python 3.10 and pip install 'eprop-lava[lava]')",
                allow_module_level=True)

from eprop_lava.fixed import LearningRate  # noqa: E402
from eprop_lava.models import learning_engine as LE  # noqa: E402
from eprop_lava.neurons import fixed as fx  # noqa: E402
from eprop_lava.processes.learning_engine import (  # noqa: E402
    LearningEngineError, eprop_learning_rule, m2e, nearest_m2e, product_shift,
)


def test_rule_strings_compile_to_the_expected_products():
    rule = eprop_learning_rule(dv=205, d_kappa=512, lr=LearningRate(1, -8), pairing="delay")
    assert rule.dt == "4*2^-4*u0*y1*d - 2^-3*u0*t"
    assert rule.dw == "-2^-7*u0*t*y2 + 2^-7*u0*t*y3"
    assert rule.dd == "u0*x1 - u0*d"
    assert rule.x1_tau == pytest.approx(-1.0 / np.log(3891 / 4096))
    lava_rule = rule.learning_rule()
    dt = [(p.dependency, p.s_mantissa, p.s_exp, [f.state_var for f in p.factors]) for p in lava_rule.dt.products]
    assert dt == [("u", 4, 3, ["y1", "d"]), ("u", -1, 4, ["t"])]  # s_exp stores e + 7
    dw = [(p.s_mantissa, p.s_exp, [f.state_var for f in p.factors]) for p in lava_rule.dw.products]
    assert dw == [(-1, 0, ["t", "y2"]), (1, 0, ["t", "y3"])]
    raw = eprop_learning_rule(dv=205, d_kappa=512, lr=LearningRate(1, -8), pairing="raw")
    assert raw.dt == "4*2^-6*u0*y1*x1 - 2^-3*u0*t" and raw.dd is None
    raw.learning_rule()


def test_constants_follow_the_engine_limits():
    assert product_shift(7, 9) == 5 and product_shift(7, 7) == 3 and product_shift(9) == 0
    assert m2e(0.25, "c") == (4, -4)            # largest mantissa: fewer low bits lost before the shift
    assert nearest_m2e(410 / 4096) == (3, -5)   # kappa 0.9 is not representable: 0.09375
    with pytest.raises(LearningEngineError, match="learning rate"):
        eprop_learning_rule(dv=205, d_kappa=512, lr=LearningRate(1, -9))  # below the smallest, 2^-8
    with pytest.raises(LearningEngineError, match="pairing"):
        eprop_learning_rule(dv=205, d_kappa=512, lr=LearningRate(1, -8), pairing="late")


def test_tag_follows_the_eprop_recursion_on_a_hand_computable_case():
    """One LIF held by its bias at psi = 64, one input spiking at steps 1 and 3,
    no learning signal, kappa = 1/2 (d_kappa = 2048), x1 forgotten after a step
    (dv = 4095). Expected t^k = t^{k-1} / 2 + 64 * 16 / 2^7 * [pre spike at k-1]:
    0, 8, 4, 2 + 8, 5 (then halves with stochastic rounding)."""
    p = fx.FixedNeuronParams("lif", 1, vth=100)
    bias = next(v for v in range(1, 6400) if fx.psi_lif(np.array([v]), p.vth_scaled, p)[0] == 64)
    T = 8
    x = np.zeros((T, 3), dtype=np.int64)
    x[0, 0] = x[2, 0] = 1
    w = np.array([[0, 2, -2]])  # mixed sign (Lava's sign mode); inputs 1, 2 never spike
    rule = eprop_learning_rule(dv=4095, d_kappa=2048, lr=LearningRate(1, -8), rng_seed=0)
    run = LE.run_learning_engine(x, np.zeros((T, 1), dtype=np.int64), w, rule, du=4095, dv=4095, vth=100,
                                 bias_mant=bias, monitor_tag=True, timeout=60)
    assert run["psi"].ravel().tolist() == [64] * T
    hist = run["tag_history"][:, 0, 0]
    assert hist[:5].tolist() == [0, 8, 4, 10, 5]
    assert all(abs(2 * b - a) <= 1 for a, b in zip(hist[4:], hist[5:]))  # halving, rounded either way
    assert run["weights"].tolist() == w.tolist()  # no learning signal, no weight change
    em = LE.emulate_learning_engine(x, run["psi"], np.zeros((T, 1)), w, rule)
    assert em["tag"].tolist() == run["tag"].tolist()


@pytest.fixture(scope="module")
def comparison():
    return LE.compare_learning_engine(T=200, seeds=(0,), extra_runs=False, timeout=90)


def test_learning_lif_sends_traces_and_matches_the_reference_neuron(comparison):
    main = comparison["main"]["0"]
    assert main["psi_mismatches"] == 0 and main["z_mismatches"] == 0
    assert main["post_rate"] > 0.02


def test_emulator_and_reference_are_bit_exact(comparison):
    main = comparison["main"]["0"]
    assert main["emulator_mismatches"] == 0                    # numpy model == Lava's LearningDense
    assert main["reference_lava_epropdense_mismatches"] == 0   # numpy reference == Lava EpropDense


def test_weight_changes_agree_with_the_exact_reference(comparison):
    main = comparison["main"]["0"]
    # the eligibility reset at post spikes is the one structural difference
    nocut = main["dw_vs_reference_without_reset_cut"]
    assert nocut["cosine"] > 0.95 and nocut["sign_agreement"] > 0.9 and nocut["rel_error"] < 0.6
    assert main["dw_vs_reference"]["cosine"] > 0.6
    assert main["tag_vs_reference_without_reset_cut"]["cosine"] > 0.95
    # the reference's rounding of traces and tags explains most of the rest
    arith = comparison["causes"]["engine_arithmetic"]
    assert arith["reference_rounding"]["vs_reference_without_reset_cut"]["rel_error"] < nocut["rel_error"]
    assert arith["engine"]["vs_float_without_reset_cut"]["cosine"] > 0.95


def test_lava_import_is_safe_after_the_start_method_was_fixed():
    # without the guard, Lava's runtime module raises "context has already been set"
    # (at import of lava.proc.io.extractor, or at the first run)
    code = ("import multiprocessing as mp; mp.set_start_method('spawn'); "
            "import eprop_lava.models, eprop_lava.processes.learning_engine; "
            "import lava.proc.io.extractor, lava.magma.runtime.runtime; "
            "assert mp.get_start_method() == 'fork', mp.get_start_method(); "
            "assert mp.set_start_method.__module__ == 'multiprocessing.context'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")
