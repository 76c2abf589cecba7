"""Data parallelism: two processes on gloo reach the same parameters as one
process training on the whole batch (gradients are sums over samples)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_training import ShortEvidence, small_spec, _config
from eprop_lava.training import train
task = ShortEvidence()
spec = small_spec(task)
spec = spec.replace(regularization=spec.regularization.__class__(form="online", coefficient=1.0))
train(task, spec, _config(iterations=4, batch_size=6, distributed=True), sys.argv[1], resume=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_torch
def test_two_gloo_processes_equal_one(tmp_path):
    from test_training import ShortEvidence, _config, small_spec
    from eprop_lava.training import load_checkpoint, train

    script = WORKER.format(root=str(ROOT), tests=str(ROOT / "tests"))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "dp")], env=env))
    for p in procs:
        assert p.wait(timeout=180) == 0
    task = ShortEvidence()
    spec = small_spec(task)
    # the per-sample (online) rate regularizer is a sum over samples like the loss;
    # the Bellec form uses each shard's own batch rate (documented difference)
    spec = spec.replace(regularization=spec.regularization.__class__(form="online", coefficient=1.0))
    single = train(task, spec, _config(iterations=4, batch_size=6), tmp_path / "single", resume=False)
    dp = load_checkpoint(tmp_path / "dp")
    assert dp.iteration == 4
    for k in single.params:
        np.testing.assert_allclose(dp.params[k], single.params[k], rtol=1e-9, atol=1e-12)
