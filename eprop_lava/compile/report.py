"""Resources, utilization, a picture of the core map, and energy and
latency priced from the events of a run.

Events (counted by :func:`count_events` from a fixed-point engine run on the
cores the mapper chose):

* **synaptic spike events**: every spike entering a core reads the synapse
  list of its axon there: one event per (spike, postsynaptic neuron of that
  core's block), zero weights included (the mapper's dense synapse lists);
  input spikes included;
* **neuron updates**, per compartment and step, split into *inactive* (all
  state zero before and after the step: the compartment is only read),
  *active* (some state u, v, threshold or refractory counter non-zero
  before or after the step, no spike) and *spiking*; the readout's
  compartments count like neurons that never spike; on Loihi 1 an adaptive
  neuron's second compartment counts as active or inactive with its neuron;
* **spike messages**: one packet per (spike, destination core) from the
  hidden neurons' cores, and the **hops** each packet travels on the mesh
  (east-west and north-south separately; cores in tiles of 4, tiles on an
  8-wide mesh; a packet between chips is counted as a chip crossing);
  input spikes come from the host and are counted as packets without hops;
* **one barrier** per step;
* **learning-engine updates** (artifacts with learning synapses): every
  learning synapse updates its state every step (t_epoch = 1).

Prices (Loihi 1) are SANA-FE's calibration of Loihi, ``arch/loihi.yaml`` at
commit b142f43 of https://github.com/SLAM-Lab/SANA-FE (Boyle et al., SANA-FE,
2023-2025), whose figures are taken from Davies et al., "Loihi: A
Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro 38(1):
82-99, 2018; the learning update's 120 pJ is the per-synaptic-update
(pairwise STDP) figure quoted from Davies et al. 2018 and not re-checked
here. As in SANA-FE (``sim.c`` ``sim_calculate_energy``): every compartment
pays the access energy every step, an active one adds the update energy, a
spiking one adds the spike energy; a core's time per step is the sum of
its events' latencies; the step takes the busiest core's time, plus the
longest packet's network latency, plus the barrier.

Not counted: static (leakage) power, the barrier's energy, host and
inter-chip I/O, the off-chip softmax and learning signal, overlap of
computation and communication. **Per-event figures for Loihi 2 are not
public**: a Loihi 2 estimate prices its counted events with the Loihi 1
figures, every one of them assumed, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eprop_lava.compile.mapping import Mapping

TILE_CORES = 4
MESH_WIDTH = 8
CORES_PER_CHIP = 128


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    what: str
    source: str


SANA_FE = "SANA-FE arch/loihi.yaml (github.com/SLAM-Lab/SANA-FE, commit b142f43), from Davies et al. 2018"
DAVIES = "Davies et al., IEEE Micro 38(1):82-99, 2018 (pairwise STDP synaptic update, as quoted; not re-checked)"
LOIHI1 = {
    "synaptic_spike_energy": Figure(35.5, "pJ", "per synaptic spike event (dense synapse)", SANA_FE),
    "synaptic_spike_time": Figure(4.0, "ns", "per synaptic spike event", SANA_FE),
    "neuron_access_energy": Figure(51.2, "pJ", "per compartment and step (an inactive update)", SANA_FE),
    "neuron_access_time": Figure(6.0, "ns", "per compartment and step", SANA_FE),
    "neuron_update_energy": Figure(21.6, "pJ", "added for an active compartment (72.8 pJ in all)", SANA_FE),
    "neuron_update_time": Figure(3.7, "ns", "added for an active compartment (9.7 ns in all)", SANA_FE),
    "spike_out_energy": Figure(69.3, "pJ", "added for a spiking neuron", SANA_FE),
    "spike_out_time": Figure(30.0, "ns", "added for a spiking neuron", SANA_FE),
    "packet_energy": Figure(76.8, "pJ", "per spike packet leaving a core (axon out)", SANA_FE),
    "packet_time": Figure(7.6, "ns", "per spike packet leaving a core", SANA_FE),
    "hop_ew_energy": Figure(3.0, "pJ", "per east-west tile hop", SANA_FE),
    "hop_ew_time": Figure(4.1, "ns", "per east-west tile hop", SANA_FE),
    "hop_ns_energy": Figure(4.2, "pJ", "per north-south tile hop", SANA_FE),
    "hop_ns_time": Figure(6.5, "ns", "per north-south tile hop", SANA_FE),
    "within_tile_time": Figure(2.1, "ns", "spike latency within a tile", SANA_FE),
    "barrier_time": Figure(299.0, "ns", "global barrier per step", SANA_FE),
    "learning_update_energy": Figure(120.0, "pJ", "per learning-engine synaptic update", DAVIES),
}


def core_xy(core: int) -> tuple[int, int, int]:
    """(chip, x, y) of a core's tile: 4 cores per tile, tiles on an 8-wide mesh."""
    tile = (core % CORES_PER_CHIP) // TILE_CORES
    return core // CORES_PER_CHIP, tile % MESH_WIDTH, tile // MESH_WIDTH


@dataclass
class EventCounts:
    """Events of a run of B samples x T steps, totals over the run, and the
    per-step per-core work that sets the latency."""

    steps: int
    samples: int
    synaptic_events: int = 0
    neurons_inactive: int = 0
    neurons_active: int = 0
    neurons_spiking: int = 0
    packets: int = 0
    input_packets: int = 0
    hops_ew: int = 0
    hops_ns: int = 0
    chip_crossings: int = 0
    barriers: int = 0
    learning_updates: int = 0
    per_core: dict = field(default_factory=dict)     # core -> {event: (T, B) counts}
    max_route: np.ndarray | None = None               # (T, B) longest packet's (ew, ns, same-tile) latency, ns

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("per_core", "max_route")}


def _core_of(mapping: Mapping, pop: str, size: int) -> np.ndarray:
    out = np.full(size, -1, dtype=np.int64)
    for c in mapping.cores:
        for b in c.blocks:
            if b.pop == pop:
                out[b.start:b.stop] = c.index
    return out


def _active(states: dict, z: np.ndarray) -> np.ndarray:
    """(T, B, N): some neuron state non-zero before or after the step, or a spike."""
    nz = np.zeros(z.shape, dtype=bool)
    for k, v in states.items():
        if k != "z":
            nz |= np.asarray(v) != 0
    before = np.concatenate([np.zeros_like(nz[:1]), nz[:-1]], axis=0)
    return nz | before | (z != 0)


def count_events(net: Any, mapping: Mapping, x: np.ndarray, learning: bool | None = None) -> EventCounts:
    """Run the fixed-point engine on x (T, B, n_in) and count the events on
    ``mapping``'s cores (see the module docstring for what each one is)."""
    from eprop_lava.engine import fixed_engine as fe

    x = np.asarray(x)
    T, B = x.shape[0], x.shape[1]
    run = fe.simulate(net, x, record_state=True)
    ev = EventCounts(steps=T, samples=B, barriers=T * B)
    zero = np.zeros((T, B), dtype=np.int64)
    per_core = {c.index: {k: zero.copy() for k in ("synaptic", "access", "active", "spiking", "packets")}
                for c in mapping.cores}
    spikes = {"input": x.astype(np.int64)}
    for r, z in enumerate(run.z):
        spikes[f"layers.{r}"] = np.asarray(z, dtype=np.int64)
    # neuron updates; on Loihi 1 an adaptive neuron's second compartment (its
    # threshold) is updated with it and never spikes
    y = np.asarray(run.y)
    y_state = {"v": y}
    aux = int(mapping.limits.get("adaptive_compartments", 1)) - 1
    for key in mapping.layers:
        if key == "readout":
            z, states, n_adaptive = np.zeros_like(y, dtype=np.int64), y_state, 0
        else:
            r = int(key.split(".")[1])
            z, states, n_adaptive = spikes[key], run.states[r], net.spec.layers[r].n_adaptive
        core = _core_of(mapping, key, z.shape[2])
        act = _active(states, z)
        spk = z != 0
        ev.neurons_spiking += int(spk.sum())
        ev.neurons_active += int((act & ~spk).sum())
        ev.neurons_inactive += int((~act).sum())
        second = np.arange(z.shape[2]) >= z.shape[2] - n_adaptive if aux else np.zeros(z.shape[2], dtype=bool)
        ev.neurons_active += int(act[:, :, second].sum())
        ev.neurons_inactive += int((~act[:, :, second]).sum())
        for c in np.unique(core):
            on = core == c
            pc = per_core[int(c)]
            pc["access"] += on.sum() + (on & second).sum()
            pc["active"] += act[:, :, on].sum(axis=2) + act[:, :, on & second].sum(axis=2)
            pc["spiking"] += spk[:, :, on].sum(axis=2)
    # synaptic events: each source spike reaches every block of the populations it feeds
    for c in mapping.cores:
        for b in c.blocks:
            for src, _ in mapping.layers[b.pop].get("sources", []):
                n = spikes[src].sum(axis=2) * b.n
                per_core[c.index]["synaptic"] += n
                ev.synaptic_events += int(n.sum())
    # packets and hops
    dest = {src: sorted({i for key, info in mapping.layers.items() if any(s == src for s, _ in info["sources"])
                         for i in mapping.layers[key]["cores"]}) for src in spikes}
    ev.input_packets = int(spikes["input"].sum()) * len(dest["input"])
    route = np.zeros((T, B))
    F = {k: f.value for k, f in LOIHI1.items()}
    for src, z in spikes.items():
        if src == "input":
            continue
        core = _core_of(mapping, src, z.shape[2])
        for c in np.unique(core):
            n = z[:, :, core == c].sum(axis=2)
            per_core[int(c)]["packets"] += n * len(dest[src])
            ev.packets += int(n.sum()) * len(dest[src])
            chip, x0, y0 = core_xy(int(c))
            for d in dest[src]:
                chip_d, x1, y1 = core_xy(d)
                ew, ns = abs(x1 - x0), abs(y1 - y0)
                ev.hops_ew += int(n.sum()) * ew
                ev.hops_ns += int(n.sum()) * ns
                ev.chip_crossings += int(n.sum()) * int(chip_d != chip)
                lat = F["within_tile_time"] + ew * F["hop_ew_time"] + ns * F["hop_ns_time"]
                route = np.where(n > 0, np.maximum(route, lat), route)
    if learning if learning is not None else mapping.learning:
        ev.learning_updates = sum(c.learning_synapses for c in mapping.cores) * T * B
    ev.per_core, ev.max_route = per_core, route
    return ev


def step_latency_ns(ev: EventCounts) -> np.ndarray:
    """(T, B) time of every step: the busiest core's serial event latencies,
    the longest packet's route, and the barrier."""
    F = {k: f.value for k, f in LOIHI1.items()}
    core_t = np.zeros((ev.steps, ev.samples))
    for pc in ev.per_core.values():
        t = (pc["synaptic"] * F["synaptic_spike_time"] + pc["access"] * F["neuron_access_time"]
             + pc["active"] * F["neuron_update_time"] + pc["spiking"] * F["spike_out_time"]
             + pc["packets"] * F["packet_time"])
        core_t = np.maximum(core_t, t)
    return core_t + (ev.max_route if ev.max_route is not None else 0.0) + F["barrier_time"]


def price_events(ev: EventCounts, target: str = "loihi1") -> dict:
    """Energy and latency of counted events with the Loihi 1 per-event
    figures (:data:`LOIHI1`); for target "loihi2" every figure is assumed."""
    F = {k: f.value for k, f in LOIHI1.items()}
    access = ev.neurons_inactive + ev.neurons_active + ev.neurons_spiking
    parts = {
        "synaptic_pj": ev.synaptic_events * F["synaptic_spike_energy"],
        "neuron_pj": access * F["neuron_access_energy"]
        + (ev.neurons_active + ev.neurons_spiking) * F["neuron_update_energy"]
        + ev.neurons_spiking * F["spike_out_energy"],
        "packet_pj": ev.packets * F["packet_energy"],
        "hop_pj": ev.hops_ew * F["hop_ew_energy"] + ev.hops_ns * F["hop_ns_energy"],
        "learning_pj": ev.learning_updates * F["learning_update_energy"],
    }
    total = sum(parts.values())
    step_ns = step_latency_ns(ev)
    n_steps = ev.steps * ev.samples
    out = {
        "events": ev.to_dict(),
        "energy_pj": parts | {"total_pj": total},
        "per_step": {"energy_pj": total / n_steps, "latency_ns": float(step_ns.mean()),
                     "synaptic_events": ev.synaptic_events / n_steps, "neuron_updates": access / n_steps,
                     "spiking_neurons": ev.neurons_spiking / n_steps, "packets": ev.packets / n_steps},
        "per_inference": {"steps": ev.steps, "energy_uj": total / ev.samples * 1e-6,
                          "latency_ms": float(step_ns.sum(axis=0).mean()) * 1e-6},
        "figures": {k: asdict(f) | {"assumed_for_loihi2": target == "loihi2"} for k, f in LOIHI1.items()},
        "source": SANA_FE,
        "target": target,
        "assumptions": [
            "cores work in parallel and a core's events are serial; no overlap of computation and communication",
            "static power, the barrier's energy, host and inter-chip I/O and the off-chip softmax/learning "
            "signal are not counted",
            "input spikes arrive from the host: counted as packets, without hops or energy",
        ] + (["each learning synapse updates its e-prop state every step (t_epoch = 1) at 120 pJ"]
             if ev.learning_updates else []),
    }
    if target == "loihi2":
        out["assumptions"].insert(0, "per-event energy and timing figures for Loihi 2 are not public: every "
                                     "figure here is the Loihi 1 one, assumed for Loihi 2, and the Loihi 2 mesh "
                                     "is assumed to have Loihi 1's geometry (4 cores per tile, 8 tiles wide)")
    return out


def energy_from_run(net: Any, mapping: Mapping, x: np.ndarray, learning: bool | None = None) -> dict:
    """Count the events of the engine's run of x (T, B, n_in) on ``mapping`` and price them."""
    return price_events(count_events(net, mapping, x, learning), mapping.target)


# ------------------------------------------------------------------ text and figure
def resource_table(mapping: Mapping) -> str:
    t = mapping.limits
    lines = ["| core | chip | blocks | neurons | compartments | synapses | synapse bits | in axons | out axons |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in mapping.cores[:64]:
        blocks = ", ".join(f"{b.pop}[{b.start}:{b.stop}]" for b in c.blocks)
        lines.append(f"| {c.index} | {c.chip} | {blocks} | {c.neurons} | {c.compartments}/{t['neurons_per_core']} | "
                     f"{c.synapses} | {c.synapse_bits}/{t['synapse_bits_per_core']} | "
                     f"{c.in_axons}/{t['in_axons_per_core']} | {c.out_axons}/{t['out_axons_per_core']} |")
    if len(mapping.cores) > 64:
        lines.append(f"| ... | | {len(mapping.cores) - 64} more cores | | | | | | |")
    return "\n".join(lines)


def layer_table(mapping: Mapping) -> str:
    lines = ["| population | kind | neurons | synapses | synapse bits | in axons | cores |", "|---|---|---|---|---|---|---|"]
    for key, info in mapping.layers.items():
        cores = info["cores"]
        span = f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0])
        lines.append(f"| {key} | {info['kind']} | {info['neurons']} | {info['synapses']} | {info['synapse_bits']} | "
                     f"{info['in_axons']} | {span} ({len(cores)}) |")
    return "\n".join(lines)


def core_map_png(mapping: Mapping) -> bytes:
    """PNG of :func:`eprop_lava.plots.core_map` (the cores each population
    occupies and the per-core utilization of every limit)."""
    from eprop_lava.plots import core_map, figure_png

    return figure_png(core_map(mapping), dpi=110)


def markdown_report(manifest: dict, mapping: Mapping, energy: dict | None, accuracy: dict | None = None) -> str:
    q = manifest["quantization"]
    lines = [f"# Compiled network: {manifest['target']['name']} on {mapping.system} ({mapping.system_chips} chips)",
             "",
             f"Source checkpoint: `{manifest['source']['checkpoint']}` (task {manifest['source'].get('task')}).",
             f"Cores used: **{mapping.n_cores}** on {mapping.n_chips} chip(s); "
             f"learning synapses reserved: {mapping.learning}.", ""]
    if manifest.get("conversion"):
        lines += [f"Note: {manifest['conversion']}", ""]
    lines += ["## Quantization", "", "| matrix | bits | sign | grid step | rel. RMS error | max abs error | clipped |",
              "|---|---|---|---|---|---|---|"]
    for m in q["matrices"]:
        lines.append(f"| {m['name']} | {m['bits']} | {m['sign_mode']} | {m['step']} | {m['rel_rms_error']:.4f} | "
                     f"{m['max_abs_error']:.2e} | {100 * m['clipped_fraction']:.2f}% |")
    lines += ["", "| layer | neuron | vth | vth rel. error | dv | alpha -> fixed | lr m 2^e |",
              "|---|---|---|---|---|---|---|"]
    for L in q["layers"]:
        lr = "-" if L["lr_mantissa"] is None else f"{L['lr_mantissa']} 2^{L['lr_exponent']}"
        lines.append(f"| {L['layer']} | {L['neuron']} | {L['vth']} | {L['vth_rel_error']:.1e} | {L['dv']} | "
                     f"{L['alpha']:.5f} -> {L['alpha_fixed']:.5f} | {lr} |")
    lines += ["", "## Resources per population", "", layer_table(mapping), "", "## Resources per core", "",
              resource_table(mapping), ""]
    u = mapping.utilization()
    lines += ["Utilization (mean / max over cores): " + ", ".join(
        f"{k} {100 * v['mean']:.1f}% / {100 * v['max']:.1f}%" for k, v in u.items()), "",
        "Limits and their sources: " + "; ".join(mapping.limits["sources"]),
        "", "Assumptions: " + "; ".join(mapping.limits["assumptions"]), ""]
    if energy:
        s, i, ev, e = energy["per_step"], energy["per_inference"], energy["events"], energy["energy_pj"]
        n = max(ev["steps"] * ev["samples"], 1)
        lines += ["## Energy and latency from counted events", "",
                  f"Counted on {ev['samples']} test sample(s) x {ev['steps']} steps (fixed-point engine, on the "
                  "cores above):", "",
                  "| event | count per step | energy per step |", "|---|---|---|",
                  f"| synaptic spike events | {ev['synaptic_events'] / n:.1f} | {e['synaptic_pj'] / n / 1e3:.3f} nJ |",
                  f"| neuron updates inactive / active / spiking | {ev['neurons_inactive'] / n:.1f} / "
                  f"{ev['neurons_active'] / n:.1f} / {ev['neurons_spiking'] / n:.2f} | "
                  f"{e['neuron_pj'] / n / 1e3:.3f} nJ |",
                  f"| spike packets (and input packets) | {ev['packets'] / n:.2f} ({ev['input_packets'] / n:.2f}) | "
                  f"{e['packet_pj'] / n / 1e3:.3f} nJ |",
                  f"| tile hops east-west / north-south | {ev['hops_ew'] / n:.2f} / {ev['hops_ns'] / n:.2f} | "
                  f"{e['hop_pj'] / n / 1e3:.4f} nJ |",
                  f"| barriers | {ev['barriers'] / n:.0f} | not priced |",
                  f"| learning-engine updates | {ev['learning_updates'] / n:.0f} | "
                  f"{e['learning_pj'] / n / 1e3:.3f} nJ |",
                  "",
                  f"Per step: {s['energy_pj'] / 1e3:.2f} nJ, latency {s['latency_ns']:.0f} ns. "
                  f"Per inference ({i['steps']} steps): {i['energy_uj']:.3f} uJ, {i['latency_ms']:.3f} ms.", "",
                  "Figures per event: " + "; ".join(f"{k} {f['value']:g} {f['unit']} ({f['what']})"
                                                    for k, f in energy["figures"].items()) + ".",
                  f"Source: {energy['source']}. Assumptions: " + "; ".join(energy["assumptions"]) + ".", ""]
    if manifest.get("native"):
        lines += ["## Native deployment: what runs where on a Loihi 2 system", "",
                  "| process | where | why |", "|---|---|---|"]
        lines += [f"| {r['process']} | {r['where']} | {r['why']} |" for r in manifest["native"]["placement"]]
        lines += ["", manifest["native"]["note"] + ".", ""]
        for neuron, rows in (manifest["native"].get("learning_placement") or {}).items():
            lines += [f"### On-chip e-prop, {neuron} neuron", "", "| process | where | standard Lava process | why |",
                      "|---|---|---|---|"]
            lines += [f"| {r['process']} | {r['where']} | {'yes' if r['standard'] else 'no'} | {r['why']} |"
                      for r in rows]
            lines += [""]
        if manifest["native"].get("learning_note"):
            lines += [manifest["native"]["learning_note"] + ".", ""]
    for gap in manifest.get("omitted") or []:
        lines += [f"## Left out: {gap['section']}", "", f"Not in this report: {gap['reason']}.", ""]
    if accuracy:
        lines += ["## Accuracy", ""] + [f"- {k}: {v}" for k, v in accuracy.items()] + [""]
    return "\n".join(lines)

