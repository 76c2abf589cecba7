"""Compare NEST 3.10's per-step e-prop traces with eprop_lava under the
"nest-bsshslm-2020" conventions, step by step.

Input: the ``.npz`` of ``nest_reference_traces.py`` (run with the NEST venv).
This script (run with the project venv) rebuilds the same network with
``eprop_lava.nest_reference`` (the NEST test's seeded draws), checks that its
weights, input spikes and targets are NEST's, bit for bit, then runs this
toolkit's e-prop training (float64, the compiled loops) and compares, for
every iteration, step, sample and neuron:

* the membrane distance to the threshold x = v - A (NEST: ``V_m - V_th``, resp.
  ``V_m - V_th_adapt`` for the adaptive neurons) and the spikes;
* psi (NEST's ``surrogate_gradient``);
* the learning signal L_j^t = sum_k B_jk (y_k^t - y*_k^t) inside the loss window
  (NEST records it 3 steps late: the time its readout's error takes to come back);
* the readout y^t (NEST's readout ``V_m``, recorded from one step later) and
  its normalized signal;
* the weights after each update (NEST applies update k when the first spike of
  iteration k + 1 passes a synapse; synapses without such a spike are left out;
  the input synapses whose first spike comes in step 1 of the next sequence
  are reported apart: NEST computes their gradient before the last step's
  learning signal has arrived);
* the loss of every iteration.

    .venv/bin/python benchmarks/nest/compare_nest_traces.py runs/nest_regression.npz
    .venv/bin/python benchmarks/nest/compare_nest_traces.py runs/nest_classification_b1.npz --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from eprop_lava import nest_reference as nr
from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import eprop_gradient, rate_loss
from eprop_lava.engine.network import feedback_matrix
from eprop_lava.eprop.learning_signal import learning_signal
from eprop_lava.eprop.loss import output_error
from eprop_lava.training import apply_update, make_optimizer


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    return float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else float("nan")


def compare(path: Path) -> dict:
    d = np.load(path)
    task, batch_size = str(d["task"]), int(d["batch_size"])
    n_iter = d["x"].shape[0]
    net = nr.regression_network(n_iter) if task == "regression" else nr.classification_network(batch_size, n_iter)
    same_input = {
        "w_in": bool(np.array_equal(d["w_in"], net.params["layers.0.w_in"])),
        "w_rec": bool(np.array_equal(d["w_rec"], net.params["layers.0.w_rec"])),
        "w_out": bool(np.array_equal(d["w_out"], net.params["readout.w"])),
        "feedback": bool(np.array_equal(d["feedback"], net.params["feedback.b"])),
        "x": bool(all(np.array_equal(d["x"][k].transpose(1, 0, 2), net.batches[k].x) for k in range(n_iter))),
        "target": bool(all(np.array_equal(d["target"][k].transpose(1, 0, 2), net.batches[k].target)
                           for k in range(n_iter))),
    }
    spec = net.spec
    ops = make_ops("numpy", dtype="float64")
    params = {k: v.copy() for k, v in net.params.items()}
    optimizer = make_optimizer(spec)
    window = int(d["learning_window"])
    rows = []
    for k, batch in enumerate(net.batches):
        loss, grads, traj = eprop_gradient(spec, params, batch, ops)
        task_loss = float(loss) - float(rate_loss(spec, traj, ops))
        rec = traj.records[0]
        # NEST arrays are (iteration, batch, step, neuron); ours (step, batch, neuron)
        v_nest = d["rec_V_m"][k].transpose(1, 0, 2)
        thr = (d["rec_V_th_adapt"][k].transpose(1, 0, 2) if "rec_V_th_adapt" in d.files else None)
        n_reg = v_nest.shape[2] - (0 if thr is None else thr.shape[2])
        a_nest = np.concatenate([np.full(v_nest[..., :n_reg].shape, spec.layers[0].params.v_th),
                                 thr], axis=2) if thr is not None else spec.layers[0].params.v_th
        x_nest = v_nest - a_nest
        z_nest = d["rec_z"][k].transpose(1, 0, 2)
        psi_nest = d["rec_surrogate_gradient"][k].transpose(1, 0, 2)
        # learning signal: ours L^t = B (dE/dy^t) without the mask's weights (NEST's error signal is unweighted)
        unweighted = (batch.mask > 0).astype(float)
        err = output_error(spec.loss, traj.y, batch.target, unweighted, ops)
        L_ours = learning_signal(err, feedback_matrix(spec, params), ops)
        L_nest = np.full_like(L_ours, np.nan)
        L_nest[:-3] = d["rec_learning_signal"][k].transpose(1, 0, 2)[3:]
        y_nest = np.full(traj.y.shape, np.nan)
        y_nest[1:] = d["out_V_m"][k].transpose(1, 0, 2)[:-1]
        row = {
            "iteration": k,
            "loss_nest": float(d["loss"][k]), "loss_ours": task_loss,
            "loss_rel_diff": abs(task_loss - float(d["loss"][k])) / abs(float(d["loss"][k])),
            "spikes_nest": int(z_nest.sum()), "spike_mismatches": int(np.sum(z_nest != traj.z[0])),
            "v_max_abs_diff": max_abs(rec["x"], x_nest),
            "psi_max_abs_diff": max_abs(rec["psi"], psi_nest), "psi_max": float(np.max(psi_nest)),
            "learning_signal_max_abs_diff": max_abs(L_ours, L_nest),
            "learning_signal_max": float(np.nanmax(np.abs(L_nest))),
            "readout_max_abs_diff": max_abs(traj.y, y_nest),
        }
        if spec.loss == "cross_entropy":
            p = np.exp(traj.y - traj.y.max(-1, keepdims=True))
            p = p / p.sum(-1, keepdims=True)
            p_nest = d["out_readout_signal"][k].transpose(1, 0, 2)
            row["readout_signal_max_abs_diff"] = max_abs(p[-window:], p_nest[-window:])
        before = {n: params[n].copy() for n in ("layers.0.w_in", "layers.0.w_rec", "readout.w")}
        apply_update(spec, params, optimizer, grads)
        for name, key in (("w_in", "layers.0.w_in"), ("w_rec", "layers.0.w_rec"), ("w_out", "readout.w")):
            nest_w = d[f"{name}_after"][k]
            if k == n_iter - 1:
                continue  # no spikes after the last iteration carry its update
            row[f"{name}_max_abs_diff"] = max_abs(params[key], nest_w)
            row[f"{name}_max_abs_change"] = max_abs(params[key], before[key])
            row[f"{name}_compared"] = int(np.sum(~np.isnan(nest_w)))
            if name == "w_in":
                # NEST updates a synapse when its first spike of the next sequence passes; an input
                # spike in that sequence's step 1 passes before the readout's error of the last step
                # has come back, so that synapse's gradient lacks L^{T-1}: compare the others apart
                early = net.batches[k + 1].x[1, 0] > 0
                row["w_in_inputs_spiking_at_step_1_next"] = int(early.sum())
                row["w_in_max_abs_diff_other_inputs"] = max_abs(params[key][:, ~early], nest_w[:, ~early])
        rows.append(row)
    return {"file": str(path), "task": task, "batch_size": batch_size, "same_weights_and_inputs": same_input,
            "conventions": spec.to_dict()["conventions"], "iterations": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("nest_file", type=Path)
    ap.add_argument("--json", type=Path, help="write the comparison here")
    args = ap.parse_args(argv)
    if not args.nest_file.is_file():
        print(f"{args.nest_file}: file not found (run nest_reference_traces.py first)", file=sys.stderr)
        return 2
    result = compare(args.nest_file)
    print(json.dumps(result["same_weights_and_inputs"]))
    keys = [k for k in result["iterations"][0] if k.endswith("diff") or k.startswith("spike")]
    for row in result["iterations"]:
        print(f"iteration {row['iteration']}: " + ", ".join(
            f"{k} {row[k]:.2e}" if isinstance(row[k], float) else f"{k} {row[k]}" for k in keys if k in row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
