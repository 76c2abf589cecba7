"""Tasks generated on the fly (seeded, batched). ``get_task(name)`` returns one."""

from __future__ import annotations

from eprop_lava.tasks.evidence import EvidenceAccumulation
from eprop_lava.tasks.pattern import PatternGeneration
from eprop_lava.tasks.store_recall import StoreRecall
from eprop_lava.tasks.teacher_student import TeacherStudent

TASKS = {
    "evidence": EvidenceAccumulation,
    "pattern": PatternGeneration,
    "store_recall": StoreRecall,
    "teacher_student": TeacherStudent,
}


def get_task(name: str, **options):
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}") from None
    return cls(**options)
