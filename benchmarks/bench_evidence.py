"""Iterations until evidence accumulation is solved (< 7% validation error
over 8 validation batches, the official criterion) for BPTT and symmetric,
random and adaptive e-prop, several seeds; compared with seed 001 Table 5.2
(BPTT 156, random 308, symmetric 309, adaptive 331).

Each run is a normal training run directory under --root (resumable: an
interrupted benchmark continues where it stopped); the summary goes to
benchmarks/results/evidence_iterations.json.

    python benchmarks/bench_evidence.py --seeds 1 2 3 --max-iterations 1000 [--algos bptt symmetric random adaptive]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eprop_lava.tasks.evidence import EvidenceAccumulation  # noqa: E402
from eprop_lava.training import TrainConfig, load_checkpoint, train  # noqa: E402

PAPER = {"bptt": 156, "random": 308, "symmetric": 309, "adaptive": 331}


def run(algo: str, seed: int, args: argparse.Namespace) -> dict:
    task = EvidenceAccumulation()
    spec = task.default_spec()
    variant = "symmetric" if algo == "bptt" else algo
    spec = spec.replace(seed=seed, learning=spec.learning.__class__(variant=variant))
    config = TrainConfig(task="evidence", algo="bptt" if algo == "bptt" else "eprop", batch_size=args.batch,
                         iterations=args.max_iterations, validate_every=10, validation_batches=8,
                         checkpoint_every=10, seed=seed, progress=False, dtype="float32")
    run_dir = Path(args.root) / f"{algo}-s{seed}"
    t0 = time.perf_counter()
    result = train(task, spec, config, run_dir, resume=True)
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"algo": algo, "seed": seed, "solved_at": result.solved_at, "iterations_run": result.iterations,
            "final_validation_error": result.final_validation["error"],
            "median_seconds_per_iteration": statistics.median(r["seconds"] for r in rows),
            "wall_seconds_this_call": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algos", nargs="+", default=["symmetric", "random", "adaptive", "bptt"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--max-iterations", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--root", default=str(ROOT / "runs" / "bench_evidence"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evidence_iterations.json"))
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text())["runs"] if out.exists() else []
    done = {(r["algo"], r["seed"]) for r in results if r.get("complete")}
    for algo in args.algos:
        for seed in args.seeds:
            if (algo, seed) in done:
                continue
            r = run(algo, seed, args)
            r["complete"] = True
            results = [x for x in results if (x["algo"], x["seed"]) != (algo, seed)] + [r]
            summary = {}
            for a in sorted({x["algo"] for x in results}):
                solved = [x["solved_at"] for x in results if x["algo"] == a]
                ok = [s for s in solved if s is not None]
                summary[a] = {"runs": len(solved), "solved": len(ok),
                              "median_iterations": statistics.median(ok) if ok else None,
                              "paper_iterations": PAPER.get(a)}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"batch": args.batch, "max_iterations": args.max_iterations,
                                       "runs": results, "summary": summary}, indent=2))
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
