"""Quantization study: accuracy against weight precision (post-training
quantization, quantization-aware training, on-chip learning), with the
"knee" below which accuracy drops (docs/studies.md).

    python examples/quantization_study.py [--small]
"""

import os
import sys
from pathlib import Path

from eprop_lava.studies.config import StudyConfig
from eprop_lava.studies.quantization import run_study

SMALL = "--small" in sys.argv or os.environ.get("EPROP_LAVA_SMALL") == "1"
OUT = os.environ.get("EPROP_LAVA_EXAMPLES_OUT", "runs/examples") + "/quantization_study"
HERE = Path(__file__).resolve().parent

# the small study of examples/quantization_small.toml, or the built-in default study
config = StudyConfig.load(HERE / "quantization_small.toml") if SMALL else StudyConfig()
result = run_study(config, OUT, progress=False)
print(f"{result['planned']} points ({result['computed']} computed) -> {OUT}/summary.md")
print((Path(OUT) / "summary.md").read_text()[:1500])
