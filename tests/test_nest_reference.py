"""NEST 3.10's published e-prop losses, reproduced without NEST.

Reference: nest/nest-simulator, tag v3.10 (commit
acca9704da248750219a027db99fec6cd1f9052a),
testsuite/pytests/synapses/test_eprop_bsshslm_2020_plasticity.py:
``test_eprop_regression`` (``loss_nest_reference``, 5 iterations) and
``test_eprop_classification`` (batch 1 and batch 2, 5 iterations each). The
networks, weights and inputs are rebuilt from the test's own seeded draws
(NumPy's legacy RandomState(1), same order; eprop_lava.nest_reference) and
trained with this toolkit's e-prop gradient and optimizer under the
"nest-bsshslm-2020" conventions. The published values have 12 decimals; the
toolkit reproduces them to about 1e-12 relative (docs/benchmarks.md), the
test asserts 1e-9 (the brief asks for 1e-6).
"""

import numpy as np
import pytest

from eprop_lava import nest_reference as nr


def _relative(losses, reference):
    return np.abs(np.asarray(losses) - np.asarray(reference)) / np.abs(np.asarray(reference))


def test_regression_reproduces_nest_losses():
    net = nr.regression_network()
    # the draws are the test's: spot values of NumPy's legacy stream with seed 1
    assert net.params["layers.0.w_in"].dtype == np.float64
    assert net.params["layers.0.w_in"][0, 0] == pytest.approx(np.float32(1.6243453636632417 / 10), rel=0)
    assert int(net.batches[0].x.sum()) == int(net.batches[0].x[1:].sum()) > 0   # first step silent
    losses, history = nr.train_losses(net)
    assert np.max(_relative(losses, nr.PUBLISHED_REGRESSION)) <= 1e-9
    # and the TensorFlow reference of the same test (float32 there: 1e-7 as NEST's test asserts)
    assert np.max(_relative(losses, nr.TF_REGRESSION)) <= 1e-7
    assert not np.allclose(history[-1]["layers.0.w_in"], net.params["layers.0.w_in"])


@pytest.mark.parametrize("batch_size", [1, 2])
def test_classification_reproduces_nest_losses(batch_size):
    net = nr.classification_network(batch_size)
    assert [b.x.shape for b in net.batches] == [(2250, batch_size, 40)] * 5
    losses, _ = nr.train_losses(net)
    assert np.max(_relative(losses, nr.PUBLISHED_CLASSIFICATION[batch_size])) <= 1e-9
    if batch_size == 1:
        assert np.max(_relative(losses, nr.TF_CLASSIFICATION)) <= 1e-6


def test_reference_needs_the_conventions():
    # Under this toolkit's own defaults the same network gives other losses: the match is the conventions'.
    net = nr.regression_network(n_iter=1)
    default = nr.ReferenceNetwork(net.spec.replace(conventions="eprop-lava"), net.params, net.batches)
    loss, _ = nr.train_losses(default)
    assert abs(loss[0] - nr.PUBLISHED_REGRESSION[0]) / nr.PUBLISHED_REGRESSION[0] > 1e-2
