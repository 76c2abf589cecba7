"""The round trip train -> compile -> run scores a network on the task it was
trained on: the recorded task name and options (a speech run's data
directory, a shortened evidence task), the test split, the best checkpoint.

Each check rebuilds the task by hand from its constructor and compares the
numbers the pipeline reports with that task's own metric on its own batch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eprop_lava import compile_checkpoint, configure, load_checkpoint, run_artifact, train
from eprop_lava.cli import main
from eprop_lava.tasks import get_task
from eprop_lava.tasks.evidence import EvidenceAccumulation
from eprop_lava.training import forward_outputs, held_out, select_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.iterations=4", "train.validate_every=1", "train.batch_size=4", "train.validation_batches=1",
         "train.progress=false", "spec.timing=loihi", "spec.reset=zero"]
SAMPLES = 4


def _hand_float_metric(task, ck, samples: int) -> tuple[float, int]:
    """The float metric on the hand-built task's test batch (rng [seed, 3], as eval)."""
    batch = held_out(task, "test").batch(np.random.default_rng([ck.config.seed, 3]), samples)
    y, _ = forward_outputs(ck.spec, ck.params, batch)
    return float(task.metric(np.asarray(y, dtype=np.float64), batch)), int(batch.x.shape[0])


def _round_trip(tmp_path, task_name: str, options: dict):
    run_dir = tmp_path / task_name
    train({"train": {"task": task_name, "task_options": options}}, run_dir, overrides=SMALL)
    summary = compile_checkpoint(run_dir, tmp_path / f"{task_name}-loihi2")
    result = run_artifact(tmp_path / f"{task_name}-loihi2", samples=SAMPLES, lava=False)
    return run_dir, summary, result


GENERATED = {
    "evidence": {"n_cues": 3, "delay_ms": 100},
    "pattern": {"duration_ms": 200.0},
    "store_recall": {"max_delay": 2},
    "teacher_student": {},
}


@pytest.mark.parametrize("task_name", sorted(GENERATED))
def test_generated_task_round_trip(tmp_path, task_name):
    options = GENERATED[task_name]
    run_dir, summary, result = _round_trip(tmp_path, task_name, options)
    ck = load_checkpoint(select_checkpoint(run_dir)[0])
    assert ck.config.task == task_name and ck.config.task_options == options
    expected, steps = _hand_float_metric(get_task(task_name, **options), ck, SAMPLES)
    m = result["metric"]
    assert result["steps_per_sample"] == steps
    assert result[f"float_{m}"] == pytest.approx(expected, abs=1e-12)
    assert np.isfinite(result[f"fixed_{m}"]) and result[f"fixed_{m}"] >= 0
    assert summary["omitted"] == [] and summary["energy_per_step_nj"] > 0


def test_non_default_task_options_are_scored_on_their_own_task(tmp_path):
    """Evidence with 5 cues and a 200 ms delay: 5 x (100 + 50) + 200 + 150 =
    1100 steps per sample, not the default task's 2250."""
    options = {"n_cues": 5, "delay_ms": 200}
    run_dir, _, result = _round_trip(tmp_path, "evidence", options)
    assert EvidenceAccumulation().steps == 2250
    assert result["steps_per_sample"] == 5 * (100 + 50) + 200 + 150 == 1100
    ck = load_checkpoint(select_checkpoint(run_dir)[0])
    expected, _ = _hand_float_metric(EvidenceAccumulation(n_cues=5, delay_ms=200), ck, SAMPLES)
    assert result["float_error"] == pytest.approx(expected, abs=1e-12)
    # eval rebuilds the same task: its test batches have the short length too
    report = run_eval_json(run_dir, batches=1)
    assert report["task_options"] == options
    test_task = EvidenceAccumulation(n_cues=5, delay_ms=200)
    batch = test_task.batch(np.random.default_rng([ck.config.seed, 3]), ck.config.batch_size)
    y, _ = forward_outputs(ck.spec, ck.params, batch)
    assert report["test_error"] == pytest.approx(test_task.metric(np.asarray(y, np.float64), batch), abs=1e-12)


def run_eval_json(run_dir, batches: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "eprop_lava.cli", "eval", str(run_dir), "--json",
                          "--batches", str(batches)], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def test_run_directory_gives_the_best_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "ev"
    train({"train": {"task": "evidence", "task_options": {"n_cues": 3, "delay_ms": 100}}}, run_dir,
          overrides=[*SMALL, "train.iterations=6", "train.batch_size=8"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["val_error"], r["iteration"]) for r in rows if "val_error" in r]
    best_value = min(v for v, _ in vals)
    best_iteration = min(i for v, i in vals if v == best_value)   # the first to reach it (strict improvement)
    path, note = select_checkpoint(run_dir)
    assert path.name == "best.npz" and load_checkpoint(path).iteration == best_iteration
    assert f"iteration {best_iteration}" in note and "checkpoint.npz, is at iteration 6" in note
    assert main(["eval", str(run_dir), "--batches", "1"]) == 0
    err = capsys.readouterr().err
    assert "best.npz" in err and f"validation error {best_value:.4g}" in err
    (run_dir / "best.npz").unlink()
    path, note = select_checkpoint(run_dir)
    assert path.name == "checkpoint.npz" and "kept no best.npz" in note


def test_compile_refuses_bellec_timing_with_a_usable_suggestion(tmp_path, capsys):
    run_dir = tmp_path / "bellec"
    train({"train": {"task": "evidence", "task_options": {"n_cues": 3, "delay_ms": 100}}}, run_dir,
          overrides=["train.iterations=1", "train.batch_size=2", "train.validation_batches=1",
                     "train.progress=false"])
    assert main(["compile", str(run_dir), "--out", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--loihi-timing" in err and "--set spec.timing=loihi --set spec.reset=zero" in err
    assert "docs/lava_loihi.md" in err and (ROOT / "docs" / "lava_loihi.md").is_file()
    # the suggested form of the override is accepted as written
    assert main(["compile", str(run_dir), "--loihi-timing", "--out", str(tmp_path / "art")]) == 0


def _speech_round_trip(tmp_path, task_name, options):
    run_dir, summary, result = _round_trip(tmp_path, task_name, options)
    ck = load_checkpoint(select_checkpoint(run_dir)[0])
    assert ck.config.task_options == options
    expected, steps = _hand_float_metric(get_task(task_name, **options), ck, SAMPLES)
    assert result["steps_per_sample"] == steps
    assert result["float_error"] == pytest.approx(expected, abs=1e-12)
    # MFCC inputs are not spikes: the fixed-point engine, Lava and the energy estimate say so
    assert "0/1 input spikes" in result["fixed_skipped"] and "skipped" in result["lava"]
    assert [g["section"] for g in summary["omitted"]] == ["activity and energy/latency estimate"]
    assert "Left out: activity and energy/latency estimate" in (tmp_path / f"{task_name}-loihi2" /
                                                               "report.md").read_text()


def test_speech_phones_round_trip_on_a_timit_layout(tmp_path):
    pytest.importorskip("librosa")
    from eprop_lava.tasks.speech.fixtures import make_timit_fixture

    timit = make_timit_fixture(tmp_path / "timit")
    _speech_round_trip(tmp_path, "speech_phones", {"data": str(timit), "require_complete": False})


def test_speech_keywords_round_trip_on_a_generated_corpus(tmp_path):
    pytest.importorskip("librosa")
    from eprop_lava.tasks.speech import espeak

    if not espeak.available():
        pytest.skip("espeakng-loader is not installed")
    from eprop_lava.tasks.speech.corpus import CorpusOptions, build_corpus

    corpus = build_corpus(tmp_path / "corpus", CorpusOptions.small()).root
    _speech_round_trip(tmp_path, "speech_keywords", {"data": str(corpus)})


def test_train_records_the_data_directory_absolute(tmp_path, monkeypatch):
    """--data given relative to the working directory is recorded absolute,
    so eval started elsewhere finds the same corpus."""
    pytest.importorskip("librosa")
    from eprop_lava.tasks.speech.fixtures import make_timit_fixture

    make_timit_fixture(tmp_path / "timit")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "speech_phones", "--data", "timit", "--task-option", "require_complete=false",
                 "--out", "run", *[a for s in SMALL for a in ("--set", s)]]) == 0
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert ck.config.task_options["data"] == str((tmp_path / "timit").resolve())
    monkeypatch.chdir(ROOT)
    assert main(["eval", str(tmp_path / "run"), "--batches", "1"]) == 0
    # the same through a config file's [train.task_options] and the Python API
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[train]\ntask = "speech_phones"\n'
                                     '[train.task_options]\ndata = "timit"\nrequire_complete = false\n')
    _, _, config = configure(tmp_path / "c.toml")
    assert config.task_options["data"] == str((tmp_path / "timit").resolve())


def test_quantization_study_records_its_task_options(tmp_path):
    """The study's float networks are trained, and recorded, on the study's task options."""
    from eprop_lava.studies.config import StudyConfig
    from eprop_lava.studies.quantization import _float_network, build_task_and_spec

    config = StudyConfig.load(ROOT / "examples" / "quantization_small.toml")
    task, spec = build_task_and_spec(config)
    _float_network(config, 0, tmp_path, task, spec)
    ck = load_checkpoint(tmp_path / "float" / "seed0")
    assert ck.config.task_options == dict(config.task_options) == {
        "n_cues": 3, "cue_ms": 20, "spacing_ms": 10, "delay_ms": 40, "recall_ms": 30}
    assert get_task("evidence", **ck.config.task_options).steps == 3 * (20 + 10) + 40 + 30
