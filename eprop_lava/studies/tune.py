"""``eprop-lava tune``: Bayesian hyperparameter search with Optuna.

Sampler: Gaussian-process Bayesian optimization (Optuna's ``GPSampler``, as
the thesis of seed 000 used GP-BO) when PyTorch and SciPy are importable;
otherwise TPE, with a printed notice. The check is made up front because
``GPSampler`` constructs fine without torch and only fails at its first
model-based trial (the 11th).

Storage: a string. The default is a journal file in the output directory (no
server; several processes on one machine may share it). ``sqlite:///x.db``
uses SQLite; ``postgresql://user:pw@host/db`` or ``mysql://...`` a database
server, which is how the same command scales out: start it on N machines
with the same ``--storage`` and ``--study-name`` and they share one study.
A plain path is a journal file (``.db``/``.sqlite`` suffix: SQLite).

Workers: ``workers`` > 1 spawns that many processes on this machine sharing
the storage (:func:`run_workers`). The parent creates the study and enqueues
the default first, then each worker claims trials from one shared count
before starting them, so exactly ``trials`` trials are run in all, and
records its process id in each trial's ``worker_pid`` user attribute.

Search space: the option toolbox of seed 000 that the network spec exposes
(:func:`suggest`): e-prop type, optimizer and learning rate, fraction ALIF,
number of layers and their size, initial weight scaling, firing-rate
regularization (strength and target), L2, and the pseudo-derivative
dampening gamma. Weight dropout, bidirectional networks, the Traub fix and
target delay are not options of the trainer and are not searched.

Objective: the task's validation metric (lower is better) after a short
training budget, from fixed seeds so trials differ only in their
hyperparameters; ``repeats`` > 1 averages over that many seeds (a single
short run is noisy enough that its "best" may not survive another seed).
The task's default configuration is enqueued as the first trial of a new
study, so "default vs best" comes from the same budget; ``confirm`` > 0
then retrains both on fresh seeds (:func:`confirm_best`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from eprop_lava.errors import UserError

SAMPLERS = ("auto", "gp", "tpe", "random")


@dataclass(frozen=True)
class TuneConfig:
    """One search. ``iterations``/``batch_size``/``validation_batches``: the
    training budget of each trial; ``task_options``: passed to the task."""

    task: str = "evidence"
    trials: int = 10
    storage: str | None = None
    study_name: str | None = None
    out: str = "runs/tune"
    iterations: int = 30
    batch_size: int = 32
    validation_batches: int = 2
    seed: int = 0
    sampler: str = "auto"
    sampler_seed: int | None = None
    task_options: dict = field(default_factory=dict)
    enqueue_default: bool = True
    timeout: float | None = None
    startup_trials: int | None = None   # None: min(10, max(2, trials // 2))
    repeats: int = 1                    # seeds per trial (seed, seed+1, ...); the objective is their mean
    confirm: int = 0                    # retrain default and best on this many fresh seeds afterwards
    space: str = "toolbox"              # which options are searched (SPACES)
    workers: int = 1                    # processes sharing the storage; they run ``trials`` in all

    def validated(self) -> "TuneConfig":
        for name in ("iterations", "batch_size", "validation_batches", "repeats", "workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"tune.{name}: expected a positive integer, got {v!r}")
        for name in ("trials", "confirm"):  # trials = 0: only confirm an existing study
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UserError(f"tune.{name}: expected a non-negative integer, got {v!r}")
        if self.trials == 0 and self.confirm == 0:
            raise UserError("tune.trials: 0 trials and no --confirm leaves nothing to do")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"tune.seed: expected a non-negative integer, got {self.seed!r}")
        if self.space not in SPACES:
            raise UserError(f"tune.space: unknown {self.space!r}; choose one of {', '.join(SPACES)}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"tune.sampler: unknown {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.startup_trials is not None and (isinstance(self.startup_trials, bool)
                                                or not isinstance(self.startup_trials, int) or self.startup_trials < 1):
            raise UserError(f"tune.startup_trials: expected a positive integer, got {self.startup_trials!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise UserError(f"tune.timeout: must be > 0 seconds, got {self.timeout!r}")
        return self


def require_optuna():
    """The optuna module, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UserError("tune needs Optuna: pip install 'eprop-lava[tune]' (or pip install 'optuna>=4,<6')") from None
    return optuna


# ----------------------------------------------------------------- storage and sampler
def has_gp_dependencies() -> bool:
    """GPSampler needs torch and scipy; checked without importing them."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "scipy"))


def make_sampler(kind: str, seed: int | None, notice: Callable[[str], None] = print, startup_trials: int = 10,
                 parallel: bool = False):
    """(sampler, name). "auto": GP when torch and scipy are present, else TPE.
    ``startup_trials``: random trials before the model is used (Optuna's
    default 10 would leave a 10-trial search without any modelling).
    ``parallel``: other processes share the study, so TPE scores their
    running trials as if they had the worst value seen (``constant_liar``)
    instead of proposing the same point twice."""
    import optuna

    if kind in ("auto", "gp"):
        if has_gp_dependencies():
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials), "gp"
        missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
        if kind == "gp":
            raise UserError(f"--sampler gp needs {' and '.join(missing)} (pip install 'eprop-lava[torch]'); "
                            "use --sampler tpe")
        notice(f"note: {' and '.join(missing)} not installed, so Gaussian-process sampling (GPSampler) is "
               "unavailable; using TPE instead (pip install 'eprop-lava[torch]' for GP)")
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed), "random"
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, constant_liar=parallel), "tpe"


def resolve_storage(storage: str | None, out: Path):
    """An Optuna storage for the --storage string (see the module docstring)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(out / "tune.journal"))), f"journal:{out / 'tune.journal'}"
    if "://" in storage:
        if storage.startswith("sqlite:///"):
            check_storage_file(storage, Path(storage[len("sqlite:///"):]), "sqlite")
            Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        shown = hide_password(storage)  # the name printed and written to the summary
        try:
            return _rdb_storage(storage), shown
        except ImportError as exc:  # a database driver (psycopg2, pymysql) is missing
            hint = " (pip install 'eprop-lava[tune]')" if storage.startswith("postgres") else ""
            raise UserError(f"--storage {shown}: {exc}{hint}") from None
        except Exception as exc:  # sqlalchemy.exc.ArgumentError / OperationalError
            raise UserError(f"--storage {shown}: cannot open ({_first_line(exc)})") from None
    path = Path(storage[len("journal:"):] if storage.startswith("journal:") else storage)
    check_storage_file(storage, path, "sqlite" if path.suffix in (".db", ".sqlite", ".sqlite3") else "journal")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        url = f"sqlite:///{path}"
        return _rdb_storage(url), url
    return JournalStorage(JournalFileBackend(str(path))), f"journal:{path}"


SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_storage_file(storage: str, path: Path, kind: str) -> None:
    """Refuse, before anything is written, a storage file that exists and is
    not a SQLite database or an Optuna journal (one JSON record with an
    ``op_code`` per line): opening it would append to the user's file."""
    if path.is_dir():
        raise UserError(f"--storage {storage}: {path} is a directory, not a storage file")
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        head = f.read(4096)
    if kind == "sqlite":
        if not head.startswith(SQLITE_MAGIC):
            raise UserError(f"--storage {storage}: {path} exists and is not a SQLite database; choose a new file")
        return
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
        ok = isinstance(record, dict) and "op_code" in record
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"--storage {storage}: {path} exists and is not an Optuna journal (its first line is not "
                        "a journal record); choose a new file")


def hide_password(url: str) -> str:
    """``url`` as typed, with the password of ``scheme://user:password@host``
    (if any) shown as ***."""
    import re

    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)


def _first_line(exc: BaseException) -> str:
    """A driver error in one line: SQLAlchemy appends the SQL and a
    background URL, libpq a second line of hints."""
    orig = getattr(exc, "orig", None)  # the driver's own exception inside SQLAlchemy's wrapper
    text = str(orig if orig is not None else exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(orig or exc).__name__}: {lines[0] if lines else ''}"


CONNECT_TIMEOUT_S = 10  # a server that does not answer is reported, not waited on indefinitely


def _rdb_storage(url: str, attempts: int = 8):
    """RDBStorage, retrying while another worker is creating the same schema
    (two workers starting together on a fresh database race on CREATE TABLE)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    racing = ("already exists", "locked", "UNIQUE constraint failed: alembic_version",
              "duplicate key value violates unique constraint")  # the PostgreSQL form of the race
    engine_kwargs = {}
    if url.startswith("postgres"):
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    for i in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (OperationalError, IntegrityError) as exc:
            # the other worker won the race to create the schema (tables or the
            # version row): the next attempt finds it made
            if i == attempts - 1 or not any(m in str(exc) for m in racing):
                raise
            time.sleep(0.2 * (i + 1))


# ----------------------------------------------------------------- search space
def default_params(task) -> dict:
    """The task's default configuration in the search space's coordinates."""
    spec = task.default_spec()
    layer = spec.layers[0]
    return {
        "variant": spec.learning.variant,
        "optimizer": spec.optimizer.kind,
        "lr": spec.optimizer.lr,
        "adaptive_fraction": layer.adaptive_fraction if layer.neuron in ("alif", "stdp_alif") else 0.0,
        "n_layers": len(spec.layers),
        "size": layer.size,
        "weight_scale": layer.weight_scale,
        "rate_coefficient": max(spec.regularization.coefficient, 1e-3),
        "rate_target_hz": spec.regularization.target_hz,
        "l2": spec.regularization.l2,
        "gamma": layer.params.gamma,
    }


# Each option's sampler; names match :func:`default_params`.
OPTIONS = {
    "variant": lambda t: t.suggest_categorical("variant", ["symmetric", "random", "adaptive"]),
    "optimizer": lambda t: t.suggest_categorical("optimizer", ["adam", "sgd"]),
    "lr": lambda t: t.suggest_float("lr", 1e-4, 5e-2, log=True),
    "adaptive_fraction": lambda t: t.suggest_float("adaptive_fraction", 0.0, 1.0),
    "n_layers": lambda t: t.suggest_int("n_layers", 1, 2),
    "size": lambda t: t.suggest_int("size", 20, 200, step=4),
    "weight_scale": lambda t: t.suggest_float("weight_scale", 0.5, 2.0),
    "rate_coefficient": lambda t: t.suggest_float("rate_coefficient", 1e-3, 10.0, log=True),
    "rate_target_hz": lambda t: t.suggest_float("rate_target_hz", 5.0, 20.0),
    "l2": lambda t: t.suggest_float("l2", 0.0, 1e-3),
    "gamma": lambda t: t.suggest_float("gamma", 0.1, 0.6),
}
# "toolbox": everything above (seed 000's option toolbox); "core": the options
# that move a short training run most, a space a few dozen trials can cover
# (11 dimensions cannot be modelled from 16 trials; 5 can).
SPACES = {
    "toolbox": tuple(OPTIONS),
    "core": ("variant", "lr", "weight_scale", "gamma", "rate_coefficient"),
}


def suggest(trial, space: str = "toolbox", defaults: dict | None = None) -> dict:
    """Sample one configuration: the space's options from the trial, the
    others from ``defaults`` (the task's default configuration)."""
    names = SPACES[space]
    out = dict(defaults or {})
    out.update({name: OPTIONS[name](trial) for name in names})
    missing = set(OPTIONS) - set(out)
    if missing:
        raise ValueError(f"suggest: no default for {sorted(missing)} outside the {space!r} space")
    return out


def spec_for(task, params: dict):
    """The task's default spec with the sampled options applied."""
    from eprop_lava.spec import NetworkSpec

    tree = task.default_spec().to_dict()
    layer = dict(tree["layers"][0])
    layer["size"] = int(params["size"])
    layer["weight_scale"] = float(params["weight_scale"])
    if layer["neuron"] in ("alif", "stdp_alif", "lif"):
        layer["neuron"] = "alif"
        layer["adaptive_fraction"] = float(params["adaptive_fraction"])
    layer["params"] = {**layer["params"], "gamma": float(params["gamma"])}
    tree["layers"] = [dict(layer) for _ in range(int(params["n_layers"]))]
    tree["learning"] = {**tree["learning"], "variant": params["variant"]}
    tree["optimizer"] = {**tree["optimizer"], "kind": params["optimizer"], "lr": float(params["lr"])}
    reg = tree["regularization"]
    reg = {**reg, "coefficient": float(params["rate_coefficient"]), "target_hz": float(params["rate_target_hz"]),
           "l2": float(params["l2"])}
    if reg.get("form", "none") == "none":
        reg["form"] = "bellec"
    tree["regularization"] = reg
    return NetworkSpec.from_dict(tree)


# ----------------------------------------------------------------- the search
def evaluate(config: TuneConfig, task, params: dict, seeds: list, label: str) -> tuple[list, list]:
    """Train ``params`` once per seed on the study's budget; (metric per seed,
    firing rate per seed). Runs go to DIR/trials/LABEL/seedS."""
    from eprop_lava.training import TrainConfig, train

    values, rates = [], []
    for seed in seeds:
        spec = spec_for(task, params).replace(seed=seed)
        tc = TrainConfig(task=config.task, batch_size=config.batch_size, iterations=config.iterations,
                         validate_every=config.iterations, validation_batches=config.validation_batches,
                         early_stop=False, checkpoint_every=max(1, config.iterations), seed=seed,
                         progress=False)
        # resume=False: a run is never half-reused
        result = train(task, spec, tc, Path(config.out) / "trials" / label / f"seed{seed}", resume=False)
        values.append(float(result.final_validation[task.metric_name]))
        rates.append(float(result.final_validation["rate_hz"]))
    return values, rates


def confirm_best(config: TuneConfig, task, summary: dict, log: Callable[[str], None] = print) -> dict | None:
    """Retrain the default and the best configuration on ``config.confirm``
    fresh seeds (never used by the search: seed + repeats, ...), so that "best
    beats default" is not a winner's-curse artefact of the search seeds."""
    if not config.confirm or not summary.get("best") or not summary.get("default"):
        return None
    seeds = [config.seed + config.repeats + k for k in range(config.confirm)]
    out: dict = {"seeds": seeds}
    for which in ("default", "best"):
        params = {**default_params(task), **summary[which]["params"]}
        values, rates = evaluate(config, task, params, seeds, f"confirm-{summary['study_name']}-{which}")
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
        out[which] = {"trial": summary[which]["number"], "values": values, "mean": mean, "std": std,
                      "rate_hz": sum(rates) / len(rates)}
        log(f"confirm {which} (trial {summary[which]['number']}): {task.metric_name} "
            f"{mean:.4f} +- {std:.4f} over seeds {seeds}")
    out["best_beats_default"] = out["best"]["mean"] < out["default"]["mean"]
    return out


def objective_for(config: TuneConfig, task, log: Callable[[str], None] | None = None):

    def objective(trial) -> float:
        params = suggest(trial, config.space, default_params(task))
        seeds = [config.seed + i for i in range(config.repeats)]
        # which process ran the trial: with several workers, the record of who did what
        trial.set_user_attr("worker_pid", os.getpid())
        values, rates = evaluate(config, task, params, seeds, f"{trial.study.study_name}-{trial.number:04d}")
        value = sum(values) / len(values)
        trial.set_user_attr("values", values)
        trial.set_user_attr("rate_hz", sum(rates) / len(rates))
        if not math.isfinite(value):
            raise ValueError(f"trial {trial.number}: validation {task.metric_name} is {value}")
        if log:
            log(f"trial {trial.number}: {task.metric_name} {value:.4f} {json.dumps(params)}")
        return value

    return objective


def run_tune(config: TuneConfig, log: Callable[[str], None] = print) -> dict:
    """Run ``config.trials`` trials (in this process, or shared out over
    ``config.workers`` processes) and write NAME-summary.json."""
    optuna = require_optuna()

    from eprop_lava.tasks import get_task
    from eprop_lava.training import atomic_write_text

    config = config.validated()
    try:
        task = get_task(config.task, **config.task_options)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc) if str(exc).startswith("task ") else f"task: {exc}") from None
    from eprop_lava.training import TrainConfig
    from eprop_lava.validate import check_memory

    check_memory(task.default_spec(), TrainConfig(batch_size=config.batch_size), getattr(task, "steps", None),
                 what=f"--batch-size {config.batch_size}: the task's network")
    from eprop_lava.rundir import check_output_dir

    out = check_output_dir(config.out, lambda d: (d / "trials").is_dir() or (d / "tune.journal").is_file()
                           or any(d.glob("*-summary.json")), "a tune output")
    storage, storage_name = resolve_storage(config.storage, out)
    startup = config.startup_trials or min(10, max(2, config.trials // 2))
    sampler, sampler_name = make_sampler(config.sampler, config.sampler_seed, notice=log, startup_trials=startup,
                                         parallel=config.workers > 1)
    study_name = config.study_name or f"{config.task}-tune"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, sampler=sampler, study_name=study_name, direction="minimize",
                                load_if_exists=True)
    meta = {"task": config.task, "task_options": dict(config.task_options), "iterations": config.iterations,
            "batch_size": config.batch_size, "validation_batches": config.validation_batches, "seed": config.seed,
            "repeats": config.repeats}
    if config.space != "toolbox":  # (older studies have no entry: the toolbox space)
        meta["space"] = config.space
    stored = study.user_attrs.get("budget")
    if stored is None:
        study.set_user_attr("budget", meta)
    elif stored != meta:
        raise UserError(f"study {study_name!r} in {storage_name} was run with another task or budget "
                        f"({json.dumps(stored)}); use another --study-name")
    if config.enqueue_default and not study.trials:
        defaults = default_params(task)
        study.enqueue_trial({k: defaults[k] for k in SPACES[config.space]}, user_attrs={"default": True})
    log(f"tune {config.task}: {config.trials} trials, sampler {sampler_name} ({startup} random startup trials), "
        f"storage {storage_name}, "
        f"study {study_name!r}" + (f", {config.workers} workers" if config.workers > 1 else ""))
    from eprop_lava.progress import Progress, log_file

    if config.workers > 1 and config.trials > 0:
        with log_file(out / "log.txt"):
            run_workers(config, study_name, startup, log, storage_name)
        study = optuna.load_study(study_name=study_name, storage=storage)  # the workers' trials, read back
    else:
        def advance(study, trial) -> None:  # optuna callback after every finished trial
            best = [t.value for t in study.trials if t.value is not None]
            bar.update(1, **({f"best_{task.metric_name}": min(best)} if best else {}))

        with log_file(out / "log.txt"), Progress(config.trials, f"tune {config.task}", unit="trial") as bar:
            study.optimize(objective_for(config, task, log), n_trials=config.trials, timeout=config.timeout,
                           catch=CAUGHT, callbacks=[advance])
    summary = summarize_study(study, task)
    summary.update(sampler=sampler_name, storage=storage_name, budget=meta)
    confirmation = confirm_best(config, task, summary, log)
    if confirmation is not None:
        summary["confirmation"] = confirmation
    atomic_write_text(out / f"{study_name}-summary.json", json.dumps(summary, indent=2))
    return summary


CAUGHT = (FloatingPointError, ValueError)  # a diverging trial is recorded as failed, the search goes on


# ----------------------------------------------------------------- several workers
def run_workers(config: TuneConfig, study_name: str, startup: int, log: Callable[[str], None],
                storage_name: str) -> None:
    """Run ``config.trials`` trials of the (already created) study in
    ``config.workers`` spawned processes sharing ``config.storage``.

    Each worker takes one trial at a time from a shared count of trials
    still to start, so the total is exact (Optuna's ``MaxTrialsCallback``
    stops a worker only after its trial ends, when the others may already
    have started more). Taking a trial (the count and Optuna's ``ask``) is
    done under one lock: on SQLite, which has no row locks, two workers
    asking at once can both be handed the same enqueued trial (seen here
    with the default configuration, trial 0). Worker ``i`` seeds its sampler
    with ``sampler_seed + i``: equal seeds would propose the same points."""
    import multiprocessing as mp

    # spawn, not fork: a forked child would inherit the parent's open database
    # connections and whatever threads torch/numba started
    ctx = mp.get_context("spawn")
    remaining = ctx.Value("i", config.trials)  # its lock also serialises ask()
    # every worker opens the storage, then they start claiming together: a
    # worker still importing torch would otherwise find the first one had
    # taken every trial
    ready = ctx.Barrier(config.workers)
    deadline = None if config.timeout is None else time.time() + config.timeout
    procs = [ctx.Process(target=_worker_main, args=(config, study_name, startup, i, remaining, ready, deadline),
                         name=f"tune-worker-{i}") for i in range(config.workers)]
    threads = worker_threads(config.workers)
    try:
        with _environment(threads):  # the children read it when they import numba and numpy
            for p in procs:
                p.start()
        log(f"workers started: pids {', '.join(str(p.pid) for p in procs)}"
            + (f", {threads} thread{'s' if threads != 1 else ''} each" if threads else ""))
        for p in procs:
            p.join()
    finally:
        for p in procs:  # interrupted: stop the workers rather than leave them running
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        status = ", ".join(f"worker {i} exited with status {code}" for i, code in failed)
        raise UserError(f"tune: {status} (its error is printed above); the trials that finished are stored "
                        f"in {storage_name}")


WORKER_START_TIMEOUT_S = 600
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_threads(workers: int) -> int | None:
    """Threads per worker: the machine's cores shared out (at least 1), or
    None when the user has set any of THREAD_VARIABLES (theirs is kept).

    Why: each worker's compiled loops otherwise start one thread per core,
    W workers start W x cores threads, and numba's parallel loops then
    wait on each other's descheduled threads. Measured here (2 cores, other
    jobs running; docs/studies.md): a trial took 5-7x longer with 2 threads
    than with 1."""
    if any(v in os.environ for v in THREAD_VARIABLES):
        return None
    return max(1, (os.cpu_count() or 1) // workers)


class _environment:
    """Set THREAD_VARIABLES to ``threads`` (None: leave them) while inside."""

    def __init__(self, threads: int | None):
        self.threads = threads

    def __enter__(self):
        if self.threads is not None:
            for v in THREAD_VARIABLES:
                os.environ[v] = str(self.threads)

    def __exit__(self, *exc):
        if self.threads is not None:
            for v in THREAD_VARIABLES:
                os.environ.pop(v, None)  # none was set before (worker_threads checked)


def _claim_trial(study, remaining):
    """Take one trial from the shared count and ask the study for it; None
    when none is left."""
    with remaining.get_lock():
        if remaining.value <= 0:
            return None
        remaining.value -= 1
        return study.ask()


def _run_trial(study, trial, objective, log) -> None:
    """``objective(trial)`` told back to the study, failures as in
    ``study.optimize(catch=CAUGHT)``: a caught error fails the trial and the
    search goes on; anything else fails it and stops the worker."""
    from optuna.trial import TrialState

    try:
        value = objective(trial)
    except CAUGHT as exc:
        log(f"trial {trial.number} failed: {' '.join(str(exc).split())}")
        study.tell(trial, state=TrialState.FAIL)
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)


def _worker_main(config: TuneConfig, study_name: str, startup: int, index: int, remaining, ready,
                 deadline: float | None) -> None:
    """One worker process: open the storage itself, then run trials while
    the shared count lasts (and the deadline has not passed)."""
    import optuna

    from eprop_lava.cli import EXIT_USAGE
    from eprop_lava.tasks import get_task

    def log(message: str) -> None:
        print(f"[worker {index} pid {os.getpid()}] {message}", file=sys.stderr, flush=True)

    try:
        task = get_task(config.task, **config.task_options)
        storage, _ = resolve_storage(config.storage, Path(config.out))
        seed = None if config.sampler_seed is None else config.sampler_seed + index
        sampler, _ = make_sampler(config.sampler, seed, notice=lambda m: None, startup_trials=startup,
                                  parallel=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        objective = objective_for(config, task, log)
        try:
            ready.wait(timeout=WORKER_START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass  # another worker failed to start or is stuck: go on with the ones here
        while deadline is None or time.time() < deadline:
            trial = _claim_trial(study, remaining)
            if trial is None:
                break
            _run_trial(study, trial, objective, log)
    except UserError as exc:
        ready.abort()  # the others must not wait for this worker
        log(f"error: {' '.join(str(exc).split())}")
        sys.exit(EXIT_USAGE)
    except BaseException:
        ready.abort()
        raise


def summarize_study(study, task) -> dict:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    best = min(complete, key=lambda t: t.value) if complete else None
    return {
        "study_name": study.study_name,
        "metric": task.metric_name,
        "trials_complete": len(complete),
        "trials_total": len(study.trials),
        "default": None if default is None else {"number": default.number, "value": default.value,
                                                 "params": default.params},
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
    }
