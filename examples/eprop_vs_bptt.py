"""e-prop against BPTT: on one batch, e-prop's gradient equals BPTT's where
e-prop is exact (BPTT with graph="eprop" stops where e-prop's Jacobians
stop), and differs from the full BPTT gradient by the terms e-prop drops;
then both train the same network for a few iterations.

    python examples/eprop_vs_bptt.py [--small]      (needs torch)
"""

import os
import sys

import numpy as np

from eprop_lava import configure, train
from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient
from eprop_lava.engine.network import init_params

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/eprop_vs_bptt"

config = {"train": {"task": "evidence", "task_options": {"n_cues": 3, "delay_ms": 100}, "seed": 3}}
task, spec, _ = configure(config, ["spec.learning.variant=symmetric", "spec.layers.0.size=40"])
params = init_params(spec)
batch = task.batch(np.random.default_rng(0), 4)
_, g_eprop, _ = eprop_gradient(spec, params, batch)
_, g_cut, _ = bptt_gradient(spec, params, batch, graph="eprop")
_, g_full, _ = bptt_gradient(spec, params, batch, graph="full")


def rel(a, b):
    return np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in b) / sum(np.sum(b[k] ** 2) for k in b))


print(f"|e-prop - BPTT(e-prop graph)| / |BPTT| = {rel(g_eprop, g_cut):.1e}  (equal to rounding)")
print(f"|e-prop - BPTT(full graph)|   / |BPTT| = {rel(g_eprop, g_full):.3f}  (the terms e-prop leaves out)")

iterations = 2 if SMALL else 40
for algo in ("eprop", "bptt"):
    result = train(config, f"{OUT}/{algo}", overrides=[f"train.algo={algo}", f"train.iterations={iterations}",
                                                       "train.batch_size=8", "train.validation_batches=1",
                                                       "train.validate_every=1", "train.progress=false",
                                                       "spec.learning.variant=symmetric", "spec.layers.0.size=40"],
                   resume=False)
    print(f"{algo}: validation error {result.final_validation['error']:.3f} after {result.iterations} iterations, "
          f"{result.seconds_per_iteration:.2f} s per iteration")
