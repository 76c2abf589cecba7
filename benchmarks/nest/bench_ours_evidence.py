"""Per-iteration wall and CPU time of eprop_lava's e-prop training step on
evidence accumulation (batch 32): the same step as ``eprop_lava.training.train``
(batch generation, ``eprop_gradient`` through ``gradient_function``, Adam deltas,
parameter update), without logging, validation or checkpoints.

    .venv/bin/python benchmarks/nest/bench_ours_evidence.py --iterations 30 [--out FILE]

CPU time (``time.process_time``, all threads of the process) is reported next to
wall time because the benchmark machine is shared: under contention wall time
grows while CPU time stays close to the work done.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from eprop_lava.engine.network import init_params  # noqa: E402
from eprop_lava.eprop.optim import Optimizer  # noqa: E402
from eprop_lava.tasks.evidence import EvidenceAccumulation  # noqa: E402
from eprop_lava.training import TrainConfig, gradient_function  # noqa: E402

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    task = EvidenceAccumulation()
    spec = task.default_spec().replace(seed=args.seed)
    config = TrainConfig(task="evidence", algo="eprop", batch_size=args.batch, seed=args.seed,
                         dtype="float32").validated()
    grad_fn = gradient_function(config)
    optimizer = Optimizer(spec.optimizer)
    params = init_params(spec)
    rng = np.random.default_rng([config.seed, 1])
    wall, cpu, losses = [], [], []
    load_before = [round(x, 2) for x in os.getloadavg()]
    for _ in range(args.iterations):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = task.batch(rng, config.batch_size)
        loss, grads, _ = grad_fn(spec, params, batch)
        grads.pop("feedback.b", None)
        for k, d in optimizer.deltas(grads).items():
            params[k] = params[k] + d
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        losses.append(float(loss))
    result = {"iterations": args.iterations, "batch_size": args.batch, "seed": args.seed,
              "median_wall_s_per_iteration": statistics.median(wall),
              "median_cpu_s_per_iteration": statistics.median(cpu),
              "wall_seconds_per_iteration": wall, "cpu_seconds_per_iteration": cpu, "loss": losses,
              "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "blas_threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                  "MKL_NUM_THREADS")}}
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list) or k.startswith("load")}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
