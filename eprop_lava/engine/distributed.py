"""Data-parallel training with torch.distributed.

E-prop's gradient (like BPTT's) is a sum over samples, so data parallelism
needs one all-reduce of the gradients per step: every rank draws the same
global batch from the same seeded generator, simulates its own contiguous
slice of the samples, and the summed gradients are identical on every rank,
which then apply the same optimizer step. Rank 0 writes logs and checkpoints.

Single machine, two processes on CPU:

    torchrun --standalone --nproc_per_node 2 -m eprop_lava.cli train evidence --set train.distributed=true

Several machines (one process per GPU, NCCL):

    torchrun --nnodes N --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint HOST:PORT \\
        -m eprop_lava.cli train evidence --set train.distributed=true --set train.backend=torch \\
        --set train.device=cuda

With ``train.device=cuda`` each rank uses ``cuda:LOCAL_RANK``.

Exactness: the task loss, the online rate regularizer (seed 002 Eqs.
3.39-3.43) and L2 are sums over samples, so the all-reduced gradient equals
the single-process gradient of the whole batch (to summation order). The
Bellec rate regularizer uses the batch's mean rate, a non-additive quantity:
under data parallelism each rank uses its own shard's rate, like per-device
batch statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from eprop_lava.engine.network import Batch


@dataclass
class Group:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_environment(device: str = "cpu") -> Group:
    """Join the process group described by torchrun's environment variables."""
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's own GPU
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return Group(dist.get_rank(), dist.get_world_size(), local_rank)


def shard(batch: Batch, group: Group) -> Batch:
    """This rank's contiguous slice of the global batch."""
    n = batch.size
    if n < group.world_size:
        raise ValueError(f"batch size {n} is smaller than the number of processes {group.world_size}")
    bounds = np.linspace(0, n, group.world_size + 1).astype(int)
    s = slice(bounds[group.rank], bounds[group.rank + 1])
    labels = None if batch.labels is None else batch.labels[s]
    return Batch(batch.x[:, s], batch.target[:, s], batch.mask[:, s], labels)


def all_reduce_sum(grads: dict, loss: float) -> tuple[float, dict]:
    """Sum gradients and loss over all ranks (one flat all-reduce)."""
    import torch
    import torch.distributed as dist

    keys = sorted(grads)
    flat = np.concatenate([np.ravel(grads[k]).astype(np.float64) for k in keys] + [np.array([loss])])
    t = torch.from_numpy(flat)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    out, offset = {}, 0
    for k in keys:
        size = int(np.prod(grads[k].shape))
        out[k] = t[offset:offset + size].numpy().reshape(grads[k].shape).astype(np.asarray(grads[k]).dtype)
        offset += size
    return float(t[-1]), out


def data_parallel(grad_fn: Callable, group: Group) -> Callable:
    """Wrap a gradient function (spec, params, batch) -> (loss, grads, traj)."""
    def grad(spec: Any, params: dict, batch: Batch):
        loss, grads, traj = grad_fn(spec, params, shard(batch, group))
        loss, grads = all_reduce_sum(grads, loss)
        return loss, grads, traj
    return grad
