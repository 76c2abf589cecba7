"""Same-machine, same-session speed comparison: NEST 3.10 ``*_bsshslm_2020``
e-prop vs eprop_lava's e-prop on evidence accumulation at batch 32.

Alternates the runs (NEST 1 thread, ours, ours with 1 BLAS thread, NEST 2
threads) ``--repeats`` times so that all of them see similar machine load,
records the load average before each run, and writes the medians and the
ratio NEST s/iteration / ours to benchmarks/results/nest_vs_eprop_lava_evidence.json.

    bash benchmarks/nest/setup_nest_venv.sh
    .venv/bin/python benchmarks/nest/compare_evidence.py --repeats 3

NEST runs use ``.venv-nest/bin/python benchmarks/nest/bench_nest_evidence.py``;
ours use ``.venv/bin/python benchmarks/nest/bench_ours_evidence.py`` (the
training step of ``eprop_lava.training.train``: numpy engine, float32, random
e-prop, Adam; data generation, forward pass, e-prop gradient, Adam update).
Wall and CPU time (``time.process_time``) are both recorded per iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEST_PY = ROOT / ".venv-nest" / "bin" / "python"
OURS_PY = ROOT / ".venv" / "bin" / "python"
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_nest(threads: int, iterations: int, out: Path) -> dict:
    cmd = [str(NEST_PY), str(ROOT / "benchmarks/nest/bench_nest_evidence.py"), "--iterations", str(iterations),
           "--threads", str(threads), "--repeats", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads(out.read_text())["runs"][0]
    return {"median_s_per_iteration": r["median_seconds_per_train_iteration"],
            "median_cpu_s_per_iteration": r["median_cpu_seconds_per_train_iteration"],
            "seconds_per_iteration": r["seconds_per_iteration"],
            "cpu_seconds_per_iteration": r["cpu_seconds_per_iteration"],
            "build_seconds": r["build_seconds"], "loss": r["loss"]}


def run_ours(iterations: int, out: Path, one_thread: bool) -> dict:
    env = dict(os.environ, **(ONE_THREAD if one_thread else {}))
    cmd = [str(OURS_PY), str(ROOT / "benchmarks/nest/bench_ours_evidence.py"), "--iterations", str(iterations),
           "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    return {"median_s_per_iteration": r["median_wall_s_per_iteration"],
            "median_cpu_s_per_iteration": r["median_cpu_s_per_iteration"],
            "seconds_per_iteration": r["wall_seconds_per_iteration"],
            "cpu_seconds_per_iteration": r["cpu_seconds_per_iteration"], "loss": r["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nest-iterations", type=int, default=5)
    ap.add_argument("--ours-iterations", type=int, default=30)
    ap.add_argument("--nest-2thread-repeats", type=int, default=1,
                    help="NEST 2-thread runs (after the alternating rounds; 0 to skip)")
    ap.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "nestcmp"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nest_vs_eprop_lava_evidence.json"))
    args = ap.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)

    kinds = ["nest_1thread", "ours_default_blas", "ours_1blas_thread"]
    runs: dict[str, list] = {k: [] for k in kinds + ["nest_2threads"]}
    schedule = [(rep, kind) for rep in range(args.repeats) for kind in kinds]
    schedule += [(rep, "nest_2threads") for rep in range(args.nest_2thread_repeats)]
    for rep, kind in schedule:
        before = load()
        t0 = time.strftime("%H:%M:%S")
        if kind == "nest_1thread":
            r = run_nest(1, args.nest_iterations, scratch / f"nest_t1_r{rep}.json")
        elif kind == "nest_2threads":
            r = run_nest(2, args.nest_iterations, scratch / f"nest_t2_r{rep}.json")
        else:
            r = run_ours(args.ours_iterations, scratch / f"{kind}_r{rep}.json", kind == "ours_1blas_thread")
        r.update({"repeat": rep, "start": t0, "loadavg_before": before, "loadavg_after": load()})
        runs[kind].append(r)
        print(f"rep {rep + 1} {kind:18s} median {r['median_s_per_iteration']:.3f} s/it wall, "
              f"{r['median_cpu_s_per_iteration']:.3f} s/it CPU, "
              f"load {before} -> {r['loadavg_after']}", flush=True)

    med = {k: statistics.median(r["median_s_per_iteration"] for r in v) for k, v in runs.items() if v}
    med_cpu = {k: statistics.median(r["median_cpu_s_per_iteration"] for r in v) for k, v in runs.items() if v}
    pairs = [("nest_1thread", "ours_default_blas"), ("nest_1thread", "ours_1blas_thread"),
             ("nest_2threads", "ours_default_blas")]
    ratios = {f"{a} / {b}": med[a] / med[b] for a, b in pairs if a in med and b in med}
    ratios_cpu = {f"{a} / {b}": med_cpu[a] / med_cpu[b] for a, b in pairs if a in med_cpu and b in med_cpu}
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    result = {"task": "evidence accumulation, batch 32, 2250 ms sequences, 40-100(50 LIF+50 ALIF)-2",
              "machine": {"cpu_model": cpu, "logical_cores": os.cpu_count()},
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "median_s_per_iteration": med, "median_cpu_s_per_iteration": med_cpu,
              "ratios_wall": ratios, "ratios_cpu": ratios_cpu, "runs": runs,
              "git_head": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip()}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({"median_s_per_iteration": med, "median_cpu_s_per_iteration": med_cpu,
                      "ratios_wall": ratios, "ratios_cpu": ratios_cpu}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
