"""Lava Processes of fixed-point e-prop: interfaces only (ports and Vars).

Implementations live in :mod:`eprop_lava.models` (floating_pt and fixed_pt,
side by side). Needs lava-nc 0.10 on Python 3.10; importing this package
without Lava raises ImportError with the installation command. Lava is
imported through :func:`eprop_lava.lava_import.lava_import_guard`, so the
import also works after something else fixed multiprocessing's start method.
"""

from __future__ import annotations

from eprop_lava.lava_import import lava_import_guard

LAVA_HINT = ("Lava is not installed: eprop_lava.processes and eprop_lava.models need lava-nc 0.10, which "
             "supports Python 3.10 only. Install it with: pip install 'eprop-lava[lava]' (on Python 3.10).")

with lava_import_guard():
    try:
        import lava.magma.core.process.process  # noqa: F401
    except ImportError as _exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{LAVA_HINT} (original error: {_exc})") from _exc
    # The module that calls set_start_method('fork'); Lava imports it lazily
    # (at the first run, or with lava.proc.io.extractor), so it is imported
    # here, once, under the guard: later imports find it in sys.modules.
    import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401

    from eprop_lava.processes.process import (  # noqa: E402
        EpropALIF, EpropDense, EpropIzhikevich, EpropLIF, EpropNeuron, EpropRSNN, EpropSTDPALIF, LearningSignal,
        NEURON_PROCESSES, Readout, ReadoutDense,
    )
    from eprop_lava.processes.learning_engine import (  # noqa: E402
        EpropLearningLIF, EpropRule, eprop_learning_rule,
    )

__all__ = ["EpropNeuron", "EpropLIF", "EpropALIF", "EpropSTDPALIF", "EpropIzhikevich", "EpropDense",
           "ReadoutDense", "Readout", "LearningSignal", "EpropRSNN", "NEURON_PROCESSES", "LAVA_HINT",
           "EpropLearningLIF", "EpropRule", "eprop_learning_rule"]
