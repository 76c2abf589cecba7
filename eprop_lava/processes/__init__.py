"""Lava Processes of fixed-point e-prop: interfaces only (ports and Vars).

Implementations live in :mod:`eprop_lava.models` (floating_pt and fixed_pt,
side by side). Needs lava-nc 0.10 on Python 3.10; importing this package
without Lava raises ImportError with the installation command.
"""

from __future__ import annotations

LAVA_HINT = ("Lava is not installed: eprop_lava.processes and eprop_lava.models need lava-nc 0.10, which "
             "supports Python 3.10 only. Install it with: pip install 'eprop-lava[lava]' (on Python 3.10).")

try:
    import lava.magma.core.process.process  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"{LAVA_HINT} (original error: {_exc})") from _exc

from eprop_lava.processes.process import (  # noqa: E402
    EpropALIF, EpropDense, EpropIzhikevich, EpropLIF, EpropNeuron, EpropRSNN, EpropSTDPALIF, LearningSignal,
    NEURON_PROCESSES, Readout, ReadoutDense,
)

__all__ = ["EpropNeuron", "EpropLIF", "EpropALIF", "EpropSTDPALIF", "EpropIzhikevich", "EpropDense",
           "ReadoutDense", "Readout", "LearningSignal", "EpropRSNN", "NEURON_PROCESSES", "LAVA_HINT"]
