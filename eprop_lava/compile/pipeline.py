"""The compiler's steps end to end: checkpoint -> quantize -> map -> measure
activity -> artifact (+ report and core-map PNG); artifact -> float / fixed /
Lava runs; and the main job's demo stage (:func:`deploy_demo`)."""

from __future__ import annotations

from dataclasses import replace

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from eprop_lava.compile import deploy
from eprop_lava.compile.artifact import (
    jsonable, load_artifact, network_to, sha256_file, versions, write_artifact,
)
from eprop_lava.compile.mapping import Mapping, map_network
from eprop_lava.compile.quantize import quantization_warnings, quantize_network
from eprop_lava.compile.report import core_map_png, energy_from_run, markdown_report
from eprop_lava.errors import UserError
from eprop_lava.fixed import FixedPointError
from eprop_lava.spec import NetworkSpec

ACTIVITY_SAMPLES = 4


def convert_timing(spec: NetworkSpec) -> tuple[NetworkSpec, str | None]:
    """Loihi's semantics for a network trained with Bellec's (the float
    accuracy before/after is reported by the caller)."""
    if spec.timing == "loihi" and spec.reset == "zero":
        return spec, None
    note = (f"trained with timing={spec.timing!r}, reset={spec.reset!r}; compiled with Loihi's timing='loihi' "
            "(one-step delay per synaptic hop) and reset='zero'")
    return spec.replace(timing="loihi", reset="zero"), note


def analog_input_reason(task_name: str, exc: Exception) -> str:
    """Why the fixed-point engine (and Loihi's Dense input) cannot run a task."""
    return (f"{exc} (task {task_name!r} feeds real-valued features, not spikes; Loihi's input synapses "
            "take spike events, so the fixed-point engine, Lava and the activity-based estimate cannot run it)")


def activity(net: Any, x: np.ndarray) -> dict:
    """Mean spikes per step of the input and of every layer (fixed-point engine)."""
    run = deploy.fixed_run(net, deploy.TestSet(x, None, None, None))
    rates = {"input": float(np.asarray(x).sum(axis=2).mean())}
    for r, z in enumerate(run.z):
        rates[f"layers.{r}"] = float(z.sum(axis=2).mean())
    return rates


def compile_checkpoint(checkpoint: str | Path, out: str | Path, target: str = "loihi2", weight_bits: Any = 8,
                       system: str | None = None, learning: bool = False, loihi_timing: bool = False,
                       search: bool = True, lr: float | None = None, log: Any = None,
                       grid: str = "dense", deploy_target: str = "eprop") -> dict:
    """Compile a training checkpoint into an artifact directory; returns the summary."""
    from eprop_lava.training import load_checkpoint, select_checkpoint

    t0 = time.perf_counter()
    ck_file, source_note = select_checkpoint(checkpoint)
    ck = load_checkpoint(ck_file)
    from eprop_lava.engine.network import fold_conventions

    # the fixed-point models implement the default conventions: fold TF's scalings into the weights
    spec, params = fold_conventions(ck.spec, ck.params)
    ck = replace(ck, spec=spec, params=params)
    note = None
    if loihi_timing:
        spec, note = convert_timing(spec)
    if lr is not None and not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise UserError(f"--lr: expected a positive number, got {lr!r}")
    task_name, seed = ck.config.task, ck.config.seed
    omitted = []
    try:
        _, ts = deploy.test_set(task_name, seed, ACTIVITY_SAMPLES, ck.config.task_options)
    except UserError as exc:
        # no inputs (a speech run's data directory must still be there): no activity, no energy
        # estimate, the profile's error bits
        ts = None
        omitted.append({"section": "activity and energy/latency estimate",
                        "reason": f"the test inputs of task {task_name!r} could not be built: {exc}"})
    net, qrep = quantize_network(spec, ck.params, weight_bits, search=search, lr=lr,
                                 loss_mask=None if ts is None else ts.mask, grid=grid)
    native_info = None
    if deploy_target == "native":
        from eprop_lava.compile import native

        native.check_native(net, learning)
        native_info = {"placement": native.placement(net),
                       "note": "Lava standard processes only (Dense, LIF); `eprop-lava run` simulates this graph "
                               "with Loihi2SimCfg and compares it with the engine; Loihi2HwCfg is not exercised"}
        if learning:
            native_info["learning_placement"] = {n: native.learning_placement(net, n)
                                                 for n in ("eprop", "eprop_cut", "standard")}
            native_info["learning_note"] = ("on-chip e-prop: `eprop-lava run --learn` runs the closed-loop "
                                            "LearningDense graph (compile/native_learning.py) with "
                                            "--native-neuron eprop (EpropLearningLIF, exact psi, custom neuron "
                                            "model), eprop_cut (the same neuron also sending psi alpha^(t - t_j), "
                                            "so that the rule resets the eligibility at post spikes) or standard "
                                            "(Lava's LearningLIF, post spike for psi)")
    elif deploy_target != "eprop":
        raise UserError(f"--deploy: expected eprop or native, got {deploy_target!r}")
    warnings = quantization_warnings(qrep, net, ck.params)
    mapping = map_network(spec, target, system, qrep.weight_bits, learning, net.profile,
                          [L.neuron for L in net.layers])
    mapping_other = None
    try:  # the other mode, for the report's comparison line
        mapping_other = map_network(spec, target, system, qrep.weight_bits, not learning, net.profile,
                                    [L.neuron for L in net.layers]).to_dict()
    except UserError as exc:
        mapping_other = {"error": str(exc)}
    rates, energy = {}, None
    if ts is not None:
        try:
            rates = activity(net, ts.x)
            energy = energy_from_run(net, mapping, ts.x, learning)
        except FixedPointError as exc:
            omitted.append({"section": "activity and energy/latency estimate",
                            "reason": analog_input_reason(task_name, exc)})
    desc, arrays = network_to(net)
    arrays.update({f"float.{k}": np.asarray(v, dtype=np.float64) for k, v in ck.params.items()})
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "source": {"checkpoint": str(ck_file), "checkpoint_sha256": sha256_file(ck_file), "task": task_name,
                   "seed": seed, "iteration": ck.iteration, "train": jsonable(ck.config.__dict__)},
        "spec": spec.to_dict(),
        "trained_spec": ck.spec.to_dict(),
        "conversion": note,
        "target": {"name": target, "system": mapping.system, "chips": mapping.system_chips,
                   "learning_synapses": learning, "limits": mapping.limits,
                   "learning_rate": float(spec.optimizer.lr if lr is None else lr), "deploy": deploy_target},
        "native": native_info,
        "weight_bits": qrep.weight_bits,
        "quantization": qrep.to_dict(),
        "quantization_warnings": warnings,
        "network": desc,
        "mapping": mapping.to_dict(),
        "mapping_other_mode": mapping_other,
        "activity_spikes_per_step": rates,
        "energy": energy,
        "omitted": omitted,
    }
    manifest = jsonable(manifest)
    report_md = markdown_report(manifest, mapping, energy)
    png = core_map_png(mapping)
    from eprop_lava.plots import figure_png, quantization_of_network

    quant_png = figure_png(quantization_of_network(ck.params, net, manifest["quantization"]))
    out = write_artifact(out, manifest, arrays, {"report.md": report_md.encode(), "core_map.png": png,
                                                 "quantization.png": quant_png})
    summary = summarize(manifest)
    summary["artifact"] = str(out)
    summary["source_note"] = source_note
    summary["seconds"] = time.perf_counter() - t0
    return summary


def summarize(manifest: dict) -> dict:
    m = manifest["mapping"]
    q = manifest["quantization"]
    e = manifest.get("energy")
    other = manifest.get("mapping_other_mode") or {}
    return {
        "target": manifest["target"]["name"], "system": m["system"], "cores": m["n_cores"], "chips": m["n_chips"],
        "learning_synapses": m["learning"],
        "cores_other_mode": other.get("n_cores", other.get("error")),
        "weight_bits": manifest["weight_bits"],
        "quantization_rel_rms_error": {x["name"]: round(x["rel_rms_error"], 5) for x in q["matrices"]},
        "clipped_fraction": {x["name"]: x["clipped_fraction"] for x in q["matrices"]},
        "energy_per_step_nj": None if not e else e["per_step"]["energy_pj"] / 1e3,
        "energy_per_inference_uj": None if not e else e["per_inference"]["energy_uj"],
        "latency_per_inference_ms": None if not e else e["per_inference"]["latency_ms"],
        "conversion": manifest.get("conversion"),
        "omitted": manifest.get("omitted", []),
        "warnings": manifest.get("quantization_warnings", []),
    }


# ------------------------------------------------------------------ run
LEARN_SAMPLES = 64
CURVE_POINTS = 8
ADAPTATION_SAMPLES = 32
# float e-prop online (batch 1, SGD) keeps drifting at 0.03 after ~8 samples
# (held-out 0.27-0.43 where fixed point stays at 0.07-0.13); at 0.01 both settle
# (docs/benchmarks.md, on-chip adaptation)
ADAPTATION_LR = 0.01


def run_artifact(path: str | Path, samples: int = 64, steps: int | None = None, learn: bool = False,
                 lava: bool = True, lava_samples: int = 4, log: Any = None, learn_samples: int = LEARN_SAMPLES,
                 curve_every: int | None = None, figure: str | Path | None = None, progress: bool = True,
                 native_neuron: str = "eprop") -> dict:
    """Float engine and fixed-point engine on ``samples`` test samples; Lava
    (fixed_pt, ~2 ms per step on CPU) on the first ``lava_samples`` of them
    (``steps`` caps its time steps), compared bit for bit with the engine.

    learn=True: on-chip online e-prop (fixed-point engine, batch 1) on
    ``learn_samples`` training samples drawn from the artifact's task with
    rng stream :data:`deploy.LEARN_STREAM` (never the test samples); the
    held-out test error before, every ``curve_every`` samples and after
    (``figure``: the learning curve as PNG). Lava then learns on its first
    sample(s) and is compared with the engine bit for bit.

    Progress (bars on a terminal, lines otherwise) goes to stderr when
    ``progress``, and to ARTIFACT/log.txt; figures to ARTIFACT/plots/."""
    from eprop_lava.progress import log_file

    art = load_artifact(path)
    with log_file(art.path / "log.txt"):
        return _run_artifact(art, samples, steps, learn, lava, lava_samples, log, learn_samples, curve_every,
                             figure, progress, native_neuron)


def _run_artifact(art: Any, samples: int, steps: int | None, learn: bool, lava: bool, lava_samples: int,
                  log: Any, learn_samples: int, curve_every: int | None, figure: Any, progress: bool,
                  native_neuron: str = "eprop") -> dict:
    from eprop_lava.progress import Progress, lava_estimate, note

    src = art.manifest["source"]
    task_name, task_options = deploy.source_task(src)
    task, ts = deploy.test_set(task_name, int(src["seed"]), samples, task_options)
    out: dict = {"artifact": str(art.path), "task": src["task"], "samples": samples, "steps_per_sample":
                 int(ts.x.shape[0]), "target": art.target, "cores": art.manifest["mapping"]["n_cores"],
                 "metric": task.metric_name}
    hw = deploy.detect_hardware()
    out["hardware"] = hw
    out["backend"] = ("Loihi2SimCfg(select_tag='fixed_pt') on CPU: " + (
        "a Loihi system was detected, but the e-prop Processes have no neurocore (NcProcessModel) microcode in "
        "open Lava, so the run simulates" if hw["hardware"] else f"no Loihi hardware ({hw.get('reason')})"))
    trained = NetworkSpec.from_dict(art.manifest["trained_spec"])
    if art.float_params:
        out[f"float_{task.metric_name}"] = deploy.float_metric(task, trained, art.float_params, ts)
        if art.manifest.get("conversion"):
            out[f"float_loihi_timing_{task.metric_name}"] = deploy.float_metric(task, art.spec, art.float_params, ts)
    t0 = time.perf_counter()
    try:
        run = deploy.fixed_run(art.net, ts)
    except FixedPointError as exc:
        reason = analog_input_reason(task_name, exc)
        out["fixed_skipped"] = reason
        out["lava"] = {"skipped": reason}
        if learn:
            out["learning"] = {"skipped": reason}
        return jsonable(out)
    out[f"fixed_{task.metric_name}"] = deploy.fixed_metric(task, art.net, run, ts)
    out["fixed_seconds"] = time.perf_counter() - t0
    # counted by the engine over every test sample (fixed_engine.new_counters)
    out["saturation"] = run.counters
    note(f"float and fixed-point engines: {samples} samples x {ts.x.shape[0]} steps in "
         f"{out['fixed_seconds']:.1f} s (fixed point)", echo=False)
    lr = None
    if learn:
        from eprop_lava.training import held_out

        # a task with data splits learns from its training split, never the test split it is scored on
        lr_train = deploy.draw(held_out(task, "train"), int(src["seed"]), deploy.LEARN_STREAM, learn_samples)
        every = curve_every or max(1, learn_samples // CURVE_POINTS)
        t1 = time.perf_counter()
        with Progress(learn_samples, "online e-prop (fixed-point engine)", unit="sample", enabled=progress) as bar:
            lr = deploy.learn_run(art.net, lr_train, ts, task, every, progress=lambda done, total: bar.update(1))
        seconds = time.perf_counter() - t1
        sig = lr["signal"]
        out["learning"] = {
            "where": "fixed-point engine, online e-prop sample after sample (batch 1) on training samples "
                     f"(rng stream [seed, {deploy.LEARN_STREAM}]); error on the held-out test samples "
                     f"(rng stream [seed, {deploy.TEST_STREAM}])",
            "samples": learn_samples, "test_samples": samples, "curve_every": every,
            "error_before": lr["error_before"], "error_after": lr["error_after"],
            "weights_changed": int(sum(lr["changed_weights"].values())),
            "changed_weights": lr["changed_weights"],
            "signal_underflow": sig["signal"]["underflow_fraction"],
            "signal_saturated": sig["signal"]["saturated_fraction"],
            "signal_counts": sig, "error_exp": int(art.net.error_bits), "signal_shift": int(art.net.signal_shift),
            "saturation": lr["counters"],
            "curve": lr["curve"], "seconds": seconds}
        if figure is not None:
            out["learning"]["figure"] = str(learning_curve_png(lr["curve"], figure, task.metric_name,
                                                              learn_samples, samples))
    ok, why = deploy.lava_status()
    lv = None
    if not lava:
        out["lava"] = {"skipped": "disabled (--no-lava)"}
    elif not ok:
        out["lava"] = {"skipped": why}
    else:
        k = max(1, min(lava_samples, samples))
        total = min(steps, k * ts.x.shape[0]) if steps is not None else k * ts.x.shape[0]
        note(lava_estimate(total), echo=progress or bool(log))
        with Progress(total, "Lava fixed_pt", unit="step", enabled=progress) as bar:
            lv = deploy.lava_run(art.net, ts.x[:, :k], steps, progress=bar)
        cmp = deploy.compare_lava(run, lv)
        n_done = lv["steps"] // lv["sample_steps"]
        out["lava"] = {"backend": "Loihi2SimCfg(select_tag='fixed_pt'), CPU", "steps": lv["steps"],
                       "seconds": lv["seconds"], "comparison": cmp,
                       task.metric_name: deploy.lava_metric(task, art.net, lv, ts),
                       "samples": n_done,
                       f"fixed_{task.metric_name}_same_samples": deploy.fixed_metric(task, art.net, run, ts,
                                                                                      slice(0, n_done))
                       if n_done else None}
        if learn:
            out["lava"]["learning"] = lava_learning(art.net, lr_train, steps, progress)
        if art.manifest["target"].get("deploy") == "native":
            out["native"] = native_run(art.net, ts.x[:, :max(1, min(lava_samples, samples))], steps)
            if learn:
                from eprop_lava.compile.native_learning import learning_report

                n = max(1, min(lava_samples, learn_samples))
                T = lr_train.x.shape[0] if steps is None else max(1, min(int(steps), lr_train.x.shape[0]))
                sub = deploy.TestSet(lr_train.x[:T, :n], lr_train.target[:T, :n], lr_train.mask[:T, :n], None)
                out["native"]["learning"] = learning_report(art.net, sub, ts, task, native_neuron)
    out["figures"] = save_run_figures(art, task, ts, run, lv)
    return jsonable(out)


def save_run_figures(art: Any, task: Any, ts: Any, run: Any, lava: dict | None) -> list:
    """ARTIFACT/plots/*.png of a run (plots.artifact_run_figures); the paths."""
    from eprop_lava.plots import artifact_run_figures, save_figure

    figs = artifact_run_figures(task, ts, art.spec, art.float_params, art.net, run, lava,
                                seed=int(art.manifest["source"]["seed"]))
    return [str(save_figure(fig, art.path / "plots" / f"{name}.png")) for name, fig in figs.items()]


def native_run(net: Any, x: np.ndarray, steps: int | None = None) -> dict:
    """The native graph (Lava standard processes) on each sample of x (T, S,
    n_in), one Lava run per sample (the engine starts each sample from rest),
    compared with the engine; ``steps`` caps the first sample."""
    from eprop_lava.compile import native

    rows = []
    for s in range(x.shape[1]):
        xs = x[:, s] if steps is None else x[:min(int(steps), x.shape[0]), s]
        rows.append(native.compare_native(net, xs))
        if steps is not None:
            break
    return {"backend": rows[0]["backend"], "samples": len(rows), "steps": sum(r["steps"] for r in rows),
            "spikes_engine": sum(r["spikes_engine"] for r in rows),
            "spike_mismatches": sum(r["spike_mismatches"] for r in rows),
            "readout_mismatches": sum(r["readout_mismatches"] for r in rows),
            "seconds": sum(r["seconds"] for r in rows),
            "bit_exact": all(r["spike_mismatches"] == 0 and r["readout_mismatches"] == 0 for r in rows)}


def learning_curve_png(curve: list, path: str | Path, metric: str, n_train: int, n_test: int) -> Path:
    """The held-out learning curve as a PNG (written atomically)."""
    from eprop_lava.plots import learning_curve_onchip, save_figure

    fig = learning_curve_onchip({"online fixed-point e-prop": curve}, metric,
                                xlabel="on-chip training samples learned (batch 1)",
                                ylabel=f"held-out {metric} (fraction of {n_test} test samples)",
                                title=f"online fixed-point e-prop, {n_train} samples")
    return save_figure(fig, path, dpi=110)


def format_run(r: dict) -> str:
    m = r["metric"]
    lines = [f"{r['task']} on {r['target']} ({r['cores']} core(s)), {r['samples']} test samples x "
             f"{r['steps_per_sample']} steps (float and fixed-point engines)",
             f"backend: {r['backend']}"]
    if f"float_{m}" in r:
        lines.append(f"float engine {m}:       {r[f'float_{m}']:.4f}")
    if f"float_loihi_timing_{m}" in r:
        lines.append(f"float (Loihi timing) {m}: {r[f'float_loihi_timing_{m}']:.4f}")
    if "fixed_skipped" in r:
        lines.append(f"fixed-point engine skipped: {r['fixed_skipped']}")
        return "\n".join(lines)
    lines.append(f"fixed-point engine {m}: {r[f'fixed_{m}']:.4f}")
    lines.extend(format_counters(r.get("saturation", {}), f"{r['samples']} test samples"))
    lv = r.get("lava", {})
    if "skipped" in lv:
        lines.append(f"Lava run skipped: {lv['skipped']}")
    else:
        c = lv["comparison"]
        acc = ("n/a (no complete sample)" if lv.get(m) is None else
               f"{lv[m]:.4f} over the first {lv['samples']} samples (engine on those: "
               f"{lv[f'fixed_{m}_same_samples']:.4f})")
        spikes = ("spikes not read back" if c["spike_mismatches"] is None
                  else f"{c['spike_mismatches']} spike mismatches of {c['spike_values']}")
        lines.append(f"Lava fixed_pt {m}:      {acc}; vs engine: {c['readout_mismatches']} readout mismatches of "
                     f"{c['readout_values']}, {spikes} ({lv['steps']} steps, {lv['seconds']:.1f} s)")
    if r.get("native"):
        nv = r["native"]
        lines.append(f"native graph (Lava Dense + LIF only, {nv['backend']}): {nv['samples']} sample(s), "
                     f"{nv['steps']} steps, {nv['spike_mismatches']} spike mismatches ({nv['spikes_engine']} spikes) "
                     f"and {nv['readout_mismatches']} readout mismatches vs the engine "
                     f"({'bit-exact' if nv['bit_exact'] else 'NOT bit-exact'}; {nv['seconds']:.1f} s)")
        nl = nv.get("learning")
        if nl:
            h = nl["update_vs_engine"]["vs_expected"]["hidden"]
            cos, ratio = h["cosine"], h["norm_ratio"]
            lines.append(f"native on-chip e-prop ({nl['neuron']} neuron, closed loop) on {nl['samples']} training "
                         f"sample(s): hidden update vs the engine's (before rounding) cosine "
                         + (f"{cos['mean']:.3f}" if cos else "n/a") + ", norm ratio "
                         + (f"{ratio['mean']:.3f}" if ratio else "n/a")
                         + f"; held-out {m} {nl['error_before']:.4f} -> {nl['error_after_native']:.4f} "
                         f"(engine on the same samples: {nl['error_after_engine']:.4f}; {nl['lava_seconds']:.1f} s)")
    if r.get("figures"):
        lines.append("figures: " + ", ".join(r["figures"]))
    if "learning" in r:
        L = r["learning"]
        c = L["signal_counts"]
        lines.append(f"on-chip e-prop (fixed-point engine, batch 1) on {L['samples']} training samples: "
                     f"held-out {m} {L['error_before']:.4f} -> {L['error_after']:.4f} "
                     f"({L['test_samples']} test samples, never learned on); {L['weights_changed']} weights changed; "
                     f"{L['seconds']:.1f} s")
        lines.append(f"learning signal: {c['signal']['underflow']} of {c['signal']['values']} non-zero values "
                     f"underflowed to 0 ({100 * L['signal_underflow']:.2f}%), {c['signal']['saturated']} saturated; "
                     f"output error (2^{L['error_exp']} per unit): {c['error']['underflow']} of "
                     f"{c['error']['values']} underflowed, {c['error']['saturated']} saturated")
        lines.extend(format_counters(L.get("saturation", {}), "on-chip learning"))
        lines.append(f"held-out {m} every {L['curve_every']} samples: "
                     + " ".join(f"{p['error']:.3f}" for p in L["curve"])
                     + (f" (figure: {L['figure']})" if L.get("figure") else ""))
        ll = lv.get("learning") if isinstance(lv, dict) else None
        if ll:
            note = "; ".join(f"{k} {v}" for k, v in ll.get("notes", {}).items())
            lines.append(f"online e-prop in Lava over {ll['samples']} training sample(s): "
                         f"{sum(ll['weight_mismatches'].values())} weight mismatches of {ll['compared_values']} vs "
                         f"the engine ({'bit-exact' if ll['bit_exact'] else 'NOT bit-exact'}; "
                         f"{ll['seconds']:.1f} s)" + (f" [{note}]" if note else ""))
    return "\n".join(lines)


def format_counters(counters: dict, where: str) -> list[str]:
    """One text line per layer (and the readout) of a run's counters
    (:func:`eprop_lava.engine.fixed_engine.new_counters`)."""
    lines = []
    for name, c in counters.items():
        if not name.startswith("layers.") and name != "readout":
            continue
        parts = []
        if "of" in c:
            parts.append(f"{c['of']} neuron-steps: v saturated {c['v_saturated']}, u wrapped {c['u_wrapped']}, "
                         f"a_in wrapped {c['a_in_wrapped']}")
        if "signal_values" in c:
            parts.append(f"learning signal {c['signal_underflow']} of {c['signal_values']} non-zero values "
                         f"underflowed to 0, {c['signal_saturated']} saturated")
        parts += [f"{m} clipped {w['clipped']} of {w['of']} weight updates" for m, w in c.items()
                  if isinstance(w, dict)]
        if parts:
            lines.append(f"{name} ({where}): " + "; ".join(parts))
    return lines


def lava_learning(net: Any, ts: Any, steps: int | None, progress: bool = False) -> dict:
    """Online e-prop in Lava (fixed_pt learning graph) and in the engine on
    the first sample(s) of ``ts``; the final weights compared bit for bit.

    The feedback B (symmetric and adaptive feedback follow W_out's changes)
    is compared after its one-update lag: Lava's LearningSignal receives
    W_out's change on the step after the update (before it next computes a
    signal, so every signal during the run uses the engine's B), and the last
    change of the run is still in the channel when the run stops. Lava's B
    must therefore equal the engine's B just before its last update."""
    from eprop_lava.compile.deploy import TestSet, learn_run
    from eprop_lava.models.network import run_network

    T, S = ts.x.shape[0], ts.x.shape[1]
    from eprop_lava.progress import Progress, lava_estimate, note

    # the learning graph costs 2.7-5.4 ms per step on CPU (progress.COSTS): one sample unless --steps asks for more
    n = 1 if steps is None else max(1, min(S, int(steps) // T))
    sub = TestSet(ts.x[:, :n], ts.target[:, :n], ts.mask[:, :n], None)
    engine = learn_run(net, sub)
    note(lava_estimate(n * T, learning=True), echo=progress)
    t0 = time.perf_counter()
    with Progress(n * T, "Lava fixed_pt learning", unit="step", enabled=progress) as bar:
        res = run_network(np.transpose(sub.x, (1, 0, 2)), net=net, target=np.transpose(sub.target, (1, 0, 2)),
                          mask=sub.mask.T, learn=True, weights=True, timeout=540.0, progress=bar)
    return {"samples": n, "seconds": time.perf_counter() - t0,
            **compare_learned(res["weights"], engine, net.spec.learning.variant != "random")}


def compare_learned(lava_weights: dict, engine: dict, feedback_follows: bool) -> dict:
    """Mismatch counts of Lava's learned weights against the engine's
    (:func:`deploy.learn_run`'s result); with ``feedback_follows`` (symmetric
    or adaptive B) Lava's B against the engine's B before its last update
    (see :func:`lava_learning`)."""
    eng = engine["net"].weights()
    mism = {k: int(np.sum(np.asarray(v) != eng[k])) for k, v in lava_weights.items()
            if k in eng and k != "feedback.b"}
    notes = {}
    if "feedback.b" in lava_weights:
        if feedback_follows:
            mism["feedback.b"] = int(np.sum(np.asarray(lava_weights["feedback.b"])
                                            != engine["feedback_before_last_update"]))
            lagging = int(np.sum(np.asarray(lava_weights["feedback.b"]) != eng["feedback.b"]))
            notes["feedback.b"] = ("compared with the engine's B before its last update (one-update lag; "
                                   f"{lagging} values differ from the engine's final B)")
        else:
            mism["feedback.b"] = int(np.sum(np.asarray(lava_weights["feedback.b"]) != eng["feedback.b"]))
    return {"weight_mismatches": mism, "compared_values": int(sum(np.asarray(v).size for k, v in lava_weights.items()
                                                                 if k in mism)),
            "notes": notes, "bit_exact": all(v == 0 for v in mism.values())}


# ------------------------------------------------------------------ the main job
def deploy_demo(out_dir: Path, train_result: Any, task: Any, spec: NetworkSpec, config: Any) -> dict:
    """Compile the demo's trained network for Loihi 2 and Loihi 1, run the
    test set on the float engine, the fixed-point engine and Lava's
    fixed-point simulation, print a short report and save its plots."""
    out_dir = Path(out_dir)
    ck = Path(train_result.run_dir) / "checkpoint.npz"
    quick = getattr(config, "iterations", 100) < 10
    samples, lava_samples = (4, 1) if quick else (64, 8)
    report: dict = {}
    arts = {}
    for target in ("loihi2", "loihi1"):
        s = compile_checkpoint(ck, out_dir / f"compiled-{target}", target=target, loihi_timing=True)
        arts[target] = s
        report[f"{target}_cores"] = s["cores"]
        report[f"{target}_chips"] = s["chips"]
        report[f"{target}_energy_per_inference_uj"] = s["energy_per_inference_uj"]
    s2 = arts["loihi2"]
    if s2.get("conversion"):
        print(f"compile: {s2['conversion']}")
    print(f"compile: 8-bit weights, relative RMS error "
          + ", ".join(f"{k} {v:.4f}" for k, v in s2["quantization_rel_rms_error"].items())
          + f"; loihi2: {s2['cores']} core(s), loihi1: {arts['loihi1']['cores']} core(s); "
          f"{s2['energy_per_step_nj']:.1f} nJ/step, {s2['energy_per_inference_uj']:.1f} uJ and "
          f"{s2['latency_per_inference_ms']:.2f} ms per inference (Davies et al. 2018 Loihi 1 figures; "
          "Loihi 2 per-op figures are not public)", flush=True)
    r = run_artifact(out_dir / "compiled-loihi2", samples=samples, lava_samples=lava_samples,
                     log=lambda m: print(m, flush=True))
    print(format_run(r), flush=True)
    m = r["metric"]
    report.update({f"test_float_{m}": r.get(f"float_{m}"), f"test_float_loihi_timing_{m}": r.get(f"float_loihi_timing_{m}"),
                   f"test_fixed_{m}": r[f"fixed_{m}"], "test_samples": samples, "lava": r["lava"],
                   "artifact": str(out_dir / "compiled-loihi2")})
    for target in ("loihi2", "loihi1"):
        for name in ("core_map.png", "quantization.png"):
            print(f"figure: {out_dir / f'compiled-{target}' / name}")
    (out_dir / "deploy.json").write_text(json.dumps(jsonable(r), indent=2))
    from eprop_lava.studies.onchip import adaptation, format_adaptation

    n_adapt, n_test = (2, 8) if quick else (ADAPTATION_SAMPLES, 64)
    print(f"on-chip adaptation: the cue sides swapped; {n_adapt} online samples in the fixed-point engine "
          f"(loihi2) and in float e-prop...", flush=True)
    ad = adaptation(out_dir / "compiled-loihi2", samples=n_adapt, test_samples=n_test, every=max(1, n_adapt // 2),
                    lr=ADAPTATION_LR)
    print(format_adaptation(ad), flush=True)
    (out_dir / "adaptation.json").write_text(json.dumps(jsonable(ad), indent=2))
    report["adaptation"] = {k: ad[k] for k in ("condition", "samples", "test_samples", "learning_rate",
                                               "hidden_learning_rate")}
    report["adaptation"].update({"fixed_error_before": ad["fixed"]["error_before"],
                                 "fixed_error_after": ad["fixed"]["error_after"],
                                 "float_error_before": ad.get("float", {}).get("error_before"),
                                 "float_error_after": ad.get("float", {}).get("error_after")})
    return report


def load_mapping(manifest: dict) -> Mapping:
    return Mapping.from_dict(manifest["mapping"])
