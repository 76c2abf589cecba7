"""``eprop-lava study quantization``: what Loihi's precision costs, for
inference and for on-chip learning.

The study is a list of *points*, each a flat dict of parameters (see
:func:`plan`), computed by :func:`run_point` and stored one file per point by
:class:`~eprop_lava.studies.store.ResultStore`; a rerun of the same command
skips finished points. The kinds of point:

``float``        the float e-prop network of one seed (trained by
                 :func:`eprop_lava.training.train` in ``DIR/float/seedS``,
                 itself resumable), scored in float: the baseline;
``ptq``          (a) that network quantized at ``weight_bits`` (nearest or
                 stochastic weight rounding; "mantissa" scaling is
                 ``fixed_engine.quantize`` itself, "exponent" keeps the
                 threshold resolution through Dense's weight_exp, see
                 :func:`eprop_lava.studies.qat.ptq_network`) and run by the
                 fixed-point engine;
``qat``          the float network fine-tuned with fake-quantized weights
                 (straight-through estimator), then quantized like ``ptq``;
``onchip``       (b) online fixed-point e-prop from scratch or fine-tuning
                 the quantized float network, then scored in fixed point;
``float_eprop``  float e-prop with the same data and budget as ``onchip``.

:func:`write_report` aggregates the points over seeds into
``results.csv``, ``results.json``, ``summary.md`` and plots.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from eprop_lava.studies.config import StudyConfig
from eprop_lava.studies.store import ResultStore, canonical

# data streams (numpy SeedSequence salts): training 1, validation 2, test 3
# as in training.py; on-chip/float-budget batches 11, QAT batches 21.
TEST_SALT = 3
ONCHIP_SALT = 11
STOCHASTIC_WEIGHTS_SALT = 31


# ======================================================================= setup
def build_task_and_spec(config: StudyConfig):
    """The task object and the network spec (Loihi timing, reset to zero)."""
    from eprop_lava.cli import _deep_merge
    from eprop_lava.errors import UserError
    from eprop_lava.spec import NetworkSpec
    from eprop_lava.tasks import get_task

    try:
        task = get_task(config.task, **config.task_options)
    except (ValueError, TypeError) as exc:
        raise UserError(f"task/task_options: {exc}") from None
    tree = _deep_merge(task.default_spec().to_dict(), dict(config.spec))
    tree.update(timing="loihi", reset="zero")
    return task, NetworkSpec.from_dict(tree)


def _hash(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:12]


def contexts(config: StudyConfig) -> tuple[str, str]:
    """(network context, float-training context): hashes of everything a
    point depends on besides its own parameters, so that editing the task,
    network or float budget never reuses stale results."""
    _, spec = build_task_and_spec(config)
    net = _hash({"task": config.task, "task_options": dict(config.task_options), "spec": spec.to_dict(),
                 "test": config.to_dict()["test"]})
    flt = _hash({"net": net, "float": config.to_dict()["float"]})
    return net, flt


# ======================================================================= the plan
def plan(config: StudyConfig) -> list[dict]:
    """Every point of the study, in an order where float networks come first."""
    from eprop_lava.fixed import get_profile

    ctx_net, ctx_float = contexts(config)
    points: list[dict] = []
    seen: set[str] = set()

    def add(p: dict) -> None:
        c = canonical(p)
        if c not in seen:
            seen.add(c)
            points.append(p)

    for seed in config.seeds:
        add({"kind": "float", "seed": seed, "context": ctx_float})
    if config.ptq.enabled:
        for seed in config.seeds:
            for profile in config.ptq.profiles:
                for scaling in config.ptq.scalings:
                    for rounding in config.ptq.roundings:
                        for bits in config.ptq.weight_bits:
                            add({"kind": "ptq", "seed": seed, "context": ctx_float, "profile": profile,
                                 "weight_bits": bits, "rounding": rounding, "scaling": scaling})
    if config.qat.enabled:
        q = config.qat
        for seed in q.seeds or config.seeds:
            for bits in q.weight_bits:
                add({"kind": "qat", "seed": seed, "context": ctx_float, "profile": q.profile, "weight_bits": bits,
                     "iterations": q.iterations, "batch_size": q.batch_size, "scaling": q.scaling,
                     "rounding": "nearest"})
    if config.onchip.enabled:
        oc = config.onchip
        for seed in oc.seeds or config.seeds:
            for mode in oc.modes:
                ctx = ctx_float if mode == "finetune" else ctx_net
                budget = {"batches": oc.batches, "batch_size": oc.batch_size}
                for opt in oc.float_optimizers:
                    add({"kind": "float_eprop", "seed": seed, "context": ctx, "mode": mode, "optimizer": opt,
                         "lr": oc.lr if opt == "sgd" else None, **budget})
                for profile in oc.profiles:
                    prof = get_profile(profile)
                    base = {"kind": "onchip", "seed": seed, "context": ctx, "mode": mode, "profile": profile,
                            "weight_bits": prof.weight_bits, "trace_bits": prof.trace_bits,
                            "psi_bits": prof.psi_bits, "signal_bits": prof.signal_bits,
                            "rounding": oc.rounding, "trace_storage": oc.trace_storage, "lr": oc.lr, **budget}
                    add(base)
                    if profile in oc.vary_profiles and mode in oc.vary_modes:
                        for key, values in oc.vary.items():
                            for v in values:
                                add({**base, key: v})
    return points


# ======================================================================= one point
def _float_network(config: StudyConfig, seed: int, out: Path, task, spec) -> dict:
    """Train (or resume, or just load) the float network of one seed."""
    from eprop_lava.training import TrainConfig, train

    from eprop_lava.errors import CheckpointError
    from eprop_lava.training import load_checkpoint

    tc = TrainConfig(task=config.task, task_options=dict(config.task_options), batch_size=config.float.batch_size, iterations=config.float.iterations,
                     validate_every=max(1, min(25, config.float.iterations)), validation_batches=1,
                     early_stop=False, checkpoint_every=25, seed=seed, progress=False)
    run_dir = out / "float" / f"seed{seed}"
    spec = spec.replace(seed=seed)
    try:  # finished already: read it (train() would re-validate and re-save it)
        ck = load_checkpoint(run_dir)
        if ck.iteration == tc.iterations and ck.spec.to_dict() == spec.to_dict() and ck.config == tc:
            return ck.params
    except CheckpointError:
        pass
    return train(task, spec, tc, run_dir, resume=True).params


def _test_batches(config: StudyConfig, task, seed: int) -> list:
    rng = np.random.default_rng([seed, TEST_SALT])
    return [task.batch(rng, config.test.batch_size) for _ in range(config.test.batches)]


def _budget_batches(task, seed: int, batches: int, batch_size: int) -> list:
    rng = np.random.default_rng([seed, ONCHIP_SALT])
    return [task.batch(rng, batch_size) for _ in range(batches)]


def _float_metric(task, spec, params: dict, batches: list) -> dict:
    from eprop_lava.training import TrainConfig, evaluate

    r = evaluate(task, spec, params, batches, TrainConfig(dtype="float64"))
    return {"metric": r[task.metric_name], "rate_hz": r["rate_hz"]}


def _float_eprop(task, spec, params: dict, batches: list, optimizer: str, lr: float | None) -> dict:
    """Float e-prop over the given batches (Adam from the spec, or SGD at lr)."""
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import eprop_gradient
    from eprop_lava.eprop.learning_signal import adaptive_feedback_update
    from eprop_lava.eprop.optim import Optimizer
    from eprop_lava.spec import OptimizerSpec

    opt_spec = spec.optimizer if optimizer == "adam" else OptimizerSpec(kind="sgd", lr=lr)
    opt = Optimizer(opt_spec)
    ops = make_ops("numpy", dtype="float64")
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    for batch in batches:
        _, grads, _ = eprop_gradient(spec, params, batch, ops)
        grads = {k: ops.to_numpy(v) for k, v in grads.items()}
        grads.pop("feedback.b", None)
        deltas = opt.deltas(grads)
        for k, d in deltas.items():
            if not (spec.learning.variant == "adaptive" and k == "readout.w"):
                params[k] = params[k] + d
        if spec.learning.variant == "adaptive":
            adaptive_feedback_update(params, deltas["readout.w"], spec.learning.adaptive_decay)
    return params


def run_point(point: dict, config: StudyConfig, out: Path) -> dict:
    """Compute one point; returns its result dict (metric, memory, seconds)."""
    from eprop_lava.engine import fixed_engine as fe
    from eprop_lava.engine.network import init_params
    from eprop_lava.fixed import get_profile
    from eprop_lava.studies import onchip, qat

    t0 = time.perf_counter()
    task, spec = build_task_and_spec(config)
    seed = point["seed"]
    spec = spec.replace(seed=seed)
    test = _test_batches(config, task, seed)
    kind = point["kind"]
    res: dict[str, Any] = {"metric_name": task.metric_name}
    if kind == "float":
        params = _float_network(config, seed, out, task, spec)
        res.update(_float_metric(task, spec, params, test), memory_bits=32.0)
    elif kind in ("ptq", "qat"):
        params = _float_network(config, seed, out, task, spec)
        profile = get_profile(point["profile"], weight_bits=point["weight_bits"])
        if kind == "qat":
            params = qat.train_qat(task, spec, params, profile, point["iterations"], point["batch_size"], seed,
                                   point["scaling"])
        net = qat.ptq_network(spec, params, profile, point["rounding"], point["scaling"],
                              np.random.default_rng([seed, STOCHASTIC_WEIGHTS_SALT]))
        inference: dict = {}
        res.update(metric=onchip.fixed_metric(task, net, test, inference),
                   memory_bits=onchip.memory_bits_per_synapse(spec, profile, learning=False))
        res.update(saturation_summary({"inference": inference}))
    elif kind in ("onchip", "float_eprop"):
        if point["mode"] == "finetune":
            start = _float_network(config, seed, out, task, spec)
        else:
            start = init_params(spec, seed)
        batches = _budget_batches(task, seed, point["batches"], point["batch_size"])
        if kind == "float_eprop":
            params = _float_eprop(task, spec, start, batches, point["optimizer"], point["lr"])
            res.update(_float_metric(task, spec, params, test), memory_bits=32.0)
        else:
            rounding = "stochastic" if point["rounding"] == "stochastic" else "nearest"
            base = get_profile(point["profile"])
            # a narrower or wider trace keeps the profile's impulse-to-range ratio (loihi2: 16 of 127)
            impulse = base.trace_impulse * 2.0 ** (point["trace_bits"] - base.trace_bits)
            impulse = int(min(max(1, round(impulse)), (1 << point["trace_bits"]) - 1))
            profile = base.with_(weight_bits=point["weight_bits"], trace_bits=point["trace_bits"],
                                 trace_impulse=impulse, psi_bits=point["psi_bits"],
                                 signal_bits=point["signal_bits"], update_rounding=rounding)
            net = fe.quantize(spec, start, profile, lr=point["lr"])
            if point["trace_storage"] == "neuron":
                onchip.per_neuron_learning_rates(net, point["lr"])
            res["metric_before"] = onchip.fixed_metric(task, net, test)
            learning: dict = {}
            inference = {}
            onchip.train_on_chip(net, batches, point["trace_storage"], learning)
            res.update(metric=onchip.fixed_metric(task, net, test, inference),
                       memory_bits=onchip.memory_bits_per_synapse(spec, profile, True, point["trace_storage"]),
                       lr_hidden=[L.lr.to_dict() for L in net.layers], lr_readout=net.readout.lr.to_dict())
            res.update(saturation_summary({"inference": inference, "learning": learning}))
    else:  # pragma: no cover - plan() makes only the kinds above
        raise ValueError(f"unknown point kind {kind!r}")
    res["seconds"] = time.perf_counter() - t0
    return res


def saturation_summary(counters: dict) -> dict:
    """A point's counters (``saturation``: the engine's, of the test inference
    and, for on-chip points, of the learning runs) with three totals for
    results.csv: v_saturated (neuron-steps of the test inference, all layers),
    wraps (u and a_in wraps there) and weights_clipped (during learning)."""
    inf = counters.get("inference", {})
    layers = [c for k, c in inf.items() if k.startswith("layers.")]
    out = {"saturation": counters, "v_saturated": sum(c["v_saturated"] for c in layers),
           "wraps": sum(c["u_wrapped"] + c["a_in_wrapped"] for c in layers)}
    if "learning" in counters:
        out["weights_clipped"] = sum(w["clipped"] for name, c in counters["learning"].items()
                                     if name.startswith("layers.") or name == "readout"
                                     for w in c.values() if isinstance(w, dict))
    return out


def _run_point_job(args: tuple) -> tuple[dict, dict]:
    point, config_dict, out = args
    config = StudyConfig.from_dict(config_dict)
    return point, run_point(point, config, Path(out))


# ======================================================================= the sweep
def run_study(config: StudyConfig, out: str | Path, workers: int = 1, progress: bool = True,
              log: Callable[[str], None] | None = None,
              compute: Callable[[dict, StudyConfig, Path], dict] | None = None) -> dict:
    """Run every unfinished point of the study, then write the report.

    ``workers > 1`` computes points in that many processes (the float
    networks first, since the other points read them). ``compute`` replaces
    :func:`run_point` (tests use it to count calls). Returns
    {"planned", "skipped", "computed", "report"}."""
    from eprop_lava.rundir import check_output_dir

    out = check_output_dir(out, lambda d: (d / "study_config.json").is_file(), "a quantization study")
    from eprop_lava.training import atomic_write_text

    atomic_write_text(out / "study_config.json", json.dumps(config.to_dict(), indent=2))
    store = ResultStore(out)
    points = plan(config)
    todo = [p for p in points if store.get(p) is None]
    skipped = len(points) - len(todo)
    if log:
        log(f"{len(points)} points, {skipped} already done, {len(todo)} to compute -> {out}")
    from eprop_lava.progress import Progress, log_file

    bar = Progress(len(points), "quantization study", unit="point", initial=skipped, enabled=progress)
    compute = compute or run_point
    done = 0
    with log_file(out / "log.txt"), bar:
        phases = [[p for p in todo if p["kind"] == "float"], [p for p in todo if p["kind"] != "float"]]
        for phase in phases:
            if workers > 1 and compute is run_point and len(phase) > 1:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(max_workers=workers) as pool:
                    jobs = [(p, config.to_dict(), str(out)) for p in phase]
                    for point, result in pool.map(_run_point_job, jobs):
                        store.put(point, result)
                        done += 1
                        _tick(bar, point)
            else:
                for point in phase:
                    store.put(point, compute(point, config, out))
                    done += 1
                    _tick(bar, point)
    report = write_report(config, out)
    return {"planned": len(points), "skipped": skipped, "computed": done, "report": report}


def _tick(bar, point: dict) -> None:
    if bar is not None:
        bar.update(1, point=_label(point))


def _label(p: dict) -> str:
    keys = ("kind", "mode", "profile", "weight_bits", "rounding", "trace_storage", "optimizer", "seed")
    return " ".join(str(p[k]) for k in keys if p.get(k) is not None)


# ======================================================================= report
def _score(rec: dict) -> float:
    """Accuracy for error-rate tasks (what the plots show); the metric otherwise."""
    return 1.0 - rec["metric"] if rec.get("metric_name") == "error" else rec["metric"]


def aggregate(records: Iterable[dict], by: tuple[str, ...]) -> list[dict]:
    """Mean, standard deviation and count of the score over seeds, grouped by ``by``."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in by)].append(r)
    rows = []
    for key, rs in groups.items():
        scores = np.array([_score(r) for r in rs])
        row = dict(zip(by, key))
        row.update(score_mean=float(scores.mean()), score_std=float(scores.std(ddof=1)) if len(rs) > 1 else 0.0,
                   n=len(rs), memory_bits=float(np.mean([r["memory_bits"] for r in rs])),
                   seeds=sorted(r["seed"] for r in rs))
        if any("metric_before" in r for r in rs):
            row["before_mean"] = float(np.mean([1.0 - r["metric_before"] if r.get("metric_name") == "error"
                                                else r["metric_before"] for r in rs if "metric_before" in r]))
        rows.append(row)
    return rows


def knee(curve: dict[int, float], reference: float, tolerance: float) -> int | None:
    """The lowest bit width from which every wider width in ``curve`` scores
    within ``tolerance`` of ``reference`` (the end of the flat part); None if
    even the widest is not within it."""
    best = None
    for bits in sorted(curve, reverse=True):
        if curve[bits] >= reference - tolerance:
            best = bits
        else:
            break
    return best


def current_records(config: StudyConfig, out: Path) -> list[dict]:
    """The stored results of this config's points (other contexts ignored)."""
    store = ResultStore(out)
    recs = []
    for p in plan(config):
        r = store.get(p)
        if r is not None:
            recs.append({**p, **r})
    return recs


def summarize(config: StudyConfig, records: list[dict]) -> dict:
    """Tables and knees (the content of summary.md and results.json)."""
    by_kind = defaultdict(list)
    for r in records:
        by_kind[r["kind"]].append(r)
    tol = config.knee_tolerance
    floats = aggregate(by_kind["float"], ("kind",))
    ref = floats[0]["score_mean"] if floats else None
    out: dict[str, Any] = {"float": floats[0] if floats else None, "knee_tolerance": tol}
    ptq = aggregate(by_kind["ptq"], ("profile", "scaling", "rounding", "weight_bits"))
    out["ptq"] = sorted(ptq, key=lambda r: (r["profile"], r["scaling"], r["rounding"], r["weight_bits"]))
    knees = {}
    for group in sorted({(r["profile"], r["scaling"], r["rounding"]) for r in ptq}):
        curve = {r["weight_bits"]: r["score_mean"] for r in ptq
                 if (r["profile"], r["scaling"], r["rounding"]) == group}
        knees["/".join(group)] = None if ref is None else knee(curve, ref, tol)
    out["ptq_knees"] = knees
    out["qat"] = sorted(aggregate(by_kind["qat"], ("profile", "scaling", "weight_bits")),
                        key=lambda r: r["weight_bits"])
    out["float_eprop"] = sorted(aggregate(by_kind["float_eprop"], ("mode", "optimizer")),
                                key=lambda r: (r["mode"], r["optimizer"]))
    oc_keys = ("mode", "profile", "weight_bits", "trace_bits", "psi_bits", "signal_bits", "rounding", "trace_storage",
               "lr")
    onchip_rows = aggregate(by_kind["onchip"], oc_keys)
    out["onchip"] = sorted(onchip_rows, key=lambda r: tuple(str(r[k]) for k in oc_keys))
    # on-chip knee: the weight-bit variations around each (mode, profile) base
    oc_knees = {}
    oc = config.onchip
    from eprop_lava.fixed import get_profile

    for mode in oc.modes:
        for profile in oc.profiles:
            prof = get_profile(profile)
            base = dict(mode=mode, profile=profile, trace_bits=prof.trace_bits, psi_bits=prof.psi_bits,
                        signal_bits=prof.signal_bits, rounding=oc.rounding, trace_storage=oc.trace_storage, lr=oc.lr)
            rows = [r for r in onchip_rows if all(r[k] == v for k, v in base.items())]
            curve = {r["weight_bits"]: r["score_mean"] for r in rows}
            spread = {str(r["weight_bits"]): r["score_std"] for r in rows}
            if len(curve) < 2:
                continue
            fl = [r for r in out["float_eprop"] if r["mode"] == mode and r["optimizer"] == "sgd"]
            plateau = curve[max(curve)]
            oc_knees[f"{mode}/{profile}"] = {
                "vs_float_sgd": knee(curve, fl[0]["score_mean"], tol) if fl else None,
                "vs_own_widest": knee(curve, plateau, tol),
                "curve": {str(k): v for k, v in sorted(curve.items())},
                "curve_std": dict(sorted(spread.items(), key=lambda kv: int(kv[0])))}
    out["onchip_knees"] = oc_knees
    return out


def _fmt(row: dict | None) -> str:
    if row is None:
        return "n/a"
    s = f"{row['score_mean']:.3f}"
    if row["n"] > 1:
        s += f" ± {row['score_std']:.3f}"
    return s


def markdown(config: StudyConfig, summary: dict, records: list[dict]) -> str:
    task, spec = build_task_and_spec(config)
    score = "accuracy" if task.metric_name == "error" else task.metric_name
    lines = [f"# Quantization study: {config.task}", "",
             f"Task `{config.task}` with options {json.dumps(dict(config.task_options))} "
             f"({task.steps} steps per sample); network {spec.n_inputs} inputs, "
             f"{[l.size for l in spec.layers]} {spec.layers[0].neuron} neurons, timing loihi, reset zero. "
             f"Seeds {list(config.seeds)}; test set {config.test.batches}x{config.test.batch_size} samples per seed. "
             f"Entries are test {score}, mean ± std over seeds.", "",
             f"Float network: {config.float.iterations} iterations of float e-prop at batch "
             f"{config.float.batch_size}: **{_fmt(summary['float'])}**.", ""]
    if summary["ptq"]:
        bits = sorted({r["weight_bits"] for r in summary["ptq"]})
        lines += ["## (a) Post-training quantization (inference in fixed point)", "",
                  "| profile | scaling | weight rounding | " + " | ".join(f"{b} bit" for b in bits) + " | knee |",
                  "|---|---|---|" + "---|" * (len(bits) + 1)]
        for key, k in summary["ptq_knees"].items():
            profile, scaling, rounding = key.split("/")
            cells = []
            for b in bits:
                row = next((r for r in summary["ptq"] if (r["profile"], r["scaling"], r["rounding"], r["weight_bits"])
                            == (profile, scaling, rounding, b)), None)
                cells.append(_fmt(row))
            lines.append(f"| {profile} | {scaling} | {rounding} | " + " | ".join(cells)
                         + f" | {k if k is not None else '-'} |")
        lines += ["", f"Knee: the lowest weight width from which every wider one is within "
                      f"{config.knee_tolerance:.2f} of the float {score}. Weight bits are magnitude bits "
                      f"(a sign bit on top). Memory per synapse for inference is weight_bits + 1. "
                      f"Scaling 'mantissa': the reference quantizer (weight exponent 0, the threshold mantissa "
                      f"shrinks with the weights); 'exponent': Dense's weight_exp carries 8 - bits so thresholds "
                      f"keep their resolution.", ""]
    if summary["qat"]:
        lines += ["## Quantization-aware fine-tuning (STE) vs post-training quantization", "",
                  f"QAT: {config.qat.iterations} iterations at batch {config.qat.batch_size} from the float network, "
                  f"weights fake-quantized to the {config.qat.profile} grid ({config.qat.scaling} scaling); "
                  f"PTQ: the same scaling, nearest rounding.", "",
                  "| weight bits | PTQ | QAT |", "|---|---|---|"]
        for r in summary["qat"]:
            p = next((x for x in summary["ptq"] if x["profile"] == r["profile"] and x["rounding"] == "nearest"
                      and x["scaling"] == r["scaling"] and x["weight_bits"] == r["weight_bits"]), None)
            lines.append(f"| {r['weight_bits']} | {_fmt(p)} | {_fmt(r)} |")
        lines.append("")
    if summary["onchip"]:
        oc = config.onchip
        lines += ["## (b) On-chip learning (online fixed-point e-prop)", "",
                  f"Budget: {oc.batches} minibatches of {oc.batch_size} samples "
                  f"({oc.batches * oc.batch_size} samples); learning rate {oc.lr} (SGD on the summed gradient, "
                  f"m·2^e on chip). 'before' is the fixed-point {score} of the starting network.", "",
                  "| mode | profile | w | trace | psi | signal | rounding | traces | lr | before | after | bits/synapse |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in summary["onchip"]:
            before = f"{r['before_mean']:.3f}" if "before_mean" in r else "-"
            lines.append(f"| {r['mode']} | {r['profile']} | {r['weight_bits']} | {r['trace_bits']} | {r['psi_bits']} | "
                         f"{r['signal_bits']} | {r['rounding']} | {r['trace_storage']} | {r['lr']} | {before} | "
                         f"{_fmt(r)} | {r['memory_bits']:.1f} |")
        lines += ["", "Float e-prop with the same data and budget:", "", "| mode | optimizer | "
                  + score + " |", "|---|---|---|"]
        for r in summary["float_eprop"]:
            lines.append(f"| {r['mode']} | {r['optimizer']} | {_fmt(r)} |")
        if summary["onchip_knees"]:
            lines += ["", "On-chip weight-width knees (same definition; against float SGD e-prop of the same "
                          "budget, and against the widest on-chip width):", ""]
            for key, k in summary["onchip_knees"].items():
                lines.append(f"- {key}: vs float {k['vs_float_sgd']}, vs own widest {k['vs_own_widest']} "
                             f"(curve {k['curve']})")
        lines.append("")
    return "\n".join(lines)


def write_report(config: StudyConfig, out: str | Path) -> dict:
    """results.csv, results.json, summary.md and plots/ in ``out``."""
    import csv
    import io

    from eprop_lava.training import atomic_write_text

    out = Path(out)
    records = current_records(config, out)
    summary = summarize(config, records)
    columns = ["kind", "seed", "mode", "profile", "scaling", "weight_bits", "trace_bits", "psi_bits", "signal_bits", "rounding",
               "trace_storage", "optimizer", "lr", "iterations", "batches", "batch_size", "metric_name", "metric",
               "metric_before", "memory_bits", "v_saturated", "wraps", "weights_clipped", "seconds", "context"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in sorted(records, key=lambda r: (r["kind"], canonical({k: str(r.get(k)) for k in columns[1:13]}))):
        w.writerow(r)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.json", json.dumps({"config": config.to_dict(), "summary": summary,
                                                        "points": records}, indent=1, default=_jsonable))
    atomic_write_text(out / "summary.md", markdown(config, summary, records))
    plots = plot_report(summary, out / "plots")
    return {"records": len(records), "summary": summary, "plots": [str(p) for p in plots]}


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def _finish(fig, ax, path: Path) -> Path:
    """Legend, grid, layout, save as PNG (atomically); returns the path."""
    from eprop_lava.plots import save_figure

    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_report(summary: dict, out: Path) -> list[Path]:
    """accuracy_vs_bits.png and memory_vs_accuracy.png."""
    from eprop_lava.plots import new_figure   # no pyplot: the caller's backend is left alone

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    fl = summary.get("float")
    if fl:
        ax.axhline(fl["score_mean"], color="k", lw=1, label="float baseline")
        if fl["n"] > 1:
            ax.axhspan(fl["score_mean"] - fl["score_std"], fl["score_mean"] + fl["score_std"], color="k", alpha=0.08,
                       label="float ± std over seeds")
    groups = defaultdict(list)
    for r in summary["ptq"]:
        if r["profile"] == "wide" and any(x["profile"] == "loihi2" for x in summary["ptq"]):
            continue  # identical to loihi2 at equal weight bits (inference uses Loihi's neuron widths in both)
        groups[f"PTQ {r['scaling']} {r['rounding']}"].append(r)
    for r in summary["qat"]:
        groups[f"QAT {r['profile']} {r['scaling']}"].append(r)
    for key, k in summary.get("onchip_knees", {}).items():
        mode, profile = key.split("/")
        groups[f"on-chip {mode} {profile}"] = [
            {"weight_bits": int(b), "score_mean": v, "score_std": k.get("curve_std", {}).get(b, 0.0)}
            for b, v in k["curve"].items()]
    for i, (label, rows) in enumerate(sorted(groups.items())):
        # one line per (label); several rows per bit width would mean other varied fields: keep the base only
        per_bits = {}
        for r in rows:
            per_bits.setdefault(r["weight_bits"], r)
        xs = sorted(per_bits)
        ax.errorbar(np.array(xs) + 0.04 * (i - len(groups) / 2), [per_bits[b]["score_mean"] for b in xs],
                    yerr=[per_bits[b]["score_std"] for b in xs], marker="o", ms=3, capsize=2, label=label)
    ax.set_xlabel("weight bits (magnitude, + sign)")
    ax.set_ylabel("test accuracy" if (fl or {}).get("score_mean", 0) <= 1 else "score")
    paths.append(_finish(fig, ax, out / "accuracy_vs_bits.png"))

    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    for label, rows, marker in (("PTQ (inference)", summary["ptq"], "o"), ("QAT (inference)", summary["qat"], "s"),
                                ("on-chip learning", summary["onchip"], "^")):
        if rows:
            ax.errorbar([r["memory_bits"] for r in rows], [r["score_mean"] for r in rows],
                        yerr=[r["score_std"] for r in rows], fmt=marker, ms=4, capsize=2, label=label, alpha=0.8)
    if fl:
        ax.axhline(fl["score_mean"], color="k", lw=1, label="float baseline")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("memory per synapse (bits)")
    ax.set_ylabel("test accuracy")
    paths.append(_finish(fig, ax, out / "memory_vs_accuracy.png"))
    return paths
