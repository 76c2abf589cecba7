"""What Lava's Dense weight grid costs the quantization study at 8 bits.

Since "one weight grid", an 8-bit matrix is rounded onto the integers its
Lava ``Dense`` keeps unchanged (``fixed_engine.weight_integers``: a
mixed-sign matrix holds even values in [-256, 254]); before, every integer
in the profile's range [-256, 255] was used, half of which Dense truncates.
This recomputes the study's 8-bit loihi2 points (post-training quantization,
and on-chip fine-tuning with its 'before' accuracy) on the float networks of
a finished study directory, once more with the earlier grid, and writes both
side by side, per seed.

    python benchmarks/bench_quantization_grid.py --study DIR
        [--config benchmarks/results/quantization_evidence_config.json]
        [--out benchmarks/results/quantization_evidence_grid_ablation.json]

DIR: the output directory of ``eprop-lava study quantization`` with that
config (its stored points are the Dense-grid numbers; its float networks are
reused, nothing is retrained).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np

from eprop_lava.compile.artifact import jsonable
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.studies.config import StudyConfig
from eprop_lava.studies.quantization import plan, run_point
from eprop_lava.studies.store import ResultStore
from eprop_lava.training import atomic_write_text


def every_integer(w, scale, profile, rng=None):
    """The rounding before the Dense grid: every integer of the profile's weight range."""
    x = np.asarray(w, dtype=np.float64) * scale
    lo, hi = profile.weight_range
    q = np.rint(x) if rng is None else np.floor(x + rng.random(x.shape))
    return np.clip(q, lo, hi).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--config", default="benchmarks/results/quantization_evidence_config.json")
    ap.add_argument("--out", default="benchmarks/results/quantization_evidence_grid_ablation.json")
    args = ap.parse_args()
    config = StudyConfig.from_dict(json.loads(Path(args.config).read_text()))
    store = ResultStore(args.study)
    points = [p for p in plan(config) if p.get("weight_bits") == 8 and p.get("profile") == "loihi2"
              and (p["kind"] == "ptq" or (p["kind"] == "onchip" and p["mode"] == "finetune"))]
    dense = {json.dumps(p, sort_keys=True): store.get(p) for p in points}
    missing = [p for p in points if dense[json.dumps(p, sort_keys=True)] is None]
    if missing:
        raise SystemExit(f"--study {args.study}: {len(missing)} 8-bit points not computed yet; run the study first")
    fe.weight_integers = every_integer   # fe.quantize and studies.qat look it up at call time
    groups: dict = defaultdict(list)
    for p in points:
        old = run_point(p, config, args.study)
        new = dense[json.dumps(p, sort_keys=True)]
        key = json.dumps({k: v for k, v in p.items() if k not in ("seed", "context")}, sort_keys=True)
        groups[key].append((p["seed"], new, old))
        print(p["kind"], p.get("scaling", ""), p["rounding"], p["seed"], "dense", 1 - new["metric"],
              "every integer", 1 - old["metric"], flush=True)
    rows = []
    for key, runs in groups.items():
        row = {"point": json.loads(key), "seeds": [s for s, _, _ in runs],
               "dense_grid_accuracy": [1 - n["metric"] for _, n, _ in runs],
               "every_integer_accuracy": [1 - o["metric"] for _, _, o in runs]}
        if "metric_before" in runs[0][1]:
            row["dense_grid_before"] = [1 - n["metric_before"] for _, n, _ in runs]
            row["every_integer_before"] = [1 - o["metric_before"] for _, _, o in runs]
        rows.append(row)
    out = {"what": "8-bit loihi2 points of the quantization study on the same float networks: weights on Lava's "
                   "Dense grid (mixed-sign matrices: even values in [-256, 254]) against every integer in "
                   "[-256, 255] (the grid before); accuracy per seed",
           "config": args.config, "test_samples_per_seed": config.test.batches * config.test.batch_size,
           "machine": platform.platform(), "python": platform.python_version(), "rows": rows}
    atomic_write_text(Path(args.out), json.dumps(jsonable(out), indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
