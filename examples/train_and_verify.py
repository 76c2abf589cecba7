"""Train and verify: e-prop on evidence accumulation (seed 001 sec. 5.3),
its test error, and the numerical checks of e-prop against BPTT.

    python examples/train_and_verify.py            # 150 iterations, a few minutes
    python examples/train_and_verify.py --small    # seconds (as in the tests)
"""

import os
import sys

from eprop_lava import evaluate, train, verify

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/train_and_verify"

overrides = ["train.iterations=150", "train.progress=false"]
config = {"train": {"task": "evidence", "seed": 1}}
if SMALL:  # a shorter task (3 cues, 100 ms delay) and a few iterations
    config["train"]["task_options"] = {"n_cues": 3, "delay_ms": 100}
    overrides += ["train.iterations=3", "train.batch_size=8", "train.validation_batches=1", "train.validate_every=1"]

result = train(config, OUT, overrides=overrides, resume=False)
print(f"trained {result.iterations} iterations: validation error {result.final_validation['error']:.3f}, "
      f"{result.seconds_per_iteration:.3f} s per iteration")
report = evaluate(OUT, batches=2 if SMALL else 8)
print(f"test error {report['test_error']:.3f} ({report['checkpoint_note']})")

if not SMALL:  # the checks take about a minute
    checks = verify()
    for check in checks:
        print(f"{'ok  ' if check['passed'] else 'FAIL'} {check['name']}: {check['value']:.2e}")
    sys.exit(0 if all(c["passed"] for c in checks) else 1)
