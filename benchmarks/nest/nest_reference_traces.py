"""Per-step traces of NEST 3.10's original-paper e-prop models for the two
networks of NEST's own reference test.

The networks are those of ``test_eprop_regression`` and
``test_eprop_classification`` in
``testsuite/pytests/synapses/test_eprop_bsshslm_2020_plasticity.py``
(nest/nest-simulator, tag v3.10, commit acca9704da248750219a027db99fec6cd1f9052a):
the same parameters, the same seeded draws from NumPy's legacy global
``RandomState`` (``np.random.seed(1)``) in the same order, the same 1-step
offsets (generator, input -> recurrent, recurrent -> readout, readout ->
readout normalization). On top of the test's recorders this script records
every step of every neuron:

* recurrent neurons: ``V_m``, ``surrogate_gradient`` (psi), ``learning_signal``
  (and ``V_th_adapt``, ``adaptation`` for the adaptive ones), spikes;
* readouts: ``V_m``, ``readout_signal``, ``target_signal``, ``error_signal``;
* every e-prop synapse's weight each time a spike passes it (NEST applies the
  update of iteration k when the first spike of iteration k + 1 passes).

It writes one ``.npz`` with the traces cut into (iteration, step) frames of
the recurrent neurons' own time (see ``frame_offsets`` in the file), the
initial weights, the input spikes and targets, and the per-iteration losses
computed as NEST's test computes them. ``compare_nest_traces.py`` compares the
file with eprop_lava under ``conventions = "tf"``.

Run with the NEST venv (``benchmarks/nest/setup_nest_venv.sh``):

    .venv-nest/bin/python benchmarks/nest/nest_reference_traces.py --task regression --out runs/nest_regression.npz
    .venv-nest/bin/python benchmarks/nest/nest_reference_traces.py --task classification --batch-size 1 \\
        --out runs/nest_classification.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nest
import numpy as np

# The published losses of the test (NEST@3304c6b5c per its docstring), for the check printed at the end.
PUBLISHED = {
    ("regression", 1): [101.964356999041, 103.466731126205, 103.340607074771, 103.680244037686,
                        104.412775748752],
    ("classification", 1): [0.741152550006, 0.740388187700, 0.665785233177, 0.663644193322, 0.729428962844],
    ("classification", 2): [0.702163370672, 0.735555303152, 0.740354864111, 0.683882815282, 0.707841122268],
}

OFFSET_GEN, DELAY_IN_REC, DELAY_REC_OUT, DELAY_OUT_NORM, EXTENSION = 1, 1, 1, 1, 1


def sines(steps: int, periods: list[int]) -> np.ndarray:
    """The test's target: four sines with U(0.5, 2) amplitudes and U(0, 2 pi)
    phases (drawn in this order), starting at 0, scaled to max |.| = 1."""
    amplitudes = np.random.uniform(low=0.5, high=2.0, size=len(periods))
    phases = np.random.uniform(low=0.0, high=2.0 * np.pi, size=len(periods))
    total = sum(a * np.sin(np.linspace(p, p + 2.0 * np.pi * (steps // T), steps))
                for a, p, T in zip(amplitudes, phases, periods))
    total = total - total[0]
    return total / max(np.abs(total).max(), 1e-6)


def evidence_batch(batch: int, n_in: int, seq: dict, task: dict) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the test's evidence-accumulation input (draw order kept)."""
    n_pop = n_in // task["n_symbols"]
    choices = np.array([task["prob_group"], 1 - task["prob_group"]], dtype=np.float32)
    idx = np.random.choice([0, 1], batch)
    probs = np.zeros((batch, 2), dtype=np.float32)
    probs[:, 0] = choices[idx]
    probs[:, 1] = choices[1 - idx]
    cues = np.zeros((batch, task["n_cues"]), dtype=int)
    for b in range(batch):
        cues[b, :] = np.random.choice([0, 1], task["n_cues"], p=probs[b])
    p_in = np.zeros((batch, seq["sequence"], n_in))
    for b in range(batch):
        for c in range(task["n_cues"]):
            start = c * (seq["cue"] + seq["spacing"]) + seq["spacing"]
            p_in[b, start:start + seq["cue"], cues[b, c] * n_pop:(cues[b, c] + 1) * n_pop] = task["spike_prob"]
    p_in[:, -seq["recall"]:, 2 * n_pop:3 * n_pop] = task["spike_prob"]
    p_in[:, :, 3 * n_pop:] = task["spike_prob"] / 4.0
    spikes = p_in > np.random.rand(p_in.size).reshape(p_in.shape)
    spikes[:, 0, :] = 0
    return spikes, (np.sum(cues, axis=1) > int(task["n_cues"] / 2)).astype(int)


def build_and_run(task: str, batch: int, n_iter: int) -> dict:
    np.random.seed(1)
    f32 = np.float32
    if task == "regression":
        n_in, n_reg, n_ad, n_out, T = 100, 100, 0, 1, 1000
        window = T
        tau_rec, tau_out, v_th, t_ref, regular = 30.0, 30.0, 0.03, 0.0, False
        loss_kind = "mean_squared_error"
    else:
        n_in, n_reg, n_ad, n_out = 40, 50, 50, 2
        seq = {"cue": 100, "spacing": 50, "bg_noise": 1050, "recall": 150}
        ev = {"n_symbols": 4, "n_cues": 7, "prob_group": 0.3, "spike_prob": 0.04}
        T = ev["n_cues"] * (seq["cue"] + seq["spacing"]) + seq["bg_noise"] + seq["recall"]
        seq["sequence"] = T
        window = seq["recall"]
        tau_rec, tau_out, v_th, t_ref, regular = 20.0, 20.0, 0.6, 5.0, True
        loss_kind = "cross_entropy"
    n_rec = n_reg + n_ad
    task_steps = n_iter * batch * T
    total_offset = OFFSET_GEN + DELAY_IN_REC + DELAY_REC_OUT + DELAY_OUT_NORM

    nest.ResetKernel()
    nest.set(eprop_learning_window=float(window), eprop_reset_neurons_on_update=True,
             eprop_update_interval=float(T), print_time=False, resolution=1.0, total_num_virtual_procs=1)

    rec_params = {"C_m": 1.0, "c_reg": 300.0, "E_L": 0.0, "f_target": 10.0, "flush_event_send_interval": float(T),
                  "I_e": 0.0, "regular_spike_arrival": regular, "surrogate_gradient_function": "piecewise_linear",
                  "surrogate_gradient_height": 0.3 / v_th, "surrogate_gradient_width": abs(v_th),
                  "t_ref": t_ref, "tau_m": tau_rec, "V_m": 0.0, "V_th": v_th}
    out_params = {"C_m": 1.0, "E_L": 0.0, "I_e": 0.0, "loss": loss_kind, "regular_spike_arrival": False,
                  "tau_m": tau_out, "V_m": 0.0}
    gen_in = nest.Create("spike_generator", n_in)
    parrots = nest.Create("parrot_neuron", n_in)
    reg = nest.Create("eprop_iaf_bsshslm_2020", n_reg, rec_params)
    rec = reg
    if n_ad:
        ad_params = dict(rec_params, adapt_tau=2000.0, adaptation=0.0)
        ad_params["adapt_beta"] = 1.7 * ((1.0 - np.exp(-1.0 / 2000.0)) / (1.0 - np.exp(-1.0 / tau_rec)))
        ad = nest.Create("eprop_iaf_adapt_bsshslm_2020", n_ad, ad_params)
        rec = reg + ad
    out = nest.Create("eprop_readout_bsshslm_2020", n_out, out_params)
    gen_target = nest.Create("step_rate_generator", n_out)

    rec_window = {"start": float(OFFSET_GEN + DELAY_IN_REC), "stop": float(OFFSET_GEN + DELAY_IN_REC + task_steps)}
    mm_reg = nest.Create("multimeter", params=dict(rec_window, interval=1.0,
                                                   record_from=["V_m", "surrogate_gradient", "learning_signal"]))
    mm_ad = None
    if n_ad:
        mm_ad = nest.Create("multimeter", params=dict(rec_window, interval=1.0, record_from=[
            "V_m", "surrogate_gradient", "learning_signal", "V_th_adapt", "adaptation"]))
    mm_out = nest.Create("multimeter", params={
        "interval": 1.0, "start": float(total_offset), "stop": float(total_offset + task_steps),
        "record_from": ["V_m", "readout_signal", "target_signal", "error_signal"]})
    sr = nest.Create("spike_recorder", params={"start": float(OFFSET_GEN), "stop": float(total_offset + task_steps)})
    wr = nest.Create("weight_recorder")

    w_in = np.array(np.random.randn(n_in, n_rec).T / np.sqrt(n_in), dtype=f32)
    w_rec = np.array(np.random.randn(n_rec, n_rec).T / np.sqrt(n_rec), dtype=f32)
    np.fill_diagonal(w_rec, 0.0)
    if task == "regression":
        w_out = np.array(np.random.randn(n_rec, n_out).T / np.sqrt(n_rec), dtype=f32)
        feedback = np.array(np.random.randn(n_rec, n_out) / np.sqrt(n_rec), dtype=f32)
        optimizer = {"type": "gradient_descent", "batch_size": batch, "eta": 1e-4, "Wmin": -100.0, "Wmax": 100.0}
        average = False
    else:
        limit = np.sqrt(3.0 * (1.0 / max(1.0, (n_rec + n_out) / 2.0)))
        w_out = np.array(np.random.uniform(low=-limit, high=limit, size=(n_rec, n_out)).T, dtype=f32)
        feedback = np.array(np.random.randn(n_rec, n_out), dtype=f32)
        optimizer = {"type": "adam", "batch_size": batch, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8,
                     "eta": 5e-3, "Wmin": -100.0, "Wmax": 100.0}
        average = True
    nest.SetDefaults("eprop_synapse_bsshslm_2020",
                     {"optimizer": optimizer, "average_gradient": average, "weight_recorder": wr})
    syn = {"synapse_model": "eprop_synapse_bsshslm_2020", "delay": 1.0, "tau_m_readout": tau_out}
    static = {"synapse_model": "static_synapse", "delay": 1.0}
    all_to_all = {"rule": "all_to_all", "allow_autapses": False}
    one_to_one = {"rule": "one_to_one"}
    nest.Connect(gen_in, parrots, one_to_one, static)
    nest.Connect(parrots, rec, all_to_all, dict(syn, weight=w_in))
    nest.Connect(rec, rec, all_to_all, dict(syn, weight=w_rec))
    nest.Connect(rec, out, all_to_all, dict(syn, weight=w_out))
    nest.Connect(out, rec, all_to_all, {"synapse_model": "eprop_learning_signal_connection_bsshslm_2020",
                                        "delay": 1.0, "weight": feedback})
    nest.Connect(gen_target, out, one_to_one,
                 {"synapse_model": "rate_connection_delayed", "delay": 1.0, "receptor_type": 2})
    if task == "classification":
        nest.Connect(out, out, all_to_all, {"synapse_model": "rate_connection_delayed", "delay": 1.0,
                                            "receptor_type": 1, "weight": 1.0})
    nest.Connect(parrots + rec, sr, all_to_all, static)
    nest.Connect(mm_reg, reg, all_to_all, static)
    if mm_ad is not None:
        nest.Connect(mm_ad, ad, all_to_all, static)
    nest.Connect(mm_out, out, all_to_all, static)
    if task == "classification":
        # as the test: the optimizer state of two synapses is set (to its initial value)
        nest.GetConnections(rec[0], rec[1:3]).set([{"optimizer": {"m": 0.0, "v": 0.0}}] * 2)

    # inputs and targets, drawn after the weights as in the test
    if task == "regression":
        spikes = (np.random.rand(T, n_in) < 0.05).swapaxes(0, 1)
        spikes[:, 0] = 0
        x = np.tile(spikes.T[None, None], (n_iter, batch, 1, 1))        # (iter, batch, T, n_in)
        target_seq = sines(T, [1000, 500, 333, 200])
        target = np.tile(target_seq[None, None, :, None], (n_iter, batch, 1, 1))
        starts = np.arange(0.0, task_steps, T) + OFFSET_GEN
        gen_in.set([{"spike_times": np.hstack([np.arange(0.0, T, 1.0)[s] + st for st in starts]).astype(f32)}
                    for s in spikes])
        gen_target.set({"amplitude_times": np.arange(0.0, task_steps, 1.0) + total_offset,
                        "amplitude_values": np.tile(target_seq, n_iter * batch)})
    else:
        xs, labels = [], []
        for _ in range(n_iter):
            s, lab = evidence_batch(batch, n_in, seq, ev)
            xs.append(s)
            labels.extend(lab)
        x = np.array(xs)                                                  # (iter, batch, T, n_in)
        flat = x.reshape(task_steps, n_in)
        timeline = np.arange(0.0, task_steps, 1.0) + OFFSET_GEN
        gen_in.set([{"spike_times": timeline[flat[:, i]].astype(f32)} for i in range(n_in)])
        changes = np.zeros((n_out, batch * n_iter))
        changes[np.array(labels), np.arange(batch * n_iter)] = 1
        gen_target.set([{"amplitude_times": np.arange(0.0, task_steps, T) + total_offset,
                         "amplitude_values": changes[k]} for k in range(n_out)])
        target = np.zeros((n_iter, batch, T, n_out))
        target[..., np.arange(n_out)] = changes.T.reshape(n_iter, batch, 1, n_out)

    nest.Simulate(float(task_steps + total_offset + EXTENSION))

    def traces(mm, names, ids):
        ev_ = mm.get("events")
        senders, times = np.asarray(ev_["senders"]), np.asarray(ev_["times"])
        out_ = {}
        for name in names:
            values = np.asarray(ev_[name])
            arr = np.full((len(ids), task_steps), np.nan)
            for j, nid in enumerate(ids):
                sel = senders == nid
                arr[j, :sel.sum()] = values[sel][np.argsort(times[sel])]
            out_[name] = arr.T.reshape(n_iter, batch, T, len(ids))
        return out_

    result = {"x": x.astype(np.float32), "target": target, "w_in": w_in, "w_rec": w_rec, "w_out": w_out,
              "feedback": feedback, "sequence_steps": T, "learning_window": window}
    reg_ids = list(reg.tolist())
    for k, v in traces(mm_reg, ["V_m", "surrogate_gradient", "learning_signal"], reg_ids).items():
        result[f"rec_{k}"] = v
    if mm_ad is not None:
        ad_ids = list(ad.tolist())
        for k, v in traces(mm_ad, ["V_m", "surrogate_gradient", "learning_signal", "V_th_adapt", "adaptation"],
                           ad_ids).items():
            result[f"rec_{k}"] = np.concatenate([result[f"rec_{k}"], v], axis=-1) if f"rec_{k}" in result else v
    out_ids = list(out.tolist())
    for k, v in traces(mm_out, ["V_m", "readout_signal", "target_signal", "error_signal"], out_ids).items():
        result[f"out_{k}"] = v

    # recurrent spikes in the recurrent neurons' frame: emitted at stamp s + 1 by the update of step s
    ev_ = sr.get("events")
    rec_ids = np.array(rec.tolist())
    z = np.zeros((task_steps, n_rec))
    sel = np.isin(ev_["senders"], rec_ids)
    step = np.rint(np.asarray(ev_["times"])[sel]).astype(int) - 1 - (OFFSET_GEN + DELAY_IN_REC)
    col = np.searchsorted(rec_ids, np.asarray(ev_["senders"])[sel])
    ok = (step >= 0) & (step < task_steps)
    z[step[ok], col[ok]] = 1.0
    result["rec_z"] = z.reshape(n_iter, batch, T, n_rec)

    # weights: value carried by each synapse's first spike after the end of each iteration
    wev = wr.get("events")
    senders, targets = np.asarray(wev["senders"]), np.asarray(wev["targets"])
    wtimes, weights = np.asarray(wev["times"]), np.asarray(wev["weights"])
    in_ids, out_arr = np.array(parrots.tolist()), np.array(out_ids)
    # Keep the events of real spikes: a neuron silent for flush_event_send_interval sends a flush
    # event, which the weight recorder also logs (with the weight the pending update would give).
    # An input spike of step s is logged at s + 2, a recurrent spike of step s at s + 3.
    flat_x = x.reshape(task_steps, n_in)
    flat_z = z
    stamp = np.rint(wtimes).astype(int)
    real = np.zeros(len(senders), bool)
    is_in = np.isin(senders, in_ids)
    s_in = stamp[is_in] - (OFFSET_GEN + 1)
    ok = (s_in >= 0) & (s_in < task_steps)
    real_in = np.zeros(is_in.sum(), bool)
    real_in[ok] = flat_x[s_in[ok], np.searchsorted(in_ids, senders[is_in][ok])] > 0
    real[is_in] = real_in
    is_rec = np.isin(senders, rec_ids)
    s_rec = stamp[is_rec] - (OFFSET_GEN + DELAY_IN_REC + 1)
    ok = (s_rec >= 0) & (s_rec < task_steps)
    real_rec = np.zeros(is_rec.sum(), bool)
    real_rec[ok] = flat_z[s_rec[ok], np.searchsorted(rec_ids, senders[is_rec][ok])] > 0
    real[is_rec] = real_rec
    result["flush_events_dropped"] = int((~real).sum())
    senders, targets, wtimes, weights = senders[real], targets[real], wtimes[real], weights[real]
    w_after = {name: np.full((n_iter,) + w.shape, np.nan) for name, w in
               (("w_in", w_in), ("w_rec", w_rec), ("w_out", w_out))}
    for name, pre_ids, post_ids, shift in (("w_in", in_ids, rec_ids, OFFSET_GEN + DELAY_IN_REC),
                                           ("w_rec", rec_ids, rec_ids, OFFSET_GEN + DELAY_IN_REC),
                                           ("w_out", rec_ids, out_arr, OFFSET_GEN + DELAY_IN_REC + DELAY_REC_OUT)):
        sel = np.isin(senders, pre_ids) & np.isin(targets, post_ids)
        s_idx = np.searchsorted(pre_ids, senders[sel])
        t_idx = np.searchsorted(post_ids, targets[sel])
        tt, ww = wtimes[sel], weights[sel]
        iteration = ((np.rint(tt).astype(int) - shift) // (batch * T)) - 1   # spikes in iteration k+1 carry update k
        order = np.argsort(tt, kind="stable")
        for o in order[::-1]:                                                  # keep the earliest per iteration
            k = iteration[o]
            if 0 <= k < n_iter:
                w_after[name][k, t_idx[o], s_idx[o]] = ww[o]
    result.update({f"{k}_after": v for k, v in w_after.items()})
    result.update(weight_events=np.stack([senders, targets, wtimes, weights]),
                  node_ids=np.array([in_ids[0], rec_ids[0], out_arr[0]]))

    # loss as the test computes it
    y = result["out_readout_signal"]        # (iter, batch, T, K)
    tgt = result["out_target_signal"]
    if task == "regression":
        loss = 0.5 * np.mean(np.sum((y - tgt) ** 2, axis=2), axis=(1, 2))
    else:
        y, tgt = y[:, :, -window:], tgt[:, :, -window:]
        loss = -np.mean(np.sum(tgt * np.log(y), axis=3), axis=(1, 2))
    result["loss"] = loss
    result["frame_offsets"] = np.array([OFFSET_GEN + DELAY_IN_REC, total_offset])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("regression", "classification"), required=True)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    result = build_and_run(args.task, args.batch_size, args.iterations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(tmp, task=args.task, batch_size=args.batch_size, **result)
    tmp.replace(args.out)
    print("losses:", " ".join(f"{v:.12f}" for v in result["loss"]))
    ref = PUBLISHED.get((args.task, args.batch_size))
    if ref is not None and args.iterations >= len(ref):
        rel = np.max(np.abs(result["loss"][:len(ref)] - ref) / np.abs(ref))
        print(f"max relative difference to the published losses: {rel:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
