"""Engine benchmark: forward pass, fast e-prop gradient, online e-prop
gradient and BPTT gradient for the evidence-accumulation network
(40 -> 100 (50 LIF + 50 ALIF, recurrent) -> 2, T = 2250, batch 32),
and peak memory of the fast gradient against network size.

Each case runs in its own process so that peak memory (ru_maxrss, minus the
same process's baseline after imports and data generation) belongs to it.

    python benchmarks/bench_engine.py [--repeats 3] [--out benchmarks/results/engine.json]
    python benchmarks/bench_engine.py --only-batches [--repeats 15]

Batch generation (evidence accumulation and store-recall at --batch) is timed
in one process, alternating the compiled spike draws with the numpy
definition (EPROP_LAVA_FUSED=0) call by call, so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case: str, repeats: int, n: int, steps: int, batch: int, dtype: str) -> dict:
    import numpy as np

    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient, eprop_gradient_online
    from eprop_lava.engine.network import init_params, simulate
    from eprop_lava.spec import LayerSpec
    from eprop_lava.tasks.evidence import EvidenceAccumulation

    task = EvidenceAccumulation()
    spec = task.default_spec()
    spec = spec.replace(layers=(spec.layers[0].__class__(**{**spec.layers[0].__dict__, "size": n}),))
    params = init_params(spec)
    data = task.batch(np.random.default_rng(0), batch)
    if steps != data.steps:  # a window of the task's sequence (tiled when longer), recall at the end
        from eprop_lava.engine.network import Batch
        reps = -(-steps // data.steps)
        tile = lambda a: np.concatenate([a] * reps, axis=0)[-steps:]
        data = Batch(tile(data.x), tile(data.target), tile(data.mask), data.labels)
    ops = make_ops("numpy", dtype=dtype)
    p = {k: ops.asarray(v) for k, v in params.items()}
    x = ops.asarray(data.x)
    fns = {
        "forward": lambda: simulate(spec, p, x, ops, record=False),
        "fast": lambda: eprop_gradient(spec, params, data, ops),
        "online": lambda: eprop_gradient_online(spec, params, data, ops),
        "bptt": lambda: bptt_gradient(spec, params, data, graph="full", dtype=dtype),
    }
    fn = fns[case]
    base = _rss_mb()
    if case in ("forward", "fast"):
        from eprop_lava.engine.memory import retain_freed_memory

        retain_freed_memory()  # as the trainer does (engine/memory.py)
        fn()  # warm-up: loads the compiled loops (numba's cache) outside the timing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"case": case, "neurons": n, "steps": data.steps, "batch": batch, "dtype": dtype,
            "seconds": times, "median_seconds": statistics.median(times),
            "peak_extra_mb": _rss_mb() - base}


def batch_generation(repeats: int, batch: int) -> list[dict]:
    """Median seconds per batch, compiled draws against the numpy definition,
    alternating; the same seed gives the same batch on both paths
    (tests/test_speed_paths.py)."""
    import numpy as np

    from eprop_lava.tasks import get_task

    rows = []
    for name in ("evidence", "store_recall"):
        task = get_task(name)
        times = {"1": [], "0": []}
        for flag in ("1", "0"):  # warm-up: compile (or load numba's cache)
            os.environ["EPROP_LAVA_FUSED"] = flag
            task.batch(np.random.default_rng(0), batch)
        for i in range(repeats):
            for flag in (("1", "0") if i % 2 == 0 else ("0", "1")):
                os.environ["EPROP_LAVA_FUSED"] = flag
                rng = np.random.default_rng(i)
                t0 = time.perf_counter()
                task.batch(rng, batch)
                times[flag].append(time.perf_counter() - t0)
        os.environ.pop("EPROP_LAVA_FUSED", None)
        compiled, reference = statistics.median(times["1"]), statistics.median(times["0"])
        rows.append({"task": name, "batch": batch, "compiled_median_seconds": compiled,
                     "reference_median_seconds": reference, "reference_over_compiled": reference / compiled,
                     "load_average": os.getloadavg()})
        print(f"batch {name:12s} compiled {compiled * 1e3:.1f} ms  numpy {reference * 1e3:.1f} ms  "
              f"ratio {reference / compiled:.2f}  load {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def machine() -> dict:
    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def spawn(case: str, repeats: int, n: int, steps: int, batch: int, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--repeats", str(repeats), "--neurons", str(n),
           "--steps", str(steps), "--batch", str(batch), "--dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2250)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine.json"))
    ap.add_argument("--skip-online", action="store_true")
    ap.add_argument("--only-batches", action="store_true", help="time batch generation only")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.repeats, args.neurons, args.steps, args.batch, args.dtype)))
        return
    if args.only_batches:
        print(json.dumps({"machine": machine(), "batch_generation": batch_generation(args.repeats, args.batch)}))
        return
    results = {"machine": machine(), "cases": [], "memory_scaling": [],
               "batch_generation": batch_generation(args.repeats, args.batch)}
    for case in ("forward", "fast", "bptt") + (() if args.skip_online else ("online",)):
        reps = 1 if case == "online" else args.repeats
        r = spawn(case, reps, 100, args.steps, args.batch, args.dtype)
        results["cases"].append(r)
        print(f"{case:8s} median {r['median_seconds']:.3f} s  peak +{r['peak_extra_mb']:.0f} MB", flush=True)
    med = {r["case"]: r["median_seconds"] for r in results["cases"]}
    results["fast_over_forward"] = med["fast"] / med["forward"]
    print(f"fast gradient / forward = {results['fast_over_forward']:.2f}")
    for n in (100, 200, 400, 800):
        r = spawn("fast", 1, n, args.steps, args.batch, args.dtype)
        results["memory_scaling"].append(r)
        print(f"fast n={n:4d}: {r['median_seconds']:.3f} s, peak +{r['peak_extra_mb']:.0f} MB", flush=True)
    # Scaling with network size at a short sequence (per-step cost and memory),
    # and with sequence length at a fixed size.
    results["size_scaling"] = []
    for n in (100, 300, 1000, 3000, 10000):
        r = spawn("fast", 1, n, 100, 8, args.dtype)
        results["size_scaling"].append(r)
        print(f"fast n={n:5d} T=100 B=8: {r['median_seconds']:.3f} s, peak +{r['peak_extra_mb']:.0f} MB", flush=True)
    results["length_scaling"] = []
    for steps in (250, 500, 1000, 2000):
        r = spawn("fast", 1, 100, steps, args.batch, args.dtype)
        results["length_scaling"].append(r)
        print(f"fast n=100 T={steps}: {r['median_seconds']:.3f} s, peak +{r['peak_extra_mb']:.0f} MB", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
