"""Edge cases of the compiled float engine's fast paths (event lists, the
readout drive from them, the learning signal written into the adjoint, the
threaded Poisson draws): the compiled path (``make_ops("numpy", fused=True)``)
against the reference loops (``fused=False``) or numpy's own definitions,
on shapes and inputs the main tests do not reach."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest

from eprop_lava.engine import fused
from eprop_lava.tasks import base

needs_numba = pytest.mark.skipif(not fused.available(), reason="needs numba")


# ------------------------------------------------------------ Poisson draws
@needs_numba
@pytest.mark.parametrize("split", [True, False])
def test_draws_hold_the_generator_against_another_thread(split, monkeypatch):
    # numpy's rng.random holds the bit generator's lock for the whole call, so
    # a second thread's draw comes before or after it, never inside. The
    # compiled loop (and its split over threads) must do the same: a thread
    # that draws while the loop runs gets the numbers after the loop's, not
    # copies of them (and does not disturb the loop's own stream).
    monkeypatch.setenv("EPROP_LAVA_FUSED", "1")
    monkeypatch.setattr(base, "SPLIT_DRAWS", 1 if split else 1 << 40)
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    kernel = base._compiled_bernoulli(np.random.default_rng())
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    other: dict = {}

    def kernel_with_intruder(gen, rate, group_size, out):
        if "thread" not in other:
            other["thread"] = threading.Thread(target=lambda: other.setdefault("draws", rng.random(4)))
            other["thread"].start()
            other["thread"].join(0.3)  # long enough for an unguarded draw to finish inside the loop
        kernel(gen, rate, group_size, out)

    monkeypatch.setattr(base, "_compiled_bernoulli", lambda r: kernel_with_intruder)
    rates = np.full((50, 2), 0.5)
    x = base.poisson_spikes(rng, rates)
    other["thread"].join(10)
    np.testing.assert_array_equal(x, (ref.random((50, 2)) < rates).astype(np.float32))
    np.testing.assert_array_equal(other["draws"], ref.random(4))
    assert rng.random() == ref.random()


@needs_numba
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_split_draws_work_in_a_forked_child():
    # a child forked after a split draw inherits the thread pool without its
    # threads; its own split draw must still run (a fresh interpreter forks)
    code = """
import os, signal, numpy as np
from eprop_lava.tasks import base
from eprop_lava.engine import fused
fused.numba.get_num_threads = lambda: 2
os.cpu_count = lambda: 2
rates = np.full((base.SPLIT_DRAWS // 100 + 1, 100), 0.25)
base.poisson_spikes(np.random.default_rng(0), rates)
assert base._draw_pool is not None
pid = os.fork()
if pid == 0:
    signal.alarm(20)
    x = base.poisson_spikes(np.random.default_rng(1), rates)
    ref = (np.random.default_rng(1).random(rates.shape) < rates).astype(np.float32)
    os._exit(0 if np.array_equal(x, ref) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0"  # not -14: SIGALRM on a child left waiting


def _start_method_after(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", "import multiprocessing as mp, numpy as np\n" + code +
                          "\nprint(mp.get_start_method(allow_none=True))\n"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@needs_numba
@pytest.mark.parametrize("first_use", [
    # a task's batch (the threaded Poisson draws ask numba for its thread count)
    "from eprop_lava.tasks.evidence import EvidenceAccumulation\n"
    "EvidenceAccumulation().batch(np.random.default_rng(0), 2)",
    # the readout's backward sweep before any forward loop (a model without a
    # compiled forward loop on a dense input)
    "from eprop_lava.engine import fused\n"
    "fused.readout_backward('mse', np.zeros((3, 2, 2)), np.ones((3, 2, 2)), np.ones((3, 2)), None, 0.9)",
], ids=["task batch", "readout sweep first"])
def test_first_compiled_use_leaves_multiprocessing_start_method_unset(first_use):
    # numba's own thread launch (which numba.get_num_threads() starts) sets
    # multiprocessing's start method, after which Lava's import fails
    # ("context has already been set"): every compiled path launches through
    # fused._launch_threads, which leaves it unset.
    assert _start_method_after(first_use) == "None"


@needs_numba
@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.MT19937, np.random.SFC64])
def test_draws_above_the_split_size_keep_numpys_stream(bitgen, monkeypatch):
    # real threads (no stand-ins): PCG64 splits the draws over numba's thread
    # count, the others draw in one loop; both as numpy's rng.random(shape) < rate
    monkeypatch.setenv("EPROP_LAVA_FUSED", "1")
    rates = np.random.default_rng(0).random((40, 8, 25)).astype(np.float32)
    rng, ref = np.random.Generator(bitgen(3)), np.random.Generator(bitgen(3))
    x = base.grouped_poisson_spikes(rng, rates, 40)
    assert x.size >= base.SPLIT_DRAWS
    want = (ref.random((40, 8, 1000)) < np.repeat(rates, 40, axis=-1)).astype(np.float32)
    np.testing.assert_array_equal(x, want)
    assert rng.random() == ref.random()


# ------------------------------------------- compiled engine against the reference loops
def _spec(layers=2, bidirectional=False, timing="bellec", regularization="bellec", outputs=3, scale=1.0,
          neuron="alif", loss="cross_entropy", rate_average=None, scales=None):
    from eprop_lava.engine.verify import _network

    spec = _network(neuron, layers=layers, recurrent=True, timing=timing, reset="subtract",
                    regularization=regularization, n=10, k=outputs, bidirectional=bidirectional)
    spec = spec.replace(learning=spec.learning.__class__(variant="random"), loss=loss,
                        layers=tuple(replace(layer, weight_scale=w) for layer, w in
                                     zip(spec.layers, scales or (scale,) * layers)))
    if rate_average is not None:
        spec = spec.replace(conventions=replace(spec.conventions, rate_average=rate_average,
                                                batch_reduction="mean"))
    return spec


def _inputs(spec, steps, size, seed=4, rate=0.05, values=(1.0,)):
    from eprop_lava.engine.network import Batch
    from eprop_lava.engine.verify import _batch

    b = _batch(spec, steps, size, seed)
    rng = np.random.default_rng(seed + 1)
    x = (rng.random(b.x.shape) < rate) * rng.choice(np.asarray(values), size=b.x.shape)
    return Batch(x=x, target=b.target, mask=b.mask, labels=b.labels)


def _both(spec, batch, dtype="float64"):
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import eprop_gradient
    from eprop_lava.engine.network import init_params

    params = init_params(spec)
    return [eprop_gradient(spec, params, batch, make_ops("numpy", fused=f, dtype=dtype)) for f in (False, True)]


def _assert_same(ref, fast, dtype="float64", min_spikes=1.0):
    (loss_r, g_r, t_r), (loss_f, g_f, t_f) = ref, fast
    rel = 1e-10 if dtype == "float64" else 1e-4
    assert sum(float(z.sum()) for z in t_r.z) >= min_spikes
    for z_r, z_f in zip(t_r.z, t_f.z):
        assert z_f.dtype == z_r.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(z_f, z_r)
    assert t_f.y.dtype == t_r.y.dtype
    np.testing.assert_allclose(t_f.y, t_r.y, rtol=rel, atol=rel * np.abs(t_r.y).max())
    assert loss_f == pytest.approx(loss_r, rel=rel)
    assert set(g_f) == set(g_r)
    for k in g_r:
        scale = np.abs(g_r[k]).max()
        assert g_f[k].dtype == g_r[k].dtype, k
        assert np.abs(g_f[k] - g_r[k]).max() <= rel * max(scale, 1e-12), k


def _event_paths(traj):
    """(readout drive summed from the spike event lists, pre_in lists kept per population)."""
    listed = all("z" in e and e["z"].density(P.columns[1] - P.columns[0]) <= fused.EVENT_DENSITY
                 for P, e in zip(traj.populations, traj.pop_events))
    return listed, ["pre_in" in e for e in traj.pop_events]


EDGE_CASES = {
    # 3 layers, both directions, Loihi timing: every population on the event lists
    "3 bidirectional layers, loihi": dict(spec=dict(layers=3, bidirectional=True, timing="loihi", scale=0.7),
                                          listed=True),
    "2 bidirectional layers, online rate": dict(spec=dict(layers=2, bidirectional=True, regularization="online",
                                                          scale=0.7), listed=True),
    "one output": dict(spec=dict(outputs=1, bidirectional=True, timing="loihi", scale=0.7), listed=True),
    # beyond INLINE_OUTPUTS: the learning signal's loop over k
    "5 outputs": dict(spec=dict(outputs=5, bidirectional=True, timing="loihi", scale=0.7), listed=True),
    "61 outputs": dict(spec=dict(outputs=61, scale=0.7), listed=True),
    "mse, no regularizer": dict(spec=dict(loss="mse", regularization="none", timing="loihi", scale=0.7),
                                listed=True),
    "bellec rate per sample": dict(spec=dict(rate_average="sample", bidirectional=True, scale=0.7), listed=True),
    # spikes above the event density: the readout and the adjoint take the dense products
    "densely spiking layers": dict(spec=dict(scale=3.0, timing="loihi"), listed=False, rate=0.3),
    # inputs that are not 0/1 spikes: negative values and -0.0 (whose bits are not 0)
    "signed inputs and -0.0": dict(spec=dict(timing="loihi", scale=0.7), values=(-1.5, 2.0, -0.0), listed=True),
    # a layer whose neurons never fire: its event lists are empty
    "a silent layer": dict(spec=dict(scales=(0.7, 0.01), bidirectional=True, timing="loihi"), listed=True),
    "batch of one": dict(spec=dict(bidirectional=True, timing="loihi", scale=0.7), size=1, listed=True),
    "two steps": dict(spec=dict(bidirectional=True, timing="loihi", scale=3.0), steps=2, rate=0.6, min_spikes=1),
    "one step": dict(spec=dict(bidirectional=True, scale=3.0), steps=1, rate=0.6, min_spikes=1),
    "one step, loihi": dict(spec=dict(bidirectional=True, timing="loihi", scale=3.0), steps=1, rate=0.6,
                            min_spikes=0),
}


@needs_numba
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_compiled_gradient_equals_reference_on_edge_cases(name):
    case = EDGE_CASES[name]
    spec = _spec(**case["spec"])
    batch = _inputs(spec, case.get("steps", 90), case.get("size", 3), rate=case.get("rate", 0.05),
                    values=case.get("values", (1.0,)))
    ref, fast = _both(spec, batch)
    _assert_same(ref, fast, min_spikes=case.get("min_spikes", 20))
    if "listed" in case:
        listed, pre_lists = _event_paths(fast[2])
        assert listed == case["listed"]
        # a sparse input's event list goes to the first population's adjoint, a dense one's does not
        assert pre_lists[0] == (case.get("rate", 0.05) <= fused.EVENT_DENSITY)
    if name == "a silent layer":
        assert all(float(z.sum()) == 0 for z in fast[2].pop_z[2:]) and fast[2].pop_z[0].sum() > 0


@needs_numba
@pytest.mark.parametrize("timing", ["bellec", "loihi"])
def test_float32_gradient_of_two_bidirectional_layers(timing):
    spec = _spec(layers=2, bidirectional=True, timing=timing, scale=0.7)
    ref, fast = _both(spec, _inputs(spec, 90, 3), dtype="float32")
    _assert_same(ref, fast, dtype="float32", min_spikes=20)
    assert _event_paths(fast[2])[0]


@needs_numba
def test_non_contiguous_input_gives_the_contiguous_result():
    from eprop_lava.engine.network import Batch

    spec = _spec(layers=2, bidirectional=True, timing="loihi", scale=0.7)
    batch = _inputs(spec, 90, 3)
    wide = np.zeros((90, 6, 2 * spec.n_inputs))
    wide[:, ::2, ::2] = batch.x
    for x in (wide[:, ::2, ::2], np.asfortranarray(batch.x), batch.x.astype(bool)):
        ref, fast = _both(spec, Batch(x=x, target=batch.target, mask=batch.mask, labels=batch.labels))
        _assert_same(ref, fast, min_spikes=20)
        _assert_same(_both(spec, batch)[0], fast, min_spikes=20)


@needs_numba
def test_forward_without_records_and_spike_counts_from_the_event_lists():
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import _bellec_rate, _spike_counts, rate_loss
    from eprop_lava.engine.network import init_params, simulate

    spec = _spec(layers=2, bidirectional=True, timing="loihi", scale=0.7)
    params = init_params(spec)
    x = _inputs(spec, 90, 3).x
    ref = simulate(spec, params, x, make_ops("numpy", fused=False))
    fast = simulate(spec, params, x, make_ops("numpy", fused=True), record=False)
    assert fast.records == [] and fast.pop_records == []
    for z_r, z_f in zip(ref.z, fast.z):
        np.testing.assert_array_equal(z_f, z_r)
    np.testing.assert_allclose(fast.y, ref.y, rtol=1e-12, atol=1e-12)
    assert _event_paths(fast)[0]
    spikes = np.concatenate(ref.z, axis=-1)
    np.testing.assert_array_equal(_spike_counts(fast), spikes.sum(0))
    assert _spike_counts(ref) is None  # the reference loops keep no lists
    # the regularizer's rates from the lists: spikes per ms, per neuron (batch mean) or per
    # sample, as numpy's means of the spikes; the trajectory reused for both
    from eprop_lava.eprop.loss import bellec_rate_loss

    reg = spec.regularization
    for average, want in (("batch", spikes.mean((0, 1)) / spec.dt), ("sample", spikes.mean(0) / spec.dt)):
        s = spec.replace(conventions=replace(spec.conventions, rate_average=average))
        rate = _bellec_rate(s, fast, make_ops("numpy", fused=True))
        np.testing.assert_allclose(rate, want, rtol=1e-12)
        loss = bellec_rate_loss(spikes, reg.target_hz, reg.coefficient, spec.dt, average == "sample")
        assert rate_loss(s, fast, make_ops("numpy", fused=True), rate) == pytest.approx(loss, rel=1e-12)


@needs_numba
def test_one_and_two_numba_threads_give_the_reference_gradient():
    spec = _spec(layers=2, bidirectional=True, timing="loihi", scale=0.7)
    batch = _inputs(spec, 90, 5)
    threads = fused.numba.get_num_threads()
    results = []
    try:
        for n in (1, min(2, fused.numba.config.NUMBA_NUM_THREADS)):
            fused.numba.set_num_threads(n)
            results.append(_both(spec, batch))
    finally:
        fused.numba.set_num_threads(threads)
    for ref, fast in results:
        _assert_same(ref, fast, min_spikes=20)


@needs_numba
@pytest.mark.parametrize("timing,regularization", [("bellec", "bellec"), ("loihi", "online")])
def test_event_list_gradient_of_two_layers_equals_the_online_formulation(timing, regularization):
    # an independent definition: per-synapse eligibility traces stepped forward in
    # time (eprop_gradient_online), against the compiled backward pass on the lists
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import eprop_gradient, eprop_gradient_online
    from eprop_lava.engine.network import init_params

    spec = _spec(layers=2, timing=timing, regularization=regularization, scale=0.8)
    params, batch = init_params(spec), _inputs(spec, 60, 2)
    loss_o, g_o, _ = eprop_gradient_online(spec, params, batch, make_ops("numpy", fused=False))
    loss_f, g_f, traj = eprop_gradient(spec, params, batch, make_ops("numpy", fused=True))
    assert _event_paths(traj) == (True, [True, True])
    assert sum(float(z.sum()) for z in traj.z) > 20
    assert loss_f == pytest.approx(loss_o, rel=1e-12)
    assert set(g_f) == set(g_o)
    for k in g_o:
        assert np.abs(g_f[k] - g_o[k]).max() <= 1e-10 * np.abs(g_o[k]).max(), k


@needs_numba
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_event_lists_take_memory_for_their_events_not_their_capacity():
    # An EventRows has room for every value (T x W per sample) but holds the few
    # events: only the pages those fill may become resident. (numpy asks the
    # kernel for 2 MiB pages for large arrays, and one event per sample would then
    # make the whole capacity resident.) A fresh interpreter measures it.
    code = """
import numpy as np
from eprop_lava.engine import fused

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

T, B, W = 2000, 8, 500
x = np.zeros((T, B, W), np.float32)
x[::10, :, ::50] = 1.0  # 0.2% events
w_t = np.ones((W, 1), np.float32)
fused.project_events(x[:4], w_t, events=True)  # compiled before measuring
before = resident()
out, rows = fused.project_events(x, w_t, events=True)
grown = resident() - before
capacity = rows.index.nbytes + rows.value.nbytes
np.testing.assert_array_equal(rows.dense(W), x)
print(grown, capacity)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown, capacity = map(int, out.stdout.split()[-2:])
    assert capacity == 2000 * 8 * 500 * (2 + 4)
    assert grown < 0.1 * capacity, (grown, capacity)


@needs_numba
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_direct_learning_signal_of_any_layout_equals_the_reference_adjoint(dtype):
    # the adjoint with L given as a (T, B, N) array (not as its factors): the
    # compiled loop reads it as is, whatever its strides
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.network import init_params, simulate
    from eprop_lava.eprop.traces import local_adjoint

    spec = _spec(layers=1, scale=0.7)
    params, x = init_params(spec), _inputs(spec, 70, 3).x
    signal = np.random.default_rng(1).standard_normal((70, 3, 10)).astype(dtype)
    layouts = (signal, np.asfortranarray(signal), np.ascontiguousarray(signal[:, :, ::-1])[:, :, ::-1])
    deltas = []
    for f in (False, True):
        ops = make_ops("numpy", fused=f, dtype=dtype)
        traj = simulate(spec, {k: ops.asarray(v) for k, v in params.items()}, ops.asarray(x), ops)
        P = traj.populations[0]
        deltas.append([local_adjoint(P.model, P.const, traj.pop_records[0], s, ops) for s in layouts])
    assert traj.pop_z[0].sum() > 10
    for ref, fast in zip(*deltas):
        assert fast.dtype == ref.dtype == np.dtype(dtype)
        np.testing.assert_allclose(fast, ref, rtol=1e-5 if dtype == "float32" else 1e-12,
                                   atol=1e-6 * np.abs(ref).max())
    np.testing.assert_array_equal(deltas[1][1], deltas[1][0])
