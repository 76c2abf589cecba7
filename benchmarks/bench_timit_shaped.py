"""A TIMIT-shaped e-prop workload: 3696 sequences of 1500 steps with 39
features, one bidirectional layer of 300 LIF + 100 ALIF per direction
(Bellec et al.'s framewise LSNN), 61 outputs, batch 32, symmetric e-prop
with Adam. Measures seconds per batch (median of --repeats) and extrapolates
to an epoch (116 batches). Runs on numpy (CPU) or torch (--backend torch
--device cuda on a GPU machine; no Lava needed).

    python benchmarks/bench_timit_shaped.py [--backend numpy|torch] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eprop_lava.engine.backend import make_ops  # noqa: E402
from eprop_lava.engine.gradients import eprop_gradient  # noqa: E402
from eprop_lava.engine.network import Batch, init_params  # noqa: E402
from eprop_lava.eprop.optim import Optimizer  # noqa: E402
from eprop_lava.spec import (  # noqa: E402
    LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, ReadoutSpec, RegularizationSpec,
)

SEQUENCES = 3696


def workload(steps: int, batch: int, seed: int = 0) -> tuple[NetworkSpec, Batch]:
    spec = NetworkSpec(
        n_inputs=39,
        layers=(LayerSpec(size=400, neuron="alif", adaptive_fraction=0.25, bidirectional=True,
                          params=NeuronParams(tau_m=20.0, v_th=0.6, n_ref=2, tau_a=200.0, beta=1.8)),),
        readout=ReadoutSpec(n_outputs=61, kappa=math.exp(-1 / 3)),
        learning=LearningSpec(variant="symmetric"),
        regularization=RegularizationSpec(form="bellec", coefficient=50.0, l2=1e-5),
        optimizer=OptimizerSpec(kind="adam", lr=0.01),
    )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, 39)).astype(np.float32)  # normalized MFCC-like features
    labels = rng.integers(0, 61, (steps, batch))
    target = np.zeros((steps, batch, 61), dtype=np.float32)
    np.put_along_axis(target, labels[..., None], 1.0, axis=-1)
    mask = np.full((steps, batch), 1.0 / steps, dtype=np.float32)
    return spec, Batch(x, target, mask)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "timit_shaped.json"))
    args = ap.parse_args()
    spec, batch = workload(args.steps, args.batch)
    ops = make_ops(args.backend, dtype="float32", device=args.device)
    params = init_params(spec)
    opt = Optimizer(spec.optimizer)
    times = []
    for _ in range(args.repeats + 1):  # the first call warms up (allocations, kernels)
        if args.backend == "torch" and args.device.startswith("cuda"):
            ops.torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, grads, _ = eprop_gradient(spec, params, batch, ops)
        grads = {k: ops.to_numpy(v) for k, v in grads.items()}
        for k, d in opt.deltas(grads).items():
            params[k] = params[k] + d
        times.append(time.perf_counter() - t0)
    per_batch = statistics.median(times[1:])
    batches = math.ceil(SEQUENCES / args.batch)
    result = {"backend": args.backend, "device": args.device, "steps": args.steps, "batch": args.batch,
              "seconds_per_batch": times[1:], "median_seconds_per_batch": per_batch,
              "batches_per_epoch": batches, "seconds_per_epoch": per_batch * batches,
              "python": platform.python_version(), "numpy": np.__version__}
    if args.backend == "torch":
        result["torch"] = ops.torch.__version__
        if args.device.startswith("cuda"):
            result["gpu"] = ops.torch.cuda.get_device_name()
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else []
    existing = [r for r in existing if (r["backend"], r["device"]) != (args.backend, args.device)] + [result]
    out.write_text(json.dumps(existing, indent=2))


if __name__ == "__main__":
    main()
