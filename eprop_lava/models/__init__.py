"""Lava ProcessModels (floating_pt and fixed_pt) of the e-prop Processes, and
the helpers that build, select and run them. Needs Lava (see
:mod:`eprop_lava.processes`, which raises the installation hint). Lava's
runtime modules are imported under
:func:`eprop_lava.lava_import.lava_import_guard` (multiprocessing start method)."""

from __future__ import annotations

import eprop_lava.processes  # noqa: F401 - raises ImportError with the install hint when Lava is missing
from eprop_lava.lava_import import lava_import_guard

with lava_import_guard():
    from eprop_lava.models.network import (  # noqa: E402
        LavaNetwork, LavaTimeout, build_network, model_map, read_network, run_config, run_guarded, run_network,
    )

__all__ = ["LavaNetwork", "LavaTimeout", "build_network", "model_map", "read_network", "run_config",
           "run_guarded", "run_network"]
