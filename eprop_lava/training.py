"""Training runs: minibatches, optimizer, validation, early stopping,
metrics log, atomic resumable checkpoints.

A run directory holds

    config.json        the resolved run configuration and network spec (all seeds)
    metrics.jsonl      one JSON object per iteration (and per validation)
    checkpoint.npz     the latest checkpoint (parameters, optimizer, data RNG)
    best.npz           the checkpoint with the best validation metric

Resuming after a crash (even kill -9) continues from checkpoint.npz with the
saved random-number state, so it reaches the same parameters and metrics as
an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.memory import retain_freed_memory
from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient, rate_loss
from eprop_lava.engine.network import Batch, init_params, simulate
from eprop_lava.eprop.learning_signal import adaptive_feedback_update
from eprop_lava.eprop.optim import Optimizer
from eprop_lava.errors import CheckpointError, UserError, did_you_mean
from eprop_lava.rundir import RunLock, check_run_dir, read_metrics, remove_stale_temporaries
from eprop_lava.spec import NetworkSpec, SpecError
from eprop_lava.validate import (
    check_checkpoint, check_environment, check_memory, check_spec_for_task, check_train_fields,
)

ALGOS = ("eprop", "bptt")
BACKENDS = ("numpy", "torch")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the network itself is the NetworkSpec).

    seed drives parameter initialization (through spec.seed) and the data:
    training batches come from default_rng([seed, 1]), validation batches
    from default_rng([seed, 2]), evaluation batches from default_rng([seed, 3]).
    """

    task: str = "evidence"
    task_options: dict = field(default_factory=dict)   # constructor options, e.g. {"data": DIR}
    algo: str = "eprop"
    batch_size: int = 32
    iterations: int = 2000
    validate_every: int = 10
    validation_batches: int = 8
    early_stop: bool = True
    target_metric: float | None = None   # None: the task's own "solved" level
    checkpoint_every: int = 10
    backend: str = "numpy"
    device: str = "cpu"
    dtype: str = "float32"
    bptt_graph: str = "full"
    seed: int = 0
    progress: bool = True
    distributed: bool = False   # data-parallel over torch.distributed (see engine/distributed.py)

    def validated(self) -> "TrainConfig":
        if self.algo not in ALGOS:
            raise UserError(f"train.algo: unknown value {self.algo!r}{did_you_mean(self.algo, ALGOS)}; "
                            f"choose one of {', '.join(ALGOS)}")
        if self.backend not in BACKENDS:
            raise UserError(f"train.backend: unknown value {self.backend!r}{did_you_mean(self.backend, BACKENDS)}; "
                            f"choose one of {', '.join(BACKENDS)}")
        for name in ("batch_size", "iterations", "validate_every", "validation_batches", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"train.{name}: expected a positive integer, got {value!r}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"train.dtype: choose float32 or float64, got {self.dtype!r}")
        if self.bptt_graph not in ("full", "eprop"):
            raise UserError(f"train.bptt_graph: choose full or eprop, got {self.bptt_graph!r}")
        if not isinstance(self.task_options, dict):
            raise UserError(f"train.task_options: expected a table, got {self.task_options!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"train.seed: expected a non-negative integer, got {self.seed!r}")
        check_train_fields(self)
        return self

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"train.{unknown[0]}: unknown option{did_you_mean(unknown[0], known)} "
                            f"(known: {', '.join(sorted(known))})")
        return cls(**data).validated()


def task_from_config(config: TrainConfig) -> Any:
    """The task a run trains on, rebuilt from its recorded name and options."""
    from eprop_lava.tasks import get_task

    try:
        return get_task(config.task, **config.task_options)
    except ValueError as exc:
        message = str(exc)
        raise UserError(message if message.startswith("task ") else f"task {config.task!r}: {message}") from None


# ------------------------------------------------------------------ files
def read_npz(path: str | Path, label: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file given by the user; a missing or unreadable
    file is a one-line :class:`UserError` that starts with ``label``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{label}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise UserError(f"{label}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make results private to the writer
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk: say which file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------ checkpoints
CHECKPOINT_FORMAT = "eprop-lava-checkpoint/1"


def save_checkpoint(path: Path, spec: NetworkSpec, config: TrainConfig, params: dict, optimizer: Optimizer,
                    iteration: int, rng_state: dict, extra: dict | None = None) -> None:
    """Write parameters, optimizer moments and the data RNG state atomically."""
    import io

    meta = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_dict(),
        "train": asdict(config),
        "iteration": iteration,
        "optimizer_step": optimizer.step_count,
        "rng_state": rng_state,
        "extra": extra or {},
    }
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    state = optimizer.state_dict()
    arrays.update({f"adam_m/{k}": v for k, v in state["m"].items()})
    arrays.update({f"adam_v/{k}": v for k, v in state["v"].items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Checkpoint:
    spec: NetworkSpec
    config: TrainConfig
    params: dict
    optimizer_state: dict
    iteration: int
    rng_state: dict
    extra: dict


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        head = f.read(4)
    if len(head) == 4 and head != b"PK\x03\x04":  # a checkpoint is an .npz, i.e. a zip archive
        raise CheckpointError(f"checkpoint {path} is not a checkpoint (.npz) file: it is not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no metadata; not an eprop-lava checkpoint")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: unsupported format {meta.get('format')!r}")
    check_checkpoint(f"checkpoint {path}", meta, arrays)
    try:
        spec = NetworkSpec.from_dict(meta["spec"])
    except SpecError as exc:
        raise CheckpointError(f"checkpoint {path} holds an invalid spec: {exc}") from None
    config = TrainConfig.from_dict(meta["train"])
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    expected = _expected_shapes(spec)
    for name, shape in expected.items():
        if name not in params:
            raise CheckpointError(f"checkpoint {path} lacks parameter {name!r}")
        if params[name].shape != shape:
            raise CheckpointError(f"checkpoint {path}: parameter {name!r} has shape {params[name].shape}, spec needs {shape}")
    opt = {"step_count": meta["optimizer_step"],
           "m": {k[len("adam_m/"):]: v for k, v in arrays.items() if k.startswith("adam_m/")},
           "v": {k[len("adam_v/"):]: v for k, v in arrays.items() if k.startswith("adam_v/")}}
    return Checkpoint(spec, config, params, opt, int(meta["iteration"]), meta["rng_state"], meta.get("extra", {}))


def select_checkpoint(path: str | Path) -> tuple[Path, str]:
    """The checkpoint file a path names, and a sentence saying which it is.

    A run directory gives its ``best.npz`` (the parameters with the best
    validation metric) when the run kept one, else its last ``checkpoint.npz``;
    a file is taken as it is."""
    path = Path(path)
    if not path.is_dir():
        return path, f"checkpoint {path}"
    best, last = path / "best.npz", path / "checkpoint.npz"
    if not best.is_file():
        if not last.is_file():
            raise CheckpointError(f"{path}: no checkpoint.npz or best.npz in this directory; not a run directory")
        return last, f"{last} (the last checkpoint; the run kept no best.npz)"
    ck = load_checkpoint(best)
    metric = ck.extra.get("metric", "metric")
    value = ck.extra.get("best")
    score = f"validation {metric} {value:.4g}" if isinstance(value, (int, float)) else "best validation"
    note = f"{best} (best {score} at iteration {ck.iteration}"
    if last.is_file():
        note += f"; the last checkpoint, {last.name}, is at iteration {load_checkpoint(last).iteration}"
    return best, note + ")"


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """'path: old -> new' for every leaf where two JSON-like trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{sub}: {old[key]!r} -> (absent)")
            elif key not in old:
                out.append(f"{sub}: (absent) -> {new[key]!r}")
            else:
                out.extend(differences(old[key], new[key], sub))
        return out
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}.{i}")]
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return [f"{path}: {len(old)} entries -> {len(new)}"]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _expected_shapes(spec: NetworkSpec) -> dict:
    return {k: v.shape for k, v in init_params(spec, 0).items()}


# ------------------------------------------------------------------ training
def gradient_function(config: TrainConfig) -> Callable:
    # A training loop frees and reallocates the same large arrays every step;
    # keeping them in the heap saves the page faults (engine/memory.py).
    retain_freed_memory()
    if config.algo == "bptt":
        def grad(spec, params, batch):
            return bptt_gradient(spec, params, batch, graph=config.bptt_graph,
                                 device=config.device, dtype=config.dtype)
        return grad
    ops = make_ops(config.backend, dtype=config.dtype, device=config.device)

    def grad(spec, params, batch):
        # One BLAS thread for the whole step: the few large products gain
        # ~10% from a second thread on an idle 2-core machine, but lose 2-3x
        # whenever other processes compete (measured; docs/benchmarks.md).
        with ops.single_threaded():
            loss, grads, traj = eprop_gradient(spec, params, batch, ops)
        return float(ops.to_numpy(loss)), {k: ops.to_numpy(v) for k, v in grads.items()}, traj
    return grad


def forward_outputs(spec: NetworkSpec, params: dict, batch: Batch, config: TrainConfig | None = None) -> tuple:
    """(y, spikes per layer) as numpy arrays, without recording e-prop factors."""
    config = config or TrainConfig()
    backend = config.backend if config.algo == "eprop" else "numpy"
    ops = make_ops(backend, dtype=config.dtype, device=config.device)
    traj = simulate(spec, {k: ops.asarray(v) for k, v in params.items()}, ops.asarray(batch.x), ops, record=False)
    return ops.to_numpy(traj.y), [ops.to_numpy(z) for z in traj.z]


def alignment(spec: NetworkSpec, params: dict) -> dict:
    """Alignment between the feedback B and W_out^T (seed 001 sec. 6.1.3):
    the angle between them (degrees) and trace(W_out B)."""
    if spec.learning.variant == "symmetric":
        return {"alignment_angle_deg": 0.0, "alignment_trace": float(np.sum(params["readout.w"] ** 2))}
    w = params["readout.w"].T.ravel()
    b = params["feedback.b"].ravel()
    cos = float(w @ b / (np.linalg.norm(w) * np.linalg.norm(b) + 1e-300))
    return {"alignment_angle_deg": math.degrees(math.acos(max(-1.0, min(1.0, cos)))),
            "alignment_trace": float(np.trace(params["readout.w"] @ params["feedback.b"]))}


def held_out(task: Any, split: str) -> Any:
    """The same task drawing from another split of its data ("valid", "test")
    when it has data splits (speech); generated tasks are returned as they are
    (their validation and test batches come from independent seeds)."""
    import dataclasses

    if dataclasses.is_dataclass(task) and any(f.name == "split" for f in dataclasses.fields(task)):
        return dataclasses.replace(task, split=split)
    return task


def make_optimizer(spec: NetworkSpec) -> Optimizer:
    """The spec's optimizer in the spec's Adam form (conventions.adam)."""
    return Optimizer(spec.optimizer, spec.conventions.adam)


def trained_names(spec: NetworkSpec, names: Any) -> list[str]:
    """The parameters the optimizer moves: not the feedback matrix (never a
    gradient target; adaptive e-prop moves it with W_out, seed 001 Eqs.
    4.39-4.40), and not the readout bias under conventions.readout_bias = "untrained"."""
    fixed = {"feedback.b"} | ({"readout.b"} if spec.conventions.readout_bias == "untrained" else set())
    return [k for k in names if k not in fixed]


def apply_update(spec: NetworkSpec, params: dict, optimizer: Optimizer, grads: dict) -> dict:
    """One optimizer step in place on :func:`trained_names`. Returns the deltas."""
    keep = set(trained_names(spec, grads))
    grads = {k: v for k, v in grads.items() if k in keep}
    deltas = optimizer.deltas(grads)
    adaptive = spec.learning.variant == "adaptive"
    for k, d in deltas.items():
        if not (adaptive and k == "readout.w"):
            params[k] = params[k] + d
    if adaptive:
        adaptive_feedback_update(params, deltas["readout.w"], spec.learning.adaptive_decay)
    return deltas


def load_init_params(spec: NetworkSpec, source: Any) -> dict[str, np.ndarray]:
    """Initial parameters from a dict or an .npz file (keys named as the
    parameters, e.g. ``layers.0.w_in``, ``readout.w``; an eprop-lava checkpoint's
    ``param/...`` keys are accepted too). Every parameter of the spec must be
    there with its shape, except ``readout.b`` (0 when absent) and
    ``feedback.b`` (drawn as usual when absent, for random feedback);
    unknown keys are an error. Values are copied as float64."""
    where = "init params"
    if not isinstance(source, dict):
        path = Path(source)
        where = str(path)
        source = read_npz(path, f"--init-params {path}")
        source.pop("meta", None)
        if any(k.startswith("param/") for k in source):
            source = {k[len("param/"):]: v for k, v in source.items() if k.startswith("param/")}
    defaults = init_params(spec)
    unknown = sorted(set(source) - set(defaults))
    if unknown:
        raise UserError(f"{where}: unknown parameter {unknown[0]!r} (the spec has {', '.join(defaults)})")
    out = {}
    for name, default in defaults.items():
        if name not in source:
            if name == "readout.b":
                out[name] = np.zeros_like(default)
                continue
            if name == "feedback.b":
                out[name] = default
                continue
            raise UserError(f"{where}: parameter {name!r} is missing")
        value = np.asarray(source[name], dtype=np.float64)
        if value.shape != default.shape:
            raise UserError(f"{where}: parameter {name!r} has shape {value.shape}, the spec needs {default.shape}")
        if not np.all(np.isfinite(value)):
            raise UserError(f"{where}: parameter {name!r} has non-finite values")
        out[name] = value.copy()
    return out


def validation_batches(task: Any, config: TrainConfig, salt: int = 2) -> list[Batch]:
    rng = np.random.default_rng([config.seed, salt])
    source = held_out(task, "valid" if salt == 2 else "test")
    return [source.batch(rng, config.batch_size) for _ in range(config.validation_batches)]


#: test batches ``eprop-lava eval`` scores by default (its --batches, api.evaluate's batches)
EVAL_BATCHES = 8


def eval_batches(task: Any, config: TrainConfig, batches: int = EVAL_BATCHES) -> list[Batch]:
    """The test data of ``eprop-lava eval``: ``batches`` batches of
    ``config.batch_size`` from the task's test split, rng [seed, 3]. The
    run's confusion matrix (plots.run_figures) counts these same samples."""
    rng = np.random.default_rng([config.seed, 3])
    source = held_out(task, "test")
    return [source.batch(rng, config.batch_size) for _ in range(batches)]


def evaluate(task: Any, spec: NetworkSpec, params: dict, batches: list[Batch], config: TrainConfig | None = None) -> dict:
    metrics, rates = [], []
    for batch in batches:
        y, z = forward_outputs(spec, params, batch, config)
        metrics.append(task.metric(y, batch))
        rates.append(np.mean([zz.mean() for zz in z]) * 1000.0 / spec.dt)
    return {task.metric_name: float(np.mean(metrics)), "rate_hz": float(np.mean(rates))}


@dataclass
class RunResult:
    run_dir: Path
    iterations: int
    solved_at: int | None
    final_validation: dict
    seconds_per_iteration: float
    params: dict = field(repr=False, default_factory=dict)


def train(task: Any, spec: NetworkSpec, config: TrainConfig, run_dir: str | Path,
          resume: bool = True, log: Callable[[str], None] | None = None,
          init: Any = None) -> RunResult:
    """Train (or resume) a run in run_dir. Under ``config.distributed`` every
    rank computes its shard, gradients are summed, and only rank 0 writes.
    ``init``: initial parameters (a dict or an .npz path, see
    :func:`load_init_params`) instead of :func:`init_params`; a resumed run
    continues from its checkpoint.

    The writer holds the run directory's lock for the whole run; the
    directory must be new, empty or an earlier run (eprop_lava/rundir.py)."""
    config = config.validated()
    check_environment(config)
    check_spec_for_task(spec, task, config.task)
    check_memory(spec, config, getattr(task, "steps", None))
    initial = None if init is None else load_init_params(spec, init)
    source = None if init is None else ("dict" if isinstance(init, dict) else str(init))
    if config.distributed and os.environ.get("RANK", "0").strip() not in ("", "0"):
        return _train(task, spec, config, Path(run_dir), resume, log, initial, source)
    with RunLock(check_run_dir(run_dir)):
        remove_stale_temporaries(run_dir)
        return _train(task, spec, config, Path(run_dir), resume, log, initial, source)


def _train(task: Any, spec: NetworkSpec, config: TrainConfig, run_dir: Path,
           resume: bool, log: Callable[[str], None] | None, initial: dict | None = None,
           init_source: str | None = None) -> RunResult:
    run_dir = Path(run_dir)
    group = None
    if config.distributed:
        from eprop_lava.engine.distributed import data_parallel, init_from_environment

        group = init_from_environment(config.device)
        grad_fn = data_parallel(gradient_function(config), group)
    else:
        grad_fn = gradient_function(config)
    writer = group is None or group.is_main
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.npz"
    log_path = run_dir / "metrics.jsonl"
    optimizer = make_optimizer(spec)
    rng = np.random.default_rng([config.seed, 1])
    start = 0
    best = math.inf
    solved_at = None
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        ignore = {"iterations": 0, "progress": True}
        differ = (differences(ck.spec.to_dict(), spec.to_dict(), "spec")
                  + differences(asdict(ck.config) | ignore, asdict(config) | ignore, "train"))
        if differ:
            shown = "; ".join(differ[:3]) + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
            raise UserError(f"{run_dir} holds a run with a different configuration ({shown}); "
                            "resume with the same settings, use another --out directory, "
                            "or pass --fresh to start over there")
        params = ck.params
        optimizer.load_state_dict(ck.optimizer_state)
        rng.bit_generator.state = ck.rng_state
        start = ck.iteration
        best = ck.extra.get("best", math.inf)
        solved_at = ck.extra.get("solved_at")
        if writer:
            # drop rows logged after the checkpoint (they will be produced again)
            history = read_metrics(log_path, start)
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))
        if log:
            log(f"resuming {run_dir} at iteration {start}")
    else:
        params = init_params(spec) if initial is None else initial
        if writer:
            # a fresh start: an earlier run's log and best checkpoint must not be read as this run's
            for stale in (log_path, run_dir / "best.npz"):
                if stale.exists():
                    stale.unlink()
    if writer:
        record = {"spec": spec.to_dict(), "train": asdict(config)}
        if start == 0:
            if initial is not None:
                record["init_params"] = init_source  # where the initial parameters came from
        elif (run_dir / "config.json").exists():     # a resumed run keeps the record of its start
            try:
                earlier = json.loads((run_dir / "config.json").read_text()).get("init_params")
            except (OSError, json.JSONDecodeError):
                earlier = None
            if earlier is not None:
                record["init_params"] = earlier
        atomic_write_text(run_dir / "config.json", json.dumps(record, indent=2))
    val = validation_batches(task, config)
    target = config.target_metric if config.target_metric is not None else task.solved_below

    def checkpoint(path: Path, iteration: int) -> None:
        if writer:
            save_checkpoint(path, spec, config, params, optimizer, iteration, rng.bit_generator.state,
                            {"best": best, "solved_at": solved_at, "metric": task.metric_name})

    from eprop_lava.progress import Progress, format_seconds, log_file, note

    # a bar on a terminal, else a line every EPROP_LAVA_LOG_SECONDS; both also go to RUN/log.txt
    run_log = log_file(run_dir / "log.txt" if writer else None)
    progress = None
    step_times = []
    last_val: dict = {}
    it = start
    logf = open(log_path, "a") if writer else None
    run_log.__enter__()
    try:
        if writer:
            progress = Progress(config.iterations, f"train {config.task}", unit="it", initial=start,
                                enabled=config.progress)
        while it < config.iterations and not (config.early_stop and solved_at is not None):
            t0 = time.perf_counter()
            batch = task.batch(rng, config.batch_size)
            if it == start and writer and config.algo == "bptt":
                note(bptt_cost_note(batch, config.iterations - start), echo=config.progress)
            loss, grads, traj = grad_fn(spec, params, batch)
            apply_update(spec, params, optimizer, grads)
            step_times.append(time.perf_counter() - t0)
            it += 1
            left = config.iterations - it
            if writer and len(step_times) == 3 and left > 0:
                # steps 2-3: the first one also paid for compilation and warm-up
                per = float(np.median(step_times[1:]))
                if per * left > 60:
                    note(f"measured {per:.2f} s per iteration: ~{format_seconds(per * left)} "
                         f"for the remaining {left} iteration(s)", echo=config.progress)
            if not writer:
                if config.early_stop:
                    solved_at = _broadcast_solved(solved_at, group)  # collective: matches rank 0's call
                continue
            y = traj.y if isinstance(traj.y, np.ndarray) else make_ops("torch").to_numpy(traj.y)
            train_batch = batch if group is None else _local(batch, group)
            reg_loss = _rate_loss(spec, traj)
            task_value = float(loss) - reg_loss
            logged = task_value if spec.conventions.logged_loss == "task" else float(loss)
            row = {"iteration": it, "loss": logged, "task_loss": task_value, "rate_loss": reg_loss,
                   "lr": optimizer.learning_rate(),
                   f"train_{task.metric_name}": float(task.metric(np.asarray(y, dtype=np.float64), train_batch)),
                   "seconds": step_times[-1]}
            row.update(alignment(spec, params))
            if hasattr(task, "parameter_distance"):
                row.update({f"teacher_{k}": v for k, v in task.parameter_distance(params).items()})
            if it % config.validate_every == 0:  # a fixed schedule, so a resumed run logs the same rows
                last_val = evaluate(task, spec, params, val, config)
                row.update({f"val_{k}": v for k, v in last_val.items()})
                metric = last_val[task.metric_name]
                if metric < best:
                    best = metric
                    checkpoint(run_dir / "best.npz", it)
                if target is not None and metric < target and solved_at is None:
                    solved_at = it
            logf.write(json.dumps(row) + "\n")
            logf.flush()
            if progress is not None:
                post = {"loss": f"{logged:.3f}"}
                if last_val:
                    post[f"val_{task.metric_name}"] = f"{last_val[task.metric_name]:.3f}"
                progress.update(1, **post)
            if it % config.checkpoint_every == 0 or solved_at == it:
                checkpoint(ckpt_path, it)
            if group is not None and config.early_stop:
                solved_at = _broadcast_solved(solved_at, group)
    finally:
        if progress is not None:
            progress.close()
        if logf is not None:
            logf.close()
        run_log.__exit__(None, None, None)
    checkpoint(ckpt_path, it)
    if not last_val or it % config.validate_every != 0:
        last_val = evaluate(task, spec, params, val, config)
    return RunResult(run_dir, it, solved_at, last_val,
                     float(np.median(step_times)) if step_times else float("nan"), params)


def _rate_loss(spec: NetworkSpec, traj: Any) -> float:
    """The rate regularizer of a training step's trajectory (on its own
    backend), for logging it apart from the task loss. Under distributed
    training it is this rank's shard's."""
    if spec.regularization.form != "bellec" or not spec.regularization.coefficient:
        return 0.0
    z = traj.z[0]
    ops = make_ops("torch") if not isinstance(z, np.ndarray) else make_ops("numpy")
    return float(ops.to_numpy(rate_loss(spec, traj, ops)))


def bptt_cost_note(batch: Batch, iterations: int) -> str:
    from eprop_lava.progress import bptt_estimate

    return bptt_estimate(batch.size, batch.steps, iterations)


def _local(batch: Batch, group: Any) -> Batch:
    from eprop_lava.engine.distributed import shard

    return shard(batch, group)


def _broadcast_solved(solved_at: int | None, group: Any) -> int | None:
    """Rank 0 decides early stopping; the others follow (on the group's
    collective device: NCCL needs a CUDA tensor)."""
    from eprop_lava.engine.distributed import broadcast_from_main

    return broadcast_from_main(solved_at, group.device)
