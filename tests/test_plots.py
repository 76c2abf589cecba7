"""Figures: each function returns a matplotlib Figure whose artists hold the
data given (checked against hand-computed values and the engine), with the
labels and legends a reader needs; nothing selects a backend or imports pyplot."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from eprop_lava import plots
from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.network import Batch, init_params, simulate
from eprop_lava.tasks.evidence import EvidenceAccumulation

ROOT = Path(__file__).resolve().parents[1]
SHORT = dict(n_cues=3, cue_ms=20, spacing_ms=10, delay_ms=40, recall_ms=30)


def short_task():
    return EvidenceAccumulation(**SHORT)


def small_network(task, size=12):
    spec = task.default_spec()
    layer = spec.layers[0]
    return spec.replace(layers=(layer.__class__(**{**layer.__dict__, "size": size}),))


def strong(spec):
    """Initial weights scaled up so that the short trial has spikes."""
    p = init_params(spec)
    p["layers.0.w_in"] = p["layers.0.w_in"] * 4.0
    return p


def legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_no_backend_is_selected_and_pyplot_is_not_imported(tmp_path):
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
import matplotlib
before = matplotlib.get_backend()
import numpy as np
from eprop_lava import plots
from eprop_lava.compile import report, pipeline
from eprop_lava.studies import quantization
from test_plots import short_task, small_network, strong
task = short_task(); spec = small_network(task); p = strong(spec)
b = task.batch(np.random.default_rng(0), 2)
figs = [plots.anatomy(spec, p, b, task), plots.membrane_traces(spec, p, b.x), plots.confusion_matrix([0, 1], [0, 0])]
plots.save_figure(figs[0], {str(tmp_path / 'a.png')!r})
assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())
assert "matplotlib.pyplot" not in sys.modules
print("ok", before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "svg"]


def test_save_figure_writes_a_png_atomically(tmp_path):
    fig = plots.learning_curve_onchip([(0, 0.5), (10, 0.2)])
    path = plots.save_figure(fig, tmp_path / "sub" / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["curve.png"]  # no temporary left


def test_task_phases_of_evidence():
    task = short_task()   # 3 cues x (20 + 10) ms, delay, 30 ms recall: 90 + 40 + 30 = 160 ms
    assert plots.task_phases(task) == [("cues", 0.0, 90.0), ("delay", 90.0, 130.0), ("recall", 130.0, 160.0)]


def test_task_phases_from_the_loss_window():
    mask = np.zeros((10, 1))
    mask[6:9] = 1.0
    b = Batch(np.zeros((10, 1, 2)), np.zeros((10, 1, 1)), mask)
    assert plots.task_phases(object(), b) == [("loss window", 6.0, 9.0)]


def test_neuron_states_match_the_engine_and_the_threshold_equation():
    task = short_task()
    spec = small_network(task)
    p = strong(spec)
    b = task.batch(np.random.default_rng(1), 2)
    st = plots.neuron_states(spec, p, b.x)
    ops = make_ops("numpy", dtype="float64")
    traj = simulate(spec, {k: ops.asarray(v) for k, v in p.items()}, ops.asarray(b.x), ops)
    np.testing.assert_array_equal(st["z"], np.asarray(traj.z[0]))   # the engine's (compiled) spikes
    assert st["z"].sum() > 0
    layer = spec.layers[0]
    lif = ~plots.adaptive_mask(layer)
    assert lif.sum() == layer.size - layer.n_adaptive == 6
    np.testing.assert_allclose(st["threshold"][..., lif], layer.params.v_th)   # LIF: A = v_th
    # ALIF: A^t = v_th + beta a^t, a^t = rho a^{t-1} + z^{t-1} (seed 001 Eq. 1.22, seed 002 Eq. 2.6)
    from eprop_lava.neurons.base import adaptation_constants

    beta, rho = (np.broadcast_to(c, (layer.size,)) for c in adaptation_constants(layer, spec.dt))
    a = np.zeros((2, layer.size))
    z_prev = np.zeros((2, layer.size))
    for t in range(st["z"].shape[0]):
        a = rho * a + z_prev
        np.testing.assert_allclose(st["threshold"][t][:, ~lif], (layer.params.v_th + beta * a)[:, ~lif], rtol=1e-12)
        z_prev = st["z"][t]


def test_membrane_traces_plot_the_voltage_and_separate_lif_from_alif():
    task = short_task()
    spec = small_network(task)
    p = strong(spec)
    b = task.batch(np.random.default_rng(1), 1)
    fig = plots.membrane_traces(spec, p, b.x, phases=plots.task_phases(task))
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 2
    assert axes[0].get_title().startswith("LIF") and axes[1].get_title().startswith("ALIF")
    assert axes[1].get_xlabel() == "time (ms)" and axes[0].get_ylabel() == "membrane voltage v"
    st = plots.neuron_states(spec, p, b.x)
    lines = {l.get_label(): l for l in axes[1].get_lines()}
    v_labels = [k for k in lines if k.endswith(": v")]
    assert v_labels and all(int(k.split()[1].rstrip(":")) >= 6 for k in v_labels)   # ALIF are the last 6
    j = int(v_labels[0].split()[1].rstrip(":"))
    np.testing.assert_array_equal(lines[f"neuron {j}: v"].get_ydata(), st["v"][:, 0, j])
    np.testing.assert_array_equal(lines[f"neuron {j}: threshold"].get_ydata(), st["threshold"][:, 0, j])
    assert f"neuron {j}: threshold" in legend_texts(axes[1])
    assert {t.get_text() for t in axes[0].texts} == {"cues", "delay", "recall"}


def test_firing_rates_against_the_target():
    task = short_task()
    spec = small_network(task)
    z = np.zeros((100, 2, 12))
    z[::10, :, :6] = 1.0           # LIF: 10 spikes in 100 ms = 100 Hz
    z[::50, :, 6:] = 1.0           # ALIF: 20 Hz
    fig = plots.firing_rates(spec, [z])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "firing rate (Hz)"
    texts = legend_texts(ax)
    assert "target 10 Hz" in texts and "layer mean 60.0 Hz" in texts
    assert "LIF (6 neurons, mean 100.0 Hz)" in texts and "ALIF (6 neurons, mean 20.0 Hz)" in texts
    target = [l for l in ax.get_lines() if l.get_label() == "target 10 Hz"][0]
    assert list(target.get_xdata()) == [10.0, 10.0]
    assert sum(p.get_height() for p in ax.patches) == 12   # every neuron in one bar


def test_weight_histograms_before_and_after():
    before = {"layers.0.w_in": np.zeros((3, 2)), "readout.w": np.ones((2, 3)), "feedback.b": np.ones((3, 2))}
    after = {"layers.0.w_in": np.full((3, 2), 0.5), "readout.w": np.ones((2, 3)), "feedback.b": np.ones((3, 2))}
    fig = plots.weight_histograms(before, after)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["layers.0.w_in", "readout.w"]             # the feedback matrix is not trained
    texts = legend_texts(fig.axes[0])
    assert texts == ["after training (sd 0.000)", "initial (sd 0.000)"]
    from matplotlib.patches import Rectangle

    bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_height() > 0]
    assert [b.get_height() for b in bars] == [6]                 # all six "after" weights in one bar
    assert bars[0].get_x() <= 0.5 <= bars[0].get_x() + bars[0].get_width()


def test_quantization_error_and_clipping():
    w = np.array([[0.1, -0.2], [0.3, 1.0]])
    q = np.array([[0.125, -0.25], [0.25, 0.5]])                 # 0.5: clipped
    fig = plots.quantization({"readout.w": w}, {"readout.w": q}, {"readout.w": 4}, {"readout.w": 0.125})
    top, bottom = fig.axes[0], fig.axes[1]
    rel = np.linalg.norm(q - w) / np.linalg.norm(w)
    assert bottom.get_title() == f"error: relative RMS {rel:.4f}, 1 clipped"
    assert top.get_title() == "readout.w, 4 bits"
    pts = [l for l in top.get_lines() if l.get_label() == "synapses"][0]
    np.testing.assert_array_equal(pts.get_xdata(), w.ravel())
    np.testing.assert_array_equal(pts.get_ydata(), q.ravel())


def test_readouts_overlay_and_onchip_curve():
    t = np.arange(5.0)
    y = {"float": np.arange(10.0).reshape(5, 2), "fixed point": np.ones((5, 2)), "Lava": np.ones((5, 2))}
    fig = plots.readouts(t, y, names=["left", "right"], phases=[("recall", 3.0, 5.0)])
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "readout y: right"
    assert legend_texts(fig.axes[0]) == ["float", "fixed point", "Lava"]
    np.testing.assert_array_equal(fig.axes[1].get_lines()[0].get_ydata(), [1, 3, 5, 7, 9])
    curve = [(32, 0.3), (0, 0.5), (64, 0.1)]
    fig = plots.learning_curve_onchip(curve, reference={"float, offline": 0.05})
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [0, 32, 64] and list(line.get_ydata()) == [0.5, 0.3, 0.1]
    assert ax.get_xlabel() == "training samples" and ax.get_ylabel() == "error"
    assert legend_texts(ax) == ["on-chip e-prop", "float, offline"]


def test_confusion_matrix_counts_and_fractions():
    labels = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    fig = plots.confusion_matrix(labels, pred, 3, ["a", "b", "c"])
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[2 / 3, 1 / 3, 0], [0, 0.5, 0.5], [0, 0, 1]])
    assert [t.get_text() for t in ax.texts] == ["2", "1", "0", "0", "1", "1", "0", "0", "1"]
    assert "accuracy 0.667" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]


def test_anatomy_labels_phases_and_dense_input_as_an_image():
    task = short_task()
    spec = small_network(task)
    p = strong(spec)
    b = task.batch(np.random.default_rng(2), 1)
    fig = plots.anatomy(spec, p, b, task)
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    ylabels = [ax.get_ylabel() for ax in axes]
    assert ylabels == ["input channel", "neuron", "softmax output", "learning signal L_j", "filtered trace ebar_ji",
                       "slow component eps_a"]
    assert "seed" not in fig._suptitle.get_text() and "Fig." not in fig._suptitle.get_text()
    assert legend_texts(axes[1]) == ["LIF (6 neurons)", "ALIF (6 neurons)"]
    assert legend_texts(axes[2]) == ["left", "left target", "right", "right target"]
    assert legend_texts(axes[0]) == ["left cues", "right cues", "recall cue", "noise"]
    assert {t.get_text() for t in axes[0].texts} == {"cues", "delay", "recall"}
    sig = legend_texts(axes[3])
    assert any("(LIF)" in s for s in sig) and any("(ALIF)" in s for s in sig)
    # dense (MFCC-like) input: an image of the values, not a scatter
    spec_d = spec
    dense = Batch(np.random.default_rng(3).normal(size=b.x.shape), b.target, b.mask, b.labels)
    fig = plots.anatomy(spec_d, p, dense, task)
    ax0 = [ax for ax in fig.axes if ax.get_ylabel() == "input feature"][0]
    np.testing.assert_array_equal(ax0.images[0].get_array(), dense.x[:, 0].T)


def test_plot_run_writes_every_figure(tmp_path):
    from eprop_lava.training import TrainConfig, train

    task = short_task()
    spec = small_network(task, size=20)
    config = TrainConfig(task="evidence", task_options=SHORT, batch_size=4, iterations=2, validate_every=1,
                         validation_batches=1, checkpoint_every=1, progress=False, seed=1)
    train(task, spec, config, tmp_path / "run", resume=False)
    figs = plots.run_figures(tmp_path / "run")
    assert set(figs) == {"learning_curves", "firing_rates", "anatomy", "membrane", "weights", "confusion"}
    assert all(isinstance(f, Figure) for f in figs.values())
    paths = plots.plot_run(tmp_path / "run")
    assert sorted(p.name for p in paths) == sorted(f"{k}.png" for k in figs)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_plot_of_an_artifact_shows_its_quantization_and_readouts(tmp_path):
    from test_compile_artifact import make_checkpoint, small_spec as compile_spec
    from eprop_lava.compile import deploy
    from eprop_lava.compile.artifact import load_artifact
    from eprop_lava.compile.pipeline import compile_checkpoint

    ck = make_checkpoint(tmp_path, compile_spec("alif"))
    compile_checkpoint(ck, tmp_path / "art", target="loihi2")
    figs = plots.artifact_figures(tmp_path / "art", samples=4)
    assert set(figs) == {"quantization", "readouts", "confusion_fixed_point"}
    art = load_artifact(tmp_path / "art")
    _, ts = deploy.test_set(art.manifest["source"]["task"], int(art.manifest["source"]["seed"]), 4)
    y = deploy.fixed_run(art.net, ts).y[:, 0] / art.net.readout.y_scale
    ax = figs["readouts"].axes[0]
    fixed = [l for l in ax.get_lines() if l.get_label() == "fixed point"][0]
    np.testing.assert_array_equal(fixed.get_ydata(), y[:, 0])
    q = figs["quantization"]
    scale = {m["name"]: m["scale"] for m in art.manifest["quantization"]["matrices"]}
    pts = [l for l in q.axes[0].get_lines() if l.get_label() == "synapses"][0]
    name = q.axes[0].get_title().split(",")[0]
    np.testing.assert_array_equal(pts.get_ydata(), np.ravel(art.net.weights()[name]) / scale[name])
    paths = plots.plot_directory(tmp_path / "art")
    assert sorted(p.name for p in paths) == ["confusion_fixed_point.png", "quantization.png", "readouts.png"]
    from eprop_lava.cli import main

    assert main(["plot", str(tmp_path / "missing")]) == 2
