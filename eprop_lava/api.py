"""The Python entry points behind ``from eprop_lava import ...`` and the CLI.

Every function here takes the same inputs as its ``eprop-lava`` command: a
task name or config file, ``--set`` style overrides, a run directory, a
checkpoint or an artifact. The task is always rebuilt from the recorded
configuration (its name and constructor options), so a trained network is
scored, compiled and run on the task it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from eprop_lava.errors import UserError


# ------------------------------------------------------------------ configuration
def configure(config: Any = "evidence", overrides: Sequence[str] = (), spec: Any = None) -> tuple:
    """(task, NetworkSpec, TrainConfig) from a configuration alone.

    ``config`` is a task name (``"evidence"``), a TOML/JSON file with
    ``[train]`` and ``[spec]`` tables, a dict of that shape (or of the
    ``[train]`` table alone), or a :class:`~eprop_lava.training.TrainConfig`.
    ``spec`` (a NetworkSpec or a dict) is merged over the task's default
    network; ``overrides`` are ``--set`` strings (``"train.iterations=20"``,
    ``"spec.layers.0.size=200"``). The training seed is also the spec's seed."""
    from eprop_lava.cli import resolve_run
    from eprop_lava.spec import NetworkSpec
    from eprop_lava.training import TrainConfig

    config_file = None
    if isinstance(config, TrainConfig):
        train_tree, spec_tree = asdict(config), {}
    elif isinstance(config, dict):
        tree = dict(config)
        if set(tree) <= {"train", "spec"}:
            train_tree, spec_tree = dict(tree.get("train", {})), dict(tree.get("spec", {}))
        else:
            train_tree, spec_tree = tree, {}
    elif isinstance(config, (str, Path)) and (Path(config).suffix in (".toml", ".json")):
        config_file = str(config)
        train_tree, spec_tree = {"task": _task_in_file(Path(config))}, {}
    elif isinstance(config, str):
        train_tree, spec_tree = {"task": config}, {}
    else:
        raise UserError(f"config: expected a task name, a config file, a dict or a TrainConfig, "
                        f"got {type(config).__name__}")
    if isinstance(spec, NetworkSpec):
        spec = spec.to_dict()
    if spec:
        from eprop_lava.cli import _deep_merge

        spec_tree = _deep_merge(spec_tree, dict(spec))
    task_name = train_tree.pop("task", "evidence")
    return resolve_run(task_name, config_file, list(overrides), train_tree, spec_tree)


def _task_in_file(path: Path) -> str:
    from eprop_lava.cli import read_config_file

    data = read_config_file(path)
    task = (data.get("train") or {}).get("task")
    if not task:
        raise UserError(f"config file {path}: [train] has no task = \"...\" (or pass the task name)")
    return task


def _without_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_without_none(v) for v in obj]
    return obj


def default_config(task: Any, overrides: Sequence[str] = ()) -> dict:
    """A task's (or any :func:`configure` input's) full configuration, ``{"train": ..., "spec": ...}`` (options
    left at None are omitted: they are None by default, and TOML has no null)."""
    _, spec, config = configure(task, overrides)
    return {"train": _without_none(asdict(config)), "spec": spec.to_dict()}


def config_toml(task: Any, overrides: Sequence[str] = ()) -> str:
    """:func:`default_config` as TOML; ``--config`` reads it back unchanged."""
    import tomli_w

    return tomli_w.dumps(default_config(task, overrides))


def default_run_dir(config: Any, spec: Any) -> Path:
    """runs/TASK-ALGO-VARIANT-sSEED, the CLI's default run directory."""
    return Path("runs") / f"{config.task}-{config.algo}-{spec.learning.variant}-s{config.seed}"


# ------------------------------------------------------------------ training and evaluation
def train(config: Any = "evidence", out: str | Path | None = None, *, spec: Any = None,
          overrides: Sequence[str] = (), resume: bool = True, log: Any = None, init_params: Any = None):
    """Train (or resume) a run; returns :class:`~eprop_lava.training.RunResult`.

    ``config`` as in :func:`configure`: the task is built from it, so nothing
    has to be matched by hand. ``out`` defaults to runs/TASK-ALGO-VARIANT-sSEED.
    ``init_params``: starting parameters, an .npz file or a dict (``train
    --init-params``; see :func:`eprop_lava.training.load_init_params`)."""
    from eprop_lava.training import train as train_run

    task, net_spec, train_config = configure(config, overrides, spec)
    run_dir = Path(out) if out is not None else default_run_dir(train_config, net_spec)
    return train_run(task, net_spec, train_config, run_dir, resume=resume, log=log, init=init_params)


def evaluate(checkpoint: str | Path, batches: int = 8, option: str = "batches") -> dict:
    """Test metric of a checkpoint (a run directory gives its best checkpoint,
    else its last) on ``batches`` fresh test batches of the task it was
    trained on (its recorded options and test split, rng [seed, 3]).
    ``option`` names the batch count in messages (the CLI's "--batches")."""
    from eprop_lava.training import evaluate as evaluate_batches
    from eprop_lava.training import eval_batches, load_checkpoint, select_checkpoint, task_from_config
    from eprop_lava.validate import check_samples_memory

    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise UserError(f"{option}: expected a positive integer, got {batches!r}")
    path, note = select_checkpoint(checkpoint)
    ck = load_checkpoint(path)
    task = task_from_config(ck.config)
    check_samples_memory(option, batches, batches * ck.config.batch_size, getattr(task, "steps", 1),
                         ck.spec.n_inputs + ck.spec.readout.n_outputs)
    data = eval_batches(task, ck.config, batches)
    result = evaluate_batches(task, ck.spec, ck.params, data, ck.config)
    return {"checkpoint": str(path), "checkpoint_note": note, "task": ck.config.task,
            "task_options": ck.config.task_options, "iteration": ck.iteration, "metric": task.metric_name,
            "test_batches": batches, "batch_size": ck.config.batch_size,
            f"test_{task.metric_name}": result[task.metric_name], "rate_hz": result["rate_hz"]}


def verify() -> list[dict]:
    """The numerical checks of ``eprop-lava verify`` (e-prop against BPTT,
    online against fast); each a dict with name, value, tolerance, passed."""
    from eprop_lava.engine.verify import run_checks

    return [r.to_dict() for r in run_checks()]


def compile_checkpoint(checkpoint: str | Path, out: str | Path, **options) -> dict:
    """Quantize and map a checkpoint onto Loihi cores (``eprop-lava compile``);
    see :func:`eprop_lava.compile.pipeline.compile_checkpoint` for options."""
    from eprop_lava.compile.pipeline import compile_checkpoint as compile_

    return compile_(checkpoint, out, **options)


def run_artifact(artifact: str | Path, **options) -> dict:
    """Run a compiled artifact on the float engine, the fixed-point engine and
    Lava (``eprop-lava run``); see :func:`eprop_lava.compile.pipeline.run_artifact`."""
    from eprop_lava.compile.pipeline import run_artifact as run_

    return run_(artifact, **options)
