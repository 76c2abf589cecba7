"""Hyperparameter search with Optuna: trials train short runs; the best
configuration is retrained on fresh seeds against the default.

    python examples/hyperparameter_search.py [--small]
"""

import json
import os
import sys

from eprop_lava.studies.tune import TuneConfig, run_tune

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/hyperparameter_search"

config = TuneConfig(task="evidence", task_options={"n_cues": 3, "delay_ms": 100}, space="core",
                    out=OUT, storage=f"{OUT}/tune.journal", trials=2 if SMALL else 16,
                    iterations=1 if SMALL else 30, batch_size=4 if SMALL else 32,
                    validation_batches=1 if SMALL else 2, confirm=0 if SMALL else 2, sampler="random" if SMALL else "auto")
summary = run_tune(config, log=lambda m: print(m, file=sys.stderr))
print(f"{summary['trials_complete']} trials; default {summary['metric']} "
      f"{summary['default']['value']:.3f}; best {summary['best']['value']:.3f} with "
      f"{json.dumps(summary['best']['params'])}")
