"""Losses of NEST 3.10's event-based e-prop models (``eprop_iaf``,
``eprop_iaf_adapt``, ``eprop_readout``, ``eprop_synapse``) on the regression
network of NEST's own test, with and without learning.

The network is that of ``test_eprop_regression`` in
``testsuite/pytests/synapses/test_eprop_plasticity.py`` (nest/nest-simulator,
tag v3.10, commit acca9704da248750219a027db99fec6cd1f9052a): 100 parrot
inputs (Bernoulli 0.05, one 100-step pattern repeated), 100 recurrent
neurons, one readout, 5 iterations of 100 steps, the same seeded draws of
NumPy's legacy global RandomState(1) in the same order, all delays 1 step.
``eprop_iaf`` trains with Adam, ``eprop_iaf_adapt`` with gradient descent,
both with eta = 1e-4 (1 - kappa)^2 and ``optimize_each_step = True``.

Each model runs twice: as published (the check against the test's
``loss_nest_reference``) and with eta = 0, which isolates how much of the
loss change between iterations comes from learning and how much from the
state the event-based models carry from one sequence into the next (they
have no update interval and no reset). The readout trace of the first
iteration and the weights/inputs/target are written to an .npz for
``compare_nest_eventbased.py``.

    .venv-nest/bin/python benchmarks/nest/nest_eventbased_losses.py --out runs/nest_eventbased.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nest
import numpy as np

PUBLISHED = {
    "eprop_iaf": [0.14000491891386, 0.28735818029752, 0.22263713699860, 0.23015072431384, 0.17565248170694],
    "eprop_iaf_adapt": [0.02242584487453, 0.01916753791522, 0.00571493935652, 0.00037875376195,
                        0.00037823157578],
}
OPTIMIZER = {"eprop_iaf": "adam", "eprop_iaf_adapt": "gradient_descent"}
N_IN, N_REC, N_OUT, T, N_ITER = 100, 100, 1, 100, 5
KAPPA = 0.97


def draws():
    """The test's draws, in its order, from np.random.seed(1)."""
    np.random.seed(1)
    f32 = np.float32
    w_in = np.array(np.random.randn(N_IN, N_REC).T / np.sqrt(N_IN), dtype=f32)
    w_rec = np.array(np.random.randn(N_REC, N_REC).T / np.sqrt(N_REC), dtype=f32)
    np.fill_diagonal(w_rec, 0.0)
    w_out = np.array(np.random.randn(N_REC, N_OUT).T / np.sqrt(N_REC), dtype=f32) * (1.0 - KAPPA)
    feedback = np.array(np.random.randn(N_REC, N_OUT) / np.sqrt(N_REC), dtype=f32)
    # eprop_iaf / eprop_iaf_adapt: the input, recurrent and feedback weights carry 1 - kappa too
    w_in, w_rec, feedback = w_in * (1.0 - KAPPA), w_rec * (1.0 - KAPPA), feedback * (1.0 - KAPPA)
    spikes = (np.random.rand(T, N_IN) < 0.05)
    periods = [1000, 500, 333, 200]
    amplitudes = np.random.uniform(low=0.5, high=2.0, size=len(periods))
    phases = np.random.uniform(low=0.0, high=2.0 * np.pi, size=len(periods))
    target = sum(a * np.sin(np.linspace(p, p + 2.0 * np.pi * (T // P), T))
                 for a, p, P in zip(amplitudes, phases, periods))
    target = target - target[0]
    target = target / max(np.abs(target).max(), 1e-6)
    return w_in, w_rec, w_out, feedback, spikes, target


def run(model: str, eta_scale: float) -> dict:
    w_in, w_rec, w_out, feedback, spikes, target = draws()
    offset_gen, delay = 1.0, 1.0
    total_offset = offset_gen + delay
    task = float(N_ITER * T)
    nest.ResetKernel()
    nest.set(print_time=False, resolution=1.0, total_num_virtual_procs=1)
    nest.verbosity = nest.VerbosityLevel.WARNING
    rec = {"C_m": 1.0, "c_reg": 300.0 / T, "E_L": 0.0, "eprop_isi_trace_cutoff": 100, "f_target": 10.0,
           "flush_event_send_interval": float(T), "I_e": 0.0, "kappa": KAPPA, "kappa_reg": KAPPA,
           "surrogate_gradient_function": "piecewise_linear", "surrogate_gradient_height": 10.0,
           "surrogate_gradient_width": 0.03, "t_ref": 0.0, "tau_m": 30.0, "V_m": 0.0, "V_th": 0.03}
    if model == "eprop_iaf_adapt":
        rec.update(adapt_beta=0.0174, adapt_tau=2000.0, adaptation=0.0)
    out = {"C_m": 1.0, "E_L": 0.0, "eprop_isi_trace_cutoff": 100, "I_e": 0.0, "tau_m": 30.0, "V_m": 0.0}
    gen_in = nest.Create("spike_generator", N_IN)
    parrots = nest.Create("parrot_neuron", N_IN)
    nrns = nest.Create(model, N_REC, rec)
    readout = nest.Create("eprop_readout", N_OUT, out)
    gen_target = nest.Create("step_rate_generator", N_OUT)
    gen_window = nest.Create("step_rate_generator")
    mm = nest.Create("multimeter", {"interval": 1.0, "record_from": ["readout_signal", "target_signal"],
                                    "start": total_offset, "stop": total_offset + task})
    opt = {"type": OPTIMIZER[model], "batch_size": 1, "eta": 1e-4 * (1.0 - KAPPA) ** 2 * eta_scale,
           "optimize_each_step": True, "Wmin": -100.0, "Wmax": 100.0}
    if OPTIMIZER[model] == "adam":
        opt.update(beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    nest.SetDefaults("eprop_synapse", {"optimizer": opt})
    syn = {"synapse_model": "eprop_synapse", "delay": 1.0}
    a2a = {"rule": "all_to_all", "allow_autapses": False}
    one = {"rule": "one_to_one"}
    static = {"synapse_model": "static_synapse", "delay": 1.0}
    nest.Connect(gen_in, parrots, one, static)
    nest.Connect(parrots, nrns, a2a, dict(syn, weight=w_in))
    nest.Connect(nrns, nrns, a2a, dict(syn, weight=w_rec))
    nest.Connect(nrns, readout, a2a, dict(syn, weight=w_out))
    nest.Connect(readout, nrns, a2a, {"synapse_model": "eprop_learning_signal_connection", "delay": 1.0,
                                      "weight": feedback})
    nest.Connect(gen_target, readout, one, {"synapse_model": "rate_connection_delayed", "delay": 1.0,
                                            "receptor_type": 2})
    nest.Connect(gen_window, readout, a2a, {"synapse_model": "rate_connection_delayed", "delay": 1.0,
                                            "receptor_type": 1})
    nest.Connect(mm, readout, a2a, static)
    sr = nest.Create("spike_recorder")
    nest.Connect(nrns, sr)
    starts = np.arange(0.0, task, T) + offset_gen
    times = np.arange(0.0, T, 1.0)
    gen_in.set([{"spike_times": np.hstack([times[s] + st for st in starts]).astype(np.float32)}
                for s in spikes.T])
    gen_target.set({"amplitude_times": np.arange(0.0, task, 1.0) + total_offset,
                    "amplitude_values": np.tile(target, N_ITER)})
    gen_window.set({"amplitude_times": [total_offset], "amplitude_values": [1.0]})
    nest.Simulate(task + total_offset + 3.0)
    ev = mm.get("events")
    y = np.asarray(ev["readout_signal"]).reshape(N_ITER, T)
    y_target = np.asarray(ev["target_signal"]).reshape(N_ITER, T)
    losses = 0.5 * np.sum((y - y_target) ** 2, axis=1)
    spk = sr.get("events")
    z = np.zeros((int(task + total_offset + 3.0), N_REC), dtype=np.int8)
    z[np.asarray(spk["times"]).astype(int), np.asarray(spk["senders"]) - nrns[0].global_id] = 1
    return {"losses": losses.tolist(), "readout": y, "z": z, "target": y_target,
            "weights": (w_in, w_rec, w_out, feedback), "spikes": spikes, "sine": target}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/nest_eventbased.npz"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/nest_eventbased.json"))
    args = ap.parse_args(argv)
    arrays, summary = {}, {"nest_version": nest.__version__, "models": {}}
    for model in PUBLISHED:
        learned, frozen = run(model, 1.0), run(model, 0.0)
        rel = np.max(np.abs(np.array(learned["losses"]) - PUBLISHED[model]) / np.array(PUBLISHED[model]))
        summary["models"][model] = {"published": PUBLISHED[model], "nest": learned["losses"],
                                    "nest_max_rel_vs_published": float(rel), "nest_eta0": frozen["losses"]}
        print(f"{model}: NEST {np.round(learned['losses'], 6)} (max rel. vs published {rel:.1e}); "
              f"eta = 0: {np.round(frozen['losses'], 6)}")
        arrays[f"{model}.readout"] = learned["readout"]
        arrays[f"{model}.readout_eta0"] = frozen["readout"]
        arrays[f"{model}.z_eta0"] = frozen["z"]
        arrays[f"{model}.target"] = learned["target"]
    w_in, w_rec, w_out, feedback = learned["weights"]
    arrays.update(w_in=w_in, w_rec=w_rec, w_out=w_out, feedback=feedback, spikes=learned["spikes"],
                  sine=learned["sine"], summary=json.dumps(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(args.out)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
