"""The fast e-prop gradient against a forward pass, and one training step,
alternating in one process (so both see the same load), for one or more
source trees side by side (e.g. this tree against an older checkout).

Network and batch as benchmarks/bench_engine.py: evidence accumulation,
40 -> 100 (50 LIF + 50 ALIF, recurrent) -> 2, T = 2250, batch 32, float32.
Per call: wall seconds and the CPU seconds of the calling thread
(``time.thread_time``; with one numba thread the compiled loops run in that
thread, so this is the work itself, unaffected by waiting for a core on a
shared machine). Per (tree, threads) one child process: an untimed warm-up
(numba's cached loops load), then ``--repeats`` rounds of forward pass, fast
gradient and training step (batch generation + fast gradient + Adam update)
in turn. Children alternate between the trees, round after round.

    python benchmarks/bench_gradient_ratio.py [--trees . /path/to/old/tree] [--threads 1 2] [--rounds 3]

Results: benchmarks/results/gradient_ratio.json (with machine, versions and
the load average before and after each child).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, statistics, sys, time
import numpy as np
from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import eprop_gradient
from eprop_lava.engine.network import init_params, simulate
from eprop_lava.tasks.evidence import EvidenceAccumulation
from eprop_lava.training import apply_update, make_optimizer
try:
    from eprop_lava.engine.memory import retain_freed_memory
    retain_freed_memory()
except ImportError:
    pass
repeats = int(sys.argv[1])
task = EvidenceAccumulation()
spec = task.default_spec()
params = init_params(spec)
data = task.batch(np.random.default_rng(0), 32)
ops = make_ops("numpy", dtype="float32")
p = {k: ops.asarray(v) for k, v in params.items()}
x = ops.asarray(data.x)
optimizer = make_optimizer(spec)
train_params = {k: np.array(v) for k, v in params.items()}
rng = np.random.default_rng(1)

def forward():
    simulate(spec, p, x, ops, record=False)

def gradient():
    eprop_gradient(spec, params, data, ops)

def step():
    batch = task.batch(rng, 32)
    _, grads, _ = eprop_gradient(spec, train_params, batch, ops)
    apply_update(spec, train_params, optimizer, grads)

cases = {"forward": forward, "gradient": gradient, "step": step}
for f in cases.values():
    f()
wall = {k: [] for k in cases}
cpu = {k: [] for k in cases}
for _ in range(repeats):
    for name, f in cases.items():
        c0, t0 = time.thread_time(), time.perf_counter()
        f()
        wall[name].append(time.perf_counter() - t0)
        cpu[name].append(time.thread_time() - c0)
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def tree_label(tree: Path) -> str:
    """How a result names a source tree: "this checkout" or the commit it holds
    (never a path of the measuring machine)."""
    if tree.resolve() == ROOT.resolve():
        return "this checkout"
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return f"checkout of {commit}" if commit else f"tree {tree.name}"


def child(tree: Path, threads: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    before = os.getloadavg()
    out = subprocess.run([sys.executable, "-c", CHILD, str(repeats)], env=env, cwd=str(tree), check=True,
                         capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    med = {kind: {k: statistics.median(v) for k, v in r[kind].items()} for kind in ("wall", "cpu")}
    return {"tree": tree_label(tree), "threads": threads, "repeats": repeats, "seconds": r, "median": med,
            "gradient_over_forward_wall": med["wall"]["gradient"] / med["wall"]["forward"],
            "gradient_over_forward_cpu": med["cpu"]["gradient"] / med["cpu"]["forward"],
            "load_average_before": list(before), "load_average_after": list(os.getloadavg())}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_engine import machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", nargs="+", default=[str(ROOT)])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gradient_ratio.json"))
    args = ap.parse_args()
    trees = [Path(t).resolve() for t in args.trees]
    rows = []
    for rnd in range(args.rounds):
        order = trees if rnd % 2 == 0 else trees[::-1]
        for threads in args.threads:
            for tree in order:
                r = child(tree, threads, args.repeats)
                r["round"] = rnd
                rows.append(r)
                m = r["median"]
                print(f"round {rnd} {tree.name:12s} threads {threads}: forward {m['wall']['forward'] * 1e3:6.1f} ms "
                      f"(cpu {m['cpu']['forward'] * 1e3:5.1f}), gradient {m['wall']['gradient'] * 1e3:6.1f} ms "
                      f"(cpu {m['cpu']['gradient'] * 1e3:5.1f}), step {m['wall']['step'] * 1e3:6.1f} ms; "
                      f"gradient/forward wall {r['gradient_over_forward_wall']:.2f} "
                      f"cpu {r['gradient_over_forward_cpu']:.2f}; load {r['load_average_before'][0]:.1f}",
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), "network": "evidence, 40-100(50 LIF + 50 ALIF)-2, T=2250, "
                               "batch 32, float32", "rows": rows}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
