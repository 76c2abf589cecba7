"""Speech: build the offline spoken corpus (eSpeak NG voices), train keyword
spotting on MFCC features, evaluate on the test split, and compile (the
report says which sections need spike inputs and are left out).

    python examples/speech.py [--small]
"""

import os
import sys

from eprop_lava import compile_checkpoint, evaluate, run_artifact, train
from eprop_lava.tasks.speech.corpus import CorpusOptions, build_corpus

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/speech"

corpus = build_corpus(f"{OUT}/corpus", CorpusOptions.small() if SMALL else CorpusOptions()).root
config = {"train": {"task": "speech_keywords", "task_options": {"data": str(corpus)}}}
overrides = ["train.iterations=100", "train.progress=false"]
if SMALL:
    overrides += ["train.iterations=2", "train.batch_size=4", "train.validation_batches=1", "train.validate_every=1",
                  "spec.layers.0.size=20"]
train(config, f"{OUT}/run", overrides=overrides, resume=False)
report = evaluate(f"{OUT}/run", batches=1 if SMALL else 8)
print(f"keyword test error {report['test_error']:.3f} ({report['checkpoint_note']})")

summary = compile_checkpoint(f"{OUT}/run", f"{OUT}/loihi2", loihi_timing=True)
for gap in summary["omitted"]:
    print(f"compile left out the {gap['section']}: {gap['reason']}")
result = run_artifact(f"{OUT}/loihi2", samples=4 if SMALL else 64, lava=False)
print(f"float engine error after Loihi timing {result.get('float_loihi_timing_error', result['float_error']):.3f}")
