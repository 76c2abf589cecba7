"""Does stochastic rounding of the output error and the learning signal help?

Two measurements, each with the rounding of the error / the learning signal
"nearest" (the default), signal stochastic, and both stochastic:

(a) gradient agreement in the "loihi2" profile: the accumulated fixed-point
    update of one batch against the float e-prop gradient of the same
    (dequantized) network, for LIF, ALIF, STDP-ALIF and Izhikevich, network
    seeds 1-3, in the setting of tests/test_fixed_point.py's wide-profile
    test (MSE, symmetric feedback, 4 x 60 steps) and in a cross-entropy
    setting with a loss window (mask 1/45 over the last 45 steps, the error
    exponent and signal shift chosen from it, as the compiler does), also
    with a learning signal of only 3 and 2 bits + sign. Per
    configuration: the smallest cosine and the norm-ratio range over the five
    learned matrices; for stochastic rounding the mean over ``--rounding-seeds``
    seeds of the rounding streams (the network's seed) and the agreement of
    the update averaged over those seeds (stochastic rounding is unbiased,
    so the average approaches the exact update).
(b) on-chip adaptation (studies.onchip.adaptation, the demo's network
    trained as in bench_onchip_adaptation.py, evidence task with the cue
    sides swapped, lr 0.01, 3 learning streams, ``--adaptation-seeds``
    seeds of the rounding streams each, as the weight update rounds
    stochastically with every rounding): held-out error after the on-chip
    samples with each rounding; float e-prop as the reference.

    python benchmarks/bench_signal_rounding.py [--rounding-seeds 5] [--adaptation-seeds 3] [--samples 32]
        [--test-samples 256]
        [--skip-adaptation] [--out benchmarks/results/signal_rounding.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eprop_lava import fixed as F
from eprop_lava.compile.artifact import jsonable, write_result
from eprop_lava.compile.quantize import dequantize
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.gradients import eprop_gradient
from eprop_lava.engine.network import Batch, init_params
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec

OUT = Path(__file__).resolve().parent / "results" / "signal_rounding.json"
KINDS = ("lif", "alif", "stdp_alif", "izhikevich")
KEYS = ("layers.0.w_in", "layers.0.w_rec", "layers.1.w_in", "layers.1.w_rec", "readout.w")
ROUNDINGS = {"nearest": dict(error_rounding="nearest", signal_rounding="nearest"),
             "signal_stochastic": dict(error_rounding="nearest", signal_rounding="stochastic"),
             "both_stochastic": dict(error_rounding="stochastic", signal_rounding="stochastic")}


def _spec(kind: str, loss: str) -> NetworkSpec:
    """tests/test_fixed_point.py's network: 10 -> 20 -> 15 recurrent -> 2."""
    ws = 30.0 if kind == "izhikevich" else 3.0
    params = NeuronParams(n_ref=2)
    return NetworkSpec(n_inputs=10, layers=(LayerSpec(20, kind, params=params, weight_scale=ws),
                                            LayerSpec(15, kind, params=params, weight_scale=ws)),
                       timing="loihi", reset="zero", loss=loss, learning=LearningSpec(variant="symmetric"),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=1e-3))


def _batch(setting: str, T: int = 60, B: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, 10)) < 0.2).astype(float)
    if setting == "mse":  # exactly the test's batch
        return x, 0.3 * rng.standard_normal((T, B, 2)), np.ones((T, B))
    target = np.zeros((T, B, 2))
    for b in range(B):
        target[:, b, b % 2] = 1.0
    mask = np.zeros((T, B))
    mask[T - 45:] = 1.0 / 45
    return x, target, mask


def _agreement(g_fx: dict, g: dict) -> tuple[float, float, float]:
    """(smallest cosine, smallest and largest norm ratio) over the matrices."""
    cos, ratio = [], []
    for key in KEYS:
        a, b = g_fx[key].ravel(), g[key].ravel()
        cos.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        ratio.append(float(np.linalg.norm(a) / np.linalg.norm(b)))
    return min(cos), min(ratio), max(ratio)


#: (loss, profile changes) per setting: the test's MSE setting, cross-entropy with a loss window,
#: and the same with a learning signal of 3 and 2 bits + sign (few levels: where rounding matters)
SETTINGS = {"mse": ("mse", {}), "cross_entropy": ("cross_entropy", {}),
            "cross_entropy_signal3": ("cross_entropy", {"signal_bits": 3}),
            "cross_entropy_signal2": ("cross_entropy", {"signal_bits": 2})}


def gradient_agreement(rounding_seeds: int) -> list:
    rows = []
    for setting, (loss, widths) in SETTINGS.items():
        for kind in KINDS:
            spec = _spec(kind, loss)
            x, target, mask = _batch(loss)
            for seed in (1, 2, 3):
                params = init_params(spec, seed)
                for name, changes in ROUNDINGS.items():
                    prof = F.loihi2_profile(**widths, **changes)
                    net = fe.quantize(spec, params, prof, loss_mask=mask if loss == "cross_entropy" else None)
                    same = {**params, **dequantize(net)}
                    _, g, _ = eprop_gradient(spec, same, Batch(x, target, mask))
                    stochastic = name != "nearest"
                    per_seed, grads = [], []
                    for rs in range(rounding_seeds if stochastic else 1):
                        probe = net.copy()
                        probe.seed = 100 + rs
                        g_fx = fe.accumulated_gradients(probe, x, target, mask)
                        grads.append(g_fx)
                        per_seed.append(_agreement(g_fx, g))
                    mean_grad = {k: np.mean([gr[k] for gr in grads], axis=0) for k in KEYS}
                    row = {"setting": setting, "kind": kind, "seed": seed, "rounding": name,
                           "error_exp": int(net.error_bits), "signal_shift": int(net.signal_shift),
                           "cos_min": statistics.mean(p[0] for p in per_seed),
                           "ratio_lo": statistics.mean(p[1] for p in per_seed),
                           "ratio_hi": statistics.mean(p[2] for p in per_seed),
                           "rounding_seeds": len(per_seed)}
                    if stochastic:
                        c, lo, hi = _agreement(mean_grad, g)
                        row.update(mean_update_cos_min=c, mean_update_ratio_lo=lo, mean_update_ratio_hi=hi)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def adaptation_runs(samples: int, test_samples: int, lr: float, rounding_seeds: int) -> dict:
    from bench_onchip_adaptation import trained_artifact

    from eprop_lava.studies.onchip import adaptation

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, validation_error = trained_artifact(tmp)
        runs = []
        for stream in (4, 5, 6):
            for name, changes in ROUNDINGS.items():
                for k in range(rounding_seeds):
                    r = adaptation(tmp / "art", samples=samples, test_samples=test_samples,
                                   every=max(1, samples // 4), lr=lr, learn_stream=stream,
                                   float_reference=(name == "nearest" and k == 0), profile_changes=changes,
                                   rounding_seed=1000 + k)
                    row = {"stream": stream, "rounding": name, "rounding_seed": 1000 + k,
                           "fixed_before": r["fixed"]["error_before"],
                           "fixed_after": r["fixed"]["error_after"], "signal": r["fixed"]["signal"],
                           "weights_changed": r["fixed"]["weights_changed"]}
                    if "float" in r:
                        row.update(float_before=r["float"]["error_before"], float_after=r["float"]["error_after"])
                    runs.append(row)
                    print(json.dumps(jsonable(row)), flush=True)
    return {"network_validation_error": validation_error, "samples": samples,
            "test_samples": test_samples, "lr": lr, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounding-seeds", type=int, default=5)
    ap.add_argument("--adaptation-seeds", type=int, default=3,
                    help="rounding-stream seeds per learning stream and rounding in (b)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--test-samples", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--skip-adaptation", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if min(args.rounding_seeds, args.adaptation_seeds, args.samples, args.test_samples) < 1:
        print("bench_signal_rounding: --rounding-seeds, --adaptation-seeds, --samples and --test-samples "
              "must be >= 1", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = {"benchmark": "stochastic rounding of the output error and the learning signal",
           "gradient_agreement": gradient_agreement(args.rounding_seeds)}
    if not args.skip_adaptation:
        out["adaptation"] = adaptation_runs(args.samples, args.test_samples, args.lr, args.adaptation_seeds)
    out.update(seconds=time.perf_counter() - t0)
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
