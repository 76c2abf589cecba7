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

Collectives run on the group's device: an NCCL group only accepts CUDA
tensors, so the flat gradient vector (and the early-stopping flag) is built on
``Group.device`` (this rank's GPU under NCCL, the CPU under gloo) and copied
back to the host after the reduction. Gradients that are already torch
tensors stay on their own device.

Exactness: the task loss, the online rate regularizer (seed 002 Eqs.
3.39-3.43) and L2 are sums over samples, so the all-reduced gradient equals
the single-process gradient of the whole batch (to summation order; under
batch_reduction = "mean" each shard's mean is weighted by its share of the
batch, :func:`data_parallel`). The
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
    device: str = "cpu"   # where collectives run: "cuda:LOCAL_RANK" under NCCL

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def collective_device(backend: str, device: str, local_rank: int) -> str:
    """The device a process group's collectives run on: NCCL reduces CUDA
    tensors only (this rank's GPU, where ``train.device=cuda`` trains);
    gloo reduces host tensors."""
    if str(backend).lower() == "nccl":
        return f"cuda:{local_rank}"
    return "cpu"


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
    return Group(dist.get_rank(), dist.get_world_size(), local_rank,
                 collective_device(dist.get_backend(), device, local_rank))


def shard(batch: Batch, group: Group) -> Batch:
    """This rank's contiguous slice of the global batch."""
    n = batch.size
    if n < group.world_size:
        raise ValueError(f"batch size {n} is smaller than the number of processes {group.world_size}")
    bounds = np.linspace(0, n, group.world_size + 1).astype(int)
    s = slice(bounds[group.rank], bounds[group.rank + 1])
    labels = None if batch.labels is None else batch.labels[s]
    return Batch(batch.x[:, s], batch.target[:, s], batch.mask[:, s], labels)


def all_reduce_sum(grads: dict, loss: float, device: str = "cpu") -> tuple[float, dict]:
    """Sum gradients and loss over all ranks (one flat float64 all-reduce on
    ``device``). numpy gradients come back as numpy arrays of their dtype;
    torch gradients come back as tensors on their own device and dtype."""
    import torch
    import torch.distributed as dist

    keys = sorted(grads)
    parts = []
    for k in keys:
        g = grads[k]
        g = g if isinstance(g, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(g))
        parts.append(g.detach().reshape(-1).to(device=device, dtype=torch.float64))
    parts.append(torch.tensor([float(loss)], dtype=torch.float64, device=device))
    flat = torch.cat(parts)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, offset = {}, 0
    for k in keys:
        g = grads[k]
        size = int(np.prod(tuple(g.shape)))
        piece = flat[offset:offset + size].reshape(tuple(g.shape))
        if isinstance(g, torch.Tensor):
            out[k] = piece.to(device=g.device, dtype=g.dtype)
        else:
            out[k] = piece.cpu().numpy().astype(np.asarray(g).dtype)
        offset += size
    return float(flat[-1].item()), out


def broadcast_from_main(value: int | None, device: str = "cpu") -> int | None:
    """Rank 0's optional non-negative integer (e.g. the iteration at which
    the run was solved) on every rank; the tensor lives on ``device``."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([-1 if value is None else int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    v = int(t.item())
    return None if v < 0 else v


def data_parallel(grad_fn: Callable, group: Group) -> Callable:
    """Wrap a gradient function (spec, params, batch) -> (loss, grads, traj).

    Under conventions.batch_reduction = "mean" each rank's gradient is a mean
    over its own shard (1 / shard size); it is weighted by shard size / global
    batch size before the sum, so the sum is the mean over the global batch."""
    def grad(spec: Any, params: dict, batch: Batch):
        local = shard(batch, group)
        loss, grads, traj = grad_fn(spec, params, local)
        if spec.conventions.batch_reduction == "mean" and local.size != batch.size:
            weight = local.size / batch.size
            loss, grads = weight * loss, {k: weight * g for k, g in grads.items()}
        loss, grads = all_reduce_sum(grads, loss, group.device)
        return loss, grads, traj
    return grad
