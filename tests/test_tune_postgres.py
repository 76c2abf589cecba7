"""tune --workers 2 against a real PostgreSQL server: a private cluster
(initdb + pg_ctl, listening only on a unix socket in a temporary directory)
started for this module and stopped afterwards. The study is read back
with psql, independently of Optuna and of the Python driver."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2", reason="PostgreSQL driver not installed (pip install 'eprop-lava[tune]')")

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"n_cues": 3, "cue_ms": 20, "spacing_ms": 10, "delay_ms": 40, "recall_ms": 30}
SHORT_ARGS = [a for k, v in SHORT.items() for a in ("--task-option", f"{k}={v}")]
PORT = 5432  # names the socket file only: the server listens on no TCP port


def postgres_bin() -> Path | None:
    """The directory holding initdb/pg_ctl/psql: Debian's layout, then PATH."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "psql")):
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres():
    """(bin dir, socket dir): a running throwaway cluster with a database `tune`.

    PostgreSQL refuses to run as root, so as root the server runs as the
    `postgres` user (Debian's package creates it) via runuser."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no initdb on "
                    "PATH); on Debian: apt-get install postgresql (.ci/run does this where apt-get works)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing (needed to start the server as `postgres`)")
        prefix = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="eprop-pg-"))
    if prefix:
        os.chown(home, pw.pw_uid, pw.pw_gid)
    data, log = home / "data", home / "server.log"

    def as_server(*cmd, **kw):
        return subprocess.run([*prefix, *map(str, cmd)], check=True, capture_output=True, text=True, timeout=120,
                              **kw)

    try:
        as_server(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        as_server(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start", "-o",
                  f"-c listen_addresses='' -c unix_socket_directories='{home}' -p {PORT} -c fsync=off")
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr}\n{tail}")
    try:
        subprocess.run([bindir / "createdb", "-h", home, "-p", str(PORT), "-U", "postgres", "tune"], check=True,
                       capture_output=True, timeout=60)
        yield bindir, home
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def psql(bindir: Path, sock: Path, sql: str) -> list[list[str]]:
    """Rows of a query, read with the psql client (not Optuna, not psycopg2)."""
    out = subprocess.run([bindir / "psql", "-h", sock, "-p", str(PORT), "-U", "postgres", "-d", "tune", "-At",
                          "-F", "\t", "-c", sql], check=True, capture_output=True, text=True, timeout=60).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def url(sock: Path) -> str:
    return f"postgresql://postgres@/tune?host={sock}&port={PORT}"


def run_cli(args, cwd, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "eprop_lava.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_two_workers_share_a_postgres_study_without_duplicates(postgres, tmp_path):
    bindir, sock = postgres
    trials = 4
    done = run_cli(["tune", "evidence", "--trials", str(trials), "--workers", "2", "--iterations", "1",
                    "--batch-size", "4", "--validation-batches", "1", "--storage", url(sock),
                    "--study-name", "pg2", "--out", str(tmp_path), "--sampler", "random", "--sampler-seed", "0",
                    "--json", *SHORT_ARGS], tmp_path)
    assert done.returncode == 0, done.stderr
    import json

    summary = json.loads(done.stdout)

    # the trials as PostgreSQL holds them, one row per trial
    rows = psql(bindir, sock, "SELECT t.number, t.state, v.value FROM trials t JOIN studies s USING (study_id) "
                              "LEFT JOIN trial_values v ON v.trial_id = t.trial_id "
                              "WHERE s.study_name = 'pg2' ORDER BY t.number")
    assert [r[0] for r in rows] == [str(n) for n in range(trials)]  # exactly the requested trials, no extra
    assert all(r[1] == "COMPLETE" for r in rows), rows
    values = [float(r[2]) for r in rows]
    # no two trials evaluated the same configuration
    params = psql(bindir, sock, "SELECT t.number, string_agg(p.param_name || '=' || p.param_value::text, ',' "
                                "ORDER BY p.param_name) FROM trials t JOIN studies s USING (study_id) "
                                "JOIN trial_params p ON p.trial_id = t.trial_id WHERE s.study_name = 'pg2' "
                                "GROUP BY t.number")
    assert len(params) == trials and len({p[1] for p in params}) == trials, params
    # both workers ran trials, and each trial names one of them
    pids = psql(bindir, sock, "SELECT a.value_json FROM trial_user_attributes a JOIN trials t USING (trial_id) "
                              "JOIN studies s USING (study_id) WHERE s.study_name = 'pg2' AND a.key = 'worker_pid'")
    assert len(pids) == trials and len({p[0] for p in pids}) == 2, pids
    assert int(pids[0][0]) != os.getpid()
    # one run directory per trial, none reused
    assert len(list(tmp_path.glob("trials/pg2-*/seed0"))) == trials
    # the summary's best is the minimum PostgreSQL stores
    assert summary["trials_complete"] == trials
    assert summary["best"]["value"] == pytest.approx(min(values), abs=1e-12)
    assert summary["best"]["value"] == float(psql(bindir, sock, "SELECT min(v.value) FROM trial_values v JOIN "
                                                                "trials t USING (trial_id) JOIN studies s USING "
                                                                "(study_id) WHERE s.study_name = 'pg2'")[0][0])


def test_unreachable_postgres_is_one_line_exit_2(postgres, tmp_path):
    _, sock = postgres
    bad = f"postgresql://postgres:s3cret@/tune?host={sock}&port={PORT + 1}"  # no server on that socket
    done = run_cli(["tune", "evidence", "--trials", "1", "--workers", "2", "--storage", bad, "--out",
                    str(tmp_path)], tmp_path, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    shown = bad.replace("s3cret", "***")  # the password is not echoed
    assert len(lines) == 1 and lines[0].startswith(f"eprop-lava: error: --storage {shown}: cannot open ("), done.stderr
    assert "No such file or directory" in lines[0]  # libpq's reason, kept
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    assert not list(tmp_path.glob("trials/*"))  # nothing started
