"""Compiled artifacts: round trip, atomic writes, and integrity (truncated,
edited, missing or added files give a CheckpointError naming the file)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_LAVA
from eprop_lava.cli import main
from eprop_lava.compile.artifact import load_artifact
from eprop_lava.compile.pipeline import compile_checkpoint
from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.network import init_params
from eprop_lava.eprop.optim import Optimizer
from eprop_lava.errors import CheckpointError
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec
from eprop_lava.training import TrainConfig, save_checkpoint


def small_spec(neuron="lif", timing="loihi", reset="zero"):
    """The evidence task's inputs and outputs, a small hidden layer."""
    return NetworkSpec(n_inputs=40, layers=(LayerSpec(size=16, neuron=neuron, params=NeuronParams(n_ref=0)),),
                       readout=ReadoutSpec(n_outputs=2), timing=timing, reset=reset, seed=2)


def make_checkpoint(path: Path, spec: NetworkSpec) -> Path:
    params = {k: np.asarray(v, dtype=np.float64) for k, v in init_params(spec).items()}
    params["layers.0.w_in"] *= 3.0  # make it spike
    config = TrainConfig(task="evidence", iterations=1, seed=2, progress=False)
    save_checkpoint(path / "checkpoint.npz", spec, config, params, Optimizer(spec.optimizer), 1,
                    np.random.default_rng(0).bit_generator.state)
    return path / "checkpoint.npz"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("art")
    ck = make_checkpoint(d, small_spec())
    s = compile_checkpoint(ck, d / "compiled", target="loihi2")
    return d, ck, s


def copy_artifact(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_round_trip_rebuilds_the_same_network(artifact):
    d, ck, s = artifact
    art = load_artifact(d / "compiled")
    assert s["cores"] == 1 and s["target"] == "loihi2"
    assert (d / "compiled" / "report.md").read_text().startswith("# Compiled network")
    assert (d / "compiled" / "core_map.png").read_bytes()[:4] == b"\x89PNG"
    man = art.manifest
    for key in ("spec", "versions", "quantization", "mapping", "network", "energy", "files", "source"):
        assert key in man
    assert man["source"]["checkpoint_sha256"]
    assert man["energy"]["per_step"]["energy_pj"] > 0
    x = (np.random.default_rng(1).random((60, 3, 40)) < 0.2).astype(float)
    from eprop_lava.compile.quantize import quantize_network
    from eprop_lava.training import load_checkpoint
    c = load_checkpoint(ck)
    ref, _ = quantize_network(c.spec, c.params, 8)
    a, b = fe.simulate(art.net, x), fe.simulate(ref, x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.z[0], b.z[0])
    assert set(art.float_params) == set(c.params)


def test_truncated_array_is_named(artifact, tmp_path):
    d, _, _ = artifact
    a = copy_artifact(d / "compiled", tmp_path / "a")
    f = a / "arrays" / "layers.0.w_rec.npy"
    f.write_bytes(f.read_bytes()[:-9])
    with pytest.raises(CheckpointError, match=r"arrays/layers\.0\.w_rec\.npy has .* bytes.*truncated"):
        load_artifact(a)


def test_edited_array_is_named(artifact, tmp_path):
    d, _, _ = artifact
    a = copy_artifact(d / "compiled", tmp_path / "a")
    f = a / "arrays" / "layers.0.neuron.vth.npy" if (a / "arrays" / "layers.0.neuron.vth.npy").exists() \
        else a / "arrays" / "readout.w.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # same size, one bit flipped
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{f.name} does not match its sha256"):
        load_artifact(a)


def test_edited_manifest_is_detected(artifact, tmp_path):
    d, _, _ = artifact
    a = copy_artifact(d / "compiled", tmp_path / "a")
    m = json.loads((a / "manifest.json").read_text())
    m["network"]["layers"][0]["neuron"]["vth"] = 1  # a different network, same files
    (a / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="manifest.json was edited"):
        load_artifact(a)
    (a / "manifest.json").write_text((d / "compiled" / "manifest.json").read_text()[:500])
    with pytest.raises(CheckpointError, match="manifest.json is truncated or not JSON"):
        load_artifact(a)


def test_missing_and_added_files(artifact, tmp_path):
    d, _, _ = artifact
    a = copy_artifact(d / "compiled", tmp_path / "a")
    (a / "arrays" / "feedback.b.npy").unlink()
    with pytest.raises(CheckpointError, match=r"arrays/feedback\.b\.npy is missing"):
        load_artifact(a)
    b = copy_artifact(d / "compiled", tmp_path / "b")
    np.save(b / "arrays" / "extra.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match=r"arrays/extra\.npy is not listed"):
        load_artifact(b)
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        load_artifact(tmp_path)


def test_atomic_replace_and_refusal(artifact, tmp_path):
    d, ck, _ = artifact
    out = tmp_path / "out"
    compile_checkpoint(ck, out, target="loihi1")
    first = load_artifact(out).manifest["manifest_sha256"]
    compile_checkpoint(ck, out, target="loihi2")  # replaces the earlier artifact
    assert load_artifact(out).target == "loihi2"
    assert load_artifact(out).manifest["manifest_sha256"] != first
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old directories left
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an artifact"):
        compile_checkpoint(ck, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_compile_and_one_line_errors(artifact, tmp_path, capsys):
    d, ck, _ = artifact
    assert main(["compile", str(ck), "--target", "loihi1", "--weight-bits", "6", "--out", str(tmp_path / "c"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "loihi1" and out["weight_bits"]["layers.0"] == 6
    assert main(["compile", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bellec = make_checkpoint(tmp_path, small_spec(timing="bellec", reset="subtract"))
    assert main(["compile", str(bellec), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--loihi-timing" in err
    assert main(["compile", str(bellec), "--loihi-timing", "--out", str(tmp_path / "y")]) == 0
    assert "compiled with Loihi's timing" in capsys.readouterr().out
    assert main(["compile", str(ck), "--weight-bits", "9", "--out", str(tmp_path / "z")]) == 2
    assert main(["run", str(tmp_path / "missing")]) == 2
    assert "artifact not found" in capsys.readouterr().err


def test_cli_run_without_lava(artifact, capsys):
    d, _, _ = artifact
    assert main(["run", str(d / "compiled"), "--samples", "2", "--no-lava", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["lava"] == {"skipped": "disabled (--no-lava)"}
    assert 0 <= r["fixed_error"] <= 1 and 0 <= r["float_error"] <= 1
    assert "hardware" in r and r["hardware"]["hardware"] is False
    sat = r["saturation"]["layers.0"]
    assert sat["of"] % (2 * r["steps_per_sample"]) == 0 and sat["of"] > 0  # both samples, every step


def test_cli_export_netx(artifact, tmp_path, capsys):
    d, ck, _ = artifact
    if HAS_LAVA:  # the export runs the file in lava-dl netx before it reports success
        assert main(["export-netx", str(d / "compiled"), "--out", str(tmp_path / "n.h5")]) == 0
        assert (tmp_path / "n.h5").is_file()
    alif = make_checkpoint(tmp_path, small_spec("alif"))
    compile_checkpoint(alif, tmp_path / "alif")
    capsys.readouterr()
    assert main(["export-netx", str(tmp_path / "alif"), "--out", str(tmp_path / "a.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no adaptive-threshold neuron" in err
    compile_checkpoint(ck, tmp_path / "learn", learning=True)
    assert main(["export-netx", str(tmp_path / "learn"), "--out", str(tmp_path / "l.h5")]) == 2
    assert "learning synapses" in capsys.readouterr().err


def test_run_without_lava_reports_engines_and_why(artifact):
    """With Lava not importable the run still compares float and fixed point."""
    import subprocess
    import sys

    d, _, _ = artifact
    code = ("import sys, json; sys.modules['lava'] = None; "
            "from eprop_lava.compile.pipeline import run_artifact, format_run; "
            f"r = run_artifact({str(d / 'compiled')!r}, samples=2); print(format_run(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fixed-point engine error" in out.stdout and "float engine error" in out.stdout
    assert "Lava run skipped: Lava is not importable" in out.stdout
    assert "layers.0 (2 test samples): " in out.stdout and "v saturated" in out.stdout
