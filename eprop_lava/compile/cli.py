"""``eprop-lava compile`` and ``eprop-lava run`` (registered by eprop_lava.cli).

    eprop-lava compile CHECKPOINT --target loihi2|loihi1 [--weight-bits N] [--system NAME]
                       [--learning] [--loihi-timing] [--no-search] [--lr LR] --out DIR [--json]
    eprop-lava run DIR [--learn [--learn-samples N] [--curve-every K] [--figure PNG] [--native-neuron eprop|eprop_cut|standard]]
                   [--steps N]
                   [--samples S] [--lava-samples K] [--no-lava] [--json]
    eprop-lava export-netx DIR --out FILE.h5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eprop_lava.errors import UserError


def _weight_bits(text: str):
    """N (all groups) or GROUP=N[,GROUP=N...] with groups layers.R, readout, default."""
    try:
        return int(text)
    except ValueError:
        pass
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--weight-bits {text!r}: expected N or group=N[,group=N] (e.g. layers.0=6,readout=8)")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise UserError(f"--weight-bits {text!r}: {value!r} is not an integer") from None
    return out


def cmd_compile(args: argparse.Namespace) -> int:
    from eprop_lava.compile.pipeline import compile_checkpoint

    s = compile_checkpoint(args.checkpoint, args.out, target=args.target, weight_bits=_weight_bits(args.weight_bits),
                           system=args.system, learning=args.learning, loihi_timing=args.loihi_timing,
                           search=not args.no_search, lr=args.lr, grid=args.grid,
                           deploy_target=args.deploy)
    for line in s.get("warnings", []):
        print(f"eprop-lava: warning: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    if s.get("source_note"):
        print(f"compiling {s['source_note']}")
    if s.get("conversion"):
        print(f"note: {s['conversion']}")
    for gap in s.get("omitted", []):
        print(f"note: left out the {gap['section']}: {gap['reason']}")
    errs = ", ".join(f"{k} {v:.4f}" for k, v in s["quantization_rel_rms_error"].items())
    clip = max(s["clipped_fraction"].values())
    print(f"compiled for {s['target']} ({s['system']}): {s['cores']} core(s) on {s['chips']} chip(s)"
          f"{' with learning synapses' if s['learning_synapses'] else ''} "
          f"[{'without' if s['learning_synapses'] else 'with'} learning synapses: {s['cores_other_mode']} core(s)]")
    print(f"quantization (relative RMS error): {errs}; at most {100 * clip:.2f}% of a matrix clipped")
    if s["energy_per_step_nj"] is not None:
        print(f"estimate: {s['energy_per_step_nj']:.2f} nJ per step, {s['energy_per_inference_uj']:.2f} uJ and "
              f"{s['latency_per_inference_ms']:.3f} ms per inference (events counted on 4 test samples, priced "
              "with SANA-FE's Loihi 1 calibration of Davies et al. 2018"
              + ("; Loihi 2 per-event figures are not public: all assumed" if s["target"] == "loihi2" else "")
              + "; see report.md)")
    if s["target"] == "loihi1" and s["learning_synapses"]:
        print("note: Loihi 1 cannot run e-prop on chip (its neuron cannot send psi, docs/lava_loihi.md §3.5); the "
              "learning-synapse figures are a memory estimate only")
    print(f"artifact: {s['artifact']} (report.md, core_map.png, quantization.png)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from eprop_lava.compile.pipeline import format_run, run_artifact

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps: expected a positive integer, got {args.steps}")
    if args.samples < 1:
        raise UserError(f"--samples: expected a positive integer, got {args.samples}")
    if args.lava_samples < 1:
        raise UserError(f"--lava-samples: expected a positive integer, got {args.lava_samples}")
    if args.learn_samples < 1:
        raise UserError(f"--learn-samples: expected a positive integer, got {args.learn_samples}")
    if args.curve_every is not None and args.curve_every < 1:
        raise UserError(f"--curve-every: expected a positive integer, got {args.curve_every}")
    figure = None
    if args.learn:
        art = Path(args.artifact)
        figure = Path(args.figure) if args.figure else art.parent / f"{art.name.rstrip('/') or 'artifact'}-learning.png"
        if figure.exists() and figure.is_dir():
            raise UserError(f"--figure {figure}: is a directory; give a .png file path")
    r = run_artifact(args.artifact, samples=args.samples, steps=args.steps, learn=args.learn, lava=not args.no_lava,
                     lava_samples=args.lava_samples, learn_samples=args.learn_samples,
                     curve_every=args.curve_every, figure=figure, native_neuron=args.native_neuron,
                     log=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    print(json.dumps(r, indent=2) if args.json else format_run(r))
    lv = r.get("lava", {})
    exact = lv.get("comparison", {}).get("bit_exact", True) and r.get("native", {}).get("bit_exact", True)
    if isinstance(lv.get("learning"), dict):
        exact = exact and lv["learning"]["bit_exact"]
    return 0 if exact else 1


def cmd_export_netx(args: argparse.Namespace) -> int:
    from eprop_lava.compile import deploy
    from eprop_lava.compile.artifact import load_artifact
    from eprop_lava.compile.netx import export_netx

    art = load_artifact(args.artifact)
    src = art.manifest["source"]
    x = None  # a task this build does not know: netx.verification_input's Bernoulli spikes
    try:
        _, ts = deploy.test_set(src.get("task"), int(src.get("seed") or 0), 1)
        x = ts.x[:, 0, :]
    except UserError:
        pass
    info = export_netx(art.net, Path(args.out), learning=bool(art.manifest["target"].get("learning_synapses")),
                       round_bias=args.round_bias, x=x)
    v = info["verified"]
    print(json.dumps(info, indent=2) if args.json else
          f"netx HDF5: {args.out} ({info['layers']} layers); read back through lava-dl netx and run for "
          f"{v['steps']} steps ({'a test sample' if x is not None else 'random input'}): "
          f"{v['spike_mismatches']} spike, {v['readout_mismatches']} readout mismatches "
          f"against the engine; readout y = last layer neuron.v / {info['readout']['y_scale']:g}"
          + (f"; readout bias rounded by up to {info['readout_bias_rounding']}" if info["readout_bias_rounding"]
             else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("compile", help="quantize a checkpoint, map it onto Loihi cores, write an artifact")
    p.add_argument("checkpoint", help="checkpoint.npz or a run directory")
    p.add_argument("--target", choices=["loihi2", "loihi1"], default="loihi2",
                   help="chip generation whose limits the mapping respects (default loihi2)")
    p.add_argument("--weight-bits", default="8", help="1..8 for all weights, or layers.0=6,readout=8 (default 8)")
    p.add_argument("--system", help="kapoho_point (default for loihi2), oheo_gulch, hala_point; nahuku32 "
                                    "(default for loihi1), kapoho_bay, pohoiki_beach, pohoiki_springs; or a chip count")
    p.add_argument("--learning", action="store_true", help="reserve synaptic memory for on-chip e-prop")
    p.add_argument("--loihi-timing", action="store_true",
                   help="compile a network trained with timing=bellec/reset=subtract under Loihi's semantics")
    p.add_argument("--no-search", action="store_true", help="max-abs weight scaling instead of the error search")
    p.add_argument("--lr", type=float, help="on-chip learning rate (SGD on the summed e-prop gradient, stored as "
                                            "m 2^e); default: the spec's optimizer lr")
    p.add_argument("--grid", choices=["dense", "netx"], default="dense",
                   help="weight grid: each matrix on its own Lava Dense's grid (dense), or a layer's input and "
                        "recurrent weights on one grid and the readout bias on 2^6, as lava-dl netx needs (netx)")
    p.add_argument("--deploy", choices=["eprop", "native"], default="eprop",
                   help="eprop: the e-prop processes (CPU models); native: inference as Lava standard processes "
                        "(Dense, LIF) that have neurocore implementations, LIF networks only")
    p.add_argument("--out", required=True, help="artifact directory (written atomically)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (for scripts) instead of text")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a compiled artifact: float, fixed-point engine and Lava fixed_pt")
    p.add_argument("artifact", help="directory written by eprop-lava compile")
    p.add_argument("--samples", type=int, default=64, help="test samples for the float and fixed-point engines "
                                                           "(default 64)")
    p.add_argument("--lava-samples", type=int, default=4, help="of those, how many run in Lava (default 4; "
                                                               "~2 ms per step)")
    p.add_argument("--steps", type=int, help="cap on the Lava run's time steps (default: all samples)")
    p.add_argument("--learn", action="store_true",
                   help="on-chip learning experiment: online fixed-point e-prop on training samples of the "
                        "artifact's task, held-out test error before, during and after")
    p.add_argument("--learn-samples", type=int, default=64,
                   help="with --learn: training samples learned one after another (default 64; drawn from rng "
                        "stream [seed, 4], disjoint from the test samples)")
    p.add_argument("--curve-every", type=int, help="with --learn: held-out error every K samples (default: 8 "
                                                   "points over the run)")
    p.add_argument("--figure", help="with --learn: learning-curve PNG (default: ARTIFACT-learning.png next to "
                                    "the artifact)")
    p.add_argument("--native-neuron", choices=["eprop", "eprop_cut", "standard"], default="eprop",
                   help="with --learn on a --deploy native artifact: the learning neuron (eprop: EpropLearningLIF, "
                        "exact psi, a custom neuron model; eprop_cut: the same with the eligibility reset at post "
                        "spikes; standard: Lava's LearningLIF, post spike for psi)")
    p.add_argument("--no-lava", action="store_true", help="skip the Lava run")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (for scripts) instead of text")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export-netx", help="export a LIF-only artifact as lava-dl netx HDF5")
    p.add_argument("artifact", help="directory written by eprop-lava compile (a LIF-only network)")
    p.add_argument("--out", required=True, help="HDF5 file to write")
    p.add_argument("--round-bias", action="store_true",
                   help="round a readout bias off netx's 2^6 grid to the nearest multiple of 64 (reported)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (for scripts) instead of text")
    p.set_defaults(func=cmd_export_netx)
