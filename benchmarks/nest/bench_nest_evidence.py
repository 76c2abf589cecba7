"""Wall time per training iteration of NEST 3.10's original-paper e-prop models
(``*_bsshslm_2020``) on the evidence-accumulation task.

The network is built as in NEST's
``pynest/examples/eprop_plasticity/eprop_supervised_classification_evidence-accumulation_bsshslm_2020.py``
and ``testsuite/pytests/synapses/test_eprop_bsshslm_2020_plasticity.py::test_eprop_classification``
(nest/nest-simulator, tag v3.10 = acca9704da; the code below follows the test file
at commit 28b4f5562a66 and the example, whose network, parameters, draw order and
step offsets are the same): 40 parrot inputs, 50 ``eprop_iaf_bsshslm_2020`` + 50
``eprop_iaf_adapt_bsshslm_2020``, 2 ``eprop_readout_bsshslm_2020`` with a
cross-entropy loss, Adam (eta 5e-3, eps 1e-8), ``average_gradient=True``,
sequence 2250 ms, learning window 150 ms, the example's recorders.

Run with the NEST venv (``benchmarks/nest/setup_nest_venv.sh``):

    .venv-nest/bin/python benchmarks/nest/bench_nest_evidence.py --check-reference
    .venv-nest/bin/python benchmarks/nest/bench_nest_evidence.py --iterations 5 --threads 1 2 --repeats 3
    .venv-nest/bin/python benchmarks/nest/bench_nest_evidence.py --full-schedule   # 50 train + 5 val + 4 test

Timing: one NEST ``Run`` per iteration (batch_size sequences) between
``nest.Prepare()`` and ``nest.Cleanup()``; network construction (Create,
Connect, SetStatus of the generators) is timed separately.  The simulation is
split into per-iteration ``Run`` calls; ``--check-reference`` shows that the
split does not change the losses (batch 1, 5 iterations, against the NEST test's
reference values, rtol 1e-6 and 1e-8).
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

import nest
import numpy as np

ROOT = Path(__file__).resolve().parents[2]

REFERENCE_BATCH1 = [0.741152550006, 0.740388187700, 0.665785233177, 0.663644193322, 0.729428962844]
REFERENCE_BATCH2 = [0.702163370672, 0.735555303152, 0.740354864111, 0.683882815282, 0.707841122268]
REFERENCE_TF_BATCH1 = [0.741152524948, 0.740388214588, 0.665785133838, 0.663644134998, 0.729429066181]


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "nest": nest.GetKernelStatus("build_info")["version"],
        "nest_threads_model": nest.GetKernelStatus("build_info")["threads_model"],
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_once(batch_size: int, n_train: int, threads: int = 1, seed: int = 1,
             phases: list[str] | None = None, verbose: bool = True) -> dict:
    """Build the network and simulate ``len(phases)`` iterations.

    ``phases`` lists "train", "validate" or "test" per iteration (default: all
    "train"); validation and test iterations run with eta = 0 (no learning),
    which is how the example evaluates the network between training blocks.
    """
    if phases is None:
        phases = ["train"] * n_train
    n_iter = len(phases)
    t_build0 = time.perf_counter()

    np.random.seed(seed)

    inp = {"n_symbols": 4, "n_cues": 7, "prob_group": 0.3, "spike_prob": 0.04}
    steps = {"cue": 100, "spacing": 50, "bg_noise": 1050, "recall": 150}
    steps["cues"] = inp["n_cues"] * (steps["cue"] + steps["spacing"])
    steps["sequence"] = steps["cues"] + steps["bg_noise"] + steps["recall"]
    steps["learning_window"] = steps["recall"]
    steps["task"] = n_iter * batch_size * steps["sequence"]
    steps.update({"offset_gen": 1, "delay_in_rec": 1, "delay_rec_out": 1, "delay_out_norm": 1, "extension_sim": 1})
    steps["delays"] = steps["delay_in_rec"] + steps["delay_rec_out"] + steps["delay_out_norm"]
    steps["total_offset"] = steps["offset_gen"] + steps["delays"]
    steps["sim"] = steps["task"] + steps["total_offset"] + steps["extension_sim"]
    duration = {"step": 1.0}
    duration.update({k: v * duration["step"] for k, v in steps.items()})

    nest.ResetKernel()
    nest.set(
        eprop_learning_window=duration["learning_window"],
        eprop_reset_neurons_on_update=True,
        eprop_update_interval=duration["sequence"],
        print_time=False,
        resolution=duration["step"],
        total_num_virtual_procs=threads,
    )

    n_in, n_ad, n_reg, n_out = 40, 50, 50, 2
    n_rec = n_ad + n_reg

    params_nrn_out = {"C_m": 1.0, "E_L": 0.0, "I_e": 0.0, "loss": "cross_entropy",
                      "regular_spike_arrival": False, "tau_m": 20.0, "V_m": 0.0}
    params_nrn_reg = {"C_m": 1.0, "c_reg": 300.0, "E_L": 0.0, "f_target": 10.0,
                      "flush_event_send_interval": duration["sequence"], "I_e": 0.0,
                      "regular_spike_arrival": True, "surrogate_gradient_function": "piecewise_linear",
                      "surrogate_gradient_height": 0.3, "surrogate_gradient_width": 1.0,
                      "t_ref": 5.0, "tau_m": 20.0, "V_m": 0.0, "V_th": 0.6}
    params_nrn_reg["surrogate_gradient_height"] /= params_nrn_reg["V_th"]
    params_nrn_reg["surrogate_gradient_width"] *= np.abs(params_nrn_reg["V_th"])
    params_nrn_ad = dict(params_nrn_reg, adapt_tau=2000.0, adaptation=0.0)
    params_nrn_ad["adapt_beta"] = 1.7 * ((1.0 - np.exp(-duration["step"] / params_nrn_ad["adapt_tau"]))
                                         / (1.0 - np.exp(-duration["step"] / params_nrn_ad["tau_m"])))

    gen_spk_in = nest.Create("spike_generator", n_in)
    nrns_in = nest.Create("parrot_neuron", n_in)
    nrns_reg = nest.Create("eprop_iaf_bsshslm_2020", n_reg, params_nrn_reg)
    nrns_ad = nest.Create("eprop_iaf_adapt_bsshslm_2020", n_ad, params_nrn_ad)
    nrns_out = nest.Create("eprop_readout_bsshslm_2020", n_out, params_nrn_out)
    gen_rate_target = nest.Create("step_rate_generator", n_out)
    nrns_rec = nrns_reg + nrns_ad

    # recorders as in the example (n_record = 1, n_record_w = 5)
    n_record, n_record_w = 1, 5
    rec_start, rec_stop = duration["offset_gen"] + duration["delay_in_rec"], duration["offset_gen"] + duration["delay_in_rec"] + duration["task"]
    mm_reg = nest.Create("multimeter", params={"interval": duration["step"], "start": rec_start, "stop": rec_stop,
                                               "record_from": ["V_m", "surrogate_gradient", "learning_signal"]})
    mm_ad = nest.Create("multimeter", params={"interval": duration["step"], "start": rec_start, "stop": rec_stop,
                                              "record_from": ["V_m", "surrogate_gradient", "learning_signal",
                                                              "V_th_adapt", "adaptation"]})
    mm_out = nest.Create("multimeter", params={
        "interval": duration["step"], "start": duration["total_offset"],
        "stop": duration["total_offset"] + duration["task"],
        "record_from": ["V_m", "readout_signal", "readout_signal_unnorm", "target_signal", "error_signal"]})
    sr_params = {"start": duration["offset_gen"], "stop": duration["total_offset"] + duration["task"]}
    sr_in = nest.Create("spike_recorder", params=sr_params)
    sr_reg = nest.Create("spike_recorder", params=sr_params)
    sr_ad = nest.Create("spike_recorder", params=sr_params)
    wr = nest.Create("weight_recorder", params={
        "senders": nrns_in[:n_record_w] + nrns_rec[:n_record_w], "targets": nrns_rec[:n_record_w] + nrns_out,
        "start": duration["total_offset"], "stop": duration["total_offset"] + duration["task"]})

    all_to_all = {"rule": "all_to_all", "allow_autapses": False}
    one_to_one = {"rule": "one_to_one"}

    def glorot(fan_in, fan_out):
        limit = np.sqrt(3.0 * (1.0 / max(1.0, (fan_in + fan_out) / 2.0)))
        return np.random.uniform(low=-limit, high=limit, size=(fan_in, fan_out))

    f32 = np.float32
    w_in_rec = np.array(np.random.randn(n_in, n_rec).T / np.sqrt(n_in), dtype=f32)
    w_rec_rec = np.array(np.random.randn(n_rec, n_rec).T / np.sqrt(n_rec), dtype=f32)
    np.fill_diagonal(w_rec_rec, 0.0)
    w_rec_out = np.array(glorot(n_rec, n_out).T, dtype=f32)
    w_out_rec = np.array(np.random.randn(n_rec, n_out), dtype=f32)

    eta = 5e-3
    optimizer = {"type": "adam", "batch_size": batch_size, "beta_1": 0.9, "beta_2": 0.999,
                 "epsilon": 1e-8, "eta": eta, "Wmin": -100.0, "Wmax": 100.0}
    nest.SetDefaults("eprop_synapse_bsshslm_2020",
                     {"optimizer": optimizer, "average_gradient": True, "weight_recorder": wr})
    syn_base = {"synapse_model": "eprop_synapse_bsshslm_2020", "delay": duration["step"],
                "tau_m_readout": params_nrn_out["tau_m"]}
    static = {"synapse_model": "static_synapse", "delay": duration["step"]}

    nest.Connect(gen_spk_in, nrns_in, one_to_one, static)
    nest.Connect(nrns_in, nrns_rec, all_to_all, dict(syn_base, weight=w_in_rec))
    nest.Connect(nrns_rec, nrns_rec, all_to_all, dict(syn_base, weight=w_rec_rec))
    nest.Connect(nrns_rec, nrns_out, all_to_all, dict(syn_base, weight=w_rec_out))
    nest.Connect(nrns_out, nrns_rec, all_to_all, {"synapse_model": "eprop_learning_signal_connection_bsshslm_2020",
                                                  "delay": duration["step"], "weight": w_out_rec})
    nest.Connect(gen_rate_target, nrns_out, one_to_one,
                 {"synapse_model": "rate_connection_delayed", "delay": duration["step"], "receptor_type": 2})
    nest.Connect(nrns_out, nrns_out, all_to_all,
                 {"synapse_model": "rate_connection_delayed", "delay": duration["step"], "receptor_type": 1,
                  "weight": 1.0})
    nest.Connect(nrns_in, sr_in, all_to_all, static)
    nest.Connect(nrns_reg, sr_reg, all_to_all, static)
    nest.Connect(nrns_ad, sr_ad, all_to_all, static)
    nest.Connect(mm_reg, nrns_reg[:n_record], all_to_all, static)
    nest.Connect(mm_ad, nrns_ad[:n_record], all_to_all, static)
    nest.Connect(mm_out, nrns_out, all_to_all, static)
    nest.GetConnections(nrns_rec[0], nrns_rec[1:3]).set([{"optimizer": {"m": 0.0, "v": 0.0}}] * 2)

    def generate(bs):
        n_pop = n_in // inp["n_symbols"]
        prob_choices = np.array([inp["prob_group"], 1 - inp["prob_group"]], dtype=np.float32)
        idx = np.random.choice([0, 1], bs)
        probs = np.zeros((bs, 2), dtype=np.float32)
        probs[:, 0] = prob_choices[idx]
        probs[:, 1] = prob_choices[1 - idx]
        cues = np.zeros((bs, inp["n_cues"]), dtype=int)
        for b in range(bs):
            cues[b, :] = np.random.choice([0, 1], inp["n_cues"], p=probs[b])
        p = np.zeros((bs, steps["sequence"], n_in))
        for b in range(bs):
            for c in range(inp["n_cues"]):
                s0 = c * (steps["cue"] + steps["spacing"]) + steps["spacing"]
                p[b, s0:s0 + steps["cue"], cues[b, c] * n_pop:(cues[b, c] + 1) * n_pop] = inp["spike_prob"]
        p[:, -steps["recall"]:, 2 * n_pop:3 * n_pop] = inp["spike_prob"]
        p[:, :, 3 * n_pop:] = inp["spike_prob"] / 4.0
        bools = p > np.random.rand(p.size).reshape(p.shape)
        bools[:, 0, :] = 0
        target = (np.sum(cues, axis=1) > int(inp["n_cues"] / 2)).astype(int)
        return bools, target

    bools_list, targets = [], []
    for _ in range(n_iter):
        b, t = generate(batch_size)
        bools_list.append(b)
        targets.extend(t)
    bools_arr = np.array(bools_list).reshape(steps["task"], n_in)
    timeline = np.arange(0.0, duration["task"], duration["step"]) + duration["offset_gen"]
    gen_spk_in.set([{"spike_times": timeline[bools_arr[:, i]].astype(f32)} for i in range(n_in)])
    rate_changes = np.zeros((n_out, batch_size * n_iter))
    rate_changes[np.array(targets), np.arange(batch_size * n_iter)] = 1
    gen_rate_target.set([{"amplitude_times": np.arange(0.0, duration["task"], duration["sequence"]) + duration["total_offset"],
                          "amplitude_values": rate_changes[k]} for k in range(n_out)])
    build_s = time.perf_counter() - t_build0

    # Simulate: one Run per iteration; learning off (eta 0) in validation/test iterations.
    iter_ms = batch_size * duration["sequence"]
    seconds, cpu_seconds = [], []
    load_before = loadavg()
    nest.Prepare()
    current_eta = eta
    for k, phase in enumerate(phases):
        want = eta if phase == "train" else 0.0
        if want != current_eta:
            nest.Cleanup()
            nest.SetDefaults("eprop_synapse_bsshslm_2020", {"optimizer": {"eta": want}})
            nest.Prepare()
            current_eta = want
        t0, c0 = time.perf_counter(), time.process_time()
        nest.Run(iter_ms)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        if verbose:
            print(f"  iteration {k + 1}/{n_iter} ({phase}): {seconds[-1]:.3f} s wall, {cpu_seconds[-1]:.3f} s CPU",
                  flush=True)
    t0 = time.perf_counter()
    nest.Run(duration["sim"] - n_iter * iter_ms)  # offsets + extension step
    tail_s = time.perf_counter() - t0
    nest.Cleanup()

    ev = mm_out.get("events")
    senders = ev["senders"]
    readout = np.array([ev["readout_signal"][senders == i] for i in np.unique(senders)])
    target = np.array([ev["target_signal"][senders == i] for i in np.unique(senders)])
    readout = readout.reshape((n_out, n_iter, batch_size, steps["sequence"]))[..., -steps["learning_window"]:]
    target = target.reshape((n_out, n_iter, batch_size, steps["sequence"]))[..., -steps["learning_window"]:]
    loss = -np.mean(np.sum(target * np.log(readout), axis=0), axis=(1, 2))
    y_pred = np.argmax(np.mean(readout, axis=3), axis=0)
    y_tgt = np.argmax(np.mean(target, axis=3), axis=0)
    error = 1.0 - np.mean(y_pred == y_tgt, axis=1)
    n_spikes = int(sr_reg.get("n_events") + sr_ad.get("n_events"))
    return {
        "batch_size": batch_size, "threads": threads, "seed": seed, "phases": phases,
        "build_seconds": build_s, "seconds_per_iteration": seconds, "tail_seconds": tail_s,
        "median_seconds_per_iteration": statistics.median(seconds),
        "cpu_seconds_per_iteration": cpu_seconds,
        "median_cpu_seconds_per_train_iteration": statistics.median(
            [s for s, p in zip(cpu_seconds, phases) if p == "train"] or [float("nan")]),
        "median_seconds_per_train_iteration": statistics.median(
            [s for s, p in zip(seconds, phases) if p == "train"] or [float("nan")]),
        "simulated_ms_per_iteration": iter_ms,
        "loss": [float(x) for x in loss], "recall_error": [float(x) for x in error],
        "recurrent_spikes_total": n_spikes, "loadavg_before": load_before, "loadavg_after": loadavg(),
    }


def check_reference() -> dict:
    out = {}
    for bs, ref in ((1, REFERENCE_BATCH1), (2, REFERENCE_BATCH2)):
        r = run_once(bs, 5, threads=1, verbose=False)
        loss = np.array(r["loss"])
        out[f"batch{bs}"] = {
            "loss": r["loss"], "reference": ref,
            "max_rel_diff": float(np.max(np.abs(loss - ref) / np.abs(ref))),
            "ok_rtol_1e-6": bool(np.allclose(loss, ref, rtol=1e-6, atol=0)),
            "ok_rtol_1e-8": bool(np.allclose(loss, ref, rtol=1e-8, atol=0)),
        }
        if bs == 1:
            out["batch1"]["tf_reference"] = REFERENCE_TF_BATCH1
            out["batch1"]["ok_tf_rtol_1e-6"] = bool(np.allclose(loss, REFERENCE_TF_BATCH1, rtol=1e-6, atol=0))
        print(f"reference batch {bs}: {out[f'batch{bs}']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=5, help="training iterations per timing run (default 5)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to time, e.g. 1 2")
    ap.add_argument("--repeats", type=int, default=1, help="timing runs per thread count (median reported)")
    ap.add_argument("--full-schedule", action="store_true",
                    help="the example's schedule: 50 training iterations, a validation iteration after every "
                         "10, then 4 test iterations (59 in all)")
    ap.add_argument("--check-reference", action="store_true",
                    help="first reproduce the NEST test's batch-1 and batch-2 reference losses")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nest_evidence.json"))
    args = ap.parse_args()

    nest.verbosity = nest.VerbosityLevel.ERROR
    result = {"benchmark": "NEST e-prop bsshslm_2020 evidence accumulation", "machine": machine_info(),
              "source": "nest/nest-simulator v3.10: pynest/examples/eprop_plasticity/"
                        "eprop_supervised_classification_evidence-accumulation_bsshslm_2020.py, "
                        "testsuite/pytests/synapses/test_eprop_bsshslm_2020_plasticity.py",
              "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.check_reference:
        result["reference_check"] = check_reference()

    if args.full_schedule:
        phases = []
        for k in range(1, 51):
            phases.append("train")
            if k % 10 == 0:
                phases.append("validate")
        phases += ["test"] * 4
    else:
        phases = ["train"] * args.iterations

    runs = []
    summary = {}
    for th in args.threads:
        meds = []
        for rep in range(args.repeats):
            print(f"threads={th} repeat {rep + 1}/{args.repeats}: load {loadavg()}", flush=True)
            r = run_once(args.batch, len(phases), threads=th, phases=phases)
            print(f"  build {r['build_seconds']:.2f} s, median {r['median_seconds_per_train_iteration']:.3f} s/iteration"
                  f" ({r['median_cpu_seconds_per_train_iteration']:.3f} s CPU),"
                  f" loss {np.round(r['loss'], 4).tolist()}", flush=True)
            runs.append(r)
            meds.append(r["median_seconds_per_train_iteration"])
        summary[str(th)] = {"median_of_run_medians_s_per_iteration": statistics.median(meds),
                            "run_medians": meds}
    result.update({"batch_size": args.batch, "phases": phases, "runs": runs, "summary_by_threads": summary,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(json.dumps(summary, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
