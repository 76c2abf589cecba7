"""Figures of a training run (PNG, matplotlib).

* learning curves (loss, training and validation metric, learning rate);
* the e-prop anatomy figure of seed 001 Fig. 5.7: inputs, spike raster,
  outputs, learning signals of a few neurons, filtered eligibility traces and
  the slow ALIF component eps_a of a few synapses;
* firing-rate histograms per layer;
* the alignment angle between the feedback B and W_out^T (seed 001 sec. 6).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.network import feedback_matrix, simulate
from eprop_lava.eprop.loss import output_error
from eprop_lava.eprop.traces import eligibility_step
from eprop_lava.errors import UserError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics log (a torn last line dropped), each with
    the iteration and loss the learning curves plot."""
    from eprop_lava.rundir import RunDirError, read_metrics as read_log

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; is it a training run directory?")
    rows = read_log(path)
    if not rows:
        raise UserError(f"{path}: no metrics rows to plot")
    for number, row in enumerate(rows, start=1):
        for key in ("iteration", "loss"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RunDirError(f"{path}: line {number} has no numeric {key!r} (got {value!r}); "
                                  "not a metrics log written by train")
    return rows


def learning_curves(rows: list[dict], metric: str, out: Path) -> Path:
    plt = _pyplot()
    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(it, [r["loss"] for r in rows], lw=0.8)
    axes[0].set(xlabel="iteration", ylabel="loss", title="training loss")
    axes[1].plot(it, [r.get(f"train_{metric}", np.nan) for r in rows], lw=0.6, alpha=0.6, label="train batch")
    val = [(r["iteration"], r[f"val_{metric}"]) for r in rows if f"val_{metric}" in r]
    if val:
        axes[1].plot(*zip(*val), "o-", ms=3, label="validation")
    axes[1].set(xlabel="iteration", ylabel=metric, title=metric)
    axes[1].legend()
    for ax in axes[:2]:  # losses spanning decades (regression) read better on a log axis
        low, high = ax.get_ylim()
        values = [v for line in ax.get_lines() for v in line.get_ydata() if np.isfinite(v)]
        if values and min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")
    axes[2].plot(it, [r.get("alignment_angle_deg", np.nan) for r in rows])
    axes[2].axhline(90, color="grey", ls=":")
    axes[2].set(xlabel="iteration", ylabel="degrees", title="angle between B and W_out^T")
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rate_histogram(spec, spikes: list[np.ndarray], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r, z in enumerate(spikes):
        rates = z.mean(axis=(0, 1)) * 1000.0 / spec.dt
        ax.hist(rates, bins=30, alpha=0.6, label=f"layer {r}")
    ax.set(xlabel="firing rate (Hz)", ylabel="neurons", title="firing rates")
    ax.legend()
    fig.tight_layout()
    path = out / "firing_rates.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def anatomy(spec, params: dict, batch, out: Path, n_show: int = 5) -> Path:
    """Seed 001 Fig. 5.7 for the first sample of a batch (first layer)."""
    plt = _pyplot()
    ops = make_ops("numpy", dtype="float64")
    p = {k: ops.asarray(v) for k, v in params.items()}
    x = batch.x[:, :1]
    traj = simulate(spec, p, x, ops)
    err = output_error(spec.loss, traj.y, batch.target[:, :1], batch.mask[:, :1], ops)
    start, stop = spec.layer_offsets()[0]
    signal = (err @ feedback_matrix(spec, p).T)[:, 0, start:stop]
    layer = traj.layers[0]
    rec = traj.records[0]
    rates = traj.z[0][:, 0].mean(0)
    post = np.argsort(-rates)[:n_show]
    pre_rates = x[:, 0].mean(0)
    pre = np.argsort(-pre_rates)[:n_show]
    d = len(layer.model.hidden)
    eps = [np.zeros((1, stop - start, spec.n_inputs)) for _ in range(d)]
    ebar = np.zeros_like(eps[0])
    ebar_seq, eps_a_seq = [], []
    rec_prev = None
    for t in range(x.shape[0]):
        rt = {k: v[t, :1] for k, v in rec.items()}
        eps, e = eligibility_step(layer.model, layer.const, eps, rec_prev, rt, traj.pre_in[0][t, :1], ops)
        ebar = spec.readout.kappa * ebar + e
        ebar_seq.append(ebar[0, post, pre])
        eps_a_seq.append(eps[1][0, post, pre] if d > 1 else np.zeros(len(post)))
        rec_prev = rt
    T = np.arange(x.shape[0]) * spec.dt
    panels = 6 if d > 1 else 5  # LIF has no slow (adaptation) component
    fig, axes = plt.subplots(panels, 1, figsize=(9, 11 if d > 1 else 9.5), sharex=True)
    ti, ii = np.nonzero(x[:, 0])
    axes[0].scatter(T[ti], ii, s=1, c="k")
    axes[0].set(ylabel="input", title="e-prop anatomy (seed 001 Fig. 5.7)")
    tz, iz = np.nonzero(traj.z[0][:, 0])
    axes[1].scatter(T[tz], iz, s=1, c="k")
    axes[1].set(ylabel="neuron")
    y = traj.y[:, 0]
    if spec.loss == "cross_entropy":
        y = np.exp(y - y.max(-1, keepdims=True))
        y = y / y.sum(-1, keepdims=True)
    axes[2].plot(T, y)
    axes[2].plot(T, batch.target[:, 0], ls="--", lw=0.8)
    axes[2].set(ylabel="output")
    axes[3].plot(T, signal[:, post])
    axes[3].set(ylabel="learning signal")
    axes[4].plot(T, np.asarray(ebar_seq))
    axes[4].set(ylabel="filtered trace ebar")
    if d > 1:
        axes[5].plot(T, np.asarray(eps_a_seq))
        axes[5].set(ylabel=f"slow component eps_{layer.model.hidden[1]}")
    axes[-1].set(xlabel="time (ms)")
    fig.tight_layout()
    path = out / "anatomy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path) -> list[Path]:
    from eprop_lava.training import forward_outputs, load_checkpoint, task_from_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    rows = read_metrics(run_dir)
    ck = load_checkpoint(run_dir / "checkpoint.npz")
    task = task_from_config(ck.config)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    paths = [learning_curves(rows, task.metric_name, out)]
    batch = task.batch(np.random.default_rng([ck.config.seed, 4]), min(8, ck.config.batch_size))
    _, spikes = forward_outputs(ck.spec, ck.params, batch)
    paths.append(rate_histogram(ck.spec, spikes, out))
    paths.append(anatomy(ck.spec, ck.params, batch, out))
    return paths
