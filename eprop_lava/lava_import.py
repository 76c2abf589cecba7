"""Importing Lava safely in a process that may already have fixed
multiprocessing's start method.

Lava's runtime calls ``multiprocessing.set_start_method('fork')`` without
``force`` when it is first imported
(``lava/magma/runtime/message_infrastructure/multiprocessing.py``). That call
raises ``RuntimeError: context has already been set`` once anything created a
multiprocessing object before (tqdm's progress-bar lock in training does), so
``import lava...`` succeeds or fails depending on what ran first. Lava needs
fork either way; :func:`lava_import_guard` makes the call use ``force=True``
for the duration of an import. Every module of this package that imports Lava
does so through it (``eprop_lava.processes``, ``eprop_lava.models``,
``eprop_lava.compile``).

lava-dl prints a warning about an optional dataset toolbox on stdout when it
is first imported (``lava/lib/dl/slayer/object_detection/dataset/
prophesee_automotive.py``); the guard sends stdout to stderr during the
import, so that a command's ``--json`` output stays one JSON object.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import sys
from typing import Any, Iterator


@contextlib.contextmanager
def lava_import_guard() -> Iterator[None]:
    """Within the block, ``multiprocessing.set_start_method`` forces the
    method (Lava passes no ``force``); it forces nothing when no start method
    is set yet (Lava's own call then succeeds). Restores the original function.
    What the import prints on stdout goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        if mp.get_start_method(allow_none=True) is None:
            yield
            return
        with _forced_start_method():
            yield


@contextlib.contextmanager
def _forced_start_method() -> Iterator[None]:
    original = mp.set_start_method

    def forced(method: str, force: bool = False) -> None:  # noqa: ARG001 - Lava passes no force
        original(method, force=True)

    mp.set_start_method = forced
    try:
        yield
    finally:
        mp.set_start_method = original


def import_lava(module: str = "eprop_lava.models") -> Any:
    """Import ``module`` (a module that imports Lava) under
    :func:`lava_import_guard`; returns the module."""
    with lava_import_guard():
        return importlib.import_module(module)
