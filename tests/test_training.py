"""Trainer: resume equals uninterrupted, atomic checkpoints, overrides, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eprop_lava.cli import main, resolve_run
from eprop_lava.errors import CheckpointError, UserError
from eprop_lava.tasks.evidence import EvidenceAccumulation
from eprop_lava.training import TrainConfig, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


class ShortEvidence(EvidenceAccumulation):
    """The evidence task shrunk in time so a training test takes seconds."""

    def __init__(self):
        super().__init__(n_cues=3, cue_ms=20, spacing_ms=10, delay_ms=40, recall_ms=30)


def small_spec(task):
    spec = task.default_spec()
    layer = spec.layers[0]
    return spec.replace(layers=(layer.__class__(**{**layer.__dict__, "size": 20}),))


def test_evidence_task_structure():
    task = EvidenceAccumulation()
    assert task.steps == 2250 and task.n_inputs == 40
    rng = np.random.default_rng(0)
    batch = task.batch(rng, 200)
    assert batch.x.shape == (2250, 200, 40)
    assert set(np.unique(batch.x)) <= {0.0, 1.0}
    # labels balanced, and equal to the majority side of the cues
    assert 0.4 < batch.labels.mean() < 0.6
    left = batch.x[:1050, :, 0:10].sum(axis=(0, 2))
    right = batch.x[:1050, :, 10:20].sum(axis=(0, 2))
    agree = np.mean((right > left) == (batch.labels == 1))
    assert agree > 0.9  # Poisson noise can flip a few 4:3 trials' spike counts
    # recall cue population fires only in the last 150 ms; cues never after 1050 ms
    assert batch.x[:2100, :, 20:30].sum() == 0 and batch.x[2100:, :, 20:30].sum() > 0
    assert batch.x[1050:, :, 0:20].sum() == 0
    # loss window: the last 150 steps, weights summing to one per sample
    assert np.allclose(batch.mask.sum(0), 1.0) and np.all(batch.mask[:2100] == 0)
    # noise population ~10 Hz
    assert batch.x[:, :, 30:].mean() == pytest.approx(0.01, rel=0.1)


def test_task_determinism():
    task = EvidenceAccumulation()
    a = task.batch(np.random.default_rng([3, 1]), 4)
    b = task.batch(np.random.default_rng([3, 1]), 4)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)


def _config(**kw):
    base = dict(batch_size=4, iterations=6, validate_every=3, validation_batches=1, checkpoint_every=2,
                progress=False, seed=5, dtype="float64")
    base.update(kw)
    return TrainConfig(**base)


def test_resume_equals_uninterrupted(tmp_path):
    task = ShortEvidence()
    spec = small_spec(task)
    full = train(task, spec, _config(), tmp_path / "full", resume=False)
    # interrupted after 4 iterations, then resumed to 6
    train(task, spec, _config(iterations=4), tmp_path / "split", resume=False)
    resumed = train(task, spec, _config(), tmp_path / "split", resume=True)
    for k in full.params:
        np.testing.assert_array_equal(full.params[k], resumed.params[k])
    log_full = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    log_split = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(log_full) == strip(log_split)


def test_kill_9_then_resume_matches(tmp_path):
    """A real crash: the training process is killed with SIGKILL mid-run."""
    script = f"""
import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_training import ShortEvidence, small_spec, _config
from eprop_lava.training import train
task = ShortEvidence()
train(task, small_spec(task), _config(iterations=400, checkpoint_every=1), sys.argv[1], resume=True)
"""
    run_dir = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir)])
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run_dir / "checkpoint.npz").exists() and load_checkpoint(run_dir).iteration >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(run_dir).iteration
    assert 3 <= stopped_at < 400
    task = ShortEvidence()
    spec = small_spec(task)
    target = stopped_at + 3
    resumed = train(task, spec, _config(iterations=target, checkpoint_every=1), run_dir, resume=True)
    clean = train(task, spec, _config(iterations=target, checkpoint_every=1), tmp_path / "clean", resume=False)
    for k in clean.params:
        np.testing.assert_array_equal(clean.params[k], resumed.params[k])


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    task = ShortEvidence()
    train(task, small_spec(task), _config(iterations=2), tmp_path / "r", resume=False)
    path = tmp_path / "r" / "checkpoint.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    assert main(["eval", str(path)]) == 2


def test_a_file_that_is_not_a_checkpoint_or_run_directory_is_named(tmp_path, capsys):
    toml = tmp_path / "my.toml"
    toml.write_text('[train]\niterations = 3\n')
    assert main(["eval", str(toml)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"eprop-lava: error: checkpoint {toml} is not a checkpoint (.npz) file: it is not a zip archive")
    assert main(["plot", str(toml)]) == 2
    assert f"run directory {toml} is not a directory (plot takes" in capsys.readouterr().err


def test_overrides_and_config_file(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\nbatch_size = 8\n[spec.optimizer]\nlr = 0.001\n')
    task, spec, config = resolve_run("evidence", str(cfg), ["spec.layers.0.size=64", "train.iterations=7",
                                                           "spec.learning.variant=adaptive"])
    assert config.batch_size == 8 and config.iterations == 7
    assert spec.optimizer.lr == 0.001 and spec.layers[0].size == 64
    assert spec.learning.variant == "adaptive"
    assert spec.layers[0].params.v_th == 0.6   # untouched defaults survive the merge


@pytest.mark.parametrize("argv,message", [
    (["train", "nosuchtask"], "unknown task"),
    (["train", "evidence", "--set", "iterations"], "expected key=value"),
    (["train", "evidence", "--set", "train.batch_size=-1"], "train.batch_size"),
    (["train", "evidence", "--set", "spec.readout.kappa=2"], "readout.kappa"),
    (["train", "evidence", "--set", "spec.layers.5.size=3"], "no list index"),
    (["train", "evidence", "--config", "/nonexistent.toml"], "config file not found"),
    (["eval", "/nonexistent/checkpoint.npz"], "checkpoint not found"),
    (["plot", "/nonexistent"], "run directory not found"),
])
def test_user_mistakes_print_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_adaptive_feedback_follows_readout(tmp_path):
    task = ShortEvidence()
    spec = small_spec(task)
    spec = spec.replace(learning=spec.learning.__class__(variant="adaptive", adaptive_decay=0.01))
    from eprop_lava.engine.network import init_params

    b0 = init_params(spec)["feedback.b"]
    res = train(task, spec, _config(iterations=3), tmp_path / "a", resume=False)
    w0 = init_params(spec)["readout.w"]
    # Kolen-Pollack: B - B0 (decayed) tracks (W_out - W_out0)^T (decayed the same way)
    dB = res.params["feedback.b"] - b0 * (1 - 0.01) ** 3
    dW = res.params["readout.w"] - w0 * (1 - 0.01) ** 3
    np.testing.assert_allclose(dB, dW.T, atol=1e-12)


def test_resuming_a_finished_run_prints_valid_json(tmp_path, capsys):
    """A finished run resumed trains nothing: no seconds per iteration (null,
    not NaN, which strict JSON readers refuse)."""
    argv = ["train", "evidence", "--out", str(tmp_path / "r"), "--set", "train.iterations=1",
            "--set", "spec.layers.0.size=8", "--task-option", "n_cues=1", "--task-option", "delay_ms=10", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert first["seconds_per_iteration"] > 0 and again["seconds_per_iteration"] is None
    assert again["iterations"] == 1
