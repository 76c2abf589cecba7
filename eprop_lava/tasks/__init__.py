"""Tasks generated on the fly (seeded, batched). ``get_task(name)`` returns one."""

from __future__ import annotations

from eprop_lava.tasks.evidence import EvidenceAccumulation

TASKS = {
    "evidence": EvidenceAccumulation,
}


def get_task(name: str, **options):
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}") from None
    return cls(**options)
