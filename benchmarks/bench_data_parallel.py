"""Data-parallel training on one machine: two gloo processes against one.

Trains the evidence-accumulation network (default spec, batch 32, float32,
fast e-prop gradient, Adam) for --iterations steps in three layouts, each a
fresh run from the same seed:

* ``1proc_2threads``: one process, numba / BLAS / torch with 2 threads (the
  default on this 2-core machine): the baseline with the same total threads;
* ``2proc_1thread``: two processes joined by torch.distributed (gloo), each
  1 thread, each simulating its 16 samples of the global batch, one
  all-reduce of the gradients per step (engine/distributed.py);
* ``1proc_1thread``: one process, 1 thread (what one rank would do alone).

The layouts alternate round by round (the order rotates), so they share the
machine's load; the load average is recorded with every run. Per run: the
median seconds per iteration over the iterations after the first two (the
first loads the compiled loops), as the trainer logs them (batch generation,
gradient, all-reduce, Adam update; not validation or logging).

Identical results: after the same number of steps the parameters of every
layout are compared with those of ``1proc_2threads``. The rate regularizer is
the per-sample Bellec form (conventions.rate_average = "sample", NEST's), a
sum over samples like the task loss, so the all-reduced gradient is the whole
batch's gradient up to the order of the floating-point sums (the default
batch-rate form uses each rank's shard rate: engine/distributed.py). A
float64 run of the same steps measures how far that order moves the result.

    python benchmarks/bench_data_parallel.py [--iterations 12] [--rounds 3]

Results: benchmarks/results/data_parallel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYOUTS = {"1proc_2threads": (1, 2), "2proc_1thread": (2, 1), "1proc_1thread": (1, 1)}

WORKER = """
import sys
sys.path.insert(0, {root!r})
from benchmarks.bench_data_parallel import train_once
train_once(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
"""


def evidence_spec():
    from eprop_lava.tasks.evidence import EvidenceAccumulation

    task = EvidenceAccumulation()
    spec = task.default_spec()
    return task, spec.replace(conventions=spec.conventions.__class__(
        **{**spec.conventions.__dict__, "rate_average": "sample"}))


def train_once(run_dir: str, iterations: int, dtype: str, distributed: bool) -> None:
    from eprop_lava.training import TrainConfig, train

    task, spec = evidence_spec()
    config = TrainConfig(task="evidence", algo="eprop", batch_size=32, iterations=iterations,
                         validate_every=10 ** 6, validation_batches=1, checkpoint_every=10 ** 6,
                         early_stop=False, seed=1, progress=False, dtype=dtype, distributed=distributed)
    train(task, spec, config, run_dir, resume=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(name: str, run_dir: Path, iterations: int, dtype: str) -> dict:
    processes, threads = LAYOUTS[name]
    port = _free_port()
    load_before = os.getloadavg()
    procs = []
    t0 = time.perf_counter()
    for rank in range(processes):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
        if processes > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                       WORLD_SIZE=str(processes), LOCAL_RANK=str(rank))
        cmd = [sys.executable, "-c", WORKER.format(root=str(ROOT)), str(run_dir), str(iterations), dtype,
               "1" if processes > 1 else "0"]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait(timeout=1800) for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"{name}: a training process failed (exit codes {codes})")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rows]
    return {"layout": name, "processes": processes, "threads_per_process": threads, "dtype": dtype,
            "iterations": len(rows), "seconds_per_iteration": seconds,
            "median_seconds_per_iteration": statistics.median(seconds[2:] if len(seconds) > 4 else seconds),
            "wall_seconds_with_start_up": wall, "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()), "final_loss": rows[-1]["loss"]}


def final_params(run_dir: Path) -> dict:
    from eprop_lava.training import load_checkpoint

    return {k: np.asarray(v, dtype=np.float64) for k, v in load_checkpoint(run_dir).params.items()}


def difference(a: dict, b: dict) -> float:
    """max over parameters of max |a - b| / max |b| (0 when bitwise equal)."""
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in b)


def machine() -> dict:
    from benchmarks.bench_engine import machine as engine_machine

    info = engine_machine()
    import numba

    info["numba"] = numba.__version__
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--identity-iterations", type=int, default=12, help="float64 steps for the identity check")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_parallel.json"))
    args = ap.parse_args()
    names = list(LAYOUTS)
    runs, differences, first = [], [], {}
    with tempfile.TemporaryDirectory(prefix="bench_dp_") as tmp:
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            params = {}
            for name in order:
                run_dir = Path(tmp) / f"{name}-r{rnd}"
                r = run_layout(name, run_dir, args.iterations, "float32")
                r["round"] = rnd
                runs.append(r)
                params[name] = final_params(run_dir)
                print(f"round {rnd} {name:15s} {r['median_seconds_per_iteration'] * 1e3:7.1f} ms/iteration  "
                      f"load {r['load_average_before'][0]:.2f}", flush=True)
            row = {"round": rnd, "dtype": "float32", "steps": args.iterations,
                   **{f"{n}_vs_1proc_2threads": difference(params[n], params["1proc_2threads"]) for n in names[1:]}}
            if rnd == 0:
                first = params
            else:  # the same layout again: is a run repeatable bit for bit?
                row.update({f"{n}_vs_round_0": difference(params[n], first[n]) for n in names})
            differences.append(row)
        # float64 over the same steps, and float32 after one step (before Adam and the
        # spike thresholds can amplify a rounding difference)
        for dtype, steps in (("float64", args.identity_iterations), ("float32", 1)):
            final = {}
            for name in names:
                run_dir = Path(tmp) / f"{name}-{dtype}-{steps}"
                run_layout(name, run_dir, steps, dtype)
                final[name] = final_params(run_dir)
            differences.append({"dtype": dtype, "steps": steps,
                                **{f"{n}_vs_1proc_2threads": difference(final[n], final["1proc_2threads"])
                                   for n in names[1:]}})
    med = {n: statistics.median(r["median_seconds_per_iteration"] for r in runs if r["layout"] == n) for n in names}
    per_round = [{"round": rnd, **{n: next(r["median_seconds_per_iteration"] for r in runs
                                          if r["layout"] == n and r["round"] == rnd) for n in names}}
                 for rnd in range(args.rounds)]
    for row in per_round:
        row["speedup_2proc_over_1proc_2threads"] = row["1proc_2threads"] / row["2proc_1thread"]
        row["speedup_2proc_over_1proc_1thread"] = row["1proc_1thread"] / row["2proc_1thread"]
    result = {"task": "evidence (default spec, rate_average=sample), batch 32, fast e-prop, Adam",
              "machine": machine(), "iterations_per_run": args.iterations, "rounds": args.rounds,
              "median_seconds_per_iteration": med,
              "speedup_2proc_over_1proc_2threads": med["1proc_2threads"] / med["2proc_1thread"],
              "speedup_2proc_over_1proc_1thread": med["1proc_1thread"] / med["2proc_1thread"],
              "per_round": per_round, "parameter_differences": differences, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, out)
    print(json.dumps({k: result[k] for k in ("median_seconds_per_iteration", "speedup_2proc_over_1proc_2threads",
                                             "speedup_2proc_over_1proc_1thread", "parameter_differences")},
                     indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
