"""Data parallelism: two processes on gloo reach the same parameters as one
process training on the whole batch (gradients are sums over samples), and
the collectives build their tensors on the group's device (NCCL rejects host
tensors, so under NCCL that device is the rank's GPU)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]

TRAIN_WORKER = """
import os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_training import ShortEvidence, small_spec, _config
from eprop_lava.training import train
task = ShortEvidence()
spec = small_spec(task)
spec = spec.replace(regularization=spec.regularization.__class__(form="online", coefficient=1.0))
train(task, spec, _config(iterations=4, batch_size=6, distributed=True, backend={backend!r}), sys.argv[1],
      resume=False)
"""

COLLECTIVE_WORKER = """
import json, os, sys
sys.path.insert(0, {root!r})
import numpy as np, torch
from eprop_lava.engine.distributed import all_reduce_sum, broadcast_from_main, init_from_environment
group = init_from_environment("cpu")
r = group.rank
grads = {{"a": np.full((2, 3), r + 1.0, dtype=np.float32),
          "b": torch.arange(4, dtype=torch.float32, device=group.device) * (10.0 ** r)}}
loss, out = all_reduce_sum(grads, 0.5 + r, group.device)
solved = broadcast_from_main(7 if r == 0 else None, group.device)
none = broadcast_from_main(None if r == 0 else 3, group.device)
json.dump({{"device": group.device, "loss": loss, "a": out["a"].tolist(), "a_dtype": str(out["a"].dtype),
           "b": out["b"].tolist(), "b_is_tensor": isinstance(out["b"], torch.Tensor),
           "b_dtype": str(out["b"].dtype), "solved": solved, "none": none}},
          open(sys.argv[1] + f".{{r}}.json", "w"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, arg: str, world: int = 2) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-c", script, arg], env=env))
    for p in procs:
        assert p.wait(timeout=180) == 0


def test_collective_device_follows_the_process_group():
    from eprop_lava.engine.distributed import collective_device

    assert collective_device("nccl", "cuda", 1) == "cuda:1"
    assert collective_device("NCCL", "cuda:0", 0) == "cuda:0"
    assert collective_device("gloo", "cpu", 1) == "cpu"
    assert collective_device("gloo", "cuda", 0) == "cpu"


@needs_torch
def test_data_parallel_reduces_on_the_group_device(monkeypatch):
    from eprop_lava.engine import distributed as D
    from eprop_lava.engine.network import Batch

    seen = {}

    def fake_reduce(grads, loss, device="cpu"):
        seen["device"] = device
        return loss, grads

    monkeypatch.setattr(D, "all_reduce_sum", fake_reduce)
    group = D.Group(rank=1, world_size=2, local_rank=1, device="cuda:1")
    batch = Batch(np.zeros((3, 4, 2)), np.zeros((3, 4, 1)), np.ones((3, 4)))
    sizes = []
    grad = D.data_parallel(lambda spec, p, b: (sizes.append(b.size) or 1.0, {"w": np.ones(2)}, None), group)
    grad(small_sum_spec(), {}, batch)
    assert seen["device"] == "cuda:1" and sizes == [2]


def small_sum_spec():
    from types import SimpleNamespace

    return SimpleNamespace(conventions=SimpleNamespace(batch_reduction="sum"))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_shard_gradients_sum_to_the_whole_batch_gradient(monkeypatch, reduction):
    # Two ranks simulated in one process (the all-reduce replaced by collecting
    # each rank's contribution): shards of 2 and 3 samples must add up to the
    # gradient of all 5, also when the loss is a mean over the batch.
    from test_training import ShortEvidence, small_spec

    from eprop_lava.engine import distributed as D
    from eprop_lava.engine.gradients import eprop_gradient
    from eprop_lava.engine.network import init_params

    task = ShortEvidence()
    spec = small_spec(task)
    spec = spec.replace(regularization=spec.regularization.__class__(form="online", coefficient=1.0),
                        conventions=spec.conventions.__class__(**{**spec.conventions.__dict__,
                                                                  "batch_reduction": reduction}))
    params = init_params(spec)
    batch = task.batch(np.random.default_rng(3), 5)
    parts = []
    monkeypatch.setattr(D, "all_reduce_sum", lambda grads, loss, device="cpu": parts.append((loss, grads)) or
                        (loss, grads))
    for rank in range(2):
        D.data_parallel(eprop_gradient, D.Group(rank=rank, world_size=2, local_rank=rank))(spec, params, batch)
    loss, grads, _ = eprop_gradient(spec, params, batch)
    assert parts[0][0] + parts[1][0] == pytest.approx(float(loss), rel=1e-10)
    for k in grads:
        total = parts[0][1][k] + parts[1][1][k]
        assert np.abs(total - grads[k]).max() <= 1e-10 * np.abs(grads[k]).max(), k


@needs_torch
def test_collectives_through_gloo_sum_over_ranks(tmp_path):
    _launch(COLLECTIVE_WORKER.format(root=str(ROOT)), str(tmp_path / "out"))
    import json

    for rank in range(2):
        r = json.loads((tmp_path / f"out.{rank}.json").read_text())
        assert r["device"] == "cpu"
        assert r["loss"] == pytest.approx(0.5 + 1.5)                 # 0.5 + 1.5 summed
        assert r["a"] == [[3.0] * 3] * 2 and r["a_dtype"] == "float32"  # 1 + 2 per element
        assert r["b"] == [0.0, 11.0, 22.0, 33.0]                      # k * (1 + 10)
        assert r["b_is_tensor"] and r["b_dtype"] == "torch.float32"
        assert r["solved"] == 7 and r["none"] is None                 # rank 0 decides


@needs_torch
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_two_gloo_processes_equal_one(tmp_path, backend):
    from test_training import ShortEvidence, _config, small_spec
    from eprop_lava.training import load_checkpoint, train

    _launch(TRAIN_WORKER.format(root=str(ROOT), tests=str(ROOT / "tests"), backend=backend), str(tmp_path / "dp"))
    task = ShortEvidence()
    spec = small_spec(task)
    # the per-sample (online) rate regularizer is a sum over samples like the loss;
    # the Bellec form uses each shard's own batch rate (documented difference)
    spec = spec.replace(regularization=spec.regularization.__class__(form="online", coefficient=1.0))
    single = train(task, spec, _config(iterations=4, batch_size=6, backend=backend), tmp_path / "single",
                   resume=False)
    dp = load_checkpoint(tmp_path / "dp")
    assert dp.iteration == 4
    for k in single.params:
        np.testing.assert_allclose(dp.params[k], single.params[k], rtol=1e-9, atol=1e-12)
