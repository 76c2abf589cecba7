"""Seed 004's teacher-student paradigm: checks independent of the training code.

* A student at the teacher's weights: its output equals the target, so the
  MSE is 0 and every gradient (fast e-prop with symmetric and random
  feedback, BPTT on the full graph and on e-prop's graph) is 0: each is a
  product with the output error y - y* (analytic).
* The permutation-resolved distance on a crafted pair, by hand.
* Full BPTT on a tiny teacher (2 hidden + 1 output) pulls a student started
  at teacher + 30% noise towards the teacher: measured 0.186 -> 0.133
  (factor 0.72) with the setting below; asserted below 0.8.
"""

import math

import numpy as np
import pytest

from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient
from eprop_lava.engine.network import simulate
from eprop_lava.eprop.optim import Optimizer
from eprop_lava.spec import LearningSpec, OptimizerSpec
from eprop_lava.tasks.teacher_student import (
    TeacherStudent, parameter_distance, permutation_resolved_distance, permute_hidden,
)
from eprop_lava.training import apply_update


@pytest.fixture(scope="module")
def tiny():
    return TeacherStudent(n_inputs=4, n_neurons=2, n_outputs=1, duration_ms=100.0, input_hz=50.0,
                          teacher_rate_hz=20.0)


def _spec(task, variant, lr=1e-2):
    return task.default_spec().replace(learning=LearningSpec(variant=variant),
                                       optimizer=OptimizerSpec(kind="adam", lr=lr))


@pytest.mark.parametrize("algorithm", ["eprop_symmetric", "eprop_random", "bptt_full", "bptt_eprop_graph"])
def test_student_at_teacher_has_zero_mse_and_zero_gradient(tiny, algorithm):
    batch = tiny.batch(np.random.default_rng(7), 3)
    assert np.std(batch.target) > 0.1  # a target that varies: the zero below is not trivial
    variant = "random" if algorithm == "eprop_random" else "symmetric"
    spec = _spec(tiny, variant)
    params = {k: v.copy() for k, v in tiny.teacher_params.items()}
    if variant == "random":
        params["feedback.b"] = np.random.default_rng(0).standard_normal((2, 1))
    y = np.asarray(simulate(spec, params, batch.x, make_ops("numpy", dtype="float64"), record=False).y)
    assert tiny.metric(y, batch) == 0.0
    if algorithm.startswith("bptt"):
        loss, grads, _ = bptt_gradient(spec, params, batch, graph="full" if algorithm == "bptt_full" else "eprop")
    else:
        loss, grads, _ = eprop_gradient(spec, params, batch)
    assert float(loss) == 0.0
    assert set(grads) >= {"layers.0.w_in", "layers.0.w_rec", "readout.w", "readout.b"}
    for name, g in grads.items():
        np.testing.assert_array_equal(np.asarray(g), 0.0, err_msg=name)


def _crafted_teacher():
    return {"layers.0.w_in": np.array([[1.0, 0.0], [0.0, 2.0]]),
            "layers.0.w_rec": np.array([[0.0, 1.0], [0.0, 0.0]]),
            "readout.w": np.array([[2.0, 0.0]]),
            "readout.b": np.array([1.0])}


def test_permutation_resolved_distance_on_a_crafted_pair():
    teacher = _crafted_teacher()  # ||T||^2 = 1 + 4 + 1 + 4 + 1 = 11
    # The student: the teacher with its two neurons swapped, and its bias 1 higher.
    student = {"layers.0.w_in": np.array([[0.0, 2.0], [1.0, 0.0]]),
               "layers.0.w_rec": np.array([[0.0, 0.0], [1.0, 0.0]]),
               "readout.w": np.array([[0.0, 2.0]]),
               "readout.b": np.array([2.0])}
    # Without the permutation: w_in 1+4+1+4, w_rec 1+1, readout.w 4+4, bias 1 -> 21.
    assert parameter_distance(student, teacher)["all.rel_distance"] == pytest.approx(math.sqrt(21 / 11), abs=1e-12)
    # Swapped back only the bias differs: sqrt(1 / 11).
    for exact_up_to in (7, 0):  # every permutation, and the assignment + swaps path
        r = permutation_resolved_distance(student, teacher, exact_up_to=exact_up_to)
        assert r["all.rel_distance"] == pytest.approx(math.sqrt(1 / 11), abs=1e-12)
        assert r["permutation"] == [1, 0] and r["exact"] == (exact_up_to == 7)
        assert r["readout.b.rel_distance"] == pytest.approx(1.0, abs=1e-12)
    # Neurons of different kinds (e.g. LIF and ALIF) may not be swapped.
    r = permutation_resolved_distance(student, teacher, groups=[0, 1])
    assert r["all.rel_distance"] == pytest.approx(math.sqrt(21 / 11), abs=1e-12) and r["permutation"] == [0, 1]
    # permute_hidden by hand: P W_rec P^T moves the 1 from (0, 1) to (1, 0).
    np.testing.assert_array_equal(permute_hidden(teacher, [1, 0])["layers.0.w_rec"], [[0.0, 0.0], [1.0, 0.0]])


def test_permutation_resolved_distance_finds_a_hidden_permutation_of_12_neurons():
    rng = np.random.default_rng(0)
    n = 12
    teacher = {"layers.0.w_in": rng.normal(size=(n, 4)), "layers.0.w_rec": rng.normal(size=(n, n)),
               "readout.w": rng.normal(size=(2, n)), "readout.b": rng.normal(size=2)}
    np.fill_diagonal(teacher["layers.0.w_rec"], 0.0)
    order = rng.permutation(n)
    noise = {k: 0.01 * rng.normal(size=np.shape(v)) for k, v in teacher.items()}
    student = {k: v + noise[k] for k, v in permute_hidden(teacher, order).items()}
    r = permutation_resolved_distance(student, teacher)
    assert not r["exact"]
    np.testing.assert_array_equal(order[r["permutation"]], np.arange(n))
    # The residual is the noise, renumbered with the student: ||noise|| / ||T||.
    norm_t = math.sqrt(sum(float(np.sum(v ** 2)) for v in teacher.values()))
    norm_n = math.sqrt(sum(float(np.sum(v ** 2)) for v in noise.values()))
    assert r["all.rel_distance"] == pytest.approx(norm_n / norm_t, rel=1e-9)


def test_full_bptt_pulls_a_tiny_student_towards_the_teacher(tiny):
    spec = _spec(tiny, "symmetric", lr=1e-2)
    params = tiny.student_near_teacher(np.random.default_rng(3), 0.3, spec)
    optimizer = Optimizer(spec.optimizer)
    rng = np.random.default_rng(4)
    start = tiny.permutation_resolved_distance(params)["all.rel_distance"]
    for _ in range(20):
        _, grads, _ = bptt_gradient(spec, params, tiny.batch(rng, 4), graph="full")
        apply_update(spec, params, optimizer, grads)
    end = tiny.permutation_resolved_distance(params)["all.rel_distance"]
    assert start == pytest.approx(0.186, abs=0.005)
    assert end < 0.8 * start, (start, end)
