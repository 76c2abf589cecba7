"""Sweep bookkeeping: one JSON file per finished point, keyed by its parameters.

A point is a flat dict of JSON scalars (its parameters, including a hash of
the shared context: task, network, float training). Its key is the first 16
hex digits of the SHA-256 of the canonical JSON, and its result lives in
``DIR/points/KEY.json`` written atomically (temporary file, fsync, rename),
so an interrupted sweep leaves only finished points behind and a rerun skips
exactly those. A file whose stored parameters differ from the point's (a
hash collision or a hand edit) is treated as missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from eprop_lava.training import atomic_write_text


def canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def point_key(params: dict) -> str:
    return hashlib.sha256(canonical(params).encode()).hexdigest()[:16]


class ResultStore:
    """Results of a sweep in ``root/points``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "points"

    def path(self, params: dict) -> Path:
        return self.dir / f"{point_key(params)}.json"

    def get(self, params: dict) -> dict | None:
        """The stored result of this point, or None if it is not finished."""
        path = self.path(params)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: recompute (atomic writes make this rare)
        if data.get("params") != json.loads(canonical(params)):
            return None
        return data.get("result")

    def put(self, params: dict, result: dict) -> Path:
        path = self.path(params)
        atomic_write_text(path, json.dumps({"key": point_key(params), "params": params, "result": result},
                                           indent=1, sort_keys=True))
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        """Every stored point as {**params, **result}."""
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            yield {**data["params"], **data["result"]}
