"""Pattern generation, store-recall and teacher-student task generators."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eprop_lava.engine.gradients import eprop_gradient
from eprop_lava.engine.network import init_params
from eprop_lava.eprop.optim import Optimizer
from eprop_lava.tasks import get_task
from eprop_lava.tasks.pattern import PatternGeneration, sum_of_sines
from eprop_lava.tasks.store_recall import RECALL, STORE, StoreRecall
from eprop_lava.tasks.teacher_student import TeacherStudent, parameter_distance


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------ pattern generation
@pytest.mark.parametrize("kind,n_in", [("clock", 20), ("poisson", 100)])
def test_pattern_shapes_and_spec(kind, n_in):
    task = PatternGeneration(input=kind)
    b = task.batch(rng(), 3)
    assert b.x.shape == (1000, 3, n_in) and b.target.shape == (1000, 3, 1) and b.mask.shape == (1000, 3)
    spec = task.default_spec()
    assert spec.n_inputs == n_in and spec.loss == "mse" and spec.readout.n_outputs == 1
    assert spec.layers[0].size == 100 and spec.layers[0].neuron == "lif"   # the official code's size
    assert PatternGeneration(input=kind, n_neurons=600).default_spec().layers[0].size == 600  # the thesis's
    assert spec.layers[0].params.v_th == 0.41 and spec.layers[0].params.n_ref == 3
    assert spec.optimizer.lr == 3e-3 and spec.optimizer.lr_decay == 0.7 and spec.optimizer.lr_decay_every == 100
    assert spec.learning.variant == "random" and spec.regularization.target_hz == 10.0
    # The mask makes the loss the time average of each sample.
    np.testing.assert_allclose(b.mask.sum(0), 1.0)


def test_pattern_target_is_the_normalized_sum_of_sines():
    task = PatternGeneration(seed=7)
    a, phi = task.amplitudes[0], task.phases[0]
    assert np.all((a >= 0.5) & (a <= 2.0)) and np.all((phi >= 0) & (phi <= 2 * np.pi))
    t = np.arange(1000) / 1000.0  # seconds
    s = sum(a[i] * np.sin(2 * np.pi * f * t + phi[i]) for i, f in enumerate((1, 2, 3, 5)))
    s = (s - s[0]) / np.abs(s - s[0]).max()
    np.testing.assert_allclose(task.batch(rng(), 2).target[:, 1, 0], s, atol=1e-12)
    assert task.pattern[0, 0] == 0.0 and np.isclose(np.abs(task.pattern).max(), 1.0)
    raw = sum_of_sines(1000, 1.0, (1, 2, 3, 5), a, phi, normalize=False)
    np.testing.assert_allclose(PatternGeneration(seed=7, normalize=False).pattern[:, 0], raw)


def test_pattern_clock_groups_fire_only_in_their_window():
    task = PatternGeneration(input="clock")
    x = task.batch(rng(), 1).x[:, 0, :]
    for g in range(5):
        cols = slice(4 * g, 4 * g + 4)
        start, stop = task.clock_window(g)
        assert (start, stop) == (200 * g, 200 * g + 200)
        assert x[:start, cols].sum() == 0 and x[stop:, cols].sum() == 0
        # 50 Hz regular trains: 10 spikes per neuron in 200 ms.
        np.testing.assert_array_equal(x[start:stop, cols].sum(0), 10)


def test_pattern_is_frozen_by_task_seed():
    a, b = PatternGeneration(input="poisson", seed=3), PatternGeneration(input="poisson", seed=3)
    np.testing.assert_array_equal(a.batch(rng(1), 2).x, b.batch(rng(2), 2).x)
    np.testing.assert_array_equal(a.pattern, b.pattern)
    c = PatternGeneration(input="poisson", seed=4)
    assert not np.array_equal(a.pattern, c.pattern)
    rate = a.input_spikes.mean() * 1000
    assert 45 < rate < 55


def test_pattern_metric_and_bad_options():
    task = PatternGeneration()
    b = task.batch(rng(), 2)
    assert task.metric(b.target, b) == 0.0
    assert np.isclose(task.metric(np.zeros_like(b.target), b), np.mean(b.target ** 2))
    with pytest.raises(ValueError, match="input"):
        PatternGeneration(input="sine")
    with pytest.raises(ValueError, match="n_clock_inputs"):
        PatternGeneration(n_clock_inputs=21)


def test_pattern_generation_loss_decreases_with_eprop():
    """30 Adam steps of random e-prop on a 100-neuron network reduce the MSE."""
    task = PatternGeneration(n_neurons=100)
    spec = task.default_spec()
    params = init_params(spec, 1)
    opt = Optimizer(spec.optimizer)
    batch = task.batch(rng(), 1)
    mse = []
    for _ in range(30):
        _, grads, traj = eprop_gradient(spec, params, batch)
        mse.append(task.metric(np.asarray(traj.y), batch))
        grads.pop("feedback.b", None)
        for k, d in opt.deltas(grads).items():
            params[k] = params[k] + d
    assert np.mean(mse[-5:]) < 0.5 * mse[0], mse


# ------------------------------------------------------------------ store-recall
def test_store_recall_shapes_and_spec():
    task = StoreRecall()
    b = task.batch(rng(), 6)
    assert b.x.shape == (1600, 6, 100) and b.target.shape == (1600, 6, 2) and b.labels.shape == (6,)
    spec = task.default_spec()
    layer = spec.layers[0]
    assert layer.size == 20 and layer.n_adaptive == 10 and spec.loss == "cross_entropy"
    assert spec.readout.n_outputs == 2


def test_store_recall_structure():
    task = StoreRecall()
    b, info = task.sample(rng(5), 64)
    L, n = task.char_steps, task.n_per_group
    x = b.x
    for j in range(64):
        s, r = info["store_char"], info["recall_char"][j]
        label = info["labels"][j]
        # The label is the value channel active at the store command...
        assert info["channels"][s, j] == label == b.labels[j]
        assert np.argmax(b.target[0, j]) == label
        # ...and the spikes agree: during the store only store + that value population fire.
        seg = x[s * L:(s + 1) * L, j]
        assert seg[:, label * n:(label + 1) * n].sum() > 0 and seg[:, STORE * n:(STORE + 1) * n].sum() > 0
        assert seg[:, (1 - label) * n:(2 - label) * n].sum() == 0 and seg[:, RECALL * n:].sum() == 0
        # One store and one recall; the recall follows after 200..1200 ms; the loss sits on the recall.
        assert x[:, j, STORE * n:(STORE + 1) * n].sum() == seg[:, STORE * n:(STORE + 1) * n].sum()
        rec = x[:, j, RECALL * n:]
        assert rec[:r * L].sum() == 0 and rec[(r + 1) * L:].sum() == 0 and rec[r * L:(r + 1) * L].sum() > 0
        assert info["delay_ms"][j] == 200 * (r - s) and 200 <= info["delay_ms"][j] <= 1200
        on = np.nonzero(b.mask[:, j])[0]
        assert on[0] == r * L and on[-1] == (r + 1) * L - 1 and np.isclose(b.mask[:, j].sum(), 1.0)
    assert set(np.unique(info["delay_ms"])) == {200, 400, 600, 800, 1000, 1200}


def test_store_recall_labels_balanced_and_deterministic():
    task = StoreRecall()
    labels = np.concatenate([task.batch(rng(i), 7).labels for i in range(60)])
    assert abs(labels.mean() - 0.5) < 0.1
    assert task.batch(rng(), 8).labels.sum() == 4  # even batches are exactly balanced
    a, b = task.batch(rng(9), 4), task.batch(rng(9), 4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.x, task.batch(rng(10), 4).x)


def test_store_recall_metric_and_bad_options():
    task = StoreRecall()
    b = task.batch(rng(), 8)
    assert task.metric(10 * b.target, b) == 0.0
    assert task.metric(10 * (1 - b.target), b) == 1.0
    with pytest.raises(ValueError, match="max_delay"):
        StoreRecall(min_delay=3, max_delay=2)
    with pytest.raises(ValueError, match="min_delay"):
        StoreRecall(min_delay=0)


# --------------------------------------------------------------- teacher-student
@pytest.fixture(scope="module")
def ts_task():
    return TeacherStudent(n_neurons=30, duration_ms=300)


def test_teacher_student_shapes_and_teacher(ts_task):
    b = ts_task.batch(rng(), 4)
    assert b.x.shape == (300, 4, 20) and b.target.shape == (300, 4, 2)
    assert "feedback.b" not in ts_task.teacher_params
    # Calibrated to a plausible rate; targets spread as asked and centred.
    assert 9.5 <= ts_task.teacher_rate_measured_hz <= 10.5
    big = ts_task.batch(rng(1), 32).target
    assert 0.6 < big.std() < 1.5 and abs(big.mean()) < 0.3
    # Deterministic under a seed; the teacher depends on its own seed only.
    np.testing.assert_array_equal(b.target, ts_task.batch(rng(), 4).target)
    again = TeacherStudent(n_neurons=30, duration_ms=300)
    for k, v in ts_task.teacher_params.items():
        np.testing.assert_array_equal(v, again.teacher_params[k])
    other = TeacherStudent(n_neurons=30, duration_ms=300, teacher_seed=2)
    assert not np.array_equal(other.teacher_params["layers.0.w_in"], ts_task.teacher_params["layers.0.w_in"])
    # The teacher's own output scores zero.
    assert ts_task.metric(b.target, b) == 0.0


def test_parameter_distance(ts_task):
    t = ts_task.teacher_params
    same = parameter_distance({k: v.copy() for k, v in t.items()}, t)
    for k, v in same.items():
        assert (v == 0.0) if k.endswith("rel_distance") else np.isclose(v, 1.0), k
    spec = ts_task.default_spec()
    student = init_params(spec, 0)
    d = ts_task.parameter_distance(student)
    assert set(d) == {f"{k}.{m}" for k in [*t, "all"] for m in ("rel_distance", "cosine")}
    assert all(d[f"{k}.rel_distance"] > 0 for k in [*t, "all"])
    near = ts_task.student_near_teacher(rng(), 0.1, spec)
    dn = ts_task.parameter_distance(near)
    assert 0.05 < dn["all.rel_distance"] < 0.15 and dn["all.cosine"] > 0.98
    assert "feedback.b" in near
    scaled = {k: 2 * v for k, v in t.items()}
    ds = parameter_distance(scaled, t)
    assert np.isclose(ds["all.rel_distance"], 1.0) and np.isclose(ds["all.cosine"], 1.0)
    with pytest.raises(ValueError, match="shape"):
        parameter_distance({**t, "readout.w": t["readout.w"][:1]}, t)
    with pytest.raises(ValueError, match="missing"):
        parameter_distance({k: v for k, v in t.items() if k != "readout.b"}, t)


def test_teacher_student_bad_options():
    with pytest.raises(ValueError, match="neuron"):
        TeacherStudent(neuron="izhikevich")
    with pytest.raises(ValueError, match="teacher_spec"):
        spec = TeacherStudent(n_neurons=10, duration_ms=50).default_spec()
        TeacherStudent(n_inputs=7, teacher_spec=spec)


# -------------------------------------------------------------------- registry
def test_registry_has_the_new_tasks():
    assert isinstance(get_task("pattern"), PatternGeneration)
    assert isinstance(get_task("store_recall"), StoreRecall)
    assert isinstance(get_task("teacher_student", n_neurons=10, duration_ms=100), TeacherStudent)
    assert dataclasses.is_dataclass(get_task("pattern", input="poisson"))
