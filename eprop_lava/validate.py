"""Checks at the boundary between user input and the engines.

Everything here raises a :class:`~eprop_lava.errors.UserError` (or
CheckpointError) whose one-line message names the input and the problem:

* :func:`check_checkpoint`: the contents of a checkpoint file (array names,
  real floating dtypes, finiteness, shapes against the spec, Adam moments,
  iteration and RNG metadata);
* :func:`check_spec_for_task`: a network's input and output sizes against the
  task it trains on;
* :func:`check_memory`: the memory a training run would need, against the
  machine's, before any large allocation;
* :func:`check_sections`: the table types of a config file.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from eprop_lava.errors import CheckpointError, UserError


# ------------------------------------------------------------------ checkpoints
def _real_finite(where: str, name: str, a: np.ndarray) -> None:
    if a.dtype.kind != "f":
        raise CheckpointError(f"{where}: array {name!r} has dtype {a.dtype}; expected real floating-point values")
    if not np.all(np.isfinite(a)):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise CheckpointError(f"{where}: array {name!r} holds {bad} non-finite value(s) (NaN or inf)")


def _count(where: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{where}: metadata {name!r} must be a non-negative integer, got {value!r}")
    return value


def check_rng_state(where: str, state: Any) -> None:
    """A numpy bit-generator state the data RNG can be restored from."""
    rng = np.random.default_rng(0)
    if not isinstance(state, dict) or state.get("bit_generator") != type(rng.bit_generator).__name__:
        raise CheckpointError(f"{where}: metadata 'rng_state' is not a {type(rng.bit_generator).__name__} state")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"{where}: metadata 'rng_state' is invalid ({exc})") from None


def check_checkpoint(where: str, meta: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """The checkpoint's metadata and arrays are what ``save_checkpoint`` writes
    for its own spec; raises CheckpointError naming the first problem."""
    from eprop_lava.engine.network import init_params
    from eprop_lava.spec import NetworkSpec
    from eprop_lava.training import TrainConfig

    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: metadata is not a JSON object")
    for key, kind in (("spec", dict), ("train", dict), ("rng_state", dict), ("iteration", int),
                      ("optimizer_step", int)):
        if key not in meta:
            raise CheckpointError(f"{where}: metadata lacks {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise CheckpointError(f"{where}: metadata {key!r} must be {'a table' if kind is dict else 'an integer'}, "
                                  f"got {type(meta[key]).__name__}")
    try:
        spec = NetworkSpec.from_dict(meta["spec"])
        config = TrainConfig.from_dict(meta["train"])
    except UserError as exc:
        raise CheckpointError(f"{where} holds an invalid configuration: {exc}") from None
    iteration = _count(where, "iteration", meta["iteration"])
    _count(where, "optimizer_step", meta["optimizer_step"])
    check_rng_state(where, meta["rng_state"])
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{where}: metadata 'extra' must be a table, got {type(extra).__name__}")
    best = extra.get("best", math.inf)
    if isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best):
        raise CheckpointError(f"{where}: metadata 'extra.best' must be a number, got {best!r}")
    solved = extra.get("solved_at")
    if solved is not None and (_count(where, "extra.solved_at", solved) > iteration):
        raise CheckpointError(f"{where}: metadata 'extra.solved_at' ({solved}) is after the iteration ({iteration})")
    check_memory(spec, config, what=f"{where}: its network")
    shapes = {k: v.shape for k, v in init_params(spec, 0).items()}
    targets = {k for k in shapes if k != "feedback.b"}  # the optimizer never steps the feedback matrix
    moments: dict = {"adam_m": {}, "adam_v": {}}
    for name, a in arrays.items():
        group, _, key = name.partition("/")
        if name == "meta":
            continue
        if group == "param" and key in shapes:
            expected = shapes[key]
        elif group in moments and key in targets:
            expected = shapes[key]
            moments[group][key] = a
        else:
            raise CheckpointError(f"{where}: unexpected array {name!r} (not a parameter of its spec)")
        if a.shape != expected:
            raise CheckpointError(f"{where}: array {name!r} has shape {a.shape}, the spec needs {expected}")
        _real_finite(where, name, a)
    for key in shapes:
        if f"param/{key}" not in arrays:
            raise CheckpointError(f"{where} lacks parameter {key!r}")
    if set(moments["adam_m"]) != set(moments["adam_v"]):
        odd = sorted(set(moments["adam_m"]) ^ set(moments["adam_v"]))[0]
        raise CheckpointError(f"{where}: Adam moments m and v disagree on parameter {odd!r}")
    negative = [k for k, v in moments["adam_v"].items() if np.any(v < 0)]
    if negative:
        raise CheckpointError(f"{where}: Adam second moment 'adam_v/{negative[0]}' has negative values")


# ------------------------------------------------------------------ spec against task
def check_spec_for_task(spec: Any, task: Any, task_name: str) -> None:
    """The network reads the task's inputs and writes one output per class/target."""
    n_in = getattr(task, "n_inputs", None)
    n_out = getattr(task, "n_outputs", None)
    if n_in is None or n_out is None:
        default = task.default_spec()
        n_in, n_out = default.n_inputs, default.readout.n_outputs
    if spec.n_inputs != n_in:
        raise UserError(f"spec.n_inputs={spec.n_inputs}: task {task_name!r} has {n_in} input channels")
    if spec.readout.n_outputs != n_out:
        raise UserError(f"spec.readout.n_outputs={spec.readout.n_outputs}: task {task_name!r} "
                        f"needs {n_out} outputs")


# ------------------------------------------------------------------ memory
def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, or the cgroup limit if lower."""
    limits = []
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            limits.append(int(text))
    return min(limits) if limits else None


def training_bytes(spec: Any, config: Any, steps: int | None = None) -> int:
    """A lower bound on the bytes one training step holds: the parameters with
    their gradient and two Adam moments, and per sample and time step the
    recorded state (spikes, voltage, eligibility factors) of every neuron."""
    n = spec.n_neurons
    n_in = spec.n_inputs
    weights = 0
    src = n_in
    for layer in spec.layers:
        weights += layer.size * src + (layer.size ** 2 if layer.recurrent else 0)
        src = layer.n_outputs
    weights += spec.readout.n_outputs * n
    itemsize = 4 if getattr(config, "dtype", "float64") == "float32" else 8
    t = steps if steps is not None else 1
    per_step = (n * 4 + n_in + spec.readout.n_outputs) * config.batch_size * t
    return int(4 * weights * 8 + per_step * itemsize)


def check_memory(spec: Any, config: Any, steps: int | None = None, what: str = "the network") -> None:
    """Refuse a run whose arrays cannot fit in memory, before allocating them."""
    need = training_bytes(spec, config, steps)
    have = available_memory()
    if have is not None and need > have:
        raise UserError(f"{what} needs at least {need / 2**30:.1f} GiB ({spec.n_neurons} neurons, batch "
                        f"{config.batch_size}{'' if steps is None else f', {steps} steps'}); "
                        f"{have / 2**30:.1f} GiB are available")


def check_samples_memory(option: str, value: int, n_samples: int, steps: int, channels: int) -> None:
    """Refuse to draw more samples (steps x input and target channels,
    float32 or wider) than fit in memory at once."""
    need = int(n_samples) * int(steps) * int(channels) * 4
    have = available_memory()
    if have is not None and need > have:
        raise UserError(f"{option}={value}: {n_samples} samples of {steps} steps need at least "
                        f"{need / 2**30:.1f} GiB; {have / 2**30:.1f} GiB are available")


# ------------------------------------------------------------------ training options
DEVICES = ("cpu", "cuda", "cuda:N")


def check_train_fields(config: Any) -> None:
    """The TrainConfig fields TrainConfig.validated does not cover: switches,
    the target metric and the device (with the backend that can use it)."""
    for name in ("early_stop", "progress", "distributed"):
        if not isinstance(getattr(config, name), bool):
            raise UserError(f"train.{name}: expected true or false, got {getattr(config, name)!r}")
    target = config.target_metric
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                               or not math.isfinite(target)):
        raise UserError(f"train.target_metric: expected a finite number (or leave it out for the task's own "
                        f"level), got {target!r}")
    device = config.device
    if not isinstance(device, str) or not (device in ("cpu", "cuda") or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        raise UserError(f"train.device: unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device != "cpu" and config.algo == "eprop" and config.backend == "numpy":
        raise UserError(f"train.device={device!r}: the numpy backend runs on the CPU; "
                        "set train.backend=torch to use the GPU")
    if not isinstance(config.task, str):
        raise UserError(f"train.task: expected a task name, got {config.task!r}")


def check_environment(config: Any) -> None:
    """What the machine must provide for this run: a CUDA device, torchrun's
    process group."""
    if config.device != "cpu":
        try:
            import torch
        except ImportError:
            raise UserError(f"train.device={config.device!r} needs PyTorch (pip install 'eprop-lava[torch]')") from None
        if not torch.cuda.is_available():
            raise UserError(f"train.device={config.device!r}: no CUDA device is available on this machine")
        index = int(config.device[5:]) if ":" in config.device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"train.device={config.device!r}: this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)")
    if config.distributed:
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise UserError("train.distributed=true: start the run with torchrun (e.g. torchrun --nproc-per-node 2 "
                            f"-m eprop_lava.cli train ...); {missing[0]} is not set")


# ------------------------------------------------------------------ config files
def check_sections(path: Any, data: Any, sections: Mapping[str, type]) -> None:
    """A config file is a table whose known sections have the given types."""
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a table with {', '.join(f'[{s}]' for s in sections)}, "
                        f"got {type(data).__name__}")
    for name, kind in sections.items():
        if name in data and not isinstance(data[name], kind):
            raise UserError(f"config file {path}: [{name}] must be a table, got {type(data[name]).__name__} "
                            f"{_short(data[name])}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

