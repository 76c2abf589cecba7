"""The README's command block runs as written, in order, in a fresh
directory, with small sizes appended to each command (fewer iterations,
samples and trials; a short evidence task; the small speech corpus; the
small quantization study). Appended options come last, so they win over the
README's own values; nothing else is changed."""

import contextlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import HAS_LAVA, HAS_TORCH
from eprop_lava.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHORT_EVIDENCE = ["--task-option", "n_cues=3", "--task-option", "delay_ms=100"]
FEW_ITERATIONS = [a for s in ("train.iterations=2", "train.batch_size=2", "train.validation_batches=1",
                              "train.validate_every=1", "train.progress=false") for a in ("--set", s)]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Command line"):]
    block = block[block.index("```bash") + len("```bash"):]
    block = block[:block.index("```")]
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.strip().startswith("eprop-lava ")]


def small(argv: list[str]) -> list[str]:
    """The small-mode options appended to one README command."""
    command = argv[0]
    if command == "train":
        extra = list(FEW_ITERATIONS)
        if argv[1] == "evidence":
            extra += SHORT_EVIDENCE
        if argv[1] == "speech_keywords":
            extra += ["--set", "spec.layers.0.size=20"]
        return argv + extra
    if command == "run":
        return argv + ["--samples", "2", "--lava-samples", "1"] + (["--learn-samples", "2"] if "--learn" in argv else [])
    if command == "data":
        return argv + ["--small", "--quiet"]
    if command == "study":
        return argv + ["--config", str(ROOT / "examples" / "quantization_small.toml"), "--no-progress"]
    if command == "tune":
        return argv + ["--trials", "1", "--iterations", "1", "--batch-size", "2", "--validation-batches", "1",
                       "--repeats", "1", *(["--confirm", "1"] if "--confirm" in argv else []), *SHORT_EVIDENCE]
    return argv


def needs(argv: list[str]) -> str | None:
    """Why a command cannot run on this installation (None: it can)."""
    import importlib.util

    if argv[0] in ("run", "export-netx") or argv[:2] == ["verify", "--lava"]:
        if not HAS_LAVA:
            return "Lava"
    if "bptt" in argv and not HAS_TORCH:
        return "torch"
    if "speech" in " ".join(argv):
        from eprop_lava.tasks.speech import espeak

        if importlib.util.find_spec("librosa") is None or not espeak.available():
            return "librosa and espeakng-loader"
    if argv[0] == "tune" and importlib.util.find_spec("optuna") is None:
        return "optuna"
    return None


def test_readme_lists_the_commands_in_order():
    commands = readme_commands()
    first = {c.split()[1]: i for i, c in reversed(list(enumerate(commands)))}
    assert first["train"] < first["eval"] < first["compile"] < first["run"] < first["export-netx"]
    # every run directory a command reads was written by an earlier command
    written: set[str] = set()
    for c in commands:
        argv = shlex.split(c)[1:]
        if argv[0] in ("eval", "plot", "compile", "run", "export-netx"):
            assert argv[1] in written, f"{c}: {argv[1]} is not written by an earlier command"
        if "--out" in argv:
            written.add(argv[argv.index("--out") + 1])


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    monkeypatch.chdir(tmp_path)
    ran, skipped = [], []
    for line in readme_commands():
        words = shlex.split(line)[1:]
        redirect = None
        if ">" in words:
            redirect = words[words.index(">") + 1]
            words = words[:words.index(">")]
        why = needs(words)
        if why:
            skipped.append((line, why))
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(small(words))
        assert rc == 0, f"{line} -> exit {rc}\n{out.getvalue()[-2000:]}"
        if redirect:
            Path(redirect).write_text(out.getvalue())
        ran.append(line)
    assert not [s for s in skipped if s[1] not in ("Lava", "torch", "librosa and espeakng-loader", "optuna")]
    assert len(ran) >= len(readme_commands()) - len(skipped) > 0
    # what the commands left behind
    assert (tmp_path / "my.toml").read_text().startswith("[train]")
    assert (tmp_path / "runs" / "ev1-loihi2" / "report.md").is_file()
    ev2 = json.loads((tmp_path / "runs" / "ev2" / "config.json").read_text())
    assert ev2["spec"]["layers"][0]["size"] == 200 and ev2["spec"]["optimizer"]["lr"] == 0.01


def _project_text_files():
    for pattern in ("*.md", "eprop_lava/**/*.py", "docs/*.md", "examples/*", "benchmarks/**/*.md", "scripts/*.sh"):
        for path in ROOT.glob(pattern):
            if path.is_file() and path.suffix in (".md", ".py", ".toml", ".sh", ".ipynb"):
                yield path


def test_no_reference_to_documents_outside_the_repository():
    # the names are split so that this file does not cite them either
    names = ["LAVA" + "_BRIEF", "EPROP" + "_ANCHORS", "ECOSYSTEM" + r"\.md", "NIR" + "_HARDWARE", "shared" + "/research",
             "research" + " notes"]
    outside = re.compile("|".join(names))
    cited = re.compile(r"(?<![\w/.-])docs/([A-Za-z0-9_]+\.md)")   # this repository's docs/, not another's
    for path in _project_text_files():
        text = path.read_text(errors="replace")
        assert not outside.search(text), f"{path.relative_to(ROOT)} cites a document that is not in the repository"
        for name in cited.findall(text):
            assert (ROOT / "docs" / name).is_file(), f"{path.relative_to(ROOT)} cites docs/{name}, which is missing"
