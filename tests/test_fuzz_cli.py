"""Malformed input of every kind through the command line.

Each case is a command line (``{w}`` stands for a scratch folder holding a
real run, a compiled artifact, and damaged copies of checkpoints, configs,
metrics logs, study configs and a TIMIT-layout corpus). It passes when the
command

* exits with status 2 (a user error) - not 0, not a crash;
* writes exactly one line to stderr naming the problem, and no traceback;
* leaves every file that existed before it byte for byte as it was.

Most cases run in-process through ``eprop_lava.cli.main`` (fast); a few run
the real ``python -m eprop_lava.cli`` in a subprocess.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from eprop_lava.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.iterations=1", "--set", "train.batch_size=2", "--set", "train.validation_batches=1",
        "--set", "train.progress=false"]
# the network of the scratch folder's run (small, with Loihi's timing so that it compiles)
RUN_SPEC = ["--set", "spec.layers.0.size=8", "--set", "spec.timing=loihi", "--set", "spec.reset=zero"]


# ------------------------------------------------------------------ the world
def _save_npz(path: Path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _checkpoint_arrays(path: Path) -> tuple[dict, dict]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return arrays, meta


def _with_meta(arrays: dict, meta) -> dict:
    out = dict(arrays)
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return out


def _damaged_checkpoints(ck: Path, out: Path) -> list[str]:
    arrays, meta = _checkpoint_arrays(ck)
    w = "param/layers.0.w_in"
    variants: dict[str, tuple[dict, object]] = {}

    def edit(name: str, array_fn=None, meta_fn=None):
        a = {k: v.copy() for k, v in arrays.items()}
        m = json.loads(json.dumps(meta))
        if array_fn:
            array_fn(a)
        if meta_fn:
            m = meta_fn(m)
        variants[name] = (a, m)

    def put(key, value):
        return lambda a: a.__setitem__(key, value)

    def set_meta(key, value):
        def f(m):
            m[key] = value
            return m
        return f

    def drop_meta(key):
        def f(m):
            m.pop(key)
            return m
        return f

    edit("nan", put(w, np.where(np.arange(arrays[w].size).reshape(arrays[w].shape) == 3, np.nan, arrays[w])))
    edit("inf", put(w, arrays[w] * np.inf))
    edit("int", put(w, arrays[w].astype(np.int64)))
    edit("complex", put(w, arrays[w].astype(np.complex128)))
    edit("bool", put(w, arrays[w] > 0))
    edit("extra_array", put("param/bogus", np.zeros(3)))
    edit("extra_group", put("notes/x", np.zeros(3)))
    edit("missing_param", lambda a: a.pop(w))
    edit("wrong_shape", put(w, arrays[w][:, :-1]))
    edit("scalar_param", put(w, np.float64(1.0)))
    m_key = next((k for k in arrays if k.startswith("adam_m/")), None)
    if m_key:
        edit("adam_wrong_shape", put(m_key, np.zeros((2, 2))))
        edit("adam_m_only", lambda a: a.pop("adam_v/" + m_key[7:]))
        edit("adam_nan", put(m_key, arrays[m_key] * np.nan))
        edit("adam_v_negative", put("adam_v/" + m_key[7:], -np.ones_like(arrays[m_key]) - 1))
    edit("adam_unknown", put("adam_m/bogus", np.zeros(3)))
    for key in ("iteration", "rng_state", "spec", "train", "optimizer_step"):
        edit(f"no_{key}", meta_fn=drop_meta(key))
    edit("iteration_str", meta_fn=set_meta("iteration", "ten"))
    edit("iteration_neg", meta_fn=set_meta("iteration", -3))
    edit("iteration_float", meta_fn=set_meta("iteration", 2.5))
    edit("rng_garbage", meta_fn=set_meta("rng_state", {"bit_generator": "PCG64", "state": 7}))
    edit("rng_list", meta_fn=set_meta("rng_state", [1, 2]))
    edit("rng_other", meta_fn=set_meta("rng_state", {"bit_generator": "MT19937"}))
    edit("spec_list", meta_fn=set_meta("spec", [1, 2]))
    edit("spec_bad", meta_fn=lambda m: (m["spec"].__setitem__("dt", -1.0), m)[1])
    edit("train_bad", meta_fn=lambda m: (m["train"].__setitem__("batch_size", "many"), m)[1])
    edit("train_unknown", meta_fn=lambda m: (m["train"].__setitem__("bogus", 1), m)[1])
    edit("extra_list", meta_fn=set_meta("extra", [1]))
    edit("best_str", meta_fn=set_meta("extra", {"best": "x"}))
    edit("format", meta_fn=set_meta("format", "other/9"))
    edit("meta_list", meta_fn=lambda m: [1, 2])
    edit("meta_number", meta_fn=lambda m: 42)
    names = []
    for name, (a, m) in variants.items():
        _save_npz(out / f"ck_{name}.npz", _with_meta(a, m))
        names.append(f"ck_{name}.npz")
    raw = ck.read_bytes()
    (out / "ck_truncated.npz").write_bytes(raw[: len(raw) // 2])
    (out / "ck_empty.npz").write_bytes(b"")
    (out / "ck_text.npz").write_text("not a checkpoint\n")
    a = dict(arrays)
    a["meta"] = np.frombuffer(b"\xff\xfe{not json", dtype=np.uint8)
    _save_npz(out / "ck_meta_binary.npz", a)
    _save_npz(out / "ck_no_meta.npz", arrays)
    with zipfile.ZipFile(out / "ck_pickle.npz", "w") as z:
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        z.writestr("meta.npy", buf.getvalue())
    names += ["ck_truncated.npz", "ck_empty.npz", "ck_text.npz", "ck_meta_binary.npz", "ck_no_meta.npz",
              "ck_pickle.npz"]
    return names


CONFIGS = {
    "cfg_number.json": "42",
    "cfg_null.json": "null",
    "cfg_list.json": "[1, 2]",
    "cfg_string.json": '"train"',
    "cfg_train_str.json": '{"train": "fast"}',
    "cfg_spec_list.json": '{"spec": [1, 2]}',
    "cfg_spec_null.json": '{"spec": null}',
    "cfg_unknown.json": '{"bogus": {}}',
    "cfg_iter_str.json": '{"train": {"validate_every": "often"}}',
    "cfg_layers_str.json": '{"spec": {"layers": "x"}}',
    "cfg_task_options.json": '{"train": {"task_options": [1]}}',
    "cfg_truncated.json": '{"train": {"iterations": 1',
    "cfg_empty.json": "",
    "cfg_bad.toml": "[train\niterations = 1\n",
    "cfg_train_str.toml": 'train = "fast"\n',
    "cfg_task_conflict.toml": '[train]\ntask = "pattern"\n',
    "cfg_nan.toml": "[spec]\ndt = nan\n",
    "cfg_layer_size.toml": "[[spec.layers]]\nsize = -4\n",
}

STUDIES = {
    "study_number.json": "42",
    "study_list.json": "[1, 2, 3]",
    "study_null.json": "null",
    "study_empty.json": "",
    "study_unknown.json": '{"bogus": 1}',
    "study_bad.toml": "[[[\n",
    "study_section_str.json": '{"float": "x"}',
    "study_section_list.json": '{"ptq": [1, 2]}',
    "study_field_nan.json": '{"seeds": [0, -1]}',
}


def _metrics_files(out: Path) -> list[str]:
    good = json.dumps({"iteration": 1, "loss": 0.5, "train_error": 0.5})
    files = {
        "metrics_garbage": "\x00\x01garbage\nmore garbage\n",
        "metrics_middle": good + "\n{broken\n" + good + "\n",
        "metrics_list": "[1, 2]\n[3]\n",
        "metrics_empty": "",
        "metrics_no_keys": '{"a": 1}\n{"b": 2}\n',
        "metrics_iteration_str": '{"iteration": "x", "loss": 1}\n',
    }
    names = []
    for name, text in files.items():
        d = out / name
        d.mkdir()
        (d / "metrics.jsonl").write_text(text)
        for kept in ("checkpoint.npz", "config.json"):  # a real run around the damaged log
            (d / kept).write_bytes((out / "run" / kept).read_bytes())
        names.append(name)
    return names


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from eprop_lava.compile.pipeline import compile_checkpoint
    from eprop_lava.tasks.speech.fixtures import make_timit_fixture

    w = tmp_path_factory.mktemp("fuzz")
    cwd = os.getcwd()
    os.chdir(w)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert main(["train", "evidence", "--out", str(w / "run"), *TINY, *RUN_SPEC]) == 0
    finally:
        os.chdir(cwd)
    ck = w / "run" / "checkpoint.npz"
    compile_checkpoint(ck, w / "art", target="loihi2")
    _damaged_checkpoints(ck, w)
    for name, text in {**CONFIGS, **STUDIES}.items():
        (w / name).write_text(text)
    (w / "cfg_binary.json").write_bytes(bytes(range(256)) * 4)
    (w / "study_binary.toml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    _metrics_files(w)
    (w / "notes.txt").write_text("my notes, not a database\n")
    (w / "notes.db").write_text("not sqlite either\n")
    (w / "a_file").write_text("a user's file\n")
    user = w / "userdir"
    user.mkdir()
    (user / "metrics.jsonl").write_text('{"mine": 1}\n')
    (user / "config.json").write_text('{"my": "config"}\n')
    (w / "emptydir").mkdir()
    # an artifact whose manifest was edited by hand
    import shutil

    shutil.copytree(w / "art", w / "art_edited")
    manifest = w / "art_edited" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"loihi2"', '"loihi9"', 1))
    # weights scaled by 1e30: every matrix quantizes to (almost) nothing
    arrays, meta = _checkpoint_arrays(ck)
    arrays["param/layers.0.w_in"] = arrays["param/layers.0.w_in"] * 1e30
    _save_npz(w / "ck_huge.npz", _with_meta(arrays, meta))
    # a TIMIT-layout corpus whose first .PHN file has overlapping phones
    timit = make_timit_fixture(w / "timit")
    # a training sentence (SA sentences are left out of phone recognition)
    phn = sorted(p for p in timit.rglob("*.PHN") if "train" in [q.lower() for q in p.parts]
                 and not p.name.upper().startswith("SA"))[0]
    lines = phn.read_text().splitlines()
    s0, e0, p0 = lines[1].split()
    lines[1] = f"{s0} {int(e0) + 50} {p0}"
    phn.write_text("\n".join(lines) + "\n")
    return w


def _snapshot(root: Path) -> dict:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------ the cases
def _train(*argv):
    return ["train", "evidence", "--out", "{w}/new_run", *TINY, *argv]


SET_GARBAGE = [
    "spec.n_inputs=3", "spec.readout.n_outputs=9", "spec.layers.0.size=1e400", "spec.layers.0.size=NaN",
    "spec.layers.0.size=100000", "spec.layers.0.size=-5", "spec.layers.0.size=0", "spec.layers.0.size=abc",
    "spec.layers.0.size=2.5", "spec.layers.0.size=true", "spec.layers.0.size=[1]", "spec.layers.5.size=10",
    "spec.layers.x.size=10", "spec.dt=0", "spec.dt=-1", "spec.dt=NaN", "spec.dt=Infinity", "spec.readout.kappa=1.5",
    "spec.readout.kappa=abc", "spec.optimizer.lr=-1", "spec.optimizer.lr=NaN", "spec.optimizer.kind=bogus",
    "spec.optimizer.beta1=1", "spec.loss=bogus", "spec.timing=bogus", "spec.reset=bogus",
    "spec.layers.0.neuron=bogus", "spec.layers=[]", "spec.layers=5", "spec.readout=3", "spec.bogus=1",
    "spec.layers.0.params.tau_m=-1", "spec.layers.0.params.v_th=1e999", "spec.layers.0.params.n_ref=-1",
    "spec.layers.0.adaptive_fraction=2", "spec.learning.variant=bogus", "spec.regularization.target_hz=-1",
    "spec.seed=-1", "spec.seed=abc", "spec.layers.0.recurrent=maybe",
    "train.batch_size=1e12", "train.batch_size=1000000000000", "train.batch_size=0", "train.batch_size=-1",
    "train.batch_size=2.5", "train.batch_size=x", "train.batch_size=true", "train.iterations=0",
    "train.iterations=1e400", "train.iterations=-1", "train.validate_every=0", "train.validation_batches=0",
    "train.checkpoint_every=0", "train.target_metric=low", "train.target_metric=NaN",
    "train.target_metric=Infinity", "train.target_metric=true", "train.device=tpu9", "train.device=cuda",
    "train.device=5", "train.distributed=true", "train.distributed=yes", "train.backend=bogus",
    "train.dtype=float16", "train.algo=sgd", "train.seed=-1", "train.seed=1.5", "train.seed=1e400",
    "train.early_stop=maybe", "train.early_stop=1", "train.progress=3", "train.task_options=5",
    "train.task_options=[1]", "train.bogus=1", "train.task=nonexistent", "train.task=5", "train.bptt_graph=x",
    "train.seed.x=1", "noequals", "=5", "foo.bar=1", "spec.layers.0=5",
]

TASK_OPTION_GARBAGE = [
    ("evidence", "n_cues=-1"), ("evidence", "n_cues=abc"), ("evidence", "n_cues=2.5"), ("evidence", "n_cues=0"),
    ("evidence", "n_cues=true"), ("evidence", "cue_ms=0"), ("evidence", "cue_ms=-10"), ("evidence", "cue_hz=-5"),
    ("evidence", "cue_hz=NaN"), ("evidence", "cue_hz=1e400"), ("evidence", "noise_hz=-1"),
    ("evidence", "delay_ms=-5"), ("evidence", "recall_ms=0"), ("evidence", "spacing_ms=-1"),
    ("evidence", "n_per_group=0"), ("evidence", "dt=0"), ("evidence", "dt=-1"), ("evidence", "dt=NaN"),
    ("evidence", "left_probabilities=[2,3]"), ("evidence", "left_probabilities=abc"),
    ("evidence", "left_probabilities=[]"), ("evidence", "bogus_option=1"), ("evidence", "noequals"),
    ("pattern", "duration_ms=0"), ("pattern", "n_outputs=0"), ("pattern", "input=bogus"),
    ("pattern", "frequencies_hz=abc"), ("pattern", "clock_hz=NaN"), ("pattern", "n_neurons=-1"),
    ("store_recall", "min_delay=0"), ("store_recall", "max_delay=0"), ("store_recall", "char_ms=NaN"),
    ("store_recall", "input_hz=-3"), ("teacher_student", "n_inputs=0"), ("teacher_student", "neuron=bogus"),
    ("teacher_student", "duration_ms=NaN"), ("teacher_student", "input_hz=-1"),
    ("teacher_student", "target_std=abc"),
    ("speech_phones", "require_complete=maybe"), ("speech_phones", "split=bogus"),
    ("speech_phones", "max_utterances=0"), ("speech_phones", "phones=39.5"),
]

CASES: list[tuple[str, list[str]]] = []
CASES += [(f"set:{s}", _train("--set", s)) for s in SET_GARBAGE]
CASES += [(f"task-option:{t}:{o}", ["train", t, "--out", "{w}/new_run", *TINY, "--task-option", o,
                                     *(["--data", "{w}/timit"] if t.startswith("speech") else [])])
          for t, o in TASK_OPTION_GARBAGE]
CASES += [(f"config:{name}", _train("--config", "{w}/" + name)) for name in [*CONFIGS, "cfg_binary.json"]]
CASES += [
    ("config:missing", _train("--config", "{w}/nope.toml")),
    ("config:directory", _train("--config", "{w}/emptydir")),
    ("train:unknown-task", ["train", "bogus", "--out", "{w}/new_run", *TINY]),
    ("train:seed-negative", _train("--seed", "-1")),
    ("train:out-is-file", ["train", "evidence", "--out", "{w}/a_file", *TINY]),
    ("train:out-under-file", ["train", "evidence", "--out", "{w}/a_file/run", *TINY]),
    ("train:out-proc", ["train", "evidence", "--out", "/proc/eprop-lava-run", *TINY]),
    ("train:out-proc-deep", ["train", "evidence", "--out", "/proc/self/nope/run", *TINY]),
    ("train:out-user-dir", ["train", "evidence", "--out", "{w}/userdir", *TINY]),
    ("train:out-user-dir-fresh", ["train", "evidence", "--out", "{w}/userdir", "--fresh", *TINY]),
    ("train:out-other-run", ["train", "evidence", "--out", "{w}/run", *TINY, "--set", "spec.layers.0.size=9"]),
    ("train:data-missing", ["train", "speech_phones", "--out", "{w}/new_run", *TINY, "--data", "{w}/nope"]),
    ("train:timit-overlap", ["train", "speech_phones", "--out", "{w}/new_run", *TINY, "--data", "{w}/timit",
                             "--task-option", "require_complete=false"]),
]
CK_NAMES = [
    "nan", "inf", "int", "complex", "bool", "extra_array", "extra_group", "missing_param", "wrong_shape",
    "scalar_param", "adam_wrong_shape", "adam_m_only", "adam_nan", "adam_v_negative", "adam_unknown",
    "no_iteration", "no_rng_state", "no_spec", "no_train", "no_optimizer_step", "iteration_str", "iteration_neg",
    "iteration_float", "rng_garbage", "rng_list", "rng_other", "spec_list", "spec_bad", "train_bad",
    "train_unknown", "extra_list", "best_str", "format", "meta_list", "meta_number", "truncated", "empty", "text",
    "meta_binary", "no_meta", "pickle",
]
CASES += [(f"eval:{n}", ["eval", f"{{w}}/ck_{n}.npz"]) for n in CK_NAMES]
CASES += [
    ("eval:missing", ["eval", "{w}/nope.npz"]),
    ("eval:empty-dir", ["eval", "{w}/emptydir"]),
    ("eval:batches-0", ["eval", "{w}/run", "--batches", "0"]),
    ("eval:batches-negative", ["eval", "{w}/run", "--batches", "-3"]),
    ("eval:batches-huge", ["eval", "{w}/run", "--batches", "1000000000000"]),
    ("eval:batches-abc", ["eval", "{w}/run", "--batches", "abc"]),
]
CASES += [(f"resume:{n}", ["train", "evidence", "--out", "{w}/resume_" + n, *TINY, *RUN_SPEC,
                            "--set", "train.iterations=2"])
          for n in ("nan", "adam_nan", "int", "extra_array", "no_rng_state", "adam_wrong_shape")]
CASES += [(f"plot:{n}", ["plot", "{w}/" + n]) for n in (
    "metrics_garbage", "metrics_middle", "metrics_list", "metrics_empty", "metrics_no_keys",
    "metrics_iteration_str")]
CASES += [
    ("plot:missing", ["plot", "{w}/nope"]),
    ("plot:file", ["plot", "{w}/a_file"]),
    ("plot:empty-dir", ["plot", "{w}/emptydir"]),
]
CASES += [
    ("compile:missing", ["compile", "{w}/nope.npz", "--out", "{w}/art2"]),
    ("compile:nan", ["compile", "{w}/ck_nan.npz", "--out", "{w}/art2"]),
    ("compile:text", ["compile", "{w}/ck_text.npz", "--out", "{w}/art2"]),
    ("compile:bits-0", ["compile", "{w}/run", "--weight-bits", "0", "--out", "{w}/art2"]),
    ("compile:bits-99", ["compile", "{w}/run", "--weight-bits", "99", "--out", "{w}/art2"]),
    ("compile:bits-abc", ["compile", "{w}/run", "--weight-bits", "abc", "--out", "{w}/art2"]),
    ("compile:bits-group", ["compile", "{w}/run", "--weight-bits", "layers.9=4", "--out", "{w}/art2"]),
    ("compile:bits-group-bad", ["compile", "{w}/run", "--weight-bits", "layers.0=x", "--out", "{w}/art2"]),
    ("compile:out-file", ["compile", "{w}/run", "--out", "{w}/a_file"]),
    ("compile:out-under-file", ["compile", "{w}/run", "--out", "{w}/a_file/art"]),
    ("compile:out-proc", ["compile", "{w}/run", "--out", "/proc/eprop-lava-art"]),
    ("compile:out-user-dir", ["compile", "{w}/run", "--out", "{w}/userdir"]),
    ("compile:lr-nan", ["compile", "{w}/run", "--lr", "nan", "--out", "{w}/art2"]),
    ("compile:lr-negative", ["compile", "{w}/run", "--lr", "-1", "--out", "{w}/art2"]),
    ("compile:lr-inf", ["compile", "{w}/run", "--lr", "inf", "--learning", "--out", "{w}/art2"]),
    ("compile:system-bogus", ["compile", "{w}/run", "--system", "bogus", "--out", "{w}/art2"]),
    ("compile:system-0", ["compile", "{w}/run", "--system", "0", "--out", "{w}/art2"]),
    ("compile:system-negative", ["compile", "{w}/run", "--system", "-4", "--out", "{w}/art2"]),
    ("run:missing", ["run", "{w}/nope"]),
    ("run:file", ["run", "{w}/a_file"]),
    ("run:not-artifact", ["run", "{w}/userdir"]),
    ("run:edited", ["run", "{w}/art_edited", "--no-lava"]),
    ("run:steps-0", ["run", "{w}/art", "--steps", "0"]),
    ("run:samples-0", ["run", "{w}/art", "--samples", "0"]),
    ("run:samples-huge", ["run", "{w}/art", "--samples", "1000000000000", "--no-lava"]),
    ("run:lava-samples-0", ["run", "{w}/art", "--lava-samples", "0"]),
    ("export-netx:missing", ["export-netx", "{w}/nope", "--out", "{w}/x.h5"]),
    ("export-netx:out-under-file", ["export-netx", "{w}/art", "--out", "{w}/a_file/x.h5"]),
    ("export-netx:out-proc", ["export-netx", "{w}/art", "--out", "/proc/eprop-lava.h5"]),
    ("data:accents", ["data", "speech", "--out", "{w}/corpus", "--accents", "xx-bogus", "--small", "--quiet"]),
    ("data:out-file", ["data", "speech", "--out", "{w}/a_file", "--small", "--quiet"]),
    ("data:out-proc", ["data", "speech", "--out", "/proc/eprop-lava-corpus", "--small", "--quiet"]),
    ("data:digit-repeats", ["data", "speech", "--out", "{w}/corpus", "--digit-repeats", "-1", "--quiet"]),
    ("data:sentences", ["data", "speech", "--out", "{w}/corpus", "--sentences", "-2", "--quiet"]),
    ("data:variants", ["data", "speech", "--out", "{w}/corpus", "--variants", "bogus", "--small", "--quiet"]),
    ("data:user-dir", ["data", "speech", "--out", "{w}/userdir", "--small", "--quiet"]),
]
CASES += [(f"study:{n}", ["study", "quantization", "--config", "{w}/" + n, "--out", "{w}/study"])
          for n in [*STUDIES, "study_binary.toml"]]
CASES += [
    ("study:missing", ["study", "quantization", "--config", "{w}/nope.toml", "--out", "{w}/study"]),
    ("study:out-file", ["study", "quantization", "--out", "{w}/a_file", "--report-only"]),
    ("study:out-proc", ["study", "quantization", "--out", "/proc/eprop-lava-study"]),
    ("study:workers-0", ["study", "quantization", "--out", "{w}/study", "--workers", "0"]),
    ("tune:storage-notes", ["tune", "evidence", "--trials", "1", "--storage", "{w}/notes.txt", "--out", "{w}/tune"]),
    ("tune:storage-db", ["tune", "evidence", "--trials", "1", "--storage", "{w}/notes.db", "--out", "{w}/tune"]),
    ("tune:storage-sqlite", ["tune", "evidence", "--trials", "1", "--storage", "sqlite:///{w}/notes.db",
                             "--out", "{w}/tune"]),
    ("tune:storage-dir", ["tune", "evidence", "--trials", "1", "--storage", "{w}/emptydir", "--out", "{w}/tune"]),
    ("tune:storage-scheme", ["tune", "evidence", "--trials", "1", "--storage", "bogus://x", "--out", "{w}/tune"]),
    ("tune:storage-proc", ["tune", "evidence", "--trials", "1", "--storage", "/proc/x.journal", "--out", "{w}/tune"]),
    ("tune:trials-negative", ["tune", "evidence", "--trials", "-1", "--out", "{w}/tune"]),
    ("tune:iterations-0", ["tune", "evidence", "--trials", "1", "--iterations", "0", "--out", "{w}/tune"]),
    ("tune:task", ["tune", "bogus", "--trials", "1", "--out", "{w}/tune"]),
    ("tune:task-option", ["tune", "evidence", "--trials", "1", "--task-option", "n_cues=-1", "--out", "{w}/tune"]),
    ("tune:out-file", ["tune", "evidence", "--trials", "1", "--out", "{w}/a_file"]),
    ("tune:timeout-nan", ["tune", "evidence", "--trials", "1", "--timeout", "nan", "--out", "{w}/tune"]),
    ("tune:repeats-0", ["tune", "evidence", "--trials", "1", "--repeats", "0", "--out", "{w}/tune"]),
    ("tune:batch-huge", ["tune", "evidence", "--trials", "1", "--batch-size", "1000000000000", "--out", "{w}/tune"]),
    ("more:set-unicode", _train("--set", "spec.layers.0.neuron=\u00e9\u6f22\u5b57")),
    ("more:set-long", _train("--set", "spec.loss=" + "x" * 5000)),
    ("more:set-nested-json", _train("--set", 'spec.optimizer={"kind": "adam", "lr": "fast"}')),
    ("more:size-million", _train("--set", "spec.layers.0.size=1000000")),
    ("more:two-layers-bad", _train("--set", 'spec.layers=[{"size": 4}, {"size": -1}]')),
    ("more:task-option-data-file", ["train", "speech_phones", "--out", "{w}/new_run", *TINY, "--data",
                                    "{w}/a_file"]),
    ("more:phones-99", ["train", "speech_phones", "--out", "{w}/new_run", *TINY, "--data", "{w}/timit",
                        "--task-option", "phones=99"]),
    ("more:eval-file-as-dir", ["eval", "{w}/a_file/checkpoint.npz"]),
    ("more:eval-notes", ["eval", "{w}/notes.txt"]),
    ("more:plot-bad-checkpoint", ["plot", "{w}/resume_nan"]),
    ("more:compile-target", ["compile", "{w}/run", "--target", "loihi9", "--out", "{w}/art2"]),
    ("more:compile-huge-weights-bits", ["compile", "{w}/ck_huge.npz", "--weight-bits", "readout=0",
                                        "--out", "{w}/art2"]),
    ("more:run-steps-negative", ["run", "{w}/art", "--steps", "-5"]),
    ("more:export-user-dir", ["export-netx", "{w}/userdir", "--out", "{w}/x.h5"]),
    ("more:study-report-missing", ["study", "quantization", "--config", "{w}/study_list.json", "--out",
                                   "{w}/study", "--report-only"]),
    ("more:tune-sampler", ["tune", "evidence", "--trials", "1", "--sampler", "bogus", "--out", "{w}/tune"]),
    ("more:tune-journal-garbage", ["tune", "evidence", "--trials", "1", "--storage", "journal:{w}/notes.txt",
                                   "--out", "{w}/tune"]),
    ("more:tune-task-option-garbage", ["tune", "evidence", "--trials", "1", "--task-option", "cue_hz=abc",
                                       "--out", "{w}/tune"]),
    ("more:data-accents-empty", ["data", "speech", "--out", "{w}/corpus", "--accents", ",,", "--small", "--quiet"]),
    ("more:study-out-user-dir", ["study", "quantization", "--out", "{w}/userdir"]),
    ("more:tune-out-user-dir", ["tune", "evidence", "--trials", "1", "--out", "{w}/userdir"]),
    ("cli:no-command", []),
    ("cli:unknown-command", ["bogus"]),
    ("cli:train-no-task", ["train"]),
]

# a few through the real interpreter: exit status and stderr as a user sees them
SUBPROCESS = {"set:spec.n_inputs=3", "eval:nan", "train:out-user-dir", "tune:storage-notes", "config:cfg_null.json",
              "plot:metrics_middle", "data:accents", "compile:out-proc"}


def _prepare(w: Path, name: str) -> None:
    """Per-case set-up: no output of an earlier case; a fresh copy of a run
    to resume from a damaged checkpoint."""
    import shutil

    for scratch in ("new_run", "art2", "corpus", "study", "tune"):
        shutil.rmtree(w / scratch, ignore_errors=True)
    if name.startswith("resume:"):
        kind = name.split(":", 1)[1]
        d = w / f"resume_{kind}"
        if not d.exists():
            shutil.copytree(w / "run", d)
            (d / "checkpoint.npz").write_bytes((w / f"ck_{kind}.npz").read_bytes())


def _run_case(w: Path, name: str, argv: list[str]) -> tuple[int, str]:
    argv = [a.replace("{w}", str(w)) for a in argv]
    if name in SUBPROCESS:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        p = subprocess.run([sys.executable, "-m", "eprop_lava.cli", *argv], capture_output=True, text=True,
                           cwd=w, env=env, timeout=120)
        return p.returncode, p.stderr
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(w)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(cwd)
    return code, err.getvalue()


@pytest.mark.parametrize("name,argv", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_one_clear_error(world, name, argv):
    _prepare(world, name)
    before = _snapshot(world)
    code, err = _run_case(world, name, argv)
    after = _snapshot(world)
    lines = [line for line in err.splitlines() if line.strip()]
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert "Traceback" not in err, err[-3000:]
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert not changed, f"changed or removed user files: {changed}"
    message = lines[-1]
    if "usage:" not in err:
        assert len(lines) == 1, f"more than one line on stderr: {lines}"
        assert message.startswith("eprop-lava: error:") and len(message) > len("eprop-lava: error: ") + 10


def test_case_count():
    assert len(CASES) >= 150
    assert len({c[0] for c in CASES}) == len(CASES)
