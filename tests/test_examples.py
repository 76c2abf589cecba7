"""examples/: every script runs in small mode and prints what it promises;
the notebook's code cells run in order; the sample configs load."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HAS_LAVA, HAS_TORCH

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, tmp_path: Path) -> str:
    env = dict(os.environ, EPROP_LAVA_SMALL="1", EPROP_LAVA_EXAMPLES_OUT=str(tmp_path),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(EXAMPLES / name), "--small"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{name}: exit {out.returncode}\n{out.stderr[-3000:]}"
    return out.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1))


def test_every_readme_topic_has_an_example():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(["train_and_verify.py", "compile_and_run.py", "on_chip_learning.py",
                              "quantization_study.py", "hyperparameter_search.py", "speech.py",
                              "eprop_vs_bptt.py"])
    for p in EXAMPLES.glob("*.py"):
        assert "--small" in p.read_text().split('"""')[1], f"{p.name}: the docstring shows how to run it small"


def test_train_and_verify(tmp_path):
    out = run_example("train_and_verify.py", tmp_path)
    assert "trained 3 iterations" in out
    assert 0.0 <= number(r"test error ([0-9.]+)", out) <= 1.0
    assert (tmp_path / "train_and_verify" / "best.npz").is_file()


@pytest.mark.skipif(not HAS_LAVA, reason="compares with Lava")
def test_compile_and_run_matches_lava(tmp_path):
    out = run_example("compile_and_run.py", tmp_path)
    # Lava's fixed_pt simulation (another implementation) gives the engine's readout exactly
    assert number(r"Lava fixed_pt: (\d+) readout mismatches", out) == 0
    assert number(r"(\d+) core\(s\)", out) >= 1


def test_on_chip_learning_changes_weights(tmp_path):
    out = run_example("on_chip_learning.py", tmp_path)
    assert number(r"(\d+) weights changed", out) > 0


def test_quantization_study(tmp_path):
    out = run_example("quantization_study.py", tmp_path)
    from eprop_lava.studies.config import StudyConfig
    from eprop_lava.studies.quantization import plan

    assert number(r"(\d+) points", out) == len(plan(StudyConfig.load(EXAMPLES / "quantization_small.toml")))
    assert (tmp_path / "quantization_study" / "summary.md").is_file()


def test_hyperparameter_search(tmp_path):
    pytest.importorskip("optuna")
    out = run_example("hyperparameter_search.py", tmp_path)
    assert "2 trials" in out
    best, default = number(r"best ([0-9.]+)", out), number(r"default error ([0-9.]+)", out)
    assert best <= default    # the default configuration is trial 0


def test_speech(tmp_path):
    pytest.importorskip("librosa")
    from eprop_lava.tasks.speech import espeak

    if not espeak.available():
        pytest.skip("espeakng-loader is not installed")
    out = run_example("speech.py", tmp_path)
    assert "compile left out the activity and energy/latency estimate" in out
    assert 0.0 <= number(r"keyword test error ([0-9.]+)", out) <= 1.0


@pytest.mark.skipif(not HAS_TORCH, reason="BPTT needs torch")
def test_eprop_vs_bptt(tmp_path):
    out = run_example("eprop_vs_bptt.py", tmp_path)
    # torch autograd through the e-prop graph gives e-prop's gradient; the full graph does not
    assert number(r"BPTT\(e-prop graph\)\| / \|BPTT\| = ([0-9.e+-]+)", out) < 1e-10
    assert number(r"BPTT\(full graph\)\|   / \|BPTT\| = ([0-9.e+-]+)", out) > 1e-3
    assert "bptt: validation error" in out


def test_notebook_cells_run_in_order(tmp_path, monkeypatch):
    nb = json.loads((EXAMPLES / "quickstart.ipynb").read_text())
    assert nb["nbformat"] == 4
    monkeypatch.setenv("EPROP_LAVA_SMALL", "1")
    monkeypatch.setenv("EPROP_LAVA_EXAMPLES_OUT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] for c in cells)    # stored without outputs
    for cell in cells:
        exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    assert namespace["result"].iterations == 3
    assert namespace["run"]["steps_per_sample"] == 3 * (100 + 50) + 100 + 150   # the short task of the notebook
    assert namespace["summary"]["cores"] >= 1
    # the figures cell returns matplotlib Figures and saves only the one it asks for
    assert {"membrane", "anatomy"} <= set(namespace["figures"])
    assert all(hasattr(f, "savefig") for f in namespace["figures"].values())
    assert (tmp_path / "notebook" / "membrane.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_config_loads_and_matches_its_comments():
    from eprop_lava import configure

    task, spec, config = configure(EXAMPLES / "config.toml")
    assert (config.task, config.iterations, config.seed, spec.seed) == ("evidence", 300, 1, 1)
    assert (spec.timing, spec.reset) == ("loihi", "zero")
    assert task.n_cues == 7 and task.steps == 2250    # 7 x (100 + 50) + 1050 + 150
