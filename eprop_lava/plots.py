"""Figures of training runs and compiled networks (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so importing or plotting never selects a backend (a notebook keeps
its own); :func:`save_figure` writes one atomically when asked.

* :func:`learning_curves`: loss, training/validation metric, B-W_out^T angle;
* :func:`anatomy`: one sample through the network (seed 001 sec. 5.3, the
  e-prop factors): input, LIF and ALIF spikes, outputs against the target,
  learning signals, filtered eligibility traces, the slow ALIF component,
  task phases shaded;
* :func:`membrane_traces`: membrane voltage and threshold of a few LIF and
  a few ALIF neurons (threshold A = v_th + beta a, seed 001 Eq. 1.22);
* :func:`firing_rates`: per-neuron rates of LIF and ALIF neurons against the
  regularizer's target;
* :func:`weight_histograms`: weights before and after training;
* :func:`quantization`: float against quantized weights, and the error;
* :func:`readouts`: float / fixed-point / Lava readouts overlaid;
* :func:`learning_curve_onchip`: on-chip learning, error against samples;
* :func:`confusion_matrix`: true against predicted class;
* :func:`core_map`: a compiled network's populations on the chips' cores.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from eprop_lava.errors import UserError

LIF_COLOUR = "tab:blue"
ALIF_COLOUR = "tab:red"
PHASE_COLOURS = ("#f2e6c9", "#e3ecf6", "#dff0df", "#f3dede", "#ececec")
SOURCE_STYLES = {"float": dict(ls="-", lw=1.4), "fixed point": dict(ls="--", lw=1.2),
                 "Lava": dict(ls=":", lw=1.8)}


def new_figure(width: float, height: float):
    """A Figure that is not registered with pyplot and needs no backend."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (or the format of the suffix) atomically."""
    from eprop_lava.training import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return path


def figure_png(fig: Any, dpi: int = 120) -> bytes:
    """The PNG bytes of a figure (for files written with others, atomically)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


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


# ------------------------------------------------------------------ task phases
def task_phases(task: Any, batch: Any = None, sample: int = 0) -> list[tuple[str, float, float]]:
    """(name, start_ms, stop_ms) of the phases of one trial: cue / delay /
    recall for evidence accumulation; otherwise the loss window ("recall")
    when the task scores only part of the sequence."""
    dt = float(getattr(task, "dt", 1.0))
    if all(hasattr(task, a) for a in ("n_cues", "cue_ms", "spacing_ms", "recall_ms", "steps")):
        cues = task.n_cues * (task.cue_ms + task.spacing_ms)
        total = task.steps * dt
        return [("cues", 0.0, float(cues)), ("delay", float(cues), total - task.recall_ms),
                ("recall", total - task.recall_ms, total)]
    if batch is not None and getattr(batch, "mask", None) is not None:
        m = np.asarray(batch.mask)[:, sample] > 0
        if m.any() and not m.all():
            idx = np.nonzero(m)[0]
            # contiguous runs of the loss window
            breaks = np.nonzero(np.diff(idx) > 1)[0]
            starts = np.concatenate([[idx[0]], idx[breaks + 1]])
            stops = np.concatenate([idx[breaks], [idx[-1]]]) + 1
            return [("loss window", s * dt, e * dt) for s, e in zip(starts, stops)]
    return []


def shade_phases(axes: Sequence[Any], phases: Sequence[tuple], label_axis: Any = None) -> None:
    """Shade each phase on every axis; name them above ``label_axis``."""
    colours = {}
    for name, start, stop in phases:
        colour = colours.setdefault(name, PHASE_COLOURS[len(colours) % len(PHASE_COLOURS)])
        for ax in axes:
            ax.axvspan(start, stop, color=colour, alpha=0.6, lw=0, zorder=0)
        if label_axis is not None:  # inside the top of the axis: clear of titles
            label_axis.text((start + stop) / 2, 0.98, name, transform=label_axis.get_xaxis_transform(),
                            ha="center", va="top", fontsize=8, style="italic",
                            bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1.0))


def legend_outside(ax: Any, **kw: Any) -> None:
    """The legend to the right of the axis, so it never hides data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, fontsize=7, frameon=False, **kw)


# ------------------------------------------------------------------ learning curves
def learning_curves(rows: list[dict], metric: str) -> Any:
    fig = new_figure(13, 3.8)
    axes = fig.subplots(1, 3)
    it = [r["iteration"] for r in rows]
    axes[0].plot(it, [r["loss"] for r in rows], lw=0.8, label="training batch")
    axes[0].set(xlabel="iteration", ylabel="loss", title="training loss")
    axes[1].plot(it, [r.get(f"train_{metric}", np.nan) for r in rows], lw=0.6, alpha=0.6, label="training batch")
    val = [(r["iteration"], r[f"val_{metric}"]) for r in rows if f"val_{metric}" in r]
    if val:
        axes[1].plot(*zip(*val), "o-", ms=3, label="validation")
    axes[1].set(xlabel="iteration", ylabel=metric, title=metric)
    for ax in axes[:2]:  # losses spanning decades (regression) read better on a log axis
        values = [v for line in ax.get_lines() for v in line.get_ydata() if np.isfinite(v)]
        if values and min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    axes[2].plot(it, [r.get("alignment_angle_deg", np.nan) for r in rows], label="angle")
    axes[2].axhline(90, color="grey", ls=":", label="90 deg (orthogonal)")
    axes[2].set(xlabel="iteration", ylabel="angle (degrees)", title="angle between B and W_out^T")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ neuron states
def adaptive_mask(layer_spec: Any) -> np.ndarray:
    """True for the ALIF neurons of a layer (the last n_adaptive; spec.LayerSpec)."""
    mask = np.zeros(layer_spec.size, dtype=bool)
    mask[layer_spec.size - layer_spec.n_adaptive:] = True
    return mask


def neuron_states(spec: Any, params: dict, x: np.ndarray, layer: int = 0) -> dict:
    """Membrane voltage v, threshold A and spikes z (each (T, B, N)) of the
    forward population of ``layer``, stepping the layer's neuron model (the
    reference loop of engine.network.run_population, keeping the state).
    The threshold is A = v - x with x = v - A the model's recorded distance
    to threshold (seed 001 Eq. 1.22: A = v_th + beta a; v_th for LIF)."""
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.network import build_layers, simulate

    ops = make_ops("numpy", dtype="float64")
    p = {k: ops.asarray(v) for k, v in params.items()}
    x = np.asarray(x, dtype=np.float64)
    pop = next(P for P in build_layers(spec, p, ops) if P.layer == layer and not P.reverse)
    if "v" not in pop.model.initial_state(1, 1, pop.const, ops):
        raise ValueError(f"layers[{layer}]: {spec.layers[layer].neuron} neurons have no membrane voltage v")
    src = x if layer == 0 else np.asarray(simulate(spec, p, x, ops, record=False).z[layer - 1])
    pre = ops.shift_forward(src) if spec.timing == "loihi" else src
    external = ops.project(pre, pop.w_in_t)
    T, B = x.shape[:2]
    state = pop.model.initial_state(B, pop.w_in.shape[0], pop.const, ops)
    v, thr, zs = [], [], []
    for t in range(T):
        current = external[t]
        if pop.w_rec_t is not None:
            current = current + state["z"] @ pop.w_rec_t
        z, state, rec = pop.model.step(state, current, pop.const, ops)
        v.append(state["v"])
        thr.append(state["v"] - rec["x"])
        zs.append(z)
    return {"v": np.stack(v), "threshold": np.stack(thr), "z": np.stack(zs)}


def _pick_active(z: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Up to n of the candidate neurons that spiked, those of median
    activity first (the most active ones often just saturate), z: (T, N)."""
    if candidates.size == 0:
        return candidates
    counts = z[:, candidates].sum(0)
    active = candidates[counts > 0]
    if active.size == 0:
        return candidates[:n]
    c = z[:, active].sum(0)
    order = np.argsort(np.abs(c - np.median(c)), kind="stable")
    return np.sort(active[order[:n]])


def membrane_traces(spec: Any, params: dict, x: np.ndarray, sample: int = 0, layer: int = 0, n_show: int = 3,
                    phases: Sequence[tuple] = ()) -> Any:
    """Membrane voltage (solid) and threshold (dashed) of the n_show most
    active LIF and ALIF neurons of one sample, one panel per kind, spikes
    marked on top; voltages in units of the spec (v_th = spec threshold)."""
    states = neuron_states(spec, params, np.asarray(x)[:, sample:sample + 1], layer)
    v, thr, z = (states[k][:, 0] for k in ("v", "threshold", "z"))
    adaptive = adaptive_mask(spec.layers[layer])
    kinds = [("LIF", np.nonzero(~adaptive)[0], LIF_COLOUR), ("ALIF", np.nonzero(adaptive)[0], ALIF_COLOUR)]
    kinds = [k for k in kinds if k[1].size]
    T = np.arange(v.shape[0]) * spec.dt
    fig = new_figure(12, 3.0 * len(kinds) + 0.8)
    axes = np.atleast_1d(fig.subplots(len(kinds), 1, sharex=True))
    for ax, (kind, idx, _) in zip(axes, kinds):
        chosen = _pick_active(z, idx, n_show)
        colours = [f"C{i}" for i in range(len(chosen))]
        for j, c in zip(chosen, colours):
            ax.plot(T, v[:, j], color=c, lw=0.8, label=f"neuron {j}: v")
            ax.plot(T, thr[:, j], color=c, lw=1.3, ls="--", label=f"neuron {j}: threshold")
            spikes = z[:, j] > 0
            ax.plot(T[spikes], v[spikes, j], "o", ms=2.5, color=c, mec="k", mew=0.3,
                    label=f"neuron {j}: spikes ({int(spikes.sum())})")
        ax.set_ylabel("membrane voltage v")
        ax.set_title(f"{kind} neurons of layer {layer}" + (": threshold A = v_th + beta a (adapts)" if kind == "ALIF"
                                                           else ": fixed threshold v_th"), fontsize=10)
        legend_outside(ax)
    shade_phases(axes, phases, axes[0])
    axes[-1].set_xlabel("time (ms)")
    fig.suptitle("membrane voltage and threshold of one sample (dots: spikes)", fontsize=11)
    fig.tight_layout()
    return fig


def firing_rates(spec: Any, spikes: list[np.ndarray], target_hz: float | None = None) -> Any:
    """Histogram of per-neuron firing rates (Hz) per layer, LIF and ALIF
    apart, with the regularizer's target rate and the layer mean."""
    if target_hz is None and spec.regularization.coefficient > 0:
        target_hz = spec.regularization.target_hz
    fig = new_figure(6.0 * len(spikes), 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(spikes)))
    for r, (ax, z) in enumerate(zip(axes, spikes)):
        rates = np.asarray(z).mean(axis=(0, 1)) * 1000.0 / spec.dt
        ls = spec.layers[r]
        adaptive = np.tile(adaptive_mask(ls), 2) if ls.bidirectional else adaptive_mask(ls)
        bins = np.linspace(0, max(float(rates.max()), target_hz or 0.0) * 1.05 + 1e-9, 31)
        kinds = [(kind, sel, colour) for kind, sel, colour in
                 (("LIF", ~adaptive, LIF_COLOUR), ("ALIF", adaptive, ALIF_COLOUR)) if sel.any()]
        ax.hist([rates[sel] for _, sel, _ in kinds], bins=bins, color=[c for _, _, c in kinds],
                label=[f"{kind} ({sel.sum()} neurons, mean {rates[sel].mean():.1f} Hz)" for kind, sel, _ in kinds])
        ax.axvline(rates.mean(), color="k", lw=1.2, label=f"layer mean {rates.mean():.1f} Hz")
        if target_hz is not None:
            ax.axvline(target_hz, color="green", ls="--", lw=1.5, label=f"target {target_hz:g} Hz")
        ax.set(xlabel="firing rate (Hz)", ylabel="neurons", title=f"layer {r} firing rates")
        # below the axis: the histogram's tallest bars sit where an inside legend would go
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, frameon=False, ncol=2)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ weights
def _matrix_names(params: Mapping) -> list[str]:
    return [k for k in params if k.endswith(("w_in", "w_rec")) or k == "readout.w"]


def weight_histograms(before: Mapping, after: Mapping) -> Any:
    """Distribution of every weight matrix at initialization and after training."""
    names = [k for k in _matrix_names(after) if k in before]
    fig = new_figure(4.2 * len(names), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, k in zip(axes, names):
        a, b = np.ravel(before[k]), np.ravel(after[k])
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        bins = np.linspace(lo, hi + 1e-12, 50)
        ax.hist(b, bins=bins, color="tab:orange", alpha=0.8, label=f"after training (sd {b.std():.3f})")
        ax.hist(a, bins=bins, histtype="step", color="k", lw=1.2, label=f"initial (sd {a.std():.3f})")
        ax.set(xlabel="weight", ylabel="synapses (log scale)", title=k)
        ax.set_yscale("log")
        # below the axis: the histograms fill the panel, so a legend inside would hide bars
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False, ncol=1)
    fig.suptitle("weights at initialization and after training", fontsize=11)
    fig.tight_layout()
    return fig


def quantization(float_weights: Mapping, quantized_weights: Mapping, bits: Mapping | None = None,
                 steps: Mapping | None = None) -> Any:
    """Per matrix: quantized (dequantized to float units) against float
    weights, and the histogram of the error quantized - float, with the
    relative RMS error ||q - w|| / ||w||. ``steps`` (float size of one
    integer step per matrix) marks +-half a step, the rounding error's
    bound: errors beyond it come from clipping, are counted in the title and
    left off the histogram, whose axis spans the rounding errors."""
    names = [k for k in float_weights if k in quantized_weights]
    fig = new_figure(4.0 * len(names), 7.0)
    axes = np.asarray(fig.subplots(2, len(names), squeeze=False))
    for j, k in enumerate(names):
        w = np.ravel(np.asarray(float_weights[k], dtype=np.float64))
        q = np.ravel(np.asarray(quantized_weights[k], dtype=np.float64))
        err = q - w
        rel = float(np.linalg.norm(err) / (np.linalg.norm(w) or 1.0))
        ax = axes[0, j]
        lim = float(np.abs(np.concatenate([w, q])).max()) * 1.05 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls=":", label="identity")
        ax.plot(w, q, ".", ms=2, alpha=0.5, color="tab:blue", label="synapses")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="float weight", ylabel="quantized weight (float units)",
               title=f"{k}" + (f", {bits[k]} bits" if bits and k in bits else ""))
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[1, j]
        title = f"error: relative RMS {rel:.4f}"
        shown = err
        if steps and k in steps:
            half = 0.5 * steps[k]
            inside = np.abs(err) <= half * (1 + 1e-9)
            clipped = int(np.sum(~inside))
            title += f", {clipped} clipped"
            # the rounding errors' range: a few clipped synapses far out would squeeze them into one bar
            shown = err[inside]
            ax.set_xlim(-1.15 * half, 1.15 * half)
            ax.axvline(-half, color="k", ls=":", lw=1.0, label="+-half a step (rounding)")
            ax.axvline(half, color="k", ls=":", lw=1.0)
            if clipped:
                far = err[~inside]
                ax.text(0.98, 0.97, f"{clipped} clipped, off scale:\nerror {far.min():.3g} to {far.max():.3g}",
                        transform=ax.transAxes, ha="right", va="top", fontsize=7,
                        bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))
        counts, _, _ = ax.hist(shown, bins=50, color="tab:purple", label="synapses")
        ax.set_ylim(0, 1.3 * max(float(np.max(counts, initial=0.0)), 1.0))  # headroom for the note, no overlap
        xlabel = "quantized - float (float units)" + ("\ndotted: +-half a step (rounding bound)" if steps and k in steps
                                                      else "")
        ax.set(xlabel=xlabel, ylabel="synapses", title=title)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    fig.suptitle("float against quantized weights", fontsize=11)
    fig.tight_layout()
    return fig


def quantization_of_network(float_params: Mapping, net: Any, report: Mapping) -> Any:
    """:func:`quantization` for a compiled network: its integer weights
    divided by each matrix's scale (compile.quantize: w_int ~= w * scale)
    against the trained float weights (the error includes clipping)."""
    ints = net.weights()
    matrices = [m for m in report["matrices"] if m["name"] in ints and m["name"] in float_params]
    deq = {m["name"]: np.asarray(ints[m["name"]], dtype=np.float64) / m["scale"] for m in matrices}
    return quantization({k: float_params[k] for k in deq}, deq, {m["name"]: m["bits"] for m in matrices},
                        {m["name"]: m["step"] / m["scale"] for m in matrices})


# ------------------------------------------------------------------ readouts and learning on chip
def readouts(t_ms: np.ndarray, outputs: Mapping[str, np.ndarray], target: np.ndarray | None = None,
             phases: Sequence[tuple] = (), channels: Sequence[int] | None = None,
             names: Sequence[str] | None = None, title: str | None = None) -> Any:
    """Readouts of one sample from several engines overlaid (y: (T, K) each,
    same units), one panel per output channel (at most 4), target dashed."""
    first = np.asarray(next(iter(outputs.values())))
    K = first.shape[1]
    if channels is None:
        channels = list(range(min(K, 4))) if target is None else \
            list(np.argsort(-np.asarray(target).sum(0), kind="stable")[:min(K, 4)])
    fig = new_figure(10, 2.3 * len(channels) + 0.8)
    axes = np.atleast_1d(fig.subplots(len(channels), 1, sharex=True))
    for ax, c in zip(axes, channels):
        for i, (source, y) in enumerate(outputs.items()):
            y = np.asarray(y)
            style = SOURCE_STYLES.get(source, dict(ls="-", lw=1.0))
            ax.plot(np.asarray(t_ms)[:y.shape[0]], y[:, c], color=f"C{i}", label=source, **style)
        if target is not None:
            ax.plot(t_ms, np.asarray(target)[:, c], color="k", lw=0.8, ls="-.", label="target")
        ax.set_ylabel(f"readout y: {names[c] if names else c}")
        legend_outside(ax)
    shade_phases(axes, phases, axes[0])
    axes[-1].set_xlabel("time (ms)")
    fig.align_ylabels(axes)
    fig.suptitle(f"readout of {title or 'one sample'}: " + " / ".join(outputs), fontsize=11)
    fig.tight_layout()
    return fig


def learning_curve_onchip(curves: Mapping[str, Sequence] | Sequence, metric: str = "error",
                          reference: Mapping[str, float] | None = None, xlabel: str = "training samples",
                          ylabel: str | None = None, title: str | None = None) -> Any:
    """On-chip (online, batch 1) learning: ``metric`` against the number of
    training samples seen. ``curves`` is a list of points or a mapping
    label -> such a list; a point is (samples, value) or a dict with
    "samples" and ``metric`` (or "error"), as ``eprop-lava run --learn``
    records them. ``reference`` draws horizontal lines (e.g.
    {"float, trained offline": 0.05})."""
    if not isinstance(curves, Mapping):
        curves = {"on-chip e-prop": curves}
    fig = new_figure(6.5, 4.2)
    ax = fig.subplots()
    for i, (label, pts) in enumerate(curves.items()):
        pts = sorted((p["samples"], p.get(metric, p.get("error"))) if isinstance(p, Mapping) else tuple(p)
                     for p in pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=f"C{i}", label=label)
    for j, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=f"C{len(curves) + j}", ls="--", lw=1.0, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel or metric, title=title or f"on-chip learning: {metric} against samples")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: samples of true class i predicted as j."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)), 1)
    return counts


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int | None = None,
                     class_names: Sequence[str] | None = None, title: str = "confusion matrix",
                     unit: str = "samples") -> Any:
    """Rows: true class, columns: predicted class; colour = fraction of the
    row, numbers = sample counts (up to 12 classes)."""
    labels, predictions = np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)
    n = n_classes or int(max(labels.max(), predictions.max()) + 1)
    counts = confusion_counts(labels, predictions, n)
    frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = min(max(4.0, 0.45 * n + 2.0), 10.0)
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of the true class", shrink=0.8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=11 if n <= 4 else 8,
                        color="white" if frac[i, j] > 0.5 else "black")
    ticks = np.arange(n)
    names = list(class_names) if class_names is not None else [str(i) for i in ticks]
    if n <= 40:
        ax.set_xticks(ticks, names, rotation=90 if n > 12 else 0, fontsize=6 if n > 12 else 9)
        ax.set_yticks(ticks, names, fontsize=6 if n > 12 else 9)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    import textwrap

    # long titles (which checkpoint, which samples) wrap to the figure's width instead of running off it
    width = int(11 * (side + 1.0))
    lines = [w for line in f"{title}\n{counts.sum()} {unit}, accuracy {accuracy:.3f} (error {1 - accuracy:.3f})"
             .split("\n") for w in textwrap.wrap(line, width)]
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title("\n".join(lines), fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ anatomy
def _is_spikes(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def _input_panel(ax: Any, fig: Any, x: np.ndarray, T: np.ndarray, task: Any = None) -> None:
    """Spike input as a raster (grouped for evidence), dense input (MFCC) as an image."""
    if _is_spikes(x):
        ti, ii = np.nonzero(x)
        groups = getattr(task, "n_per_group", None)
        if getattr(task, "name", "") == "evidence" and groups and x.shape[1] == 4 * groups:
            names = ("left cues", "right cues", "recall cue", "noise")
            for g, name in enumerate(names):
                sel = (ii >= g * groups) & (ii < (g + 1) * groups)
                ax.plot(T[ti[sel]], ii[sel], "|", ms=2.5, color=f"C{g}", label=name)
            legend_outside(ax, markerscale=3)
        else:
            ax.plot(T[ti], ii, "|", ms=2.5, color="k")
        ax.set_ylim(-0.5, x.shape[1] - 0.5)
        ax.set_ylabel("input channel")
    else:
        im = ax.imshow(x.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(T[0], T[-1] + (T[1] - T[0] if len(T) > 1 else 1.0), -0.5, x.shape[1] - 0.5))
        cax = ax.inset_axes([1.01, 0.0, 0.015, 1.0])   # outside, so the time axes stay aligned
        fig.colorbar(im, cax=cax, label="feature value")
        ax.set_ylabel("input feature")


def anatomy(spec: Any, params: dict, batch: Any, task: Any = None, n_show: int = 4, sample: int = 0) -> Any:
    """One sample through the network (first layer): input, spikes of the
    LIF and the ALIF neurons, outputs against the target, the learning
    signals L_j = sum_k B_jk (y_k - y*_k) of the most active neurons (seed
    001 Eq. 4.3; via eprop.loss.output_error and the feedback matrix), the
    filtered eligibility traces ebar_ji (kappa filter, seed 001 Eq. 4.5) and,
    for ALIF, the slow adaptation component eps_a of the same synapses."""
    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.network import feedback_matrix, simulate
    from eprop_lava.eprop.loss import output_error
    from eprop_lava.eprop.traces import eligibility_step

    ops = make_ops("numpy", dtype="float64")
    p = {k: ops.asarray(v) for k, v in params.items()}
    s = slice(sample, sample + 1)
    x = np.asarray(batch.x[:, s], dtype=np.float64)
    traj = simulate(spec, p, x, ops)
    err = output_error(spec.loss, traj.y, batch.target[:, s], batch.mask[:, s], ops)
    start, stop = spec.layer_offsets()[0]
    signal = (err @ feedback_matrix(spec, p).T)[:, 0, start:stop]
    layer = traj.layers[0]
    rec = traj.records[0]
    z = np.asarray(traj.z[0][:, 0, :spec.layers[0].size])
    adaptive = adaptive_mask(spec.layers[0])
    # half LIF, half ALIF neurons (where the layer has both)
    n_alif = n_show // 2 if adaptive.any() and (~adaptive).any() else (n_show if adaptive.any() else 0)
    post = np.concatenate([_pick_active(z, np.nonzero(~adaptive)[0], n_show - n_alif),
                           _pick_active(z, np.nonzero(adaptive)[0], n_alif)]).astype(int)
    pre = np.argsort(-x[:, 0].sum(0), kind="stable")[:n_show]
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
    slow = d > 1 and adaptive.any()
    panels = 6 if slow else 5
    fig = new_figure(12, 1.9 * panels + 1.2)
    axes = fig.subplots(panels, 1, sharex=True)
    phases = task_phases(task, batch, sample) if task is not None else []
    _input_panel(axes[0], fig, x[:, 0], T, task)
    # hidden spikes: LIF below, ALIF above a divider
    for kind, sel, colour in (("LIF", ~adaptive, LIF_COLOUR), ("ALIF", adaptive, ALIF_COLOUR)):
        tz, iz = np.nonzero(z[:, sel])
        rows = np.nonzero(sel)[0][iz] if iz.size else iz
        if sel.any():
            axes[1].plot(T[tz], rows, "|", ms=2.5, color=colour, label=f"{kind} ({sel.sum()} neurons)")
    if adaptive.any() and (~adaptive).any():
        axes[1].axhline(spec.layers[0].size - spec.layers[0].n_adaptive - 0.5, color="grey", lw=0.6)
    axes[1].set_ylim(-0.5, z.shape[1] - 0.5)
    axes[1].set_ylabel("neuron")
    legend_outside(axes[1], markerscale=3)
    y = np.asarray(traj.y[:, 0])
    ylabel = "output y"
    if spec.loss == "cross_entropy":
        y = np.exp(y - y.max(-1, keepdims=True))
        y = y / y.sum(-1, keepdims=True)
        ylabel = "softmax output"
    K = y.shape[1]
    names = _class_names(task, K)
    target = np.asarray(batch.target[:, sample])
    if K <= 4:
        shown = list(range(K))
    else:  # the target's classes, then the strongest outputs
        order = list(np.argsort(-np.abs(target).sum(0), kind="stable")[:2]) + \
            list(np.argsort(-y.mean(0), kind="stable"))
        shown = list(dict.fromkeys(int(k) for k in order))[:4]
    for i, k in enumerate(shown):
        axes[2].plot(T, y[:, k], color=f"C{i}", lw=1.0, label=names[k])
        axes[2].plot(T, target[:, k], color=f"C{i}", ls="--", lw=0.8, label=f"{names[k]} target")
    if len(shown) < K:
        axes[2].plot([], [], " ", label=f"({K - len(shown)} other outputs not shown)")
    axes[2].set_ylabel(ylabel)
    legend_outside(axes[2])
    for i, j in enumerate(post):
        axes[3].plot(T, signal[:, j], color=f"C{i}", lw=0.9,
                     label=f"neuron {j} ({'ALIF' if adaptive[j] else 'LIF'})")
    axes[3].set_ylabel("learning signal L_j")
    legend_outside(axes[3])
    ebar_seq = np.asarray(ebar_seq)
    for i, (j, k) in enumerate(zip(post, pre)):
        axes[4].plot(T, ebar_seq[:, i], color=f"C{i}", lw=0.9, label=f"input {k} -> neuron {j}")
    axes[4].axhline(0, color="grey", lw=0.5)
    axes[4].set_ylabel("filtered trace ebar_ji")
    legend_outside(axes[4])
    if slow:
        eps_a_seq = np.asarray(eps_a_seq)
        for i, (j, k) in enumerate(zip(post, pre)):
            axes[5].plot(T, eps_a_seq[:, i], color=f"C{i}", lw=0.9,
                         label=f"input {k} -> neuron {j}" + (" (LIF: beta = 0, unused)" if not adaptive[j] else ""))
        axes[5].set_ylabel(f"slow component eps_{layer.model.hidden[1]}")
        legend_outside(axes[5])
    shade_phases(axes, phases, axes[0])
    axes[-1].set_xlabel("time (ms)")
    task_name = getattr(task, "name", None)
    fig.suptitle("e-prop in one sample" + (f" of {task_name}" if task_name else "")
                 + ": input, spikes, output, learning signals, eligibility traces", fontsize=11)
    fig.align_ylabels(axes)
    fig.tight_layout()
    return fig


def _class_names(task: Any, K: int) -> list[str]:
    names = getattr(task, "class_names", None)
    if names is not None and len(names) == K:
        return [str(n) for n in names]
    if getattr(task, "name", "") == "evidence" and K == 2:
        return ["left", "right"]
    return [f"output {k}" for k in range(K)]


# ------------------------------------------------------------------ a compiled artifact's run
def artifact_run_figures(task: Any, ts: Any, spec: Any, float_params: Mapping | None, net: Any, run: Any,
                         lava: Mapping | None = None, curve: Sequence | Mapping | None = None,
                         sample: int = 0, seed: int | None = None) -> dict:
    """Figures of ``eprop-lava run``: the readout of one test sample from the
    float engine (``spec``, the compiled semantics), the fixed-point engine
    and Lava (when it ran that sample) overlaid in float units (y_fx / y_scale);
    the fixed-point engine's confusion matrix (classification tasks) on all
    of ``ts``, the samples its reported error counts (``seed``: the data
    seed, named in the title); the on-chip learning curve when ``curve``
    holds one."""
    from eprop_lava.tasks.base import window_decision
    from eprop_lava.training import forward_outputs

    T, n_samples = ts.x.shape[0], ts.x.shape[1]
    K = spec.readout.n_outputs
    names = _class_names(task, K)
    t_ms = np.arange(T) * spec.dt
    outputs = {}
    if float_params:
        y, _ = forward_outputs(spec, dict(float_params), ts.batch)
        outputs["float"] = np.asarray(y)[:, sample]
    y_fixed = np.asarray(run.y) / net.readout.y_scale
    outputs["fixed point"] = y_fixed[:, sample]
    if lava is not None and sample == 0 and lava.get("steps", 0) > 0:
        outputs["Lava"] = np.asarray(lava["y"][:T]) / net.readout.y_scale
    target = None if spec.loss == "cross_entropy" else ts.target[:, sample]
    labels = ts.labels if ts.labels is not None else getattr(ts.batch, "labels", None)
    title = f"test sample {sample}"
    if labels is not None and np.asarray(labels).ndim == 1:
        title += f" (class {names[int(np.asarray(labels)[sample])]})"
    figs = {"readouts": readouts(t_ms, outputs, target, task_phases(task, ts.batch, sample), names=names,
                                 title=title)}
    if labels is not None and np.asarray(labels).ndim == 1:
        which = f"test samples 0-{n_samples - 1}" + (f" of rng [{seed}, 3]" if seed is not None else "")
        figs["confusion_fixed_point"] = confusion_matrix(labels, window_decision(y_fixed, ts.mask), K, names,
                                                         f"fixed-point engine, {which}")
    if curve:
        figs["onchip_learning"] = learning_curve_onchip(curve, getattr(task, "metric_name", "error"))
    return figs


# ------------------------------------------------------------------ a run directory
def run_figures(run_dir: str | Path) -> dict:
    """Every figure of a training run that its data supports: name -> Figure."""
    from eprop_lava.engine.network import init_params
    from eprop_lava.training import forward_outputs, load_checkpoint, task_from_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is not a directory" if run_dir.exists()
                        else f"run directory not found: {run_dir}")
    rows = read_metrics(run_dir)
    ck = load_checkpoint(run_dir / "checkpoint.npz")
    task = task_from_config(ck.config)
    figs = {"learning_curves": learning_curves(rows, task.metric_name)}
    batch = task.batch(np.random.default_rng([ck.config.seed, 4]), min(8, ck.config.batch_size))
    y, spikes = forward_outputs(ck.spec, ck.params, batch)
    figs["firing_rates"] = firing_rates(ck.spec, spikes)
    figs["anatomy"] = anatomy(ck.spec, ck.params, batch, task)
    phases = task_phases(task, batch, 0)
    if ck.spec.layers[0].neuron in ("lif", "alif", "stdp_alif"):
        figs["membrane"] = membrane_traces(ck.spec, ck.params, batch.x, phases=phases)
    figs["weights"] = weight_histograms(init_params(ck.spec), ck.params)
    if ck.spec.loss == "cross_entropy":
        figs["confusion"] = run_confusion(run_dir, task)
    return figs


def run_confusion(run_dir: str | Path, task: Any = None, batches: int | None = None) -> Any:
    """The confusion matrix of the float network on exactly the samples
    ``eprop-lava eval RUN`` scores (its checkpoint choice: best.npz if the run
    kept one; :func:`eprop_lava.training.eval_batches`, ``batches`` default
    that of eval), so its accuracy is 1 - eval's test error; the title names
    the checkpoint and the samples."""
    from eprop_lava.tasks.base import window_decision
    from eprop_lava.training import (
        EVAL_BATCHES, eval_batches, forward_outputs, load_checkpoint, select_checkpoint, task_from_config,
    )

    path, _ = select_checkpoint(run_dir)
    ck = load_checkpoint(path)
    task = task if task is not None else task_from_config(ck.config)
    batches = EVAL_BATCHES if batches is None else batches
    data = eval_batches(task, ck.config, batches)
    K = ck.spec.readout.n_outputs
    names = _class_names(task, K)
    which = (f"{path.name} (iteration {ck.iteration}), the test samples of 'eprop-lava eval':\n"
             f"{batches} batches x {ck.config.batch_size}, rng [{ck.config.seed}, 3]")
    ys = [np.asarray(forward_outputs(ck.spec, ck.params, b, ck.config)[0]) for b in data]
    if all(b.labels is not None and np.asarray(b.labels).ndim == 1 for b in data):
        labels = np.concatenate([np.asarray(b.labels) for b in data])
        predictions = np.concatenate([window_decision(y, b.mask) for y, b in zip(ys, data)])
        return confusion_matrix(labels, predictions, K, names, f"float network, {which}")
    # frame-wise targets (phone classification): every scored step
    scored = [np.asarray(b.mask) > 0 for b in data]
    labels = np.concatenate([np.argmax(np.asarray(b.target), -1)[m] for b, m in zip(data, scored)])
    predictions = np.concatenate([np.argmax(y, -1)[m] for y, m in zip(ys, scored)])
    return confusion_matrix(labels, predictions, K, names, f"float network, {which}", unit="frames")


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the figures of a run to RUN/plots/*.png; returns the paths."""
    out = Path(run_dir) / "plots"
    paths = []
    for name, fig in run_figures(run_dir).items():
        paths.append(save_figure(fig, out / f"{name}.png"))
    return paths


#: test samples of ``eprop-lava run`` by default (its --samples), which ``plot ARTIFACT`` shows too
RUN_SAMPLES = 64


def artifact_figures(path: str | Path, samples: int = RUN_SAMPLES) -> dict:
    """Figures of a compiled artifact without Lava: float against quantized
    weights, and the float and fixed-point readouts and the fixed-point
    confusion matrix on ``samples`` test samples (``eprop-lava run`` adds
    Lava's readout)."""
    from eprop_lava.compile import deploy
    from eprop_lava.compile.artifact import load_artifact

    art = load_artifact(path)
    src = art.manifest["source"]
    task, ts = deploy.test_set(src["task"], int(src["seed"]), samples)
    figs = {}
    if art.float_params:
        figs["quantization"] = quantization_of_network(art.float_params, art.net, art.manifest["quantization"])
    figs.update(artifact_run_figures(task, ts, art.spec, art.float_params, art.net, deploy.fixed_run(art.net, ts),
                                     seed=int(src["seed"])))
    return figs


def plot_directory(path: str | Path) -> list[Path]:
    """``eprop-lava plot DIR``: a training run's figures (RUN/plots/), or a
    compiled artifact's (ARTIFACT/plots/)."""
    from eprop_lava.compile.artifact import MANIFEST

    path = Path(path)
    if not path.is_dir():
        raise UserError((f"run directory {path} is not a directory" if path.exists() else f"run directory not found: {path}")
                        + " (plot takes a run directory from train or an "
                        "artifact directory from compile)")
    if (path / MANIFEST).is_file():
        return [save_figure(fig, path / "plots" / f"{name}.png") for name, fig in artifact_figures(path).items()]
    return plot_run(path)


# ------------------------------------------------------------------ a compiled network on the chips
#: the least share of a core's cell a population on it is drawn with: the
#: readout (a few neurons) next to a hidden layer of hundreds stays visible
MIN_BLOCK_SHARE = 0.2


def block_shares(neurons: Sequence[int]) -> np.ndarray:
    """Widths (fractions of a core's cell) of the populations on one core:
    proportional to their neurons, but at least MIN_BLOCK_SHARE each (or an
    equal share when more populations than that allows)."""
    n = np.asarray(neurons, dtype=np.float64)
    if n.size == 0:
        return n
    floor = min(MIN_BLOCK_SHARE, 1.0 / n.size)
    share = n / max(n.sum(), 1.0)
    small = share < floor
    # the small ones get the floor; the others split the rest in proportion
    rest = 1.0 - floor * small.sum()
    big = share[~small].sum()
    return np.where(small, floor, share * (rest / big if big > 0 else 0.0))


def core_map(mapping: Any) -> Any:
    """Two panels: the chips' 16 x 8 core grids (colour = population; a
    core's cell split among the populations on it, each at least
    MIN_BLOCK_SHARE wide (:func:`block_shares`), outlined, the solid part =
    its synaptic memory used, the pale part the rest), and the per-core
    utilization of every limit (first 32 cores). The legend names each
    population's neurons and cores. Each population patch has
    gid "POP@CORE"."""
    import matplotlib
    from matplotlib.patches import Patch, Rectangle

    pops = list(mapping.layers)
    cmap = matplotlib.colormaps["tab10"]
    colour = {p: cmap(i % 10) for i, p in enumerate(pops)}
    n_chips = max(mapping.n_chips, 1)
    show = min(n_chips, 4)
    t = mapping.limits
    fig = new_figure(3.4 * show + 5.5, 3.6)
    grid = fig.add_gridspec(1, show + 2, width_ratios=[1.0] * show + [0.12, 1.6])
    cell = 0.9
    for k in range(show):
        ax = fig.add_subplot(grid[0, k])
        on_chip = [c for c in mapping.cores if c.chip == k]
        # a chip's 128 cores are 16 x 8 cells; a network on a few cores gets only the cells up to its last
        # one (at least 4), so that its populations are large enough to see
        top = max([c.index % 128 for c in on_chip], default=0) + 1
        ncol, nrow = (max(4, top), 1) if top <= 16 else (16, -(-top // 16))
        for i in range(ncol * nrow):
            x, y = i % ncol, i // ncol
            ax.add_patch(Rectangle((x, y), cell, cell, facecolor="#eeeeee", edgecolor="none"))
            if ncol * nrow <= 32:
                ax.text(x + 0.05, y + cell - 0.05, str(i), fontsize=6, color="#555555", va="bottom")
        for c in on_chip:
            i = c.index % 128
            x, y = i % ncol, i // ncol
            mem = min(c.synapse_bits / t["synapse_bits_per_core"], 1.0)
            off = 0.0
            for b, share in zip(c.blocks, block_shares([b.n for b in c.blocks])):
                w = cell * share
                ax.add_patch(Rectangle((x + off, y), w, cell, facecolor=colour[b.pop], edgecolor="k", lw=0.4,
                                       alpha=0.35, gid=f"{b.pop}@{c.index}"))
                ax.add_patch(Rectangle((x + off, y + cell * (1 - mem)), w, cell * mem, facecolor=colour[b.pop],
                                       edgecolor="none"))
                off += w
        ax.set_xlim(-0.05, ncol)
        ax.set_ylim(nrow, -0.05)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(f"chip {k}: cores 0-{ncol * nrow - 1} of 128"
                     + (f" (chip {k + 1} of {n_chips})" if n_chips > show else ""), fontsize=9)
    ax = fig.add_subplot(grid[0, show + 1])
    cores = mapping.cores[:32]
    keys = [("compartments", "neurons_per_core", "compartments"), ("synapse_bits", "synapse_bits_per_core", "memory"),
            ("in_axons", "in_axons_per_core", "in axons"), ("out_axons", "out_axons_per_core", "out axons")]
    width = 0.8 / len(keys)
    shades = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for j, (attr, lim, label) in enumerate(keys):
        vals = [100.0 * getattr(c, attr) / t[lim] for c in cores]
        ax.bar(np.arange(len(cores)) + (j - 1.5) * width, vals, width, label=label, color=shades[j])
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, 115)
    ax.set_xticks(np.arange(len(cores)))
    ax.set_xticklabels([str(c.index) for c in cores], fontsize=7)
    ax.set_xlabel("core" + (f" (first 32 of {len(mapping.cores)})" if len(mapping.cores) > 32 else ""))
    ax.set_ylabel("% of the per-core limit")
    ax.set_title("per-core use (dashed: the limit)", fontsize=9)
    legend_outside(ax)

    def cores_text(cs: Sequence[int]) -> str:
        return f"core {cs[0]}" if len(cs) == 1 else f"cores {cs[0]}-{cs[-1]} ({len(cs)})"

    handles = [Patch(facecolor=colour[p], edgecolor="k", lw=0.4,
                     label=f"{p}: {mapping.layers[p]['neurons']} neurons, {cores_text(mapping.layers[p]['cores'])}")
               for p in pops]
    fig.legend(handles=handles, loc="lower left", fontsize=8, frameon=False, ncol=min(len(pops), 3))
    fig.suptitle(f"{mapping.target} on {mapping.system}: {mapping.n_cores} core(s), {n_chips} chip(s)"
                 f"{', learning synapses' if mapping.learning else ''}; in a core: width = share of its "
                 f"populations (at least {MIN_BLOCK_SHARE:.0%}), solid = synaptic memory used", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 0.92))
    return fig
