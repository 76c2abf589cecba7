"""eprop-lava: e-prop for recurrent spiking networks, from a verified float
reference to Loihi's fixed-point arithmetic and Lava processes.

    from eprop_lava import train, evaluate, compile_checkpoint, run_artifact

    result = train("evidence", "runs/ev1", overrides=["train.iterations=20"])
    print(evaluate("runs/ev1"))

The compiler's entry points are ``compile_checkpoint`` and ``run_artifact``
(``eprop_lava.compile`` is the compiler's package). Everything heavy is
imported on first use, so ``import eprop_lava`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eprop-lava")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, never installed: pyproject.toml's version
        return "0.1.0"


__version__ = _version()

# public name -> (module, attribute); attribute None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    # configuration and the network
    "configure": ("eprop_lava.api", "configure"),
    "default_config": ("eprop_lava.api", "default_config"),
    "config_toml": ("eprop_lava.api", "config_toml"),
    "NetworkSpec": ("eprop_lava.spec", "NetworkSpec"),
    "LayerSpec": ("eprop_lava.spec", "LayerSpec"),
    "TrainConfig": ("eprop_lava.training", "TrainConfig"),
    "spec": ("eprop_lava.spec", None),
    # tasks
    "tasks": ("eprop_lava.tasks", None),
    "get_task": ("eprop_lava.tasks", "get_task"),
    "TASKS": ("eprop_lava.tasks", "TASKS"),
    # training, evaluation, verification
    "train": ("eprop_lava.api", "train"),
    "evaluate": ("eprop_lava.api", "evaluate"),
    "verify": ("eprop_lava.api", "verify"),
    "load_checkpoint": ("eprop_lava.training", "load_checkpoint"),
    "select_checkpoint": ("eprop_lava.training", "select_checkpoint"),
    "RunResult": ("eprop_lava.training", "RunResult"),
    # Loihi
    "compile_checkpoint": ("eprop_lava.api", "compile_checkpoint"),
    "run_artifact": ("eprop_lava.api", "run_artifact"),
    "load_artifact": ("eprop_lava.compile.artifact", "load_artifact"),
    # NIR graphs in and out (docs/nir.md)
    "export_nir": ("eprop_lava.nir_io", "export_nir"),
    "import_nir": ("eprop_lava.nir_io", "import_nir"),
    # figures
    "plots": ("eprop_lava.plots", None),
    "UserError": ("eprop_lava.errors", "UserError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'eprop_lava' has no attribute {name!r}") from None
    obj = import_module(module)
    value = obj if attr is None else getattr(obj, attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
