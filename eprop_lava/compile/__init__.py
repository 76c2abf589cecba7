"""The compiler: trained float network -> Loihi fixed point -> cores and chips
-> a verified artifact -> runs in Lava's fixed-point simulation (docs/compiler.md).

Modules: :mod:`quantize` (float -> fixed, Loihi's weight grid, error report),
:mod:`mapping` (Loihi 1/2 resource model, greedy partitioner), :mod:`artifact`
(self-describing, checksummed directory), :mod:`report` (resources, core map,
energy/latency from Davies et al. 2018), :mod:`deploy` (float / fixed / Lava
runs, hardware detection), :mod:`netx` (lava-dl HDF5 export), :mod:`pipeline`
and :mod:`cli` (``eprop-lava compile``, ``run``, ``export-netx``; the demo's
deploy stage). Only ``deploy`` and ``netx`` import Lava, when a run needs it.
"""
