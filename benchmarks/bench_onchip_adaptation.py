"""On-chip adaptation on the evidence task: a network trained off-chip (the
demo's: 50 LIF + 50 ALIF, random e-prop, Loihi timing, 150 iterations of
batch 32, seed 1), compiled for Loihi 2, then adapted online (batch 1) to the
task with the two cue sides swapped, in the fixed-point engine ("loihi2"
profile) and, on the same samples with the same learning rates, in float
e-prop. Held-out error on the swapped task before and after.

    python benchmarks/bench_onchip_adaptation.py [--samples 16,32] [--repeats 3] [--test-samples 256]
        [--lr 0.03] [--out benchmarks/results/onchip_adaptation.json]

Each repeat draws its learning samples from another rng stream ([seed, 4 + i];
the held-out samples come from [seed, 3], the training data of the network
from [seed, 1] and [seed, 2]).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from eprop_lava.compile.artifact import write_result
from eprop_lava.compile.pipeline import compile_checkpoint
from eprop_lava.studies.onchip import adaptation, format_adaptation
from eprop_lava.tasks import get_task
from eprop_lava.training import TrainConfig, train

OUT = Path(__file__).resolve().parent / "results" / "onchip_adaptation.json"


def trained_artifact(tmp: Path) -> tuple[Path, float]:
    """The demo's network (evidence, Loihi timing, 150 iterations, seed 1)
    trained off-chip and compiled for loihi2 with learning: (``tmp / "art"``,
    its validation error)."""
    task = get_task("evidence")
    spec = task.default_spec().replace(timing="loihi", reset="zero")
    config = TrainConfig(task="evidence", algo="eprop", batch_size=32, iterations=150, validate_every=25,
                         validation_batches=4, checkpoint_every=25, seed=1, progress=False)
    res = train(task, spec, config, tmp / "train", resume=False)
    print(f"trained: validation error {res.final_validation['error']:.3f}", flush=True)
    compile_checkpoint(tmp / "train" / "checkpoint.npz", tmp / "art", target="loihi2", learning=True)
    return tmp / "art", res.final_validation["error"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="16,32", help="on-chip sample counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-samples", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.03, help="readout SGD rate (hidden: lr x feedback gain)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    counts = [int(s) for s in args.samples.split(",")]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, validation_error = trained_artifact(tmp)
        runs = []
        for n in counts:
            for i in range(args.repeats):
                r = adaptation(tmp / "art", samples=n, test_samples=args.test_samples, every=max(1, n // 4),
                               lr=args.lr, learn_stream=4 + i)
                print(format_adaptation(r), flush=True)
                runs.append(r)
    summary = {}
    for n in counts:
        rs = [r for r in runs if r["samples"] == n]
        diff = [r["fixed_minus_float_after"] for r in rs]
        summary[str(n)] = {
            "fixed_error_before": statistics.mean(r["fixed"]["error_before"] for r in rs),
            "fixed_error_after": statistics.mean(r["fixed"]["error_after"] for r in rs),
            "float_error_before": statistics.mean(r["float"]["error_before"] for r in rs),
            "float_error_after": statistics.mean(r["float"]["error_after"] for r in rs),
            "fixed_minus_float_after_mean": statistics.mean(diff),
            "fixed_minus_float_after_max_abs": max(abs(d) for d in diff),
            "within_0_05": all(abs(d) <= 0.05 for d in diff)}
    out = {"benchmark": "on-chip adaptation, evidence task with swapped cue sides", "network_validation_error":
           validation_error, "repeats": args.repeats, "test_samples": args.test_samples,
           "summary": summary, "runs": runs, "seconds": time.perf_counter() - t0}
    print(json.dumps(summary, indent=2))
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
