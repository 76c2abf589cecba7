"""Loihi resource model and a greedy core partitioner.

Limits come from docs/lava_loihi.md §4 (Davies et al., IEEE Micro 38(1) 2018;
nengo-loihi ``block.py``/``discretize.py``/``nxsdk_objects.py``; Intel's
Loihi 2 technology brief 2021). Where a Loihi 2 figure is not public the
model says what it assumes (:attr:`ChipTarget.assumptions`).

What is counted per core
------------------------
* **compartments**: one per neuron; on Loihi 1 an adaptive (ALIF/STDP-ALIF)
  neuron takes two (its threshold adaptation needs an auxiliary compartment,
  as in Rao et al. 2022); the readout is one non-spiking compartment per
  output. Izhikevich neurons have no Loihi 1 form (docs/lava_loihi.md §2.3).
* **synaptic memory**: per presynaptic axon entering the core, one synapse
  list over the core's postsynaptic neurons of that projection:
  ``ceil64(n (w + d + t) + 10)`` bits (nengo-loihi ``SynapseConfig.bits_per_axon``,
  dense encoding), w = weight bits, d = delay bits (0: our Dense has only
  the fixed one-step pipeline delay), t = learning-state bits per synapse.
  A learning synapse of fixed-point e-prop holds its eligibility vector
  (``trace_bits + 1`` per component: 1 for LIF, 2 for ALIF/STDP-ALIF and
  Izhikevich), the filtered trace e-bar (``tag_bits + 1``) and the update
  accumulator (``accumulator_bits + 1``) — the state
  :mod:`eprop_lava.engine.fixed_engine` keeps per synapse.
* **neuron memory** (Loihi 2 only, where neuron state and synapses share
  the core's SRAM): u, v (24 bits each), the refractory counter (6), the
  adaptive threshold (24), Izhikevich's u (24).
* **input axons**: distinct presynaptic neurons entering the core (one axon
  serves every projection of the core); on Loihi 1 a learning synapse's
  axon takes two slots.
* **output axons**: per neuron, one per destination core.
* **Loihi 1 configuration slots**: distinct compartment configurations
  (decays, threshold, refractory delay, adaptation) <= 32, distinct
  thresholds <= 8, distinct synapse formats (one per projection) <= 8.

The partitioner is next-fit over layers in order, keeping each layer's
neurons contiguous (neighbours share cores, which keeps inter-core traffic
low): it puts as many neurons of the current layer as fit on the open core
(binary search against every limit), then opens the next core; cores fill
chips in order and spill onto the next chip; a network that needs more
chips than the system has raises :class:`MappingError` with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eprop_lava.errors import UserError
from eprop_lava.fixed import FixedPointProfile, get_profile
from eprop_lava.spec import NetworkSpec

UV_BITS = 24
REF_BITS = 6
BLOCK_HEADER_BITS = 10   # nengo-loihi bits_per_axon: per synapse list


class MappingError(UserError):
    """The network does not fit the chosen target or system."""


@dataclass(frozen=True)
class ChipTarget:
    """Published per-core and per-chip limits of one Loihi generation."""

    name: str
    neurons_per_core: int
    synapse_bits_per_core: int
    shared_neuron_memory: bool
    in_axons_per_core: int
    out_axons_per_core: int
    cores_per_chip: int
    compartment_configs: int | None
    vth_configs: int | None
    synapse_configs: int | None
    learning_axon_slots: int
    adaptive_compartments: int
    izhikevich: bool
    on_chip_eprop: bool
    sources: tuple = ()
    assumptions: tuple = ()

    def __post_init__(self) -> None:
        for key in ("neurons_per_core", "synapse_bits_per_core", "in_axons_per_core", "out_axons_per_core",
                    "cores_per_chip", "learning_axon_slots", "adaptive_compartments"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MappingError(f"target {self.name}: {key} must be a positive integer, got {v!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"], d["assumptions"] = list(self.sources), list(self.assumptions)
        return d


LOIHI1 = ChipTarget(
    name="loihi1", neurons_per_core=1024, synapse_bits_per_core=16384 * 64, shared_neuron_memory=False,
    in_axons_per_core=4096, out_axons_per_core=4096, cores_per_chip=128,
    compartment_configs=32, vth_configs=8, synapse_configs=8, learning_axon_slots=2, adaptive_compartments=2,
    izhikevich=False, on_chip_eprop=False,
    sources=("Davies et al., IEEE Micro 38(1) 2018: 128 cores, 1,024 compartments/core, 128 KiB synaptic "
             "memory/core, 4,096 input and output axons/core",
             "nengo-loihi block.py (MAX_SYNAPSE_BITS = 16384*64, MAX_IN_AXONS, MAX_OUT_AXONS), "
             "nxsdk_objects.py (32 compartment, 8 vth, 8 synapse configurations per core)"),
    assumptions=("an adaptive neuron uses 2 compartments (threshold adaptation through an auxiliary "
                 "compartment)",
                 "on-chip e-prop is not possible: psi needs v relative to the threshold, which Loihi 1's "
                 "fixed CUBA neuron cannot send (docs/lava_loihi.md §3.5 (2)); the learning-synapse count is a "
                 "memory estimate only"))

LOIHI2 = ChipTarget(
    name="loihi2", neurons_per_core=8192, synapse_bits_per_core=128 * 1024 * 8, shared_neuron_memory=True,
    in_axons_per_core=4096, out_axons_per_core=4096, cores_per_chip=128,
    compartment_configs=None, vth_configs=None, synapse_configs=None, learning_axon_slots=1,
    adaptive_compartments=1, izhikevich=True, on_chip_eprop=True,
    sources=("Intel, 'Taking Neuromorphic Computing to the Next Level with Loihi 2' (2021): 128 neuro-cores, "
             "up to 8,192 neurons/core, ~1 M neurons and 120 M synapses/chip",
             "lava-nc magma/compiler/subcompilers/constants.py (NUM_VIRTUAL_CORES_L2 = 128)"),
    assumptions=("per-core memory taken as 128 KiB shared between neuron state and synapses (reported, not "
                 "tabulated by Intel)",
                 "input/output axons per core taken equal to Loihi 1's 4,096 (not publicly tabulated)",
                 "neurons are programmable microcode: no configuration-slot limit is modelled",
                 "custom neurons (psi output, ALIF, Izhikevich) need microcode NcProcessModels, which open "
                 "Lava does not contain (docs/lava_loihi.md §6)"))

TARGETS = {"loihi1": LOIHI1, "loihi2": LOIHI2}


@dataclass(frozen=True)
class System:
    name: str
    target: str
    chips: int
    note: str = ""


SYSTEMS = {s.name: s for s in (
    System("kapoho_bay", "loihi1", 2, "USB form factor, 1-2 Loihi chips"),
    System("nahuku32", "loihi1", 32, "Nahuku board, 8-32 chips"),
    System("pohoiki_beach", "loihi1", 64, "64 chips, 8 M neurons"),
    System("pohoiki_springs", "loihi1", 768, "768 chips, 100 M neurons"),
    System("oheo_gulch", "loihi2", 1, "single Loihi 2 chip"),
    System("kapoho_point", "loihi2", 8, "8 Loihi 2 chips"),
    System("hala_point", "loihi2", 1152, "1,152 Loihi 2 chips, 140,544 cores"),
)}
DEFAULT_SYSTEM = {"loihi1": "nahuku32", "loihi2": "kapoho_point"}


def get_target(name: str) -> ChipTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise MappingError(f"target: unknown {name!r}; choose one of {', '.join(TARGETS)}") from None


def get_system(name: str | None, target: str) -> System:
    name = name or DEFAULT_SYSTEM[target]
    if name not in SYSTEMS:
        raise MappingError(f"system: unknown {name!r}; choose one of "
                           f"{', '.join(s for s, v in SYSTEMS.items() if v.target == target)} for {target}")
    system = SYSTEMS[name]
    if system.target != target:
        raise MappingError(f"system {name} is built from {system.target} chips, not {target}")
    return system


# ------------------------------------------------------------------ the network as projections
@dataclass(frozen=True)
class Population:
    """A group of neurons placed on cores (a hidden layer or the readout)."""

    key: str
    kind: str              # lif, alif, stdp_alif, izhikevich, readout
    size: int
    n_adaptive: int
    sources: tuple         # ((source key, n_pre, weight_bits, learning), ...)
    config_keys: tuple     # per neuron: hashable compartment configuration
    vth_keys: tuple        # per neuron: threshold configuration


def _learning_bits(kind: str, profile: FixedPointProfile) -> int:
    n_eps = 1 if kind == "lif" else 2
    return n_eps * (profile.trace_bits + 1) + (profile.tag_bits + 1) + (profile.accumulator_bits + 1)


def _neuron_bits(kind: str) -> int:
    if kind == "readout":
        return 2 * UV_BITS
    if kind == "izhikevich":
        return 2 * UV_BITS
    bits = 2 * UV_BITS + REF_BITS
    if kind in ("alif", "stdp_alif"):
        bits += UV_BITS + 1
    return bits


def populations(spec: NetworkSpec, weight_bits: dict | int = 8, learning: bool = False,
                neuron_params: list | None = None) -> list[Population]:
    """Hidden layers and the readout as populations with their afferent
    projections. ``neuron_params``: the FixedNeuronParams per layer (for the
    configuration-slot count); without it every neuron of a kind counts as
    one configuration."""
    wb = weight_bits if isinstance(weight_bits, dict) else {}
    default = weight_bits if isinstance(weight_bits, int) else 8
    pops = []
    for r, ls in enumerate(spec.layers):
        if getattr(ls, "bidirectional", False):
            raise MappingError(f"layers[{r}] is bidirectional: it reads the sequence backwards and cannot run "
                               "online on a chip")
        bits = int(wb.get(f"layers.{r}", default))
        srcs = [("input" if r == 0 else f"layers.{r - 1}", spec.n_inputs if r == 0 else spec.layers[r - 1].size,
                 bits, learning)]
        if ls.recurrent:
            srcs.append((f"layers.{r}", ls.size, bits, learning))
        cfg, vth = _config_keys(ls, neuron_params[r] if neuron_params else None)
        pops.append(Population(f"layers.{r}", ls.neuron, ls.size, ls.n_adaptive, tuple(srcs), cfg, vth))
    bits = int(wb.get("readout", default))
    K = spec.readout.n_outputs
    srcs = tuple((f"layers.{r}", ls.size, bits, learning) for r, ls in enumerate(spec.layers))
    pops.append(Population("readout", "readout", K, 0, srcs, tuple([("readout",)] * K), tuple([("inf",)] * K)))
    return pops


def _config_keys(ls: Any, p: Any) -> tuple:
    n = ls.size
    if p is None:
        adaptive = [i >= n - ls.n_adaptive for i in range(n)]
        return tuple((ls.neuron, a) for a in adaptive), tuple([("vth",)] * n)

    def per(x: Any) -> list:
        a = np.asarray(x)
        return [int(v) for v in (a if a.ndim else np.full(n, a))]
    cols = [per(p.du), per(p.dv), per(p.vth), per(p.d_theta), per(p.theta_step), per(p.bias_exp)]
    cfg = tuple((ls.neuron, int(p.n_ref)) + tuple(c[i] for c in cols) for i in range(n))
    return cfg, tuple((v,) for v in per(p.vth))


# ------------------------------------------------------------------ cores
@dataclass
class Block:
    pop: str
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start


@dataclass
class CoreUsage:
    index: int
    chip: int
    blocks: list = field(default_factory=list)
    neurons: int = 0
    compartments: int = 0
    synapses: int = 0
    learning_synapses: int = 0
    synapse_bits: int = 0
    neuron_bits: int = 0
    in_axons: int = 0
    out_axons: int = 0
    compartment_configs: int = 0
    vth_configs: int = 0
    synapse_configs: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = [[b["pop"], b["start"], b["stop"]] for b in d["blocks"]]
        return d


def _ceil64(bits: float) -> int:
    return int(math.ceil(bits / 64.0) * 64)


def _evaluate(blocks: list, pops: dict, target: ChipTarget, profile: FixedPointProfile) -> CoreUsage:
    """Resources of one core holding ``blocks`` (out_axons filled in later)."""
    u = CoreUsage(index=-1, chip=-1, blocks=list(blocks))
    in_axons: dict = {}
    cfgs, vths, syn_cfgs = set(), set(), set()
    for b in blocks:
        p = pops[b.pop]
        u.neurons += b.n
        n_adapt = max(0, min(b.stop, p.size) - max(b.start, p.size - p.n_adaptive))
        u.compartments += b.n + (target.adaptive_compartments - 1) * n_adapt
        u.neuron_bits += b.n * _neuron_bits(p.kind)
        cfgs.update(p.config_keys[b.start:b.stop])
        vths.update(p.vth_keys[b.start:b.stop])
        for src, n_pre, wbits, learn in p.sources:
            tbits = _learning_bits(p.kind if p.kind != "readout" else "lif", profile) if learn else 0
            u.synapse_bits += n_pre * _ceil64(b.n * (wbits + tbits) + BLOCK_HEADER_BITS)
            u.synapses += n_pre * b.n
            if learn:
                u.learning_synapses += n_pre * b.n
            slots = target.learning_axon_slots if learn else 1
            in_axons[src] = max(in_axons.get(src, 0), n_pre * slots)
            syn_cfgs.add((b.pop, src))
    u.in_axons = sum(in_axons.values())
    u.compartment_configs, u.vth_configs, u.synapse_configs = len(cfgs), len(vths), len(syn_cfgs)
    return u


def _violations(u: CoreUsage, target: ChipTarget) -> list[str]:
    out = []
    if u.compartments > target.neurons_per_core:
        out.append(f"{u.compartments} compartments > {target.neurons_per_core}")
    mem = u.synapse_bits + (u.neuron_bits if target.shared_neuron_memory else 0)
    if mem > target.synapse_bits_per_core:
        what = "synapse+neuron" if target.shared_neuron_memory else "synapse"
        out.append(f"{mem} {what} memory bits > {target.synapse_bits_per_core}")
    if u.in_axons > target.in_axons_per_core:
        out.append(f"{u.in_axons} input axons > {target.in_axons_per_core}")
    for name in ("compartment_configs", "vth_configs", "synapse_configs"):
        lim = getattr(target, name)
        if lim is not None and getattr(u, name) > lim:
            out.append(f"{getattr(u, name)} {name.replace('_', ' ')} > {lim}")
    return out


@dataclass
class Mapping:
    """Cores, chips and utilization of one network on one system."""

    target: str
    system: str
    system_chips: int
    learning: bool
    cores: list
    layers: dict
    limits: dict

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def n_chips(self) -> int:
        return 1 + max(c.chip for c in self.cores) if self.cores else 0

    def utilization(self) -> dict:
        """Mean and max fraction of each per-core limit used."""
        t = self.limits
        keys = {"compartments": t["neurons_per_core"], "synapse_bits": t["synapse_bits_per_core"],
                "in_axons": t["in_axons_per_core"], "out_axons": t["out_axons_per_core"]}
        out = {}
        for k, lim in keys.items():
            vals = [getattr(c, k) / lim for c in self.cores]
            out[k] = {"mean": float(np.mean(vals)), "max": float(np.max(vals))}
        return out

    def to_dict(self) -> dict:
        return {"target": self.target, "system": self.system, "system_chips": self.system_chips,
                "learning": self.learning, "n_cores": self.n_cores, "n_chips": self.n_chips,
                "utilization": self.utilization(), "layers": self.layers,
                "cores": [c.to_dict() for c in self.cores]}

    @classmethod
    def from_dict(cls, d: dict) -> "Mapping":
        cores = []
        for c in d["cores"]:
            c = dict(c)
            c["blocks"] = [Block(*b) for b in c["blocks"]]
            cores.append(CoreUsage(**c))
        return cls(d["target"], d["system"], d["system_chips"], d["learning"], cores, d["layers"],
                   get_target(d["target"]).to_dict())


def map_network(spec: NetworkSpec, target: str | ChipTarget = "loihi2", system: str | None = None,
                weight_bits: dict | int = 8, learning: bool = False, profile: Any = "loihi2",
                neuron_params: list | None = None) -> Mapping:
    """Partition ``spec`` onto cores of ``target`` within ``system`` (greedy next-fit)."""
    tgt = target if isinstance(target, ChipTarget) else get_target(target)
    sysm = get_system(system, tgt.name) if not (system and system.isdigit()) else System(
        f"{system}-chip", tgt.name, int(system))
    prof = get_profile(profile)
    pops_list = populations(spec, weight_bits, learning, neuron_params)
    pops = {p.key: p for p in pops_list}
    for p in pops_list:
        if p.kind == "izhikevich" and not tgt.izhikevich:
            raise MappingError(f"{p.key}: Izhikevich neurons have no {tgt.name} equivalent (its neuron is a fixed "
                               "CUBA LIF; docs/lava_loihi.md §2.3); use --target loihi2")
    cores: list[list[Block]] = [[]]
    for p in pops_list:
        start = 0
        while start < p.size:
            current = cores[-1]

            def fits(n: int) -> bool:
                return not _violations(_evaluate(current + [Block(p.key, start, start + n)], pops, tgt, prof), tgt)
            lo, hi = 0, p.size - start
            while lo < hi:  # largest n that fits (resources grow with n)
                mid = (lo + hi + 1) // 2
                if fits(mid):
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                if not current:
                    why = _violations(_evaluate([Block(p.key, start, start + 1)], pops, tgt, prof), tgt)
                    raise MappingError(f"{p.key}: a single neuron does not fit one {tgt.name} core "
                                       f"({'; '.join(why)}); reduce the fan-in or the weight bits")
                cores.append([])
                continue
            current.append(Block(p.key, start, start + lo))
            start += lo
    usages = []
    for i, blocks in enumerate(cores):
        u = _evaluate(blocks, pops, tgt, prof)
        u.index, u.chip = i, i // tgt.cores_per_chip
        usages.append(u)
    _output_axons(usages, pops_list)
    for u in usages:
        if u.out_axons > tgt.out_axons_per_core:
            raise MappingError(f"core {u.index}: {u.out_axons} output axons > {tgt.out_axons_per_core}; the "
                               "network's fan-out spans too many cores")
    n_chips = 1 + usages[-1].chip
    if n_chips > sysm.chips:
        raise MappingError(
            f"the network needs {len(usages)} {tgt.name} cores = {n_chips} chips "
            f"({tgt.cores_per_chip} cores each), but system {sysm.name} has {sysm.chips} chip"
            f"{'s' if sysm.chips > 1 else ''} ({sysm.chips * tgt.cores_per_chip} cores); choose a larger "
            f"--system ({', '.join(s for s, v in SYSTEMS.items() if v.target == tgt.name)}), fewer neurons or "
            "fewer weight bits")
    layers = {}
    for p in pops_list:
        on = [u for u in usages if any(b.pop == p.key for b in u.blocks)]
        syn = sum(n_pre for _, n_pre, _, _ in p.sources) * p.size
        layers[p.key] = {"kind": p.kind, "neurons": p.size, "cores": [u.index for u in on],
                         "synapses": syn,
                         "synapse_bits": int(sum(_evaluate([b for b in u.blocks if b.pop == p.key], pops, tgt,
                                                           prof).synapse_bits for u in on)),
                         "in_axons": sum(n_pre for _, n_pre, _, _ in p.sources),
                         "sources": [[src, n_pre] for src, n_pre, _, _ in p.sources]}
    return Mapping(tgt.name, sysm.name, sysm.chips, learning, usages, layers, tgt.to_dict())


def _output_axons(usages: list, pops_list: list) -> None:
    """Per neuron, one output axon per destination core (docs/lava_loihi.md §4)."""
    where: dict = {}
    for u in usages:
        for b in u.blocks:
            where.setdefault(b.pop, set()).add(u.index)
    targets_of: dict = {}
    for p in pops_list:
        for src, _, _, _ in p.sources:
            targets_of.setdefault(src, set()).update(where.get(p.key, set()))
    for u in usages:
        u.out_axons = sum(b.n * len(targets_of.get(b.pop, ())) for b in u.blocks)
