"""The fast batch generation is held to its definitions: the compiled
Bernoulli loop to numpy's ``rng.random(shape) < rate``, and the vectorised
evidence-accumulation batch to the per-cue, per-sample loop it replaced
(kept verbatim below), on several seeds and options; same seed, same batch,
and the generator left in the same state."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_gradients_match

from eprop_lava.engine import fused
from eprop_lava.engine.network import Batch
from eprop_lava.tasks.base import grouped_poisson_spikes, poisson_spikes
from eprop_lava.tasks.evidence import EvidenceAccumulation

needs_numba = pytest.mark.skipif(fused.numba is None, reason="numba not installed")


def loop_evidence_batch(task: EvidenceAccumulation, rng: np.random.Generator, batch_size: int) -> Batch:
    """EvidenceAccumulation.batch as it was before vectorisation (one slice
    assignment per cue and sample, the full (T, B, 40) rate array, numpy draws)."""
    T, n, dt = task.steps, task.n_per_group, task.dt
    p_left = rng.choice(np.asarray(task.left_probabilities), size=batch_size)
    cue_left = rng.random((batch_size, task.n_cues)) < p_left[:, None]
    rate = np.zeros((T, batch_size, 4 * n))
    rate[:, :, 3 * n:] = task.noise_hz * dt / 1000.0
    period = int(round((task.cue_ms + task.spacing_ms) / dt))
    cue_len = int(round(task.cue_ms / dt))
    for k in range(task.n_cues):
        start = k * period
        for b in range(batch_size):
            group = int(cue_left[b, k]) if task.swap_sides else int(not cue_left[b, k])
            rate[start:start + cue_len, b, group * n:(group + 1) * n] = task.cue_hz * dt / 1000.0
    recall = int(round(task.recall_ms / dt))
    rate[T - recall:, :, 2 * n:3 * n] = task.cue_hz * dt / 1000.0
    x = (rng.random(rate.shape) < rate).astype(np.float32)
    labels = (cue_left.sum(1) < task.n_cues / 2).astype(int)
    target = np.zeros((T, batch_size, 2))
    target[:, np.arange(batch_size), labels] = 1.0
    mask = np.zeros((T, batch_size))
    mask[T - recall:] = 1.0 / recall
    return Batch(x=x, target=target, mask=mask, labels=labels)


def assert_same_batch(a: Batch, b: Batch) -> None:
    for field in ("x", "target", "mask", "labels"):
        got, want = getattr(a, field), getattr(b, field)
        assert got.dtype == want.dtype and got.shape == want.shape, field
        np.testing.assert_array_equal(got, want, err_msg=field)


EVIDENCE_OPTIONS = [
    {},
    {"swap_sides": True},
    {"dt": 2.0, "n_per_group": 3},
    {"n_cues": 3, "delay_ms": 0, "recall_ms": 20, "cue_ms": 10, "spacing_ms": 0, "left_probabilities": (0.5,)},
    {"n_cues": 4, "cue_ms": 30, "spacing_ms": 5, "delay_ms": 10, "cue_hz": 900.0, "noise_hz": 0.0},
]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("options", EVIDENCE_OPTIONS)
def test_evidence_batch_equals_the_loop_it_replaced(options, compiled, monkeypatch):
    if compiled and fused.numba is None:
        pytest.skip("numba not installed")
    monkeypatch.setenv("EPROP_LAVA_FUSED", "1" if compiled else "0")
    task = EvidenceAccumulation(**options)
    for seed, batch_size in ((0, 32), (7, 5), (12345, 1)):
        rng, ref_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(2):  # consecutive batches: the stream continues identically
            assert_same_batch(task.batch(rng, batch_size), loop_evidence_batch(task, ref_rng, batch_size))
        assert rng.random() == ref_rng.random()


@needs_numba
def test_compiled_bernoulli_draws_numpys_stream(monkeypatch):
    monkeypatch.setenv("EPROP_LAVA_FUSED", "1")
    rates = np.random.default_rng(3).random((40, 3, 5))
    rates[0] = 0.0
    rates[1] = 1.0
    rates[2, 0, 0] = np.nan  # no spike, as numpy's comparison gives
    for rate in (rates, rates.astype(np.float32), rates[:, 1, :], rates.transpose(2, 0, 1)):
        rng, ref = np.random.default_rng(11), np.random.default_rng(11)
        x = poisson_spikes(rng, rate)
        want = (ref.random(rate.shape) < rate).astype(np.float32)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, want)
        assert rng.random() == ref.random()
    assert poisson_spikes(np.random.default_rng(0), np.zeros((0, 4))).shape == (0, 4)
    # grouped: the repeated rate array, without building it
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(grouped_poisson_spikes(rng, rates, 4),
                                  (ref.random((40, 3, 20)) < np.repeat(rates, 4, axis=-1)).astype(np.float32))
    assert rng.random() == ref.random()


@needs_numba
@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.PCG64DXSM, np.random.Philox])
def test_draws_split_over_threads_keep_numpys_stream(bitgen, monkeypatch):
    # the chunks of a split draw start from generators advanced by the draws before
    # them: the same spikes, and the generator continues as after numpy's own draws,
    # its buffered 32-bit half-word included (a 32-bit draw before and after)
    from eprop_lava.tasks import base

    monkeypatch.setenv("EPROP_LAVA_FUSED", "1")
    monkeypatch.setattr(base, "SPLIT_DRAWS", 1)
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 3)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    chunks = []
    kernel = base._compiled_bernoulli(np.random.default_rng())
    monkeypatch.setattr(base, "_compiled_bernoulli", lambda rng: lambda *a: (chunks.append(a[1].shape[0]), kernel(*a)))
    rates = np.random.default_rng(4).random((7, 5, 3))
    for group in (1, 4):
        rng, ref = np.random.Generator(bitgen(9)), np.random.Generator(bitgen(9))
        assert rng.integers(0, 1000, dtype=np.int32) == ref.integers(0, 1000, dtype=np.int32)
        x = grouped_poisson_spikes(rng, rates, group)
        want = (ref.random((7, 5, 3 * group)) < np.repeat(rates, group, axis=-1)).astype(np.float32)
        np.testing.assert_array_equal(x, want)
        split = bitgen is not np.random.Philox  # Philox cannot jump by any count here: one loop
        assert chunks[-3 if split else -1:] == ([35, 35, 35] if split else [105]), chunks
        assert rng.integers(0, 1000, 5, dtype=np.int32).tolist() == ref.integers(0, 1000, 5, dtype=np.int32).tolist()
        assert rng.random() == ref.random()


@needs_numba
@pytest.mark.parametrize("name", ["pattern", "store_recall", "teacher_student"])
def test_other_tasks_batches_unchanged_by_compiled_draws(name, monkeypatch):
    from eprop_lava.tasks import get_task

    task = get_task(name)
    batches = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("EPROP_LAVA_FUSED", flag)
        rng = np.random.default_rng(21)
        batches[flag] = [task.batch(rng, 3) for _ in range(2)]
    for a, b in zip(batches["0"], batches["1"]):
        for field in ("x", "target", "mask"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{name} {field}")


# The learning signal inside the compiled adjoint: L^t = ybar^t B^T (+ rate)
# is formed per step in the loop (engine/fused.py) and never stored; the
# reference loop forms it with learning_signal first. Gradients to 1e-10.

def _gradients(spec, batch, fused_flag, dtype="float64"):
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import eprop_gradient
    from eprop_lava.engine.network import init_params

    return eprop_gradient(spec, init_params(spec), batch, make_ops("numpy", fused=fused_flag, dtype=dtype))


@needs_numba
@pytest.mark.parametrize("case", [
    dict(neuron="alif", layers=2, conventions="nest-bsshslm-2020", regularization="bellec", variant="random"),
    dict(neuron="alif", layers=1, conventions="tf", regularization="bellec", variant="symmetric", bidirectional=True),
    dict(neuron="lif", layers=1, conventions="eprop-lava", regularization="online", variant="random", timing="loihi"),
])
def test_learning_signal_inside_adjoint_equals_reference(case):
    from eprop_lava.engine.verify import _batch, _network

    case = dict(case)
    variant = case.pop("variant")
    timing = case.pop("timing", "bellec")
    spec = _network(case.pop("neuron"), recurrent=True, timing=timing, reset="subtract", n=10, **case)
    spec = spec.replace(learning=spec.learning.__class__(variant=variant))
    batch = _batch(spec, 160, 3, seed=9)
    loss_r, g_r, traj = _gradients(spec, batch, False)
    loss_f, g_f, _ = _gradients(spec, batch, True)
    assert sum(float(z.sum()) for z in traj.z) > 30
    assert loss_f == pytest.approx(loss_r, rel=1e-12)
    assert_gradients_match(g_f, g_r)


@needs_numba
@pytest.mark.parametrize("rate_shape", [None, "neuron", "sample"])
def test_adjoint_block_forms_the_learning_signal_per_step(rate_shape):
    # One block against a hand-written numpy recursion with L = einsum(ybar, B) + rate.
    rng = np.random.default_rng(2)
    S, B, N, K = 7, 3, 5, 2
    ybar, feedback = rng.normal(size=(S, B, K)), rng.normal(size=(N, K))
    rate = {None: None, "neuron": rng.normal(size=N), "sample": rng.normal(size=(B, N))}[rate_shape]
    d0, d1 = rng.random((S, B, N)), rng.random((S, B, N))
    j00, j01, j11 = rng.random((S, B, N)), rng.random((S, B, N)), 0.9  # J_10 absent, J_11 a constant
    gain = 0.7
    signal = np.einsum("tbk,jk->tbj", ybar, feedback) + (0.0 if rate is None else rate)
    mu0, mu1 = rng.normal(size=(B, N)), rng.normal(size=(B, N))
    want = np.empty((S, B, N))
    m0, m1 = mu0.copy(), mu1.copy()
    for t in range(S - 1, -1, -1):
        lam0, lam1 = gain * signal[t] * d0[t], gain * signal[t] * d1[t]
        m0, m1 = lam0 + m0 * j00[t], lam1 + m0 * j01[t] + m1 * j11
        want[t] = m0
    jac = [[j00, j01], [None, j11]]
    for form in ((ybar, feedback, rate), signal):  # factors, and the signal itself
        mu = np.stack([mu0, mu1])
        out = np.empty((S, B, N))
        fused.adjoint_block(form, [d0, d1], jac, mu, out, gain)
        np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(mu, np.stack([m0, m1]), rtol=1e-13, atol=1e-13)


# The readout's backward sweep (fused.readout_backward) against the
# definitions written out here step by step: softmax cross-entropy or MSE on
# the masked steps, Ybar^t = e^t + kappa Ybar^{t+1}, the readout gradients.

@needs_numba
@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("K", [3, fused.DENSE_READOUT_OUTPUTS + 2])  # dense and event-driven readout gradient
def test_readout_backward_equals_the_step_by_step_definition(kind, shift, K):
    rng = np.random.default_rng(5)
    T, B, N = 40, 3, 7
    y = rng.normal(size=(T, B, K))
    target = np.eye(K)[rng.integers(0, K, size=(T, B))] if kind == "cross_entropy" else rng.normal(size=(T, B, K))
    mask = (rng.random((T, B)) < 0.4) * rng.random((T, B))
    spikes = (rng.random((T, B, N)) < 0.2).astype(float)
    kappa, gain, scale = 0.9, 0.8, 0.25
    loss, ybar = 0.0, np.zeros((T, B, K))
    for b in range(B):
        acc = np.zeros(K)
        for t in range(T - 1, -1, -1):
            if kind == "cross_entropy":
                p = np.exp(y[t, b]) / np.exp(y[t, b]).sum()
                loss -= scale * mask[t, b] * float(target[t, b] @ np.log(p))
                err = mask[t, b] * (p - target[t, b])
            else:
                loss += scale * 0.5 * mask[t, b] * float(((y[t, b] - target[t, b]) ** 2).sum())
                err = mask[t, b] * (y[t, b] - target[t, b])
            acc = scale * err + kappa * acc
            ybar[t, b] = gain * acc
    grad_w = np.einsum("tbk,tbi->ki", ybar, spikes)
    grad_b = ybar.sum((0, 1))
    want_signal = np.zeros_like(ybar)
    want_signal[:T - shift] = ybar[shift:]
    got_loss, got_w, got_b, got_signal = fused.readout_backward(kind, y, target, mask, spikes, kappa, gain, scale,
                                                                shift)
    assert got_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(got_w, grad_w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_b, grad_b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_signal, want_signal, rtol=1e-12, atol=1e-14)
    assert fused.readout_backward("hinge", y, target, mask, spikes, kappa) is None


# The adjoint with the model's Jacobians traced into the compiled loop
# (fused.traced_adjoint) against the reference loop local_adjoint, which
# evaluates the same Jacobian functions as arrays.

@needs_numba
@pytest.mark.parametrize("neuron", ["lif", "alif", "stdp_alif", "izhikevich"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_traced_adjoint_equals_reference_loop(neuron, reset):
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.network import init_params, simulate
    from eprop_lava.engine.verify import _batch, _network
    from eprop_lava.eprop.traces import local_adjoint
    from eprop_lava.neurons.base import input_jacobian

    spec = _network(neuron, layers=1, recurrent=True, timing="bellec", reset=reset, n=9)
    params = init_params(spec)
    ops = make_ops("numpy", fused=False)
    traj = simulate(spec, params, _batch(spec, 90, 2, seed=3).x, ops)
    assert traj.z[0].sum() > 10
    P, rec = traj.populations[0], traj.pop_records[0]
    rng = np.random.default_rng(1)
    signal = (rng.normal(size=(90, 2, 2)), rng.normal(size=(9, 2)), rng.normal(size=(2, 9)))
    want = local_adjoint(P.model, P.const, rec, signal, ops)
    formed = np.einsum("tbk,jk->tbj", signal[0], signal[1]) + signal[2]
    for given in (signal, formed):  # the signal's factors, or the signal itself
        got = fused.traced_adjoint(P.model, P.const, rec, given, input_jacobian(P.const))
        assert got is not None  # every model's Jacobians are arithmetic: all of them are traced
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
    # the weight gradients summed in the same loop, for spike inputs (sum_t delta^t pre^t, delta^t z^{t-1})
    pre = (rng.random((90, 2, 5)) < 0.05).astype(float)
    z = (rng.random((90, 2, 9)) < 0.05).astype(float)  # spikes sparser than this small network's
    delta, g_in, g_rec, g_out = fused.traced_adjoint_gradients(
        P.model, P.const, rec, signal, input_jacobian(P.const), pre, z, recurrent=True, readout=True)
    assert g_in is not None and g_rec is not None and g_out is not None
    for got, want_g in ((g_in, np.einsum("tbj,tbi->ji", want, pre)),
                        (g_rec, np.einsum("tbj,tbi->ji", want[1:], z[:-1])),
                        (g_out, np.einsum("tbk,tbi->ki", signal[0], z))):  # readout: sum_t ybar^t z^t
        assert np.abs(got - want_g).max() <= 1e-10 * np.abs(want_g).max()
    dense = rng.random((90, 2, 5))  # dense inputs: left to the caller's matrix product
    assert fused.traced_adjoint_gradients(P.model, P.const, rec, signal, 1.0, dense, None)[1:] == (None,) * 3


@needs_numba
def test_adjoint_of_a_model_whose_jacobian_is_not_arithmetic_falls_back():
    # A comparison in the Jacobian cannot be traced: the evaluated arrays are used instead.
    from types import SimpleNamespace

    from eprop_lava.engine.backend import make_ops
    from eprop_lava.eprop.traces import local_adjoint

    model = SimpleNamespace(
        name="clipped", hidden=("v",),
        spike_jacobian=lambda rec, c: [rec["psi"]],
        transition_jacobian=lambda rec, c: [[c.alpha * (rec["x"] < 0.5)]])
    const = SimpleNamespace(alpha=0.9, input_gain=1.0)
    rng = np.random.default_rng(2)
    rec = {"psi": rng.random((30, 2, 4)), "x": rng.random((30, 2, 4))}
    signal = rng.normal(size=(30, 2, 4))
    assert fused.traced_adjoint(model, const, rec, signal, 1.0) is None
    got = local_adjoint(model, const, rec, signal, make_ops("numpy", fused=True))
    mu, want = np.zeros((2, 4)), np.zeros((30, 2, 4))
    for t in range(29, -1, -1):  # mu^t = L^t psi^t + mu^{t+1} J^t, J^t = alpha [x^t < 0.5]
        mu = signal[t] * rec["psi"][t] + (mu * 0.9 * (rec["x"][t] < 0.5) if t < 29 else 0.0)
        want[t] = mu
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_one_blas_thread_limits_and_restores_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from eprop_lava.engine.backend import one_blas_thread

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    for _ in range(2):  # the cached controller serves every call
        with one_blas_thread():
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == before
