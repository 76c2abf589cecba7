"""The named conventions (spec.ConventionSpec) against hand-computed values,
autograd and torch's own Adam; presets, round trips, init params, given arrays."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient, rate_loss
from eprop_lava.engine.network import Batch, init_params, simulate
from eprop_lava.eprop.loss import bellec_rate_loss, bellec_rate_signal
from eprop_lava.eprop.optim import Optimizer
from eprop_lava.errors import UserError
from eprop_lava.spec import (
    CONVENTION_PRESETS, ConventionSpec, LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec,
    ReadoutSpec, RegularizationSpec, SpecError,
)
from eprop_lava.training import TrainConfig, load_init_params, train


def _one_neuron(conventions="eprop-lava", n_ref=0, v_th=100.0, tau_m=10.0, kappa=0.5):
    return NetworkSpec(n_inputs=1, layers=(LayerSpec(size=1, neuron="lif", recurrent=False,
                                                     params=NeuronParams(tau_m=tau_m, v_th=v_th, n_ref=n_ref)),),
                       readout=ReadoutSpec(n_outputs=1, kappa=kappa), loss="mse",
                       learning=LearningSpec(variant="symmetric"), regularization=RegularizationSpec(form="none"),
                       conventions=conventions)


def _params(w_in, w_out=1.0):
    return {"layers.0.w_in": np.array([[w_in]]), "readout.w": np.array([[w_out]]), "readout.b": np.zeros(1)}


@pytest.mark.parametrize("fused", [False, True])
def test_one_minus_alpha_input_scaling_hand_computed(fused):
    # v^t = alpha v^{t-1} + (1 - alpha) w x^t (TF LightLIF / NEST regular_spike_arrival=False), no spike
    # (v_th = 100), and the readout y^t = kappa y^{t-1} + (1 - kappa) v-free spikes: none, so y = 0.
    alpha = math.exp(-1 / 10)
    x = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    w = 2.0
    expected, v = [], 0.0
    for xt in x:
        v = alpha * v + (1 - alpha) * w * xt
        expected.append(v)
    # the same numbers written out: (1 - e^-0.1) 2 = 0.190325..., then alpha * that + 0.190325...
    assert expected[0] == pytest.approx(0.19032516392808096, rel=1e-14)
    assert expected[1] == pytest.approx(0.19032516392808096 * (1 + alpha), rel=1e-14)
    spec = _one_neuron("tf")
    batch = Batch(x=x[:, None, None], target=np.zeros((5, 1, 1)), mask=np.ones((5, 1)))
    traj = simulate(spec, _params(w), batch.x, make_ops("numpy", dtype="float64", fused=fused))
    v_th = spec.layers[0].params.v_th
    np.testing.assert_allclose(traj.records[0]["x"][:, 0, 0] + v_th, expected, rtol=0, atol=1e-13)
    # under the default there is no factor: v^t = alpha v^{t-1} + w x^t
    plain = simulate(_one_neuron(), _params(w), batch.x, make_ops("numpy", dtype="float64", fused=fused))
    assert plain.records[0]["x"][0, 0, 0] + v_th == pytest.approx(2.0, abs=1e-13)


def test_one_minus_kappa_readout_hand_computed():
    # a neuron that spikes every step it is free (v_th tiny, strong input); readout
    # y^t = kappa y^{t-1} + (1 - kappa) w_out z^t, kappa = 0.5, w_out = 3: z = 1, 1, 1 -> y = 1.5, 2.25, 2.625
    spec = _one_neuron(ConventionSpec(preset="tf", input_scaling="none"), v_th=0.1)
    x = np.ones((3, 1, 1))
    traj = simulate(spec, _params(10.0, 3.0), x, make_ops("numpy", dtype="float64"))
    np.testing.assert_array_equal(traj.z[0][:, 0, 0], [1, 1, 1])
    np.testing.assert_allclose(traj.y[:, 0, 0], [1.5, 2.25, 2.625], rtol=0, atol=1e-14)


@pytest.mark.parametrize("convention,n_ref,spike_steps", [
    ("blocked_steps", 3, [0, 4, 8]),     # 3 steps blocked after each spike
    ("t_ref_steps", 3, [0, 3, 6, 9]),    # TF/NEST t_ref = 3 steps blocks 2
    ("t_ref_steps", 5, [0, 5]),          # NEST t_ref = 5 ms blocks 4 steps
    ("t_ref_steps", 1, list(range(10))), # t_ref = 1 step blocks none
])
@pytest.mark.parametrize("fused", [False, True])
def test_refractory_count_conventions(convention, n_ref, spike_steps, fused):
    conv = ConventionSpec(refractory_count=convention)
    spec = _one_neuron(conv, n_ref=n_ref, v_th=0.1)
    traj = simulate(spec, _params(10.0), np.ones((10, 1, 1)), make_ops("numpy", dtype="float64", fused=fused))
    assert list(np.nonzero(traj.z[0][:, 0, 0])[0]) == spike_steps
    psi = traj.records[0]["psi"][:, 0, 0]
    blocked = [t for t in range(10) if not traj.records[0]["free"][t, 0, 0]]
    assert np.all(psi[blocked] == 0)


def test_surrogate_scale_gamma_over_v_th():
    # psi = (gamma / v_th) max(0, 1 - |v - v_th| / v_th): v = 0.3 (one input of 0.3), v_th = 0.6 -> 0.25 / 0.6
    spec = _one_neuron(ConventionSpec(surrogate_scale="gamma_over_v_th"), v_th=0.6)
    traj = simulate(spec, _params(0.3), np.ones((1, 1, 1)), make_ops("numpy", dtype="float64"))
    assert traj.records[0]["psi"][0, 0, 0] == pytest.approx(0.3 / 0.6 * 0.5, rel=1e-12)


def test_epsilon_hat_adam_hand_computed():
    # TF/NEST: step = lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps), eps = 1e-3 (large, so the forms differ).
    # t = 1, g = 0.5: m = 0.05, v = 2.5e-4, step size 0.1 sqrt(0.001) / 0.1 = 0.0316227766,
    #   dW = -0.0316227766 * 0.05 / (0.0158113883 + 0.001) = -0.0940516513
    # t = 2, g = -1: m = -0.055, v = 1.24975e-3, step size 0.1 sqrt(1 - 0.999^2) / (1 - 0.81)
    spec = OptimizerSpec(kind="adam", lr=0.1, beta1=0.9, beta2=0.999, epsilon=1e-3)
    opt = Optimizer(spec, "epsilon_hat")
    d1 = opt.deltas({"w": np.array([0.5])})["w"][0]
    d2 = opt.deltas({"w": np.array([-1.0])})["w"][0]
    assert d1 == pytest.approx(-0.0316227766016838 * 0.05 / (math.sqrt(2.5e-4) + 1e-3), rel=1e-12)
    assert d1 == pytest.approx(-0.09405165128480246, rel=1e-12)
    step2 = 0.1 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    assert d2 == pytest.approx(-step2 * -0.055 / (math.sqrt(1.24975e-3) + 1e-3), rel=1e-12)
    assert d2 == pytest.approx(0.03560324028188467, rel=1e-12)
    # the textbook form differs through eps only: -0.1 * 0.5 / (0.5 + 0.001)
    textbook = Optimizer(spec, "bias_corrected").deltas({"w": np.array([0.5])})["w"][0]
    assert textbook == pytest.approx(-0.1 * 0.5 / 0.501, rel=1e-12)


def test_bias_corrected_adam_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    opt = Optimizer(OptimizerSpec(kind="adam", lr=0.01, epsilon=1e-3), "bias_corrected")
    w = w0.copy()
    tw = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.Adam([tw], lr=0.01, betas=(0.9, 0.999), eps=1e-3)
    for g in grads:
        w = w + opt.deltas({"w": g})["w"]
        topt.zero_grad()
        tw.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_parameter_group_learning_rates():
    opt = Optimizer(OptimizerSpec(kind="sgd", lr=0.1, lr_scale={"readout.*": 0.5, "layers.*.w_rec": 0.0}))
    d = opt.deltas({"readout.w": np.array([1.0]), "readout.b": np.array([2.0]),
                    "layers.0.w_in": np.array([1.0]), "layers.0.w_rec": np.array([1.0])})
    assert d["readout.w"][0] == pytest.approx(-0.05) and d["readout.b"][0] == pytest.approx(-0.1)
    assert d["layers.0.w_in"][0] == pytest.approx(-0.1) and d["layers.0.w_rec"][0] == 0.0
    adam = Optimizer(OptimizerSpec(kind="adam", lr=0.1, lr_scale={"readout.w": 0.25}), "epsilon_hat")
    d = adam.deltas({"readout.w": np.array([1.0]), "layers.0.w_in": np.array([1.0])})
    assert d["readout.w"][0] == pytest.approx(0.25 * d["layers.0.w_in"][0], rel=1e-12)
    with pytest.raises(UserError, match="matches no parameter"):
        Optimizer(OptimizerSpec(lr_scale={"nothing.*": 2.0})).deltas({"readout.w": np.ones(1)})
    with pytest.raises(SpecError, match="lr_scale"):
        OptimizerSpec(lr_scale={"readout.*": -1.0}).validated("optimizer")


def test_per_sample_rate_regularizer_hand_computed():
    # 2 samples, 4 steps, 1 neuron: sample 0 spikes twice (f = 0.5 /ms), sample 1 never; f0 = 0.25 /ms, c = 2
    z = np.zeros((4, 2, 1))
    z[[0, 2], 0, 0] = 1.0
    # per sample: c ((0.5 - 0.25)^2 + (0 - 0.25)^2) = 2 * 0.125 = 0.25; batch: B c (0.25 - 0.25)^2 = 0
    assert bellec_rate_loss(z, 250.0, 2.0, 1.0, per_sample=True) == pytest.approx(0.25)
    assert bellec_rate_loss(z, 250.0, 2.0, 1.0) == pytest.approx(0.0)
    # dE/dz = 2 c (f_b - f0) / T = +-0.25 per sample
    np.testing.assert_allclose(bellec_rate_signal(z, 250.0, 2.0, 1.0, per_sample=True), [[0.25], [-0.25]])


def _small_spec(conventions, **kw):
    return NetworkSpec(n_inputs=4, layers=(LayerSpec(size=6, neuron="alif", weight_scale=3.0,
                                                     params=NeuronParams(v_th=0.5, n_ref=3, tau_a=200.0)),),
                       readout=ReadoutSpec(n_outputs=2), learning=LearningSpec(variant="symmetric"),
                       regularization=RegularizationSpec(form="bellec", coefficient=0.5), conventions=conventions,
                       seed=2, **kw)


def _small_batch(spec, B=3, T=60, seed=1):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, spec.n_inputs)) < 0.3).astype(float)
    labels = rng.integers(0, 2, B)
    target = np.zeros((T, B, 2))
    target[:, np.arange(B), labels] = 1.0
    mask = np.zeros((T, B))
    mask[T // 2:] = 1.0 / (T - T // 2)
    return Batch(x=x, target=target, mask=mask, labels=labels)


@pytest.mark.parametrize("preset", ["tf", "nest-bsshslm-2020", "nest-eprop"])
def test_eprop_equals_bptt_where_exact_under_presets(preset):
    # no recurrent weights, symmetric feedback, BPTT on e-prop's graph: e-prop is exact (verify's check 1),
    # here with the (1 - alpha) / (1 - kappa) factors, per-sample rates and the batch mean.
    spec = _small_spec(ConventionSpec(preset=preset, input_scaling="one_minus_alpha"))
    params = init_params(spec)
    params["layers.0.w_rec"][:] = 0.0
    batch = _small_batch(spec)
    loss_e, g_e, traj = eprop_gradient(spec, params, batch, make_ops("numpy", dtype="float64"))
    loss_b, g_b, _ = bptt_gradient(spec, params, batch, graph="eprop")
    assert float(np.mean(traj.z[0])) > 0.02
    assert float(loss_e) == pytest.approx(loss_b, rel=1e-12)
    for k in g_b:
        scale = np.abs(g_b[k]).max()
        assert scale > 0, k
        assert np.abs(g_e[k] - g_b[k]).max() <= 1e-9 * scale, k


def test_batch_mean_is_sum_over_batch_size():
    spec_sum = _small_spec("eprop-lava")
    spec_mean = _small_spec(ConventionSpec(batch_reduction="mean"))
    params = init_params(spec_sum)
    batch = _small_batch(spec_sum)
    l_s, g_s, traj = eprop_gradient(spec_sum, params, batch)
    l_m, g_m, _ = eprop_gradient(spec_mean, params, batch)
    assert float(l_m) == pytest.approx(float(l_s) / 3, rel=1e-12)
    assert float(rate_loss(spec_mean, traj, make_ops("numpy"))) > 0
    for k in g_s:
        np.testing.assert_allclose(g_m[k], g_s[k] / 3, rtol=1e-10, atol=1e-14)


def test_presets_and_round_trip():
    spec = _small_spec("tf")
    assert spec.conventions == ConventionSpec(preset="tf", **CONVENTION_PRESETS["tf"])
    assert spec.to_dict()["conventions"] == {"preset": "tf"}  # only what differs from the preset is written
    override = _small_spec({"preset": "tf", "input_scaling": "none"})
    assert override.to_dict()["conventions"] == {"preset": "tf", "input_scaling": "none"}
    for s in (spec, override, _small_spec("eprop-lava")):
        assert NetworkSpec.from_json(s.to_json()) == s
        assert NetworkSpec.from_toml(s.to_toml()) == s
    with pytest.raises(SpecError, match=r"conventions\.adam: unknown value 'kingma'"):
        _small_spec({"preset": "tf", "adam": "kingma"})
    with pytest.raises(SpecError, match=r"conventions\.preset"):
        _small_spec("pytorch")
    with pytest.raises(SpecError, match="input_scaling"):
        NetworkSpec(n_inputs=2, layers=(LayerSpec(size=3, neuron="izhikevich"),), conventions="tf")


def test_set_preset_on_the_command_line_changes_every_convention():
    from eprop_lava.cli import resolve_run

    _, spec, _ = resolve_run("evidence", None, ["spec.conventions.preset=tf"])
    assert spec.conventions == ConventionSpec(preset="tf")
    _, spec, _ = resolve_run("evidence", None, ["spec.conventions.preset=tf", "spec.conventions.adam=bias_corrected"])
    assert spec.conventions.adam == "bias_corrected" and spec.conventions.input_scaling == "one_minus_alpha"


def _arrays_file(tmp_path, S=6, T=40, n_in=5, K=2, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((S, T, n_in)) < 0.2).astype(np.float32)
    labels = rng.integers(0, K, S)
    target = np.zeros((S, T, K))
    target[np.arange(S), :, labels] = 1.0
    mask = np.zeros((S, T))
    mask[:, T // 2:] = 1.0 / (T - T // 2)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, target=target, mask=mask, labels=labels)
    return path, x, target, mask, labels


def test_train_on_given_arrays_and_initial_params(tmp_path):
    from eprop_lava.tasks import get_task

    path, x, target, mask, labels = _arrays_file(tmp_path)
    task = get_task("arrays", data=str(path), order="sequential")
    b = task.batch(np.random.default_rng(0), 4)
    np.testing.assert_array_equal(b.x, x[:4].transpose(1, 0, 2))
    np.testing.assert_array_equal(task.batch(np.random.default_rng(0), 4).labels, labels[[4, 5, 0, 1]])
    # weight_scale 60: the (1 - alpha) = 0.049 input needs ~20x the weights for the same drive
    spec = NetworkSpec(n_inputs=5, layers=(LayerSpec(size=8, neuron="lif", weight_scale=60.0),),
                       readout=ReadoutSpec(n_outputs=2), regularization=RegularizationSpec(form="bellec",
                                                                                          coefficient=0.5),
                       conventions="tf")
    init = {k: v * 1.5 for k, v in init_params(spec, 7).items() if k != "readout.b"}
    init_path = tmp_path / "init.npz"
    np.savez(init_path, **init)
    config = TrainConfig(task="arrays", task_options={"data": str(path), "order": "sequential"}, batch_size=3,
                         iterations=2, validate_every=2, validation_batches=1, progress=False, dtype="float64")
    result = train(get_task("arrays", data=str(path), order="sequential"), spec, config, tmp_path / "run",
                   init=init_path)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["init_params"] == str(init_path)
    # iteration 1's loss is computed from the given parameters on samples 0-2, independently here
    first = Batch(x=x[:3].transpose(1, 0, 2).astype(float), target=target[:3].transpose(1, 0, 2),
                  mask=mask[:3].T, labels=labels[:3])
    params = load_init_params(spec, init_path)
    np.testing.assert_array_equal(params["layers.0.w_in"], init["layers.0.w_in"])
    assert np.all(params["readout.b"] == 0)
    total, _, traj = eprop_gradient(spec, params, first, make_ops("numpy", dtype="float64"))
    assert traj.z[0].sum() > 10
    reg = float(rate_loss(spec, traj, make_ops("numpy", dtype="float64")))
    assert reg > 0
    assert rows[0]["loss"] == pytest.approx(float(total) - reg, rel=1e-9)   # tf: the logged loss is the task loss
    assert rows[0]["task_loss"] == rows[0]["loss"] and rows[0]["rate_loss"] == pytest.approx(reg, rel=1e-9)
    assert np.all(result.params["readout.b"] == 0)                         # untrained under tf
    assert not np.allclose(result.params["readout.w"], init["readout.w"])


def test_logged_loss_total_under_defaults(tmp_path):
    from eprop_lava.tasks import get_task

    path = _arrays_file(tmp_path)[0]
    spec = NetworkSpec(n_inputs=5, layers=(LayerSpec(size=8, neuron="lif", weight_scale=3.0),),
                       readout=ReadoutSpec(n_outputs=2),
                       regularization=RegularizationSpec(form="bellec", coefficient=0.5))
    config = TrainConfig(task="arrays", task_options={"data": str(path)}, batch_size=3, iterations=1,
                         validate_every=1, validation_batches=1, progress=False)
    train(get_task("arrays", data=str(path)), spec, config, tmp_path / "run")
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["rate_loss"] > 0
    assert row["loss"] == pytest.approx(row["task_loss"] + row["rate_loss"], rel=1e-12)


def test_init_params_errors(tmp_path):
    spec = NetworkSpec(n_inputs=5, layers=(LayerSpec(size=8, neuron="lif"),), readout=ReadoutSpec(n_outputs=2))
    good = init_params(spec)
    with pytest.raises(UserError, match="missing"):
        load_init_params(spec, {k: v for k, v in good.items() if k != "layers.0.w_in"})
    with pytest.raises(UserError, match=r"shape \(8, 4\)"):
        load_init_params(spec, dict(good, **{"layers.0.w_in": np.zeros((8, 4))}))
    with pytest.raises(UserError, match="unknown parameter 'layers.1.w_in'"):
        load_init_params(spec, dict(good, **{"layers.1.w_in": np.zeros((8, 4))}))
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "eprop_lava.cli", "train", "evidence", "--init-params", str(bad),
                           "--set", "train.iterations=1", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bad.npz" in proc.stderr and "Traceback" not in proc.stderr


def test_folding_the_conventions_keeps_the_forward_pass():
    # Paths with only the default dynamics (fixed point, Lava, NIR) get TF's factors folded into the weights.
    from eprop_lava.engine.network import fold_conventions

    spec = _small_spec("tf").replace(learning=LearningSpec(variant="random"))
    params = init_params(spec)
    params = {k: (v * 20 if k.startswith("layers.") else v) for k, v in params.items()}
    params["readout.b"] = np.array([0.3, -0.2])
    folded_spec, folded = fold_conventions(spec, params)
    assert folded_spec.conventions.input_scaling == "none" and folded_spec.conventions.adam == "epsilon_hat"
    assert folded_spec.layers[0].params.n_ref == 2
    x = _small_batch(spec, B=2, T=80).x
    ops = make_ops("numpy", dtype="float64")
    a, b = simulate(spec, params, x, ops), simulate(folded_spec, folded, x, ops)
    assert a.z[0].sum() > 20
    np.testing.assert_array_equal(a.z[0], b.z[0])
    np.testing.assert_allclose(b.y, a.y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(b.records[0]["psi"], a.records[0]["psi"], rtol=1e-12, atol=1e-13)
    assert fold_conventions(_small_spec("eprop-lava"), params)[1] is params


def test_teacher_student_study_bptt_on_eprop_graph_equals_symmetric_eprop(tmp_path):
    # The study's check column: autograd on e-prop's graph and the e-prop engine are two independent
    # computations of the same gradient, so their students must follow the same weights.
    from eprop_lava.studies.teacher_student import TeacherStudentStudy, run_study

    config = TeacherStudentStudy(iterations=3, starts=1, batch_size=2, duration_ms=100.0, eval_every=3,
                                 eval_batch=2, algorithms=("bptt_eprop_graph", "eprop_symmetric", "eprop_random"))
    summary = run_study(config, tmp_path)
    s = summary["sizes"]["2"]
    a = np.array(s["algorithms"]["bptt_eprop_graph"]["trajectory_start0"])
    b = np.array(s["algorithms"]["eprop_symmetric"]["trajectory_start0"])
    assert a.shape == (4, len(s["parameters"])) == (4, 15)   # w_in 2x4, w_rec 2x2, readout 1x2, bias 1
    assert np.abs(a[-1] - a[0]).max() > 1e-4                  # the weights moved
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert (tmp_path / "weights_n2.png").stat().st_size > 0 and (tmp_path / "summary.md").exists()


def test_arrays_task_without_data_names_the_option(capsys):
    from eprop_lava.cli import main

    assert main(["train", "arrays", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --data FILE.npz" in err[0]
