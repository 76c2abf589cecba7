"""Native on-chip e-prop (compile --deploy native --learning) against the
exact rule, in the on-chip adaptation scenario: a LIF network trained
off-chip on the evidence task (40 recurrent LIF, tau_m = 300 steps so that
LIF alone holds the evidence, no refractory period, Loihi timing, random
feedback, 300 iterations of batch 32, seed 1), compiled for Loihi 2 with
the adaptation learning rate (compile/pipeline.py ADAPTATION_LR; hidden
rate x feedback gain, studies/onchip.py), then adapted online (batch 1) to
the task with the two cue sides swapped:

* native: the closed-loop LearningDense graph (compile/native_learning.py)
  in Lava's CPU simulation, one Lava run per sample, with the
  EpropLearningLIF (exact psi, custom neuron model), with the same neuron
  also sending psi alpha^(t - t_j) so that the rule resets the eligibility
  at post spikes (eprop_cut), and with Lava's own LearningLIF (post spike
  for psi);
* exact: the fixed-point engine (fe.simulate(learn=True), "loihi2",
  update at the end of the sample) on the same samples.

Per sample: cosine and norm ratio ||dW_native|| / ||dW_engine|| of the
sample's accumulated weight change against the engine's update of the same
sample from the same weights (before its stochastic rounding, -m 2^e acc,
and as applied). Held-out error on the swapped task (rng stream [seed, 3])
before, along the way and after, the native weights run in the engine
(native inference is bit-exact to it). Causes: the engine with the native
graph's structural differences added one after another
(native_learning.ENGINE_VARIANTS: no eligibility reset at post spikes, the
learning signal one step late, weights updated every step), and on the
first sample the native update against float e-prop of the native run's
own stream, with and without the reset (the learning-engine arithmetic
alone). And the same with only the readout learning (hidden layers frozen,
plain Dense and LIF: every process standard but the learning-signal one).

    python benchmarks/bench_native_learning.py [--samples 16] [--test-samples 64] [--iterations 300]
        [--neurons eprop,standard] [--out benchmarks/results/native_learning.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


from eprop_lava.compile import deploy
from eprop_lava.compile import native_learning as nl
from eprop_lava.compile.artifact import load_artifact, write_result
from eprop_lava.compile.pipeline import ADAPTATION_LR, compile_checkpoint
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.studies.onchip import feedback_gain
from eprop_lava.tasks import get_task
from eprop_lava.training import TrainConfig, held_out, train

OUT = Path(__file__).resolve().parent / "results" / "native_learning.json"


def lif_evidence_spec(task):
    spec = task.default_spec()
    L = spec.layers[0]
    L = replace(L, size=40, neuron="lif", adaptive_fraction=0.0, params=replace(L.params, n_ref=0, tau_m=300.0))
    return spec.replace(layers=(L,), timing="loihi", reset="zero")


def own_stream_check(net, x, target, mask, neuron: str = "eprop") -> dict:
    """First sample, EpropLearningLIF: the native update of each hidden
    matrix against float e-prop of the native run's own stream, without and
    with the eligibility reset at post spikes (what the learning engine does
    vs what e-prop with Loihi's reset to zero asks for)."""
    from eprop_lava.models.learning_engine import agreement

    r = nl.run_sample(net, x, target, mask, neuron=neuron, record=True)
    before = net.weights()
    out = {"note": "native update vs float e-prop on the native run's own spikes, psi and received signal"}
    for cut in (False, True):
        ref = nl.float_eprop_of_run(net, x, r, cut)
        out["with_reset_cut" if cut else "without_reset_cut"] = {
            k: agreement(r[k] - before[k], v) for k, v in ref.items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--test-samples", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--neurons", default="eprop,eprop_cut,standard")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    neurons = [n.strip() for n in args.neurons.split(",") if n.strip()]
    for n in neurons:
        if n not in nl.NEURONS:
            print(f"bench_native_learning: --neurons: unknown {n!r} (expected {', '.join(nl.NEURONS)})",
                  file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    out: dict = {"benchmark": "native on-chip e-prop vs the exact rule, evidence task with swapped cue sides",
                 "samples": args.samples, "test_samples": args.test_samples, "learning_rate": ADAPTATION_LR}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task0 = get_task("evidence")
        config = TrainConfig(task="evidence", algo="eprop", batch_size=32, iterations=args.iterations,
                             validate_every=25, validation_batches=4, checkpoint_every=25, seed=1, progress=False)
        res = train(task0, lif_evidence_spec(task0), config, tmp / "train", resume=False)
        out["network"] = {"layers": "40 LIF (tau_m 300, recurrent), 2 outputs", "iterations": args.iterations,
                          "validation_error_last": res.final_validation["error"]}
        print(f"trained: validation error {res.final_validation['error']:.3f}", flush=True)
        compile_checkpoint(tmp / "train", tmp / "art", target="loihi2", learning=True, lr=ADAPTATION_LR,
                           deploy_target="native")
        art = load_artifact(tmp / "art")
    src = art.manifest["source"]
    seed = int(src["seed"])
    task_name, options = deploy.source_task(src)
    task = get_task(task_name, **{**options, "swap_sides": True})
    net = art.net.copy()
    hidden_lr = ADAPTATION_LR * feedback_gain(art.float_params, art.spec.learning.variant)
    fe.set_learning_rates(net, ADAPTATION_LR, hidden_lr)
    out["hidden_learning_rate"] = hidden_lr
    out["rules"] = {k: r.to_dict() for k, r in nl.rules(net, "eprop").items()}
    out["rules_standard_neuron"] = {k: r.to_dict() for k, r in nl.rules(net, "standard").items()}
    out["engine_learning_rates"] = {"w_in": [net.layers[0].lr.mantissa, net.layers[0].lr.exponent],
                                    "w_out": [net.readout.lr.mantissa, net.readout.lr.exponent]}
    test = deploy.draw(held_out(task, "test"), seed, deploy.TEST_STREAM, args.test_samples)
    trn = deploy.draw(held_out(task, "train"), seed, deploy.LEARN_STREAM, args.samples)
    out["steps_per_sample"] = int(trn.x.shape[0])
    every = max(1, args.samples // 4)
    t1 = time.perf_counter()
    eng = deploy.learn_run(net, trn, test, task, every)
    out["engine"] = {"curve": eng["curve"], "error_before": eng["error_before"], "error_after": eng["error_after"],
                     "seconds": time.perf_counter() - t1}
    print(f"engine: held-out error {eng['error_before']:.3f} -> {eng['error_after']:.3f}", flush=True)
    out["native"] = {}
    for neuron in neurons:
        t1 = time.perf_counter()
        variants = tuple(nl.ENGINE_VARIANTS) if neuron == "eprop" else ()  # cause measurements: one neuron
        r = nl.learn_native(net, trn, neuron, test=test, task=task, every=every, variants=variants)
        out["native"][neuron] = {
            "curve": r["curve"], "error_before": r["error_before"], "error_after": r["error_after"],
            "lava_seconds": r["lava_seconds"], "seconds": time.perf_counter() - t1,
            "update_vs_engine": {a: {k: nl.summary(r["per_sample"], k, a) for k in r["per_sample"][0][a]}
                                 for a in r["per_sample"][0]},
            "per_sample": r["per_sample"]}
        h = out["native"][neuron]["update_vs_engine"]["vs_expected"]["hidden"]
        print(f"native ({neuron}): held-out error {r['error_before']:.3f} -> {r['error_after']:.3f}; hidden update "
              f"cosine {h['cosine']['mean']:.3f}, norm ratio {h['norm_ratio']['mean']:.2f}", flush=True)
    # only the readout learns (hidden layers: Lava's plain Dense and LIF), against the engine doing the same
    t1 = time.perf_counter()
    eng_ro = nl.engine_readout_only(net, trn, test, task, every)
    r = nl.learn_native(net, trn, "eprop", test=test, task=task, every=every, learn_hidden=False)
    out["readout_only"] = {
        "engine": {"curve": eng_ro["curve"], "error_before": eng_ro["error_before"],
                   "error_after": eng_ro["error_after"]},
        "native": {"curve": r["curve"], "error_before": r["error_before"], "error_after": r["error_after"],
                   "lava_seconds": r["lava_seconds"],
                   "update_vs_engine": {a: {k: nl.summary(r["per_sample"], k, a) for k in r["per_sample"][0][a]}
                                        for a in r["per_sample"][0]}},
        "seconds": time.perf_counter() - t1}
    print(f"readout only: engine {eng_ro['error_before']:.3f} -> {eng_ro['error_after']:.3f}, native "
          f"{r['error_before']:.3f} -> {r['error_after']:.3f}", flush=True)
    out["own_stream_check"] = {n: own_stream_check(net, trn.x[:, 0], trn.target[:, 0], trn.mask[:, 0], n)
                               for n in ("eprop", "eprop_cut")}
    out["seconds"] = time.perf_counter() - t0
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
