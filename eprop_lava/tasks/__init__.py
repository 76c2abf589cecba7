"""Tasks generated on the fly (seeded, batched). ``get_task(name)`` returns one."""

from __future__ import annotations

from eprop_lava.errors import did_you_mean
from eprop_lava.tasks.arrays import ArrayTask
from eprop_lava.tasks.evidence import EvidenceAccumulation
from eprop_lava.tasks.pattern import PatternGeneration
from eprop_lava.tasks.store_recall import StoreRecall
from eprop_lava.tasks.teacher_student import TeacherStudent

TASKS = {
    "arrays": ArrayTask,
    "evidence": EvidenceAccumulation,
    "pattern": PatternGeneration,
    "store_recall": StoreRecall,
    "teacher_student": TeacherStudent,
    "speech_phones": "eprop_lava.tasks.speech.tasks:PhoneClassification",
    "speech_keywords": "eprop_lava.tasks.speech.tasks:KeywordClassification",
}


def get_task(name: str, **options):
    """The task called ``name``; options are passed to its constructor
    (e.g. ``data=DIR`` for the speech tasks)."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; "
                         f"choose one of {', '.join(sorted(TASKS))}") from None
    if isinstance(cls, str):  # imported on demand: speech pulls in more dependencies
        import importlib

        module, attr = cls.split(":")
        cls = getattr(importlib.import_module(module), attr)
    try:
        return cls(**options)
    except TypeError as exc:
        if "required positional argument: 'data'" in str(exc):
            raise ValueError(f"task {name!r} needs its data directory: --data DIR (a corpus built by "
                             "'eprop-lava data speech --out DIR', or a TIMIT root)") from None
        import dataclasses
        import re

        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown and dataclasses.is_dataclass(cls):
            known = [f.name for f in dataclasses.fields(cls) if f.init]
            raise ValueError(f"task {name!r}: unknown option {unknown.group(1)!r}"
                             f"{did_you_mean(unknown.group(1), known)} (options: {', '.join(known)})") from None
        raise ValueError(f"task {name!r}: {exc}") from None
