"""The main job, end to end: train an evidence-accumulation network quickly
with e-prop (Loihi's timing and reset, so the network is the one the chip
runs), compile it for Loihi 2 and Loihi 1 (8-bit weights, core map, energy
estimate), run the test set on the float engine, the fixed-point engine and
Lava's fixed-point simulation, and print a short report with its figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from eprop_lava.tasks import get_task
from eprop_lava.training import TrainConfig, train


def run_demo(out: Path, quick: bool = False) -> int:
    task = get_task("evidence")
    # Train with the semantics the chip executes (one-step delay per synaptic
    # hop, reset to zero), so compiling needs no conversion.
    spec = task.default_spec().replace(timing="loihi", reset="zero")
    # Up to 300 iterations, stopping once solved: the validation error of this
    # task moves in steps of 0.05-0.2 between checks, and 150 iterations left a
    # network at 0.14 (float32 rounding of an equal gradient changes the path).
    config = TrainConfig(task="evidence", algo="eprop", batch_size=32 if not quick else 8,
                         iterations=300 if not quick else 3, validate_every=25 if not quick else 3,
                         validation_batches=4 if not quick else 1, checkpoint_every=25, seed=1)
    print(f"eprop-lava demo: evidence accumulation (seed 001 sec. 5.3), {spec.n_neurons} neurons "
          f"(50 LIF + 50 ALIF), random e-prop, Loihi timing, batch {config.batch_size}, "
          f"{config.iterations} iterations", flush=True)
    t0 = time.perf_counter()
    result = train(task, spec, config, out / "train", resume=False)
    report = {
        "validation_error": result.final_validation["error"],
        "validation_rate_hz": result.final_validation["rate_hz"],
        "iterations": result.iterations,
        "seconds_per_iteration": result.seconds_per_iteration,
        "train_seconds": time.perf_counter() - t0,
    }
    print(f"validation error {report['validation_error']:.3f} (chance 0.5) after {result.iterations} iterations; "
          f"mean rate {report['validation_rate_hz']:.1f} Hz; {report['seconds_per_iteration']:.2f} s/iteration")
    try:
        from eprop_lava.compile.pipeline import deploy_demo
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("eprop_lava.compile"):
            raise
    else:
        report.update(deploy_demo(out, result, task, spec, config))
    if not quick:
        from eprop_lava.plots import plot_run

        for path in plot_run(out / "train"):
            print(f"figure: {path}")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'report.json'}", file=sys.stderr)
    return 0
