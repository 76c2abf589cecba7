"""Resources, utilization, a picture of the core map, and an energy/latency
estimate from published per-operation figures.

Energy model (per time step, from Davies et al., "Loihi: A Neuromorphic
Manycore Processor with On-Chip Learning", IEEE Micro 38(1), 2018, Table 2,
measured on Loihi 1 at 0.75 V):

* synaptic operations: every spike (input spikes included) times the
  synapses it reaches, at 23.6 pJ each (the paper's minimum energy per
  synaptic spike operation) and 3.5 ns each on its core;
* neuron updates: every compartment every step, as active (52 pJ, 8.4 ns)
  — an upper bound; idle compartments cost 5.9 pJ;
* spike messages: one per (spike, destination core): 1.7 pJ within a tile
  plus 3-4 pJ per tile hop (cores in tiles of 4, tiles on an 8-wide mesh);
* learning (on-chip e-prop): every learning synapse updates its state every
  step (t_epoch = 1), counted as one synaptic update of 120 pJ (the paper's
  pairwise-STDP figure; e-prop's per-synapse update does more work);
* latency per step: the busiest core's synaptic and neuron work plus the
  mesh barrier synchronisation (113-465 ns for 1-32 tiles).

Not counted: static (leakage) power, host and inter-chip I/O, the off-chip
softmax/learning signal. The 23.6 pJ and 120 pJ figures are checked against
the paper; the other per-operation figures are from the same table (docs/lava_loihi.md
§4) and flagged ``checked=False`` below.
**Per-operation figures for Loihi 2 are not public** (Orchard et al. 2021
report algorithmic gains on emulated Loihi 2, not per-op energies): a
Loihi 2 estimate applies the Loihi 1 figures unchanged and is labelled so.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
import numpy as np

from eprop_lava.compile.mapping import Mapping

TILE_CORES = 4
MESH_WIDTH = 8


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    what: str
    checked: bool


DAVIES_2018 = {
    "synop_energy": Figure(23.6, "pJ", "energy per synaptic spike op (min)", True),
    "synop_time": Figure(3.5, "ns", "time per synaptic spike op (max)", False),
    "syn_update_energy": Figure(120.0, "pJ", "energy per synaptic update (pairwise STDP)", True),
    "syn_update_time": Figure(6.1, "ns", "time per synaptic update (pairwise STDP)", False),
    "neuron_active_energy": Figure(52.0, "pJ", "energy per neuron update (active)", False),
    "neuron_inactive_energy": Figure(5.9, "pJ", "energy per neuron update (inactive)", False),
    "neuron_active_time": Figure(8.4, "ns", "time per neuron update (active)", False),
    "spike_tile_energy": Figure(1.7, "pJ", "within-tile spike energy", False),
    "hop_energy": Figure(3.5, "pJ", "energy per tile hop (mean of E-W 3.0 and N-S 4.0)", False),
    "hop_time": Figure(5.3, "ns", "latency per tile hop (mean of E-W 4.1 and N-S 6.5)", False),
    "barrier_1_tile": Figure(113.0, "ns", "mesh-wide barrier sync, 1 tile", False),
    "barrier_32_tiles": Figure(465.0, "ns", "mesh-wide barrier sync, 32 tiles", False),
}
SOURCE = "Davies et al., IEEE Micro 38(1):82-99, 2018, Table 2 (Loihi 1, 0.75 V)"


def _tile_xy(core: int) -> tuple[int, int]:
    tile = (core % 128) // TILE_CORES
    return tile % MESH_WIDTH, tile // MESH_WIDTH


def energy_estimate(mapping: Mapping, rates: dict, steps_per_inference: int, learning: bool = False) -> dict:
    """Energy and latency per step and per inference.

    ``rates``: mean spikes per step of each population key ("input",
    "layers.r", ...), e.g. measured with the fixed-point engine."""
    F = {k: v.value for k, v in DAVIES_2018.items()}
    where: dict = {}
    for c in mapping.cores:
        for b in c.blocks:
            where.setdefault(b.pop, []).append((c.index, b.n))
    # sources of each population, from the layer table
    synops_core = {c.index: 0.0 for c in mapping.cores}
    msg_energy = 0.0
    max_hops = 0
    for c in mapping.cores:
        for b in c.blocks:
            for src, n_pre in _sources(mapping, b.pop):
                synops_core[c.index] += rates.get(src, 0.0) * b.n
    total_synops = sum(synops_core.values())
    # spike messages: each spike of a source neuron goes to every core holding a target
    for src, rate in rates.items():
        dest = sorted({i for key in _targets(mapping, src) for i, _ in where.get(key, [])})
        src_cores = where.get(src, [(None, 1)])
        n_src = sum(n for _, n in src_cores)
        for core, n in src_cores:
            frac = n / max(n_src, 1)
            for d in dest:
                hops = 0 if core is None else sum(abs(a - b) for a, b in zip(_tile_xy(core), _tile_xy(d)))
                if core is not None and core // 128 != d // 128:
                    hops += MESH_WIDTH  # leaving the chip: counted as crossing the mesh (links not modelled)
                max_hops = max(max_hops, hops)
                msg_energy += rate * frac * (F["spike_tile_energy"] + hops * F["hop_energy"])
    compartments = sum(c.compartments for c in mapping.cores)
    learn_syn = sum(c.learning_synapses for c in mapping.cores) if learning else 0
    e_syn = total_synops * F["synop_energy"]
    e_neu = compartments * F["neuron_active_energy"]
    e_learn = learn_syn * F["syn_update_energy"]
    e_step = e_syn + e_neu + msg_energy + e_learn
    tiles = max(1, math.ceil(min(mapping.n_cores, 128) / TILE_CORES))
    barrier = F["barrier_1_tile"] + (F["barrier_32_tiles"] - F["barrier_1_tile"]) * (tiles - 1) / 31
    busiest = 0.0
    for c in mapping.cores:
        t = synops_core[c.index] * F["synop_time"] + c.compartments * F["neuron_active_time"]
        if learning:
            t += c.learning_synapses * F["syn_update_time"]
        busiest = max(busiest, t)
    t_step = busiest + barrier + max_hops * F["hop_time"]
    out = {
        "per_step": {"energy_pj": e_step, "synaptic_ops": total_synops, "synaptic_energy_pj": e_syn,
                     "neuron_updates": compartments, "neuron_energy_pj": e_neu,
                     "spike_message_energy_pj": msg_energy, "learning_updates": learn_syn,
                     "learning_energy_pj": e_learn, "latency_ns": t_step},
        "per_inference": {"steps": steps_per_inference, "energy_uj": e_step * steps_per_inference * 1e-6,
                          "latency_ms": t_step * steps_per_inference * 1e-6},
        "learning": learning,
        "source": SOURCE,
        "figures": {k: asdict(v) for k, v in DAVIES_2018.items()},
        "assumptions": [
            "every compartment is updated every step as active (upper bound)",
            "static power, host and inter-chip I/O and the off-chip learning signal are not counted",
        ] + (["each learning synapse updates its e-prop state every step (t_epoch = 1), costed as one "
              "120 pJ synaptic update"] if learning else []),
    }
    if mapping.target == "loihi2":
        out["assumptions"].insert(0, "per-operation energy and timing figures for Loihi 2 are not public; this "
                                     "estimate applies Davies et al.'s Loihi 1 figures unchanged and is only "
                                     "indicative of Loihi 2")
    return out


def _sources(mapping: Mapping, pop: str) -> list:
    return [(src, n) for src, n in mapping.layers[pop].get("sources", [])]


def _targets(mapping: Mapping, src: str) -> list:
    return [key for key, info in mapping.layers.items() if any(s == src for s, _ in info.get("sources", []))]


# ------------------------------------------------------------------ text and figure
def resource_table(mapping: Mapping) -> str:
    t = mapping.limits
    lines = [f"| core | chip | blocks | neurons | compartments | synapses | synapse bits | in axons | out axons |",
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
    """PNG with two panels: the chips' 16 x 8 core grids (colour = population,
    cell split by each population's share of the core's neurons, solid part =
    synaptic memory used), and the per-core utilization of every limit
    (first 32 cores)."""
    import matplotlib
    from matplotlib.figure import Figure   # no pyplot: the caller's backend is left alone
    from matplotlib.patches import Patch, Rectangle

    pops = list(mapping.layers)
    cmap = matplotlib.colormaps["tab10"]
    colour = {p: cmap(i % 10) for i, p in enumerate(pops)}
    n_chips = max(mapping.n_chips, 1)
    show = min(n_chips, 4)
    t = mapping.limits
    fig = Figure(figsize=(3.0 * show + 5.5, 3.0))
    grid = fig.add_gridspec(1, show + 2, width_ratios=[1.0] * show + [0.15, 1.6])
    for k in range(show):
        ax = fig.add_subplot(grid[0, k])
        for i in range(128):
            x, y = i % 16, i // 16
            ax.add_patch(Rectangle((x, y), 0.9, 0.9, facecolor="#eeeeee", edgecolor="none"))
        for c in mapping.cores:
            if c.chip != k:
                continue
            i = c.index % 128
            x, y = i % 16, i // 16
            total = max(c.neurons, 1)
            off = 0.0
            mem = min(c.synapse_bits / t["synapse_bits_per_core"], 1.0)
            for b in c.blocks:
                w = 0.9 * b.n / total
                ax.add_patch(Rectangle((x + off, y), w, 0.9, facecolor=colour[b.pop], edgecolor="none", alpha=0.3))
                ax.add_patch(Rectangle((x + off, y + 0.9 * (1 - mem)), w, 0.9 * mem, facecolor=colour[b.pop],
                                       edgecolor="none"))
                off += w
        ax.set_xlim(0, 16)
        ax.set_ylim(8, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"chip {k}" + (f" (of {n_chips})" if k == show - 1 and n_chips > show else ""), fontsize=9)
    ax = fig.add_subplot(grid[0, show + 1])
    cores = mapping.cores[:32]
    keys = [("compartments", "neurons_per_core", "compartments"), ("synapse_bits", "synapse_bits_per_core", "memory"),
            ("in_axons", "in_axons_per_core", "in axons"), ("out_axons", "out_axons_per_core", "out axons")]
    width = 0.8 / len(keys)
    shades = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for j, (attr, lim, label) in enumerate(keys):
        vals = [100.0 * getattr(c, attr) / t[lim] for c in cores]
        ax.bar(np.arange(len(cores)) + (j - 1.5) * width, vals, width, label=label, color=shades[j])
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(cores)))
    ax.set_xticklabels([str(c.index) for c in cores], fontsize=7)
    ax.set_xlabel("core")
    ax.set_ylabel("% of the per-core limit")
    ax.legend(fontsize=7, frameon=False)
    handles = [Patch(color=colour[p], label=p) for p in pops]
    fig.legend(handles=handles, loc="lower left", fontsize=8, frameon=False, ncol=min(len(pops), 4))
    fig.suptitle(f"{mapping.target} on {mapping.system}: {mapping.n_cores} core(s), {n_chips} chip(s)"
                 f"{', learning synapses' if mapping.learning else ''}; solid = synaptic memory used", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


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
        s, i = energy["per_step"], energy["per_inference"]
        lines += ["## Energy and latency estimate", "",
                  f"Per step: {s['energy_pj'] / 1e3:.2f} nJ ({s['synaptic_ops']:.0f} synaptic ops "
                  f"{s['synaptic_energy_pj'] / 1e3:.2f} nJ, {s['neuron_updates']} neuron updates "
                  f"{s['neuron_energy_pj'] / 1e3:.2f} nJ, spike messages {s['spike_message_energy_pj'] / 1e3:.3f} nJ"
                  + (f", learning {s['learning_energy_pj'] / 1e3:.2f} nJ" if energy["learning"] else "")
                  + f"), latency {s['latency_ns']:.0f} ns.",
                  f"Per inference ({i['steps']} steps): {i['energy_uj']:.2f} uJ, {i['latency_ms']:.3f} ms.", "",
                  f"Figures: {energy['source']}. Assumptions: " + "; ".join(energy["assumptions"]) + ".", ""]
    for gap in manifest.get("omitted") or []:
        lines += [f"## Left out: {gap['section']}", "", f"Not in this report: {gap['reason']}.", ""]
    if accuracy:
        lines += ["## Accuracy", ""] + [f"- {k}: {v}" for k, v in accuracy.items()] + [""]
    return "\n".join(lines)

