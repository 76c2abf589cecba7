"""Runs that lose nothing: a run directory is a run or refused, one writer
holds it, only a torn last metrics line is repaired, and the temporaries of
an interrupted write are removed by the next writer."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eprop_lava.cli import main
from eprop_lava.rundir import RunDirError, RunLock, read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.batch_size=2", "--set", "train.validation_batches=1", "--set", "train.progress=false",
        "--set", "train.validate_every=1", "--set", "train.checkpoint_every=1", "--set", "spec.layers.0.size=8"]


def _train(out, iterations, capsys=None):
    code = main(["train", "evidence", "--out", str(out), "--set", f"train.iterations={iterations}", *TINY])
    err = capsys.readouterr().err if capsys else ""
    return code, err


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_metrics_reader_repairs_only_a_torn_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"iteration": i, "loss": 1.0 / i} for i in (1, 2, 3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    log.write_text(text + '{"iteration": 4, "lo')  # torn in the middle of a write
    assert read_metrics(log) == rows
    assert read_metrics(log, upto=2) == rows[:2]
    log.write_text(text + "\0" * 64)  # the zeros a crash can leave after the data
    assert read_metrics(log) == rows
    lines = text.splitlines()
    log.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
    with pytest.raises(RunDirError, match=r"line 2 is damaged"):
        read_metrics(log)
    log.write_text("[1, 2]\n" + text)
    with pytest.raises(RunDirError, match=r"line 1 is damaged \(not a JSON object\)"):
        read_metrics(log)


def test_resume_keeps_every_row_and_drops_a_torn_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 2, capsys)[0] == 0
    log = out / "metrics.jsonl"
    assert [r["iteration"] for r in _rows(log)] == [1, 2]
    with open(log, "a") as f:
        f.write('{"iteration": 3, "loss": 0.')  # the crash tore the next row
    assert _train(out, 3, capsys)[0] == 0
    assert [r["iteration"] for r in _rows(log)] == [1, 2, 3]


def test_resume_refuses_a_damaged_log_and_keeps_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 2, capsys)[0] == 0
    log = out / "metrics.jsonl"
    lines = log.read_text().splitlines()
    damaged = lines[0] + "\n" + "garbage\n" + lines[1] + "\n"
    log.write_text(damaged)
    code, err = _train(out, 3, capsys)
    assert code == 2 and "metrics.jsonl: line 2 is damaged" in err and "Traceback" not in err
    assert log.read_text() == damaged


def test_a_directory_that_is_not_a_run_is_refused_untouched(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "metrics.jsonl").write_text('{"my": "numbers"}\n')
    (user / "config.json").write_text('{"my": "settings"}\n')
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    for extra in ([], ["--fresh"]):
        code = main(["train", "evidence", "--out", str(user), "--set", "train.iterations=1", *TINY, *extra])
        err = capsys.readouterr().err
        assert code == 2 and "not a run" in err and len(err.splitlines()) == 1
        assert {p.name: p.read_bytes() for p in user.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train(empty, 1, capsys)[0] == 0  # an empty directory becomes a run


def test_a_second_writer_is_refused_until_the_first_dies(tmp_path, capsys):
    """A process holding the run's lock (standing in for a train in progress)
    makes a second train exit 2 naming its pid; after it is killed with
    SIGKILL the kernel has dropped the lock and the run resumes."""
    out = tmp_path / "run"
    assert _train(out, 1, capsys)[0] == 0
    rows_before = (out / "metrics.jsonl").read_bytes()
    ck_before = (out / "checkpoint.npz").read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from eprop_lava.rundir import RunLock; "
                               f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _train(out, 2, capsys)
        assert code == 2, err
        assert f"is in use by another train process (pid {holder.pid})" in err and len(err.splitlines()) == 1
        assert (out / "metrics.jsonl").read_bytes() == rows_before
        assert (out / "checkpoint.npz").read_bytes() == ck_before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert _train(out, 2, capsys)[0] == 0
    assert [r["iteration"] for r in _rows(out / "metrics.jsonl")] == [1, 2]


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunDirError, match="in use"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released on exit
        pass


def test_stale_temporaries_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 1, capsys)[0] == 0
    stale = [out / ".checkpoint.npz.k3j2_x.tmp", out / ".best.npz.a8b7.tmp", out / ".metrics.jsonl.zz.tmp"]
    for p in stale:
        p.write_bytes(b"half a write")
    assert _train(out, 2, capsys)[0] == 0
    assert not [p for p in stale if p.exists()]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "best.npz", "checkpoint.npz", "config.json", "log.txt", "metrics.jsonl"]


def test_stale_artifact_temporaries_of_dead_writers_are_removed(tmp_path):
    """A compile killed half-way leaves .NAME.PID-*.tmp; the next compile of
    NAME removes it when PID is gone, and keeps one whose writer still runs."""
    from eprop_lava.compile.artifact import remove_stale_siblings

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "art"
        stale = tmp_path / f".art.{dead.pid}-x1y2.tmp"
        replaced = tmp_path / f".art.old-{dead.pid}-1234"
        busy = tmp_path / f".art.{alive.pid}-q9.tmp"
        other = tmp_path / f".artwork.{dead.pid}-x.tmp"
        for d in (stale, replaced, busy, other):
            d.mkdir()
            (d / "manifest.json").write_text("{}")
        assert remove_stale_siblings(out) == sorted([stale.name, replaced.name])
        assert busy.is_dir() and other.is_dir() and not stale.exists() and not replaced.exists()
    finally:
        alive.kill()
        alive.wait()


def test_two_real_trains_on_one_directory(tmp_path, capsys):
    """A train in progress (a subprocess) holds the run; a second train on the
    same --out exits 2 and changes nothing; after the first is killed with
    SIGKILL the second resumes from its last checkpoint and the log has
    every iteration exactly once."""
    import time

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-m", "eprop_lava.cli", "train", "evidence", "--out", str(out),
                              "--set", "train.iterations=100000", *TINY],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # running: locked, and a few checkpoints written
            log = out / "metrics.jsonl"
            if (out / ".lock").is_file() and log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        assert (out / ".lock").read_text().strip() == str(first.pid)
        code, err = _train(out, 100000, capsys)
        assert code == 2 and f"(pid {first.pid})" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert _train(out, len(_rows(out / "metrics.jsonl")) + 2, capsys)[0] == 0
    its = [r["iteration"] for r in _rows(out / "metrics.jsonl")]
    assert its == list(range(1, len(its) + 1)) and len(its) >= 5


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from eprop_lava.errors import user_error_message
    from eprop_lava.training import atomic_write_text

    target = tmp_path / "config.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        atomic_write_text(target, "new")
    assert user_error_message(err.value) == f"{target}: No space left on device"
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_sigterm_ends_a_train_cleanly_and_it_resumes(tmp_path, capsys):
    import time

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "eprop_lava.cli", "train", "evidence", "--out", str(out),
                          "--set", "train.iterations=100000", *TINY],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        log = out / "metrics.jsonl"
        while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "eprop-lava: terminated"
    assert _train(out, len(_rows(out / "metrics.jsonl")) + 1, capsys)[0] == 0  # the lock went with it
    its = [r["iteration"] for r in _rows(out / "metrics.jsonl")]
    assert its == list(range(1, len(its) + 1))
