"""eprop-lava run: the artifact's Lava fixed_pt graph agrees with the
fixed-point engine bit for bit (Lava, marked; one 2250-step sample)."""

import json

import pytest

from conftest import HAS_LAVA
from eprop_lava.cli import main
from eprop_lava.compile.pipeline import compile_checkpoint
from test_compile_artifact import make_checkpoint, small_spec

pytestmark = [pytest.mark.lava, pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")]


def test_run_is_bit_exact_with_the_engine(tmp_path, capsys):
    ck = make_checkpoint(tmp_path, small_spec("alif"))
    compile_checkpoint(ck, tmp_path / "art", target="loihi2")
    assert main(["run", str(tmp_path / "art"), "--samples", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    c = r["lava"]["comparison"]
    assert c["steps"] == 2250
    assert c["readout_mismatches"] == 0 and c["spike_mismatches"] == 0 and c["bit_exact"]
    assert r["lava"]["error"] == r["fixed_error"]
    assert "Loihi2SimCfg(select_tag='fixed_pt')" in r["backend"]
    # --steps caps the Lava run: no complete sample, still compared step by step
    assert main(["run", str(tmp_path / "art"), "--samples", "1", "--steps", "500"]) == 0
    text = capsys.readouterr().out
    assert "n/a (no complete sample)" in text and "0 readout mismatches of 1000" in text


def test_online_learning_in_lava_matches_the_engine(tmp_path):
    """Online fixed-point e-prop with the evidence task's own loss mask (1/150
    per recall step; the compiler chose the error's exponent from it): the
    Lava learning graph ends with the engine's weights. The last 300 steps
    of a sample (cue, delay end and recall) keep the Lava run short."""
    from eprop_lava.compile import deploy
    from eprop_lava.compile.artifact import load_artifact
    from eprop_lava.compile.pipeline import lava_learning

    ck = make_checkpoint(tmp_path, small_spec("lif"))
    compile_checkpoint(ck, tmp_path / "art", target="loihi2", learning=True, lr=2.0)
    net = load_artifact(tmp_path / "art").net
    assert net.error_bits == 12
    _, ts = deploy.test_set("evidence", 2, 1)
    ts = deploy.TestSet(ts.x[-300:], ts.target[-300:], ts.mask[-300:], None)
    assert ts.mask.max() == 1 / 150
    engine = deploy.learn_run(net, ts)
    assert sum(engine["changed_weights"].values()) > 0
    assert engine["signal"]["error"]["underflow_fraction"] < 0.5
    r = lava_learning(net, ts, None)
    assert r["samples"] == 1 and r["bit_exact"], r["weight_mismatches"]


def test_lava_imports_after_the_start_method_was_fixed():
    """Training's tqdm lock fixes multiprocessing's start method; Lava's import
    then calls set_start_method('fork') without force (the demo hit this)."""
    import subprocess
    import sys

    code = ("import multiprocessing as mp; mp.RLock(); "
            "from eprop_lava.compile.deploy import lava_status; ok, why = lava_status(); "
            "assert ok, why; print(mp.get_start_method())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("fork")


def test_importing_lava_dl_prints_nothing_on_stdout():
    """lava-dl's import prints a dataset-toolbox warning on stdout, which broke
    ``export-netx --json``; the import guard sends it to stderr."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("lava.lib.dl") is None:
        pytest.skip("needs lava-dl")
    code = "from eprop_lava.lava_import import import_lava; import_lava('lava.lib.dl.netx.hdf5')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == ""
