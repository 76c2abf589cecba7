"""The public API (``from eprop_lava import ...``), the worked example of
docs/api.md, ``config show`` and the command line's help, version, typo
suggestions and resume conflicts."""

import argparse
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import eprop_lava
from eprop_lava.cli import build_parser, main
from eprop_lava.spec import tomllib

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"n_cues": 3, "delay_ms": 100}
FEW = ["train.iterations=2", "train.batch_size=4", "train.validation_batches=1", "train.validate_every=1",
       "train.progress=false"]


# ------------------------------------------------------------------ the package
def test_every_public_name_resolves():
    assert set(eprop_lava.__all__) >= {"train", "evaluate", "compile_checkpoint", "run_artifact", "verify",
                                       "plots", "spec", "tasks", "NetworkSpec", "TrainConfig", "__version__"}
    for name in eprop_lava.__all__:
        assert getattr(eprop_lava, name) is not None, name
    assert eprop_lava.plots.__name__ == "eprop_lava.plots"
    assert eprop_lava.tasks.get_task is eprop_lava.get_task


def test_version_is_the_project_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert eprop_lava.__version__ == project["version"] == "0.1.0"


def test_import_is_light():
    """import eprop_lava loads neither matplotlib nor torch (the CLI starts fast)."""
    import subprocess
    import sys

    code = "import sys, eprop_lava; print(sorted(m for m in ('matplotlib', 'torch', 'lava') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_train_from_the_config_alone_equals_the_hand_built_run(tmp_path):
    """train(config) builds the task itself; the same run assembled by hand
    (task constructor, its default spec with the training seed) gives the same
    parameters."""
    from eprop_lava.tasks.evidence import EvidenceAccumulation
    from eprop_lava.training import TrainConfig
    from eprop_lava.training import train as train_run

    result = eprop_lava.train({"train": {"task": "evidence", "task_options": SHORT, "seed": 4}}, tmp_path / "api",
                              overrides=FEW)
    task = EvidenceAccumulation(**SHORT)
    config = TrainConfig(task="evidence", task_options=SHORT, seed=4, iterations=2, batch_size=4,
                         validation_batches=1, validate_every=1, progress=False)
    by_hand = train_run(task, task.default_spec().replace(seed=4), config, tmp_path / "hand")
    assert result.params.keys() == by_hand.params.keys()
    for k in by_hand.params:
        np.testing.assert_array_equal(result.params[k], by_hand.params[k])
    assert result.final_validation == by_hand.final_validation


def test_train_accepts_a_trainconfig_and_a_spec(tmp_path):
    from eprop_lava.training import TrainConfig

    config = TrainConfig(task="evidence", task_options=SHORT, iterations=1, batch_size=2, validation_batches=1,
                         progress=False)
    result = eprop_lava.train(config, tmp_path / "r", spec={"layers": [{"size": 12}]})
    assert result.params["layers.0.w_rec"].shape == (12, 12)


# ------------------------------------------------------------------ docs/api.md
def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_api_page_example_runs(tmp_path, monkeypatch):
    blocks = python_blocks(ROOT / "docs" / "api.md")
    assert blocks, "docs/api.md has a worked example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    # what the example states about its own results
    report, run = namespace["report"], namespace["run"]
    assert report["task_options"] == {"n_cues": 3, "delay_ms": 100}
    assert run["steps_per_sample"] == 3 * (100 + 50) + 100 + 150
    assert 0.0 <= report["test_error"] <= 1.0


# ------------------------------------------------------------------ config show
@pytest.mark.parametrize("task", ["evidence", "pattern", "store_recall", "teacher_student"])
def test_config_show_round_trips(task, tmp_path, capsys):
    assert main(["config", "show", task]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "c.toml"
    path.write_text(text)
    shown = tomllib.loads(text)
    _, spec, config = eprop_lava.configure(task)
    _, spec_back, config_back = eprop_lava.configure(path)
    assert spec_back == spec and config_back == config
    # every field is written (None-valued options are their defaults)
    assert set(shown["train"]) == {k for k, v in asdict(config).items() if v is not None}
    # and the file is a --config file for train
    assert main(["train", task, "--config", str(path), "--out", str(tmp_path / "run"), "--set",
                 "train.iterations=1", "--set", "train.batch_size=2", "--set", "train.validation_batches=1",
                 "--set", "train.progress=false"] + (["--task-option", "n_cues=3"] if task == "evidence" else [])) == 0


# ------------------------------------------------------------------ command line
def _options(parser: argparse.ArgumentParser, path: tuple = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield path + (choice.dest,), "command", choice.help
            for name, sub in action.choices.items():
                yield path + (name,), "description", sub.description
                yield from _options(sub, path + (name,))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_help_without_markup():
    seen = 0
    for path, option, text in _options(build_parser()):
        if option == "description" and text is None:
            continue
        assert text, f"eprop-lava {' '.join(path)} {option}: no help"
        assert "`" not in text, f"eprop-lava {' '.join(path)} {option}: markup in {text!r}"
        seen += 1
    assert seen > 60


def test_version_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"eprop-lava {eprop_lava.__version__}"


@pytest.mark.parametrize("argv, hint", [
    (["train", "evidnce"], "did you mean 'evidence'?"),
    (["train", "evidence", "--set", "train.iteratons=3"], "did you mean 'train.iterations'?"),
    (["train", "evidence", "--set", "spec.timing=loihii"], "did you mean 'loihi'?"),
    (["train", "evidence", "--set", "spec.optimizer.lrr=0.1"], "did you mean 'spec.optimizer.lr'?"),
    (["config", "show", "store_recal"], "did you mean 'store_recall'?"),
])
def test_typos_get_the_closest_match(argv, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert hint in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, hint", [
    (["trian", "evidence"], "did you mean 'train'?"),
    (["train", "evidence", "--algo", "bpt"], "did you mean 'bptt'?"),
])
def test_mistyped_commands_and_choices_get_the_closest_match(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and hint in capsys.readouterr().err


def test_mistyped_task_option_gets_the_closest_match(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "evidence", "--task-option", "n_cue=5"]) == 2
    assert "unknown option 'n_cue' (did you mean 'n_cues'?)" in capsys.readouterr().err


def test_resume_conflict_names_the_key_and_fresh(tmp_path, capsys):
    base = ["train", "evidence", "--out", str(tmp_path / "r"), "--task-option", "n_cues=3",
            *[a for s in FEW for a in ("--set", s)]]
    assert main(base) == 0
    assert main(base + ["--set", "spec.optimizer.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert "spec.optimizer.lr: 0.005 -> 0.02" in err and "--fresh" in err
    # --fresh starts over; a run that has not validated yet has no best checkpoint, so the
    # earlier run's best.npz must not be taken for it
    assert (tmp_path / "r" / "best.npz").is_file()
    assert main(base + ["--set", "spec.optimizer.lr=0.02", "--set", "train.validate_every=5", "--fresh"]) == 0
    from eprop_lava.training import load_checkpoint, select_checkpoint

    path, _ = select_checkpoint(tmp_path / "r")
    assert path.name == "checkpoint.npz" and load_checkpoint(path).spec.optimizer.lr == 0.02
