"""Sample-steps per second: Lava fixed_pt versus the batched fixed-point engine
on the same network (40 -> 100 recurrent LIF -> 2, loihi2 profile), with
bit-identical results checked on the sample Lava ran.

    python benchmarks/bench_fixed_vs_lava.py [--steps 300] [--batches 512,2048] [--repeats 3]
        [--runs 3] [--learn-batch 16] [--baseline-src DIR]

Writes benchmarks/results/fixed_vs_lava.json (medians of the repeats, machine,
versions, load average). Inference and online learning are measured
separately; the engine and Lava run back to back in one process, so the
ratio is taken under the same machine load. ``--runs N`` repeats the whole
side-by-side comparison N times (each with its own load averages) and
records every run; the top-level ``inference`` / ``learning`` entries are
the run with the median speedup, ``*.speedups`` all of them, and
``bit_identical`` holds only if every run was bit-identical. The engine's
compiled loops are compiled (or loaded from numba's cache) and each timed
batch size run once before timing, again in every run right before its timed
repeats (the run's Lava processes had the cores and caches before them; Lava's
side likewise times only steps after its warm-up steps). ``--baseline-src DIR`` (a source
tree holding an older ``eprop_lava``, e.g. from ``git archive``) also times
that engine on the same inputs in a subprocess: before/after under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.fixed import loihi2_profile
from eprop_lava.spec import LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, RegularizationSpec

OUT = Path(__file__).resolve().parent / "results" / "fixed_vs_lava.json"


def network() -> fe.FixedNetwork:
    spec = NetworkSpec(n_inputs=40, layers=(LayerSpec(100, "lif", params=NeuronParams(n_ref=0), weight_scale=2.0),),
                       timing="loihi", reset="zero", loss="cross_entropy", learning=LearningSpec(variant="random"),
                       regularization=RegularizationSpec(form="none"), optimizer=OptimizerSpec(kind="sgd", lr=1e-2))
    return fe.quantize(spec, init_params(spec, 0), loihi2_profile())


def lava_run(net: fe.FixedNetwork, x: np.ndarray, target: np.ndarray | None, learn: bool, warm: int) -> tuple[float, dict]:
    """Seconds per step of a Lava fixed_pt run (compile and `warm` steps excluded) and its records."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.source import RingBuffer

    from eprop_lava.models.network import build_network, read_network, run_config, run_guarded

    T = x.shape[0]
    built = build_network(net=net, learn=learn, sample_steps=T + warm, record_steps=T + warm)
    xs = np.concatenate([np.zeros((warm, x.shape[1])), x]).T.copy()
    src = RingBuffer(data=xs)
    src.s_out.connect(built.dense_in[0].s_in)
    if learn:
        tm = np.concatenate([np.concatenate([np.zeros((warm, target.shape[1])), target]),
                             np.ones((T + warm, 1))], axis=1)
        tsrc = RingBuffer(data=tm.T.copy())
        tsrc.s_out.connect(built.signal.target_in)
    timing = {}

    def body():
        t0 = time.perf_counter()
        src.run(condition=RunSteps(num_steps=T, blocking=True), run_cfg=None)
        timing["s"] = (time.perf_counter() - t0) / T
        return read_network(built, T + warm, weights=learn)

    # the warm-up run compiles and starts the runtime; body() continues the same network
    records = run_guarded(src, warm, run_config("fixed_pt"), body, timeout=600)
    return timing["s"], records


def engine_rates(x: np.ndarray, target: np.ndarray, batches: list, learn_batch: int, repeats: int) -> dict:
    """Engine sample-steps per second (median of repeats) per inference batch and for learning."""
    base = network()
    T = x.shape[0]
    out = {}
    for B in batches:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fe.simulate(base, x[:, :B])
            ts.append(time.perf_counter() - t0)
        out[f"inference_batch_{B}"] = B * T / statistics.median(ts)
    ts = []
    for _ in range(repeats):
        net = base.copy()
        t0 = time.perf_counter()
        fe.simulate(net, x[:, :learn_batch], target[:, :learn_batch], learn=True)
        ts.append(time.perf_counter() - t0)
    out[f"learning_batch_{learn_batch}"] = learn_batch * T / statistics.median(ts)
    return out


def inputs(T: int, B: int, learn_batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = (rng.random((T, B, 40)) < 0.05).astype(np.float64)
    target = np.zeros((T, max(B, learn_batch), 2))
    target[..., 0] = 1.0
    return x, target


def baseline_rates(src: Path, args: argparse.Namespace) -> dict:
    """engine_rates of the eprop_lava found in ``src``, in a fresh interpreter."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
            "import bench_fixed_vs_lava as b; from eprop_lava.engine import fixed_engine as fe;"
            "assert fe.__file__.startswith(sys.argv[1]), fe.__file__;"
            "T, bs, lb, rep = json.loads(sys.argv[3]); x, tg = b.inputs(T, max(bs), lb);"
            "print(json.dumps(b.engine_rates(x, tg, bs, lb, rep)))")
    cfg = json.dumps([args.steps, args.batches, args.learn_batch, args.repeats])
    out = subprocess.run([sys.executable, "-c", code, str(src.resolve()), str(Path(__file__).resolve().parent), cfg],
                         capture_output=True, text=True, check=True, cwd=str(src))
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(base: fe.FixedNetwork, x: np.ndarray, target: np.ndarray, args: argparse.Namespace, warm: int) -> dict:
    """One side-by-side run: engine inference and learning, Lava inference and learning."""
    T = args.steps
    res: dict = {"load_average_start": [round(v, 2) for v in os.getloadavg()]}
    # ---- inference: engine at each batch size, then Lava (one sample)
    eng_sps = {}
    for B in args.batches:
        eng_t = []
        # one untimed batch first: the previous run's Lava processes had the cores and the caches
        # (Lava's timed steps likewise follow its warm-up steps)
        fe.simulate(base, x[:, :B])
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run = fe.simulate(base, x[:, :B])
            eng_t.append(time.perf_counter() - t0)
        eng_sps[B] = (B * T / statistics.median(eng_t), eng_t)
    B = max(eng_sps, key=lambda b: eng_sps[b][0])
    lava_t, identical = [], True
    for _ in range(max(2, args.repeats - 1)):
        s, rec = lava_run(base, x[:, 0], None, False, warm)
        lava_t.append(s)
        identical &= bool(np.array_equal(rec["z"][0][warm:], run.z[0][:, 0])
                          and np.array_equal(rec["y"][warm:], run.y[:, 0]))
    e_sps = eng_sps[B][0]
    l_sps = 1.0 / statistics.median(lava_t)
    res["inference"] = dict(engine_batch=B, engine_sample_steps_per_s=round(e_sps), lava_ms_per_step=round(
        1e3 * statistics.median(lava_t), 3), lava_sample_steps_per_s=round(l_sps, 1), speedup=round(e_sps / l_sps, 1),
        bit_identical=identical,
        engine_sample_steps_per_s_by_batch={str(b): round(v[0]) for b, v in eng_sps.items()},
        engine_repeats_s={str(b): [round(t, 4) for t in v[1]] for b, v in eng_sps.items()},
        lava_repeats_ms_per_step=[round(1e3 * t, 3) for t in lava_t])

    # ---- online learning (one update at the end of the sample)
    Bl = args.learn_batch
    eng_t = []
    fe.simulate(base.copy(), x[:, :Bl], target[:, :Bl], learn=True)  # untimed, after Lava's inference run
    for _ in range(args.repeats):
        net = base.copy()
        t0 = time.perf_counter()
        fe.simulate(net, x[:, :Bl], target[:, :Bl], learn=True)
        eng_t.append(time.perf_counter() - t0)
    # bit identity with learning: Lava sample == engine with batch 1
    net1 = base.copy()
    ref = fe.simulate(net1, x[:, :1], target[:, :1], learn=True)
    s, rec = lava_run(base, x[:, 0], target[:, 0], True, 1)  # one silent step: no spikes, no eligibility
    identical = bool(np.array_equal(rec["z"][0][1:], ref.z[0][:, 0])
                     and all(np.array_equal(net1.weights()[k], rec["weights"][k]) for k in rec["weights"]
                             if k != "feedback.b"))
    e_sps = Bl * T / statistics.median(eng_t)
    res["learning"] = dict(engine_batch=Bl, engine_sample_steps_per_s=round(e_sps), lava_ms_per_step=round(1e3 * s, 3),
                           lava_sample_steps_per_s=round(1.0 / s, 1), speedup=round(e_sps * s, 1),
                           bit_identical=identical, engine_repeats_s=[round(t, 4) for t in eng_t],
                           weights_changed=int(sum((net1.weights()[k] != base.weights()[k]).sum()
                                                   for k in net1.weights())))
    res["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[512, 2048],
                    help="engine inference batch sizes (comma-separated); the ratio uses the fastest")
    ap.add_argument("--learn-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="side-by-side comparisons, one after another")
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    T, warm = args.steps, 10
    x, target = inputs(T, max(args.batches), args.learn_batch)
    base = network()
    res: dict = {"network": "40 -> 100 recurrent LIF -> 2 readout, loihi2 profile", "steps": T,
                 "load_average_start": [round(v, 2) for v in os.getloadavg()]}
    # compile (or load from numba's cache) the engine's loops outside the timings, and run
    # each timed size once untimed, as Lava's warm-up run: the process's heap grows to the
    # largest batch's working set on its first call (one-time page faults, not a per-sample cost)
    fe.simulate(base, x[:, :2])
    fe.simulate(base.copy(), x[:, :2], target[:, :2], learn=True)
    for B in args.batches:
        fe.simulate(base, x[:, :B])
    fe.simulate(base.copy(), x[:, :args.learn_batch], target[:, :args.learn_batch], learn=True)
    runs = [compare(base, x, target, args, warm) for _ in range(args.runs)]
    for part in ("inference", "learning"):
        speedups = [r[part]["speedup"] for r in runs]
        median_run = sorted(runs, key=lambda r: r[part]["speedup"])[len(runs) // 2]
        res[part] = dict(median_run[part], speedups=speedups,
                         runs_at_least_1000x=sum(v >= 1000 for v in speedups), runs=len(runs))
    res["bit_identical"] = all(r[p]["bit_identical"] for r in runs for p in ("inference", "learning"))
    res["runs"] = runs
    Bl = args.learn_batch
    if args.baseline_src is not None:
        before = baseline_rates(args.baseline_src, args)
        after = engine_rates(x, target, args.batches, Bl, args.repeats)
        res["engine_before_after"] = dict(
            baseline_src=str(args.baseline_src), note="sample-steps/s, measured back to back in this run",
            before={k: round(v) for k, v in before.items()}, after={k: round(v) for k, v in after.items()},
            gain={k: round(after[k] / before[k], 2) for k in after})
    res["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    import lava  # noqa: F401

    from importlib.metadata import version
    res["machine"] = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                          cpus=os.cpu_count(), python=sys.version.split()[0], numpy=np.__version__,
                          lava_nc=version("lava-nc"))
    res["date"] = time.strftime("%Y-%m-%d %H:%M")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, args.out)  # atomic: a reader never sees half a file
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
