"""On-chip learning: compile with learning synapses and run online e-prop in
Loihi's fixed-point arithmetic, sample after sample, on training samples of
the engine, scored on held-out test samples (and in Lava, compared weight by
weight).

    python examples/on_chip_learning.py [--small]
"""

import os
import sys

from eprop_lava import compile_checkpoint, run_artifact, train

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/on_chip_learning"

config = {"train": {"task": "evidence", "seed": 2, "task_options": {"n_cues": 3, "delay_ms": 100}}}
overrides = ["spec.timing=loihi", "spec.reset=zero", "train.iterations=30", "train.progress=false"]
if SMALL:
    overrides += ["train.iterations=2", "train.batch_size=4", "train.validation_batches=1", "train.validate_every=1"]
train(config, f"{OUT}/run", overrides=overrides, resume=False)
summary = compile_checkpoint(f"{OUT}/run", f"{OUT}/loihi2", learning=True, lr=2.0 ** -6)
print(f"{summary['cores']} core(s) with learning synapses ({summary['cores_other_mode']} without)")

try:
    import lava  # noqa: F401
    use_lava = not SMALL  # Lava's learning graph costs ~15 ms per step
except ImportError:
    use_lava = False
result = run_artifact(f"{OUT}/loihi2", samples=4 if SMALL else 32, learn=True, learn_samples=4 if SMALL else 64,
                      lava=use_lava)
m, learning = result["metric"], result["learning"]
print(f"held-out {m} before {learning['error_before']:.3f}, after online e-prop on {learning['samples']} training "
      f"samples {learning['error_after']:.3f}; {learning['weights_changed']} weights changed")
if "learning" in result.get("lava", {}):
    print(f"Lava: {sum(result['lava']['learning']['weight_mismatches'].values())} weight mismatches")
