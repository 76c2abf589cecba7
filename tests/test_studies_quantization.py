"""Quantization study: config validation, sweep bookkeeping, resume, the
on-chip learning loop against the engine, knees and the command line."""

import json

import numpy as np
import pytest

from eprop_lava.cli import main
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.fixed import get_profile
from eprop_lava.studies import onchip, qat
from eprop_lava.studies.config import StudyConfig, StudyConfigError
from eprop_lava.studies.quantization import build_task_and_spec, knee, plan, run_study
from eprop_lava.studies.store import ResultStore, point_key

SHORT = {"n_cues": 3, "cue_ms": 20, "spacing_ms": 10, "delay_ms": 40, "recall_ms": 30}


def tiny(**changes) -> StudyConfig:
    data = {
        "task_options": SHORT, "spec": {"layers": [{"size": 10}]}, "seeds": [0],
        "float": {"iterations": 2, "batch_size": 4}, "test": {"batches": 1, "batch_size": 8},
        "ptq": {"profiles": ["loihi2"], "weight_bits": [2, 8], "roundings": ["nearest"], "scalings": ["mantissa"]},
        "qat": {"weight_bits": [2], "iterations": 1, "batch_size": 4},
        "onchip": {"batches": 1, "batch_size": 2, "float_optimizers": ["sgd"],
                   "vary": {"weight_bits": [3, 8], "trace_storage": ["neuron"]}},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return StudyConfig.from_dict(data)


# ----------------------------------------------------------------- config
@pytest.mark.parametrize("data, field", [
    ({"ptq": {"weight_bits": [2, 0]}}, "ptq.weight_bits[1]"),
    ({"ptq": {"scalings": ["log"]}}, "ptq.scalings[0]"),
    ({"onchip": {"vary": {"colour": [1]}}}, "onchip.vary.colour"),
    ({"onchip": {"vary": {"rounding": ["up"]}}}, "onchip.vary.rounding[0]"),
    ({"onchip": {"lr": -1}}, "onchip.lr"),
    ({"qat": {"iterationz": 3}}, "qat.iterationz"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"spec": {"timing": "bellec"}}, "spec.timing"),
    ({"bogus": 1}, "bogus"),
])
def test_config_errors_name_the_field(data, field):
    with pytest.raises(StudyConfigError) as exc:
        StudyConfig.from_dict(data)
    assert str(exc.value).startswith(field)


def test_a_config_file_error_names_the_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[train]\niterations = 3\n')
    with pytest.raises(StudyConfigError) as exc:
        StudyConfig.load(path)
    assert str(exc.value).startswith(f"study config {path}: train: unknown field")


def test_config_round_trip_and_file(tmp_path):
    cfg = tiny()
    assert StudyConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "study.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert StudyConfig.load(path) == cfg
    _, spec = build_task_and_spec(cfg)
    assert spec.timing == "loihi" and spec.reset == "zero" and spec.layers[0].size == 10


# ----------------------------------------------------------------- bookkeeping
def test_plan_counts_dedup_and_keys():
    points = plan(tiny())
    kinds = [p["kind"] for p in points]
    # float 1; ptq 2; qat 1; float_eprop 1; onchip base (w=8) + w=3 + neuron storage (w=8 dedups with base)
    assert kinds.count("float") == 1 and kinds.count("ptq") == 2 and kinds.count("qat") == 1
    assert kinds.count("float_eprop") == 1 and kinds.count("onchip") == 3
    assert kinds[0] == "float"
    keys = [point_key(p) for p in points]
    assert len(set(keys)) == len(keys)
    assert plan(tiny()) == points  # deterministic


def test_context_changes_only_dependent_keys():
    a = {point_key(p): p for p in plan(tiny(onchip={"modes": ["scratch", "finetune"]}))}
    b = {point_key(p): p for p in plan(tiny(onchip={"modes": ["scratch", "finetune"]}, float={"iterations": 3}))}
    same = set(a) & set(b)
    # more float training invalidates PTQ/QAT/fine-tuning, not training from scratch
    assert same and all(a[k].get("mode") == "scratch" for k in same)


def fake_compute(calls):
    def compute(point, config, out):
        calls.append(point_key(point))
        bits = point.get("weight_bits", 32)
        return {"metric_name": "error", "metric": 0.5 if bits <= 2 else 0.1, "memory_bits": float(bits + 1),
                "metric_before": 0.2, "seconds": 0.0}
    return compute


def test_resume_skips_finished_points(tmp_path):
    cfg = tiny(onchip={"modes": ["scratch", "finetune"]})
    n = len(plan(cfg))
    calls = []
    compute = fake_compute(calls)
    state = {"left": 4}

    def interrupted(point, config, out):
        if state["left"] == 0:
            raise KeyboardInterrupt
        state["left"] -= 1
        return compute(point, config, out)

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, tmp_path, progress=False, compute=interrupted)
    assert len(list((tmp_path / "points").glob("*.json"))) == 4
    first = list(calls)
    calls.clear()
    r = run_study(cfg, tmp_path, progress=False, compute=compute)
    assert r["skipped"] == 4 and r["computed"] == n - 4
    assert not set(first) & set(calls)  # nothing finished was recomputed
    calls.clear()
    r = run_study(cfg, tmp_path, progress=False, compute=compute)
    assert r["computed"] == 0 and calls == []
    # a damaged point file is recomputed, and only that one
    victim = ResultStore(tmp_path).path(plan(cfg)[1])
    victim.write_text("{not json")
    r = run_study(cfg, tmp_path, progress=False, compute=compute)
    assert r["computed"] == 1 and calls == [victim.stem]
    assert not list((tmp_path / "points").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_report_tables_and_knees(tmp_path):
    cfg = tiny(ptq={"weight_bits": [1, 2, 3, 8]})
    run_study(cfg, tmp_path, progress=False, compute=fake_compute([]))
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]
    assert summary["ptq_knees"] == {"loihi2/mantissa/nearest": 3}  # 0.5 error at <= 2 bits: collapse below 3
    assert summary["onchip_knees"]["finetune/loihi2"]["vs_own_widest"] == 3
    md = (tmp_path / "summary.md").read_text()
    assert "| loihi2 | mantissa | nearest |" in md and "knee" in md
    csv_rows = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + len(plan(cfg))
    assert (tmp_path / "plots" / "accuracy_vs_bits.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "memory_vs_accuracy.png").stat().st_size > 1000


def test_knee_definition():
    curve = {1: 0.5, 2: 0.52, 3: 0.8, 4: 0.88, 8: 0.9}
    assert knee(curve, 0.9, 0.05) == 4
    assert knee(curve, 0.9, 0.15) == 3
    assert knee({4: 0.5, 8: 0.6}, 0.9, 0.05) is None


# ----------------------------------------------------------------- numerics
def _small_net():
    cfg = tiny()
    task, spec = build_task_and_spec(cfg)
    params = init_params(spec, 0)
    return task, spec, params


def test_per_synapse_loop_equals_engine():
    task, spec, params = _small_net()
    b = task.batch(np.random.default_rng(1), 3)
    a = fe.quantize(spec, params, "loihi2", lr=0.05)
    c = a.copy()
    fe.simulate(a, b.x, b.target, b.mask, learn=True, rngs=fe.update_rngs(a))
    onchip.learn_batch(c, b.x, b.target, b.mask, fe.update_rngs(c), "synapse")
    start = fe.quantize(spec, params, "loihi2").weights()
    changed = 0
    for k, w in a.weights().items():
        np.testing.assert_array_equal(w, c.weights()[k])
        changed += int(np.abs(w - start[k]).sum())
    assert changed > 0


def test_per_neuron_traces_learn_with_less_memory():
    task, spec, params = _small_net()
    b = task.batch(np.random.default_rng(1), 3)
    net = fe.quantize(spec, params, "loihi2", lr=0.05)
    onchip.per_neuron_learning_rates(net, 0.05)
    start = net.weights()
    onchip.learn_batch(net, b.x, b.target, b.mask, fe.update_rngs(net), "neuron")
    assert np.abs(net.weights()["layers.0.w_in"] - start["layers.0.w_in"]).sum() > 0
    assert np.all(np.diag(net.weights()["layers.0.w_rec"]) == 0)
    prof = get_profile("loihi2")
    per_syn = onchip.memory_bits_per_synapse(spec, prof, True, "synapse")
    per_neuron = onchip.memory_bits_per_synapse(spec, prof, True, "neuron")
    assert onchip.memory_bits_per_synapse(spec, prof, False) == 9.0
    assert 9.0 < per_neuron < per_syn


def test_fake_quantize_matches_quantizer_grid_and_stochastic_rounding_is_unbiased():
    _, spec, params = _small_net()
    prof = get_profile("loihi2", weight_bits=3)
    net = fe.quantize(spec, params, prof)
    fq = qat.fake_quantize(spec, params, prof)
    L = net.layers[0]
    np.testing.assert_allclose(fq["layers.0.w_in"] * L.w_scale, L.w_in, atol=1e-9)
    draws = np.mean([qat.stochastic_requantize(net, params, np.random.default_rng(s)).layers[0].w_in
                     for s in range(300)], axis=0)
    exact = np.clip(params["layers.0.w_in"] * L.w_scale, *prof.weight_range)
    assert np.abs(draws - exact).mean() < 0.05


def test_exponent_scaling_keeps_thresholds_and_coarsens_only_weights():
    _, spec, params = _small_net()
    p8 = get_profile("loihi2")
    ref = fe.quantize(spec, params, p8)
    same = qat.ptq_network(spec, params, p8, "nearest", "exponent")
    for k, w in ref.weights().items():
        np.testing.assert_array_equal(w, same.weights()[k])  # 8 bits: k = 0, the reference quantizer
    p3 = get_profile("loihi2", weight_bits=3)
    mant = qat.ptq_network(spec, params, p3, "nearest", "mantissa")
    expo = qat.ptq_network(spec, params, p3, "nearest", "exponent")
    L, M = expo.layers[0], mant.layers[0]
    assert L.weight_exp == 5 and M.weight_exp == 0
    assert np.array_equal(L.neuron.vth, ref.layers[0].neuron.vth)  # threshold resolution of 8-bit weights
    assert int(M.neuron.vth) < int(L.neuron.vth)
    lo, hi = p3.weight_range
    for w in (L.w_in, L.w_rec, expo.readout.w):
        assert w.min() >= lo and w.max() <= hi
    # the float grid QAT trains on is the one the network holds
    fq = qat.fake_quantize(spec, params, p3, "exponent")
    np.testing.assert_allclose(fq["layers.0.w_in"] * L.w_scale / 2 ** 5, L.w_in, atol=1e-9)


def test_real_tiny_study_end_to_end(tmp_path):
    cfg = tiny(qat={"enabled": False}, onchip={"vary": {"trace_storage": ["neuron"], "trace_bits": [3]}})
    r = run_study(cfg, tmp_path, progress=False)
    assert r["computed"] == len(plan(cfg))
    recs = list(ResultStore(tmp_path).records())
    assert {x["kind"] for x in recs} == {"float", "ptq", "onchip", "float_eprop"}
    assert all(0.0 <= x["metric"] <= 1.0 for x in recs)
    for x in recs:  # the engine's counters of every fixed-point point, over all test steps
        if x["kind"] in ("ptq", "onchip"):
            layer = x["saturation"]["inference"]["layers.0"]
            assert layer["of"] > 0 and x["v_saturated"] <= layer["of"]
        if x["kind"] == "onchip":
            assert x["saturation"]["learning"]["readout"]["w"]["of"] > 0 and x["weights_clipped"] >= 0
    assert (tmp_path / "float" / "seed0" / "checkpoint.npz").is_file()
    again = run_study(cfg, tmp_path, progress=False)
    assert again["computed"] == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ptq]\nweight_bits = [1, 99]\n")
    assert main(["study", "quantization", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ptq.weight_bits[1]" in err[0]
    assert main(["study", "quantization", "--config", str(tmp_path / "missing.toml"), "--out", "x"]) == 2
