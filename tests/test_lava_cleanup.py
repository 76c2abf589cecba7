"""A killed run leaves nothing behind: ``kill -TERM``, ``kill -INT`` and ``kill -9`` of
``eprop-lava run`` in the middle of its Lava phase end every Lava worker,
the resource tracker and the /dev/shm segments the run had mapped.

The run is started in a process group of its own (setsid), so every process it forks (Lava's
model processes, runtime services, shared-memory manager and
multiprocessing's resource tracker) carries its process-group id; they are
counted through /proc, and the shared-memory segments are the /dev/shm
files mapped by any of them (/proc/PID/maps) while the run was going."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HAS_LAVA

REPO = Path(__file__).resolve().parents[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def mapped_shm(pids: list[int]) -> set[str]:
    names = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    names.add(line.split("/dev/shm/", 1)[1].split()[0])
        except OSError:
            continue
    return names


def wait_until(predicate, timeout: float, step: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_forked_child_dies_with_its_killed_parent(tmp_path):
    """No Lava: a process forks a child inside children_die_with_parent()
    and is then killed with SIGKILL; the child must go too (without the
    guard it would sleep on, reparented)."""
    code = (
        "import os, sys, time\n"
        "from eprop_lava.lifetime import children_die_with_parent\n"
        "with children_die_with_parent():\n"
        "    pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(60); os._exit(0)\n"
        "print(pid, flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         start_new_session=True, env=python_env())
    child = int(p.stdout.readline())
    assert child in group_members(p.pid)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    p.stdout.close()
    left = wait_until(lambda: not group_members(p.pid), 10) or group_members(p.pid)
    kill_leftovers(group_members(p.pid))
    assert left is True, f"left running: {group_members(p.pid)}"


@pytest.mark.lava
@pytest.mark.skipif(not HAS_LAVA, reason="needs lava-nc (Python 3.10)")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_killed_lava_run_leaves_no_process_or_segment(tmp_path, how):
    from eprop_lava.compile.pipeline import compile_checkpoint
    from test_compile_artifact import make_checkpoint, small_spec

    compile_checkpoint(make_checkpoint(tmp_path, small_spec("lif")), tmp_path / "art", target="loihi2")
    err_path = tmp_path / "stderr.txt"
    # 8 samples x 2250 steps: about half a minute of Lava, far longer than the kill takes
    with open(err_path, "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "eprop_lava.cli", "run", str(tmp_path / "art"),
                              "--samples", "8", "--lava-samples", "8"],
                             stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, env=python_env())
    segments: set = set()
    try:
        def lava_running():
            members = group_members(p.pid)
            segments.update(mapped_shm(members))
            return "Lava" in err_path.read_text() and len(members) >= 8 and segments
        assert wait_until(lava_running, 240, 0.2), f"Lava phase never started: {err_path.read_text()[-2000:]}"
        time.sleep(1.0)  # the runtime is stepping now
        segments.update(mapped_shm(group_members(p.pid)))
        psm = {s for s in segments if s.startswith("psm_")}
        assert psm, f"no Lava channel segments seen among {sorted(segments)[:5]}"
        os.kill(p.pid, getattr(signal, how))
        rc = p.wait(timeout=120)
        gone = wait_until(lambda: not group_members(p.pid), 30)
        leftover = group_members(p.pid)
        unlinked = wait_until(lambda: not [s for s in psm if os.path.exists(f"/dev/shm/{s}")], 30)
        left_segments = [s for s in psm if os.path.exists(f"/dev/shm/{s}")]
    finally:
        kill_leftovers([p.pid] + group_members(p.pid))
    for s in [s for s in psm if os.path.exists(f"/dev/shm/{s}")]:
        os.unlink(f"/dev/shm/{s}")
    assert gone and not leftover, f"{len(leftover)} processes left after {how}"
    assert unlinked and not left_segments, f"{len(left_segments)} of {len(psm)} /dev/shm segments left after {how}"
    if how in ("SIGTERM", "SIGINT"):  # unwound through runtime.stop(), like an error
        err = err_path.read_text()
        assert rc == (128 + signal.SIGTERM if how == "SIGTERM" else 130), err[-2000:]
        assert "Traceback" not in err
        assert err.splitlines()[-1] == ("eprop-lava: terminated" if how == "SIGTERM" else "eprop-lava: interrupted")
    else:
        assert rc == -signal.SIGKILL
