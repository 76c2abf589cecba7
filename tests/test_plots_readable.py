"""Figures a newcomer sees after the demo and ``eprop-lava plot``: each
property is checked on the figure's artists or its rendered pixels against
values computed here (not by the plotting code): the readout's core is drawn
large enough to see, legends sit outside the data, the quantization error
axis spans the rounding errors, and a run's confusion matrix counts the very
samples whose error ``eprop-lava eval`` reports."""

import io

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from eprop_lava import plots
from eprop_lava.compile.mapping import map_network
from eprop_lava.tasks import get_task
from test_plots import SHORT, short_task, small_network


def rendered(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def pixels(fig, dpi=110):
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(plots.figure_png(fig, dpi=dpi)))[..., :3]


def test_block_shares_by_hand():
    np.testing.assert_allclose(plots.block_shares([100, 2]), [0.8, 0.2])       # readout raised to the floor
    np.testing.assert_allclose(plots.block_shares([50, 50]), [0.5, 0.5])       # proportional when large
    np.testing.assert_allclose(plots.block_shares([300, 100, 4]), [0.6, 0.2, 0.2])
    np.testing.assert_allclose(plots.block_shares([1] * 6), [1 / 6] * 6)


def test_core_map_shows_the_readout_on_its_core():
    spec = get_task("evidence").default_spec().replace(timing="loihi", reset="zero")
    mapping = map_network(spec, "loihi2")
    fig = plots.core_map(mapping)
    grid_ax = fig.axes[0]
    patches = {p.get_gid(): p for p in grid_ax.patches if p.get_gid()}
    readout_cores = mapping.layers["readout"]["cores"]
    assert readout_cores and {f"readout@{c}" for c in readout_cores} <= set(patches)
    for pop, info in mapping.layers.items():
        for c in info["cores"]:
            assert patches[f"{pop}@{c}"].get_width() >= 0.9 * plots.MIN_BLOCK_SHARE - 1e-12
    # in the rendered image: pixels of the readout's colour (tab10 orange, solid or pale over the grey cell)
    img = pixels(fig)
    orange = np.array(matplotlib.colormaps["tab10"](1)[:3])
    pale = 0.35 * orange + 0.65 * np.array([0xee, 0xee, 0xee]) / 255
    close = lambda c: np.all(np.abs(img - c) < 0.03, axis=-1)         # noqa: E731
    h, w = img.shape[:2]
    in_grid = (close(orange) | close(pale))[: int(0.85 * h), : w // 3]  # the chip panel, above the legend
    assert in_grid.sum() > 150, in_grid.sum()                          # a 2-neuron sliver of the old map: < 50
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "readout: 2 neurons, core 0" in legend and "layers.0: 100 neurons, core 0" in legend


def test_core_map_of_a_network_on_many_cores():
    spec = small_network(short_task(), size=1500)
    mapping = map_network(spec, "loihi1")
    assert mapping.n_cores > 1
    fig = plots.core_map(mapping)
    gids = {p.get_gid() for p in fig.axes[0].patches if p.get_gid()}
    expected = {f"{pop}@{c}" for pop, info in mapping.layers.items() for c in info["cores"]}
    assert gids == expected


def test_weight_histogram_legends_do_not_cover_the_data():
    rng = np.random.default_rng(0)
    before = {"layers.0.w_in": rng.normal(size=(40, 100)), "readout.w": rng.normal(size=(100, 2))}
    after = {k: v * 1.1 for k, v in before.items()}
    fig = plots.weight_histograms(before, after)
    r = rendered(fig)
    fig_box = fig.bbox
    for ax in fig.axes:
        leg = ax.get_legend().get_window_extent(r)
        assert not leg.overlaps(ax.get_window_extent(r)), ax.get_title()
        assert fig_box.x0 <= leg.x0 and leg.x1 <= fig_box.x1 and fig_box.y0 <= leg.y0   # not cut off


def test_firing_rate_legend_does_not_cover_the_bars():
    spec = small_network(short_task(), size=12)
    rng = np.random.default_rng(3)
    z = (rng.random((200, 2, 12)) < np.linspace(0.001, 0.05, 12)).astype(float)
    fig = plots.firing_rates(spec, [z], target_hz=10.0)
    r = rendered(fig)
    ax = fig.axes[0]
    leg = ax.get_legend().get_window_extent(r)
    assert not leg.overlaps(ax.get_window_extent(r))
    assert fig.bbox.y0 <= leg.y0 and leg.x0 >= fig.bbox.x0 and leg.x1 <= fig.bbox.x1


def test_quantization_error_axis_spans_the_rounding_errors():
    rng = np.random.default_rng(1)
    step = 0.01
    w = rng.uniform(-1, 1, size=500)
    q = np.round(w / step) * step
    w[:3] = [1.6, 1.8, -1.7]                                             # outside the range: clipped to +-1
    q[:3] = [1.0, 1.0, -1.0]
    fig = plots.quantization({"m": w}, {"m": q}, {"m": 8}, {"m": step})
    bottom = fig.axes[1]
    lo, hi = bottom.get_xlim()
    assert -1.2 * step / 2 <= lo < -step / 2 and step / 2 < hi <= 1.2 * step / 2
    counted = sum(p.get_height() for p in bottom.patches)
    assert counted == 497                                               # every synapse but the 3 clipped
    assert bottom.get_title().endswith(", 3 clipped")
    note = " ".join(t.get_text() for t in bottom.texts)
    assert "3 clipped, off scale" in note and "error -0.8 to 0.7" in note         # q - w: -0.6, -0.8, 0.7


def test_run_confusion_counts_the_samples_eval_scores(tmp_path):
    from eprop_lava.api import evaluate
    from eprop_lava.training import TrainConfig, train

    task = short_task()
    spec = small_network(task, size=20)
    config = TrainConfig(task="evidence", task_options=SHORT, batch_size=4, iterations=3, validate_every=1,
                         validation_batches=1, checkpoint_every=1, progress=False, seed=2)
    train(task, spec, config, tmp_path / "run", resume=False)
    for batches in (8, 3):
        fig = plots.run_confusion(tmp_path / "run", batches=batches)
        ax = fig.axes[0]
        counts = np.array([[int(t.get_text()) for t in ax.texts[i * 2:(i + 1) * 2]] for i in range(2)])
        report = evaluate(tmp_path / "run", batches)
        assert counts.sum() == batches * 4
        assert (counts.sum() - np.trace(counts)) / counts.sum() == report["test_error"]
        title = ax.get_title()
        assert f"{batches} batches x 4, rng [2, 3]" in title and report["checkpoint"].split("/")[-1] in title
    # the figure plot_run writes is the eval default
    figs = plots.run_figures(tmp_path / "run")
    default = evaluate(tmp_path / "run")
    assert f"{default['test_batches']} batches x 4" in figs["confusion"].axes[0].get_title()


def test_study_plot_names_the_float_band(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from eprop_lava.studies import quantization

    summary = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                          / "quantization_evidence.json").read_text())["summary"]
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "save_figure", keep)
    quantization.plot_report(summary, tmp_path)
    ax = figs[0].axes[0]
    assert "float ± std over seeds" in [t.get_text() for t in ax.get_legend().get_texts()]
    band = [p for p in ax.patches if p.get_label() == "float ± std over seeds"][0]
    mean, std = summary["float"]["score_mean"], summary["float"]["score_std"]   # axhspan: y in data units
    np.testing.assert_allclose([band.get_y(), band.get_y() + band.get_height()], [mean - std, mean + std])
