"""NEST 3.10's event-based e-prop models (eprop_iaf, eprop_iaf_adapt,
eprop_readout), reproduced without NEST where the toolkit can express them.

Reference: nest/nest-simulator, tag v3.10 (commit
acca9704da248750219a027db99fec6cd1f9052a),
testsuite/pytests/synapses/test_eprop_plasticity.py: ``test_eprop_regression``
(``loss_nest_reference``, 5 iterations of 100 steps) for eprop_iaf (Adam) and
eprop_iaf_adapt (gradient descent). The network is rebuilt from the test's
seeded draws (eprop_lava.nest_reference.eventbased_network) under the
"nest-eprop" conventions.

What matches: the forward pass. With the weights frozen, the toolkit gives
the losses NEST 3.10.0 gives with eta = 0 (measured by
benchmarks/nest/nest_eventbased_losses.py) bit for bit (compare_nest_eventbased.py;
the constants here have 12 decimals, hence the tolerances). What does not: NEST's learning updates every
weight at every step inside the sequence and carries the state from one
sequence into the next; this toolkit updates once per batch from a reset
state (docs/benchmarks.md section 8). Where the learning barely moves the
loss (eprop_iaf_adapt, eta = 1e-4 (1 - kappa)^2 = 9e-8) the published
losses are met to 3e-4; where it does (eprop_iaf with Adam) only the first
iteration is, to 0.6 %.
"""

import numpy as np
import pytest

from eprop_lava import nest_reference as nr


def _relative(losses, reference):
    return np.abs(np.asarray(losses) - np.asarray(reference)) / np.abs(np.asarray(reference))


@pytest.mark.parametrize("model, tolerance", [("eprop_iaf", 1e-10), ("eprop_iaf_adapt", 1e-8)])
def test_forward_pass_matches_nest_without_learning(model, tolerance):
    net = nr.eventbased_network(model)
    # the draws are the test's: spot value of NumPy's legacy stream with seed 1, times 1 - kappa
    assert net.params["layers.0.w_in"][0, 0] == pytest.approx(np.float32(1.6243453636632417 / 10) * 0.03, rel=1e-7)
    assert net.batches[0].x.shape == (500, 1, 100)
    assert np.max(_relative(nr.eventbased_losses(net), nr.NEST_EVENTBASED_FROZEN[model])) <= tolerance


def test_published_losses_where_learning_is_negligible():
    losses = nr.eventbased_losses(nr.eventbased_network("eprop_iaf_adapt"))
    assert np.max(_relative(losses, nr.PUBLISHED_EVENTBASED["eprop_iaf_adapt"])) <= 5e-4


def test_published_losses_with_adam_differ_after_the_first_iteration():
    # NEST's per-step Adam updates move the loss by up to 63 % within 5 sequences; the frozen forward
    # pass meets only the first iteration (0.59 %).
    rel = _relative(nr.eventbased_losses(nr.eventbased_network("eprop_iaf")), nr.PUBLISHED_EVENTBASED["eprop_iaf"])
    assert rel[0] <= 1e-2
    assert rel[-1] > 0.5


def test_the_match_needs_the_same_step_reset():
    # The reset of the bsshslm_2020 models (next step: - z^t v_th) gives other spikes, other losses.
    net = nr.eventbased_network("eprop_iaf")
    other = nr.ReferenceNetwork(net.spec.replace(conventions={"preset": "nest-eprop", "reset_timing": "next_step"}),
                                net.params, net.batches)
    assert np.max(_relative(nr.eventbased_losses(other), nr.NEST_EVENTBASED_FROZEN["eprop_iaf"])) > 1e-2


def test_same_step_reset_by_hand():
    # one LIF neuron, constant input 0.3, v_th 1, alpha = exp(-1/10):
    # same step: v^{t+1} = alpha (v^t - z^t) + 0.3; next step: v^{t+1} = alpha v^t + 0.3 - z^t
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.network import simulate
    from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec, SpecError

    def by_hand(same_step):
        alpha, v, z, out = np.exp(-0.1), 0.0, 0.0, []
        for _ in range(12):
            v = alpha * (v - z) + 0.3 if same_step else alpha * v + 0.3 - z
            z = float(v >= 1.0)
            out.append(z)
        return out

    spec = NetworkSpec(n_inputs=1, layers=(LayerSpec(size=1, neuron="lif", params=NeuronParams(
        tau_m=10.0, v_th=1.0, n_ref=0)),), readout=ReadoutSpec(n_outputs=1), conventions="nest-eprop")
    p = {"layers.0.w_in": np.ones((1, 1)), "layers.0.w_rec": np.zeros((1, 1)), "readout.w": np.ones((1, 1)),
         "readout.b": np.zeros(1), "feedback.b": np.ones((1, 1))}
    for fused in (False, True):
        ops = make_ops("numpy", dtype="float64", fused=fused)
        for same_step in (True, False):
            run = spec.replace(conventions={"preset": "nest-eprop",
                                            "reset_timing": "same_step" if same_step else "next_step"})
            z = np.asarray(simulate(run, p, np.full((12, 1, 1), 0.3), ops).z[0])[:, 0, 0]
            assert z.tolist() == by_hand(same_step)
    assert by_hand(True) != by_hand(False)
    with pytest.raises(SpecError, match="reset_timing"):
        spec.replace(reset="zero")


def test_same_step_reset_has_no_fixed_point_form():
    from eprop_lava.engine.network import fold_conventions
    from eprop_lava.spec import SpecError

    net = nr.eventbased_network("eprop_iaf", n_iter=1)
    with pytest.raises(SpecError, match="reset_timing"):
        fold_conventions(net.spec, net.params)
