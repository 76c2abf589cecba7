"""Progress feedback: plain lines when stderr is not a terminal (throttled),
a tqdm.auto bar on a terminal, every line appended to the run's log.txt, and
the documented cost estimates scaled by hand-computed factors."""

import io
import re
import sys
from pathlib import Path

import pytest

from eprop_lava import progress as P


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_terminal_are_throttled_and_logged(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    with P.log_file(tmp_path / "log.txt"):
        bar = P.Progress(10, "train evidence", unit="it", stream=stream, every_seconds=30.0)
        for i in range(10):
            clock[0] += 10.0          # 10 s per iteration
            bar.update(1, loss=0.5)
        bar.close()
    lines = stream.getvalue().splitlines()
    # first update, then every 30 s (iterations 4, 7, 10 at 40, 70, 100 s); close adds nothing new
    assert [l.split(":")[1].split()[0] for l in lines] == ["1/10", "4/10", "7/10", "10/10"]
    assert lines[1] == "train evidence: 4/10 it (40%), 40 s elapsed, 10 s/it, ~60 s left, loss=0.5"
    logged = (tmp_path / "log.txt").read_text().splitlines()
    assert len(logged) == 4
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ train evidence: ", l) for l in logged)
    assert logged[-1].endswith("10/10 it (100%), 1.7 min elapsed, 10 s/it, ~0.0 s left, loss=0.5")


def test_close_logs_the_final_count(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = P.Progress(3, "run", unit="sample", stream=stream, every_seconds=1000.0, delay_seconds=0.0)
    for _ in range(3):
        clock[0] += 1.0
        bar.update(1)
    bar.close()
    assert [l.split()[1] for l in stream.getvalue().splitlines()] == ["1/3", "3/3"]


def test_short_work_stays_quiet_on_stderr_but_is_logged(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    with P.log_file(tmp_path / "log.txt"):
        with P.Progress(3, "MFCC features (valid)", unit="utt", stream=stream, every_seconds=0.0) as bar:
            for _ in range(3):
                clock[0] += 1.0          # 3 s in all: below the 10 s delay
                bar.update(1)
        assert stream.getvalue() == ""
        assert len((tmp_path / "log.txt").read_text().splitlines()) == 3
        with P.Progress(3, "train", stream=stream, every_seconds=1000.0) as bar:
            for _ in range(3):
                clock[0] += 6.0          # the delay passes during the second step
                bar.update(1)
    assert [l.split()[1] for l in stream.getvalue().splitlines()] == ["2/3", "3/3"]


def test_terminal_gets_a_tqdm_auto_bar_and_no_plain_lines(tmp_path):
    stream = FakeTTY()
    with P.log_file(tmp_path / "log.txt"):
        bar = P.Progress(4, "Lava fixed_pt", unit="step", stream=stream, delay_seconds=0.0)
        from tqdm.auto import tqdm

        assert isinstance(bar.bar, tqdm)
        bar.update(2)
        bar.update(2)
        assert bar.bar.n == 4 and bar.bar.total == 4
        bar.close()
    out = stream.getvalue()
    assert "Lava fixed_pt:" in out and "step/s" in out        # drawn by tqdm
    assert "elapsed," not in out                               # no plain log lines on a terminal
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 2  # the log file still gets them


def test_disabled_progress_writes_only_the_log_file(tmp_path):
    stream = io.StringIO()
    with P.log_file(tmp_path / "log.txt"):
        with P.Progress(2, "x", stream=stream, enabled=False) as bar:
            bar.update(2)
    assert stream.getvalue() == ""
    assert "x: 2/2 it" in (tmp_path / "log.txt").read_text()


def test_append_line_appends_whole_lines(tmp_path):
    path = tmp_path / "sub" / "log.txt"
    P.append_line(path, "one")
    P.append_line(path, "two\n")
    assert path.read_text() == "one\ntwo\n"


def test_log_seconds_from_the_environment(monkeypatch):
    monkeypatch.setenv("EPROP_LAVA_LOG_SECONDS", "5")
    assert P.log_seconds() == 5.0
    monkeypatch.setenv("EPROP_LAVA_LOG_SECONDS", "soon")
    assert P.log_seconds() == P.DEFAULT_LOG_SECONDS


def test_cost_estimates_scale_the_documented_figures():
    # batch 16 x 1125 steps is a quarter of the reference 32 x 2250: 17-27 s -> 4.25-6.75 s
    text = P.bptt_estimate(16, 1125, 100)
    assert "documented" in text and "~4.2 s-6.8 s per iteration" in text and "~7.1 min-11 min for 100" in text
    # 1000 steps at 1.3-2.2 ms -> 1.3-2.2 s; learning 2.7-5.4 ms -> 2.7-5.4 s
    assert "1.3-2.2 ms per step" in P.lava_estimate(1000) and "~1.3 s-2.2 s" in P.lava_estimate(1000)
    assert "~2.7 s-5.4 s" in P.lava_estimate(1000, learning=True)


def test_training_logs_to_the_run_directory(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_training import ShortEvidence, _config, small_spec
    from eprop_lava.training import train

    task = ShortEvidence()
    train(task, small_spec(task), _config(iterations=3, algo="bptt"), tmp_path / "run", resume=False)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "BPTT on CPU costs 17-27 s per iteration" in log
    assert "train evidence: 1/3 it" in log and "train evidence: 3/3 it (100%)" in log


@pytest.mark.lava
def test_lava_runs_in_reported_chunks_stay_bit_exact(tmp_path):
    """With a progress bar the Lava run advances one sample per run call;
    inference and online learning still match the fixed-point engine bit for bit."""
    from conftest import HAS_LAVA

    if not HAS_LAVA:
        pytest.skip("needs lava-nc (Python 3.10)")
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from test_compile_artifact import make_checkpoint, small_spec
    from eprop_lava.compile import deploy
    from eprop_lava.compile.artifact import load_artifact
    from eprop_lava.compile.pipeline import compile_checkpoint
    from eprop_lava.models.network import run_network

    ck = make_checkpoint(tmp_path, small_spec("lif"))
    compile_checkpoint(ck, tmp_path / "art", target="loihi2", learning=True, lr=2.0)
    net = load_artifact(tmp_path / "art").net
    _, ts = deploy.test_set("evidence", 2, 2)
    ts = deploy.TestSet(ts.x[-300:], ts.target[-300:], (ts.mask[-300:] > 0).astype(float), None)
    stream = io.StringIO()
    with P.Progress(600, "Lava fixed_pt", unit="step", stream=stream, every_seconds=0.0, delay_seconds=0.0) as bar:
        lv = deploy.lava_run(net, ts.x, progress=bar)
    assert [l.split()[2] for l in stream.getvalue().splitlines()] == ["300/600", "600/600"]
    cmp = deploy.compare_lava(deploy.fixed_run(net, ts), lv)
    assert cmp["steps"] == 600 and cmp["bit_exact"], cmp
    engine = deploy.learn_run(net, ts)["net"].weights()
    with P.Progress(600, "learning", unit="step", stream=io.StringIO()) as bar:
        res = run_network(np.transpose(ts.x, (1, 0, 2)), net=net, target=np.transpose(ts.target, (1, 0, 2)),
                          mask=ts.mask.T, learn=True, weights=True, timeout=300.0, progress=bar)
        assert bar.count == 600
    assert sum(int(np.sum(engine[k] != net.weights()[k])) for k in engine) > 0   # it learned
    for k, w in res["weights"].items():
        if k in engine:
            np.testing.assert_array_equal(np.asarray(w), engine[k], err_msg=k)


def test_rate_leaves_out_the_first_update(monkeypatch):
    """The first step pays for start-up (imports, compilation): the rate and
    the time left come from the steps after it."""
    clock = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = P.Progress(12, "MFCC features (train)", unit="utt", stream=stream, every_seconds=0.0, delay_seconds=0.0)
    clock[0] = 20.0
    bar.update(1)
    for _ in range(3):
        clock[0] += 2.0
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "MFCC features (train): 1/12 utt (8%), 20 s elapsed, 20 s/utt"   # no estimate yet
    assert lines[-1] == "MFCC features (train): 4/12 utt (33%), 26 s elapsed, 2 s/utt, ~16 s left"
