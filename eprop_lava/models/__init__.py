"""Lava ProcessModels (floating_pt and fixed_pt) of the e-prop Processes, and
the helpers that build, select and run them. Needs Lava (see
:mod:`eprop_lava.processes`, which raises the installation hint)."""

from __future__ import annotations

import eprop_lava.processes  # noqa: F401 - raises ImportError with the install hint when Lava is missing
from eprop_lava.models.network import (  # noqa: E402
    LavaNetwork, LavaTimeout, build_network, model_map, read_network, run_config, run_guarded, run_network,
)

__all__ = ["LavaNetwork", "LavaTimeout", "build_network", "model_map", "read_network", "run_config",
           "run_guarded", "run_network"]
