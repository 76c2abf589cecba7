"""Edge cases of the compiled float engine's fast paths (event lists, the
readout drive from them, the learning signal written into the adjoint, the
threaded Poisson draws): the compiled path (``make_ops("numpy", fused=True)``)
against the reference loops (``fused=False``) or numpy's own definitions,
on shapes and inputs the main tests do not reach."""

from __future__ import annotations

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
])
def test_first_compiled_use_leaves_multiprocessing_start_method_unset(first_use):
    # numba's own thread launch (which numba.get_num_threads() starts) sets
    # multiprocessing's start method, after which Lava's import fails
    # ("context has already been set"): every compiled path launches through
    # fused._launch_threads, which leaves it unset.
    assert _start_method_after(first_use) == "None"
