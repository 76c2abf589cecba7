"""Compile and run on Loihi's arithmetic: train a network with Loihi's
timing and reset, quantize it to 8-bit weights, map it onto Loihi 2 cores,
and run the test set on the float engine, the fixed-point engine and Lava's
fixed-point simulation (bit-identical to the engine).

    python examples/compile_and_run.py [--small]
"""

import os
import sys

from eprop_lava import compile_checkpoint, run_artifact, train

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/compile_and_run"

overrides = ["spec.timing=loihi", "spec.reset=zero", "train.iterations=150", "train.progress=false"]
config = {"train": {"task": "evidence", "seed": 1}}
if SMALL:
    config["train"]["task_options"] = {"n_cues": 3, "delay_ms": 100}
    overrides += ["train.iterations=3", "train.batch_size=8", "train.validation_batches=1", "train.validate_every=1"]
train(config, f"{OUT}/run", overrides=overrides, resume=False)

summary = compile_checkpoint(f"{OUT}/run", f"{OUT}/loihi2", target="loihi2", weight_bits=8)
print(f"{summary['cores']} core(s) on {summary['chips']} chip(s); relative RMS quantization error "
      + ", ".join(f"{k} {v:.4f}" for k, v in summary["quantization_rel_rms_error"].items()))
print(f"estimate: {summary['energy_per_inference_uj']:.2f} uJ per inference (Davies et al. 2018 figures)")

try:
    import lava  # noqa: F401
    use_lava = True
except ImportError:
    use_lava = False
result = run_artifact(f"{OUT}/loihi2", samples=4 if SMALL else 64, lava_samples=1 if SMALL else 4, lava=use_lava)
m = result["metric"]
print(f"float engine {m} {result[f'float_{m}']:.3f}, fixed-point engine {m} {result[f'fixed_{m}']:.3f}")
lv = result["lava"]
if "skipped" in lv:
    print(f"Lava: skipped ({lv['skipped']})")
else:
    print(f"Lava fixed_pt: {lv['comparison']['readout_mismatches']} readout mismatches against the engine")
