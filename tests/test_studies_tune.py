"""tune: storage strings, sampler fallback without torch, default-vs-best
summary, and two worker processes sharing one storage."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from eprop_lava.errors import UserError  # noqa: E402
from eprop_lava.studies import tune  # noqa: E402
from eprop_lava.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"n_cues": 3, "cue_ms": 20, "spacing_ms": 10, "delay_ms": 40, "recall_ms": 30}
SHORT_ARGS = [a for k, v in SHORT.items() for a in ("--task-option", f"{k}={v}")]


def test_missing_optuna_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(UserError, match="pip install"):
        tune.require_optuna()


def test_storage_strings(tmp_path):
    from optuna.storages import JournalStorage, RDBStorage

    s, name = tune.resolve_storage(None, tmp_path / "out")
    assert isinstance(s, JournalStorage) and name == f"journal:{tmp_path / 'out' / 'tune.journal'}"
    s, name = tune.resolve_storage(str(tmp_path / "a" / "study.db"), tmp_path)
    assert isinstance(s, RDBStorage) and name == f"sqlite:///{tmp_path / 'a' / 'study.db'}"
    s, _ = tune.resolve_storage(f"sqlite:///{tmp_path / 'b.db'}", tmp_path)
    assert isinstance(s, RDBStorage)
    s, _ = tune.resolve_storage(f"journal:{tmp_path / 'j.log'}", tmp_path)
    assert isinstance(s, JournalStorage)
    with pytest.raises(UserError):
        tune.resolve_storage("nosuchdialect://host/db", tmp_path)


def test_sampler_falls_back_to_tpe_without_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    notices = []
    sampler, name = tune.make_sampler("auto", 0, notice=notices.append)
    assert name == "tpe" and isinstance(sampler, optuna.samplers.TPESampler)
    assert len(notices) == 1 and "torch" in notices[0] and "TPE" in notices[0]
    with pytest.raises(UserError, match="torch"):
        tune.make_sampler("gp", 0, notice=notices.append)


@pytest.mark.skipif(not tune.has_gp_dependencies(), reason="needs torch and scipy")
def test_gp_sampler_when_torch_present():
    sampler, name = tune.make_sampler("auto", 0, notice=lambda m: None)
    assert name == "gp" and isinstance(sampler, optuna.samplers.GPSampler)


def test_default_configuration_lies_in_the_space_and_rebuilds_the_spec():
    task = get_task("evidence")
    params = tune.default_params(task)
    spec = tune.spec_for(task, params)
    assert spec.to_dict() == task.default_spec().to_dict()
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    assert tune.suggest(trial) == params


def test_tune_records_default_and_best(tmp_path):
    cfg = tune.TuneConfig(task="evidence", trials=2, out=str(tmp_path), iterations=1, batch_size=4,
                          validation_batches=1, sampler="tpe", sampler_seed=0, task_options=SHORT, repeats=2)
    summary = tune.run_tune(cfg, log=lambda m: None)
    assert summary["trials_complete"] == 2 and summary["default"]["number"] == 0
    assert sorted(p.name for p in (tmp_path / "trials" / "evidence-tune-0000").iterdir()) == ["seed0", "seed1"]
    assert summary["best"]["value"] <= summary["default"]["value"]
    saved = json.loads((tmp_path / "evidence-tune-summary.json").read_text())
    assert saved["default"] == summary["default"]
    # rerunning with another budget under the same study name is refused
    with pytest.raises(UserError, match="another task or budget"):
        tune.run_tune(tune.TuneConfig(**{**cfg.__dict__, "iterations": 2}), log=lambda m: None)


@pytest.mark.parametrize("storage", ["shared.journal", "shared.db"])
def test_two_workers_share_one_storage(tmp_path, storage):
    # the storage outside --out: a second command starting while the first has
    # written only the storage file would find --out not yet a tune output
    store = tmp_path / "store" / storage
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "eprop_lava.cli", "tune", "evidence", "--trials", "2", "--iterations", "1",
           "--batch-size", "4", "--validation-batches", "1", "--storage", str(store), "--study-name", "shared",
           "--out", str(out_dir), "--sampler", "tpe", *SHORT_ARGS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd + ["--sampler-seed", str(i)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    storage_obj, _ = tune.resolve_storage(str(store), tmp_path)
    study = optuna.load_study(study_name="shared", storage=storage_obj)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4  # 2 trials from each worker, one study
    assert len({t.number for t in complete}) == 4
    assert len(list((out_dir / "trials").glob("shared-*/seed0"))) == 4


def test_core_space_samples_five_options_and_keeps_defaults():
    optuna = pytest.importorskip("optuna")
    from eprop_lava.studies.tune import OPTIONS, SPACES, default_params, suggest
    from eprop_lava.tasks import get_task

    task = get_task("evidence")
    defaults = default_params(task)
    trial = optuna.create_study().ask()
    params = suggest(trial, "core", defaults)
    assert set(trial.params) == set(SPACES["core"]) and set(params) == set(OPTIONS)
    for name in set(OPTIONS) - set(SPACES["core"]):
        assert params[name] == defaults[name]
    with pytest.raises(ValueError, match="no default"):
        suggest(optuna.create_study().ask(), "core", {})


def test_confirm_retrains_default_and_best_on_unseen_seeds(tmp_path):
    cfg = tune.TuneConfig(task="evidence", trials=2, out=str(tmp_path), iterations=1, batch_size=4,
                          validation_batches=1, sampler="random", sampler_seed=0, task_options=SHORT, repeats=2,
                          confirm=2, space="core")
    summary = tune.run_tune(cfg, log=lambda m: None)
    c = summary["confirmation"]
    assert c["seeds"] == [2, 3]  # after the search's seeds 0 and 1
    for which in ("default", "best"):
        assert len(c[which]["values"]) == 2
        assert c[which]["mean"] == pytest.approx(sum(c[which]["values"]) / 2)
        assert (tmp_path / "trials" / f"confirm-evidence-tune-{which}" / "seed3").is_dir()
    assert c["best_beats_default"] == (c["best"]["mean"] < c["default"]["mean"])
    # trials=0 confirms an existing study without new trials
    again = tune.run_tune(tune.TuneConfig(**{**cfg.__dict__, "trials": 0}), log=lambda m: None)
    assert again["trials_total"] == 2 and again["confirmation"]["default"]["values"] == c["default"]["values"]
    with pytest.raises(UserError, match="nothing to do"):
        tune.TuneConfig(trials=0).validated()


def test_workers_option_runs_exactly_the_trials_in_two_processes(tmp_path):
    """--workers 2 on SQLite (no server needed): exactly --trials trials in
    all, numbered 0..N-1, from two processes; read back with sqlite3."""
    import sqlite3

    store = tmp_path / "w.db"
    cmd = [sys.executable, "-m", "eprop_lava.cli", "tune", "evidence", "--trials", "3", "--workers", "2",
           "--iterations", "1", "--batch-size", "4", "--validation-batches", "1", "--storage", str(store),
           "--study-name", "w", "--out", str(tmp_path), "--sampler", "random", "--sampler-seed", "0", "--json",
           *SHORT_ARGS]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(store) as db:
        states = db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        pids = {v for (v,) in db.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'worker_pid'")}
        best = db.execute("SELECT min(value) FROM trial_values").fetchone()[0]
        configs = db.execute("SELECT group_concat(param_name || '=' || param_value) FROM "
                             "(SELECT * FROM trial_params ORDER BY param_name) GROUP BY trial_id").fetchall()
    # (two workers once both took the enqueued default, trial 0: the count and ask() now share a lock)
    assert states == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert len(configs) == 3 and len(set(configs)) == 3
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert json.loads(done.stdout)["best"]["value"] == best
    with pytest.raises(UserError, match="workers"):
        tune.TuneConfig(workers=0).validated()


def test_storage_url_password_is_hidden_and_threads_are_shared_out(monkeypatch):
    assert tune.hide_password("postgresql://ann:pa55@db.example:5432/tune") == "postgresql://ann:***@db.example:5432/tune"
    assert tune.hide_password("postgresql+psycopg2://ann:a%40b@h/t?sslmode=require") == \
        "postgresql+psycopg2://ann:***@h/t?sslmode=require"
    for plain in ("postgresql://ann@h/t", "postgresql://@/t?host=/tmp/s", "sqlite:///runs/a.db", "runs/x.journal"):
        assert tune.hide_password(plain) == plain
    for v in tune.THREAD_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [tune.worker_threads(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    assert tune.worker_threads(2) is None
