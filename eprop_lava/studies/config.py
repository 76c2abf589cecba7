"""The configuration of a quantization study: small validated dataclasses
read from one TOML or JSON file. Every error names the field
(``onchip.vary.weight_bits[2]``) and is a :class:`UserError` (one line on
the command line).

A complete example with every field is docs/studies.md; the file the
published numbers come from is benchmarks/results/quantization_evidence_config.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from eprop_lava.errors import UserError
from eprop_lava.fixed import PROFILES

ROUNDINGS = ("nearest", "stochastic")
MODES = ("scratch", "finetune")
STORAGES = ("synapse", "neuron")
#: PTQ voltage scaling (see studies.qat.ptq_network).
SCALINGS = ("mantissa", "exponent")
FLOAT_OPTIMIZERS = ("adam", "sgd")
#: The fixed-point profile fields an on-chip point can vary (besides weight bits).
VARY_KEYS = ("weight_bits", "trace_bits", "psi_bits", "signal_bits", "rounding", "trace_storage", "lr")


class StudyConfigError(UserError, ValueError):
    """A study configuration field is invalid; the message names the field."""


def _int(path: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudyConfigError(f"{path}: expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise StudyConfigError(f"{path}: must lie in [{lo}, {hi if hi is not None else 'inf'}], got {value}")
    return value


def _float(path: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StudyConfigError(f"{path}: expected a number, got {value!r}")
    if positive and not value > 0:
        raise StudyConfigError(f"{path}: must be > 0, got {value}")
    return float(value)


def _choice(path: str, value: Any, options: tuple) -> Any:
    if value not in options:
        raise StudyConfigError(f"{path}: unknown value {value!r}; choose one of {', '.join(map(str, options))}")
    return value


def _list(path: str, value: Any, check, allow_empty: bool = False) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise StudyConfigError(f"{path}: expected a list, got {value!r}")
    if not value and not allow_empty:
        raise StudyConfigError(f"{path}: must not be empty")
    out = tuple(check(f"{path}[{i}]", v) for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise StudyConfigError(f"{path}: has duplicates")
    return out


def _check_seeds(obj: Any, path: str) -> None:
    """``seeds`` of a sweep: None (the study's seeds) or a list of them."""
    if obj.seeds is not None:
        object.__setattr__(obj, "seeds", _list(f"{path}.seeds", obj.seeds, lambda p, v: _int(p, v, 0)))


def _bits(path: str, v: Any) -> int:
    return _int(path, v, 1, 24)


@dataclass(frozen=True)
class FloatTraining:
    """The float e-prop network every post-training point starts from
    (trained with the task's optimizer, Adam by default)."""

    iterations: int = 150
    batch_size: int = 32

    def validated(self, path: str) -> "FloatTraining":
        _int(f"{path}.iterations", self.iterations)
        _int(f"{path}.batch_size", self.batch_size)
        return self


@dataclass(frozen=True)
class TestSet:
    """Held-out batches every point is scored on (default_rng([seed, 3]))."""

    batches: int = 2
    batch_size: int = 64

    def validated(self, path: str) -> "TestSet":
        _int(f"{path}.batches", self.batches)
        _int(f"{path}.batch_size", self.batch_size)
        return self


@dataclass(frozen=True)
class PTQSweep:
    """(a) Post-training quantization: the float network run by the
    fixed-point engine at each weight width, profile, weight rounding and
    scaling ("mantissa": the reference quantizer, weight exponent 0;
    "exponent": weights shifted by Dense's weight_exp so the thresholds keep
    8-bit-weight resolution; see studies.qat.ptq_network)."""

    enabled: bool = True
    profiles: tuple = ("loihi2", "wide")
    weight_bits: tuple = (1, 2, 3, 4, 5, 6, 7, 8)
    roundings: tuple = ("nearest", "stochastic")
    scalings: tuple = ("mantissa", "exponent")

    def validated(self, path: str) -> "PTQSweep":
        if not isinstance(self.enabled, bool):
            raise StudyConfigError(f"{path}.enabled: expected true or false")
        object.__setattr__(self, "profiles", _list(f"{path}.profiles", self.profiles,
                                                   lambda p, v: _choice(p, v, tuple(PROFILES))))
        object.__setattr__(self, "weight_bits", _list(f"{path}.weight_bits", self.weight_bits, _bits))
        object.__setattr__(self, "roundings", _list(f"{path}.roundings", self.roundings,
                                                    lambda p, v: _choice(p, v, ROUNDINGS)))
        object.__setattr__(self, "scalings", _list(f"{path}.scalings", self.scalings,
                                                   lambda p, v: _choice(p, v, SCALINGS)))
        return self


@dataclass(frozen=True)
class QATSweep:
    """Quantization-aware fine-tuning (straight-through estimator) of the
    float network at each weight width, compared with PTQ at that width."""

    enabled: bool = True
    profile: str = "loihi2"
    weight_bits: tuple = (1, 2, 3)
    iterations: int = 20
    batch_size: int = 32
    seeds: tuple | None = None
    scaling: str = "exponent"

    def validated(self, path: str) -> "QATSweep":
        if not isinstance(self.enabled, bool):
            raise StudyConfigError(f"{path}.enabled: expected true or false")
        _check_seeds(self, path)
        _choice(f"{path}.scaling", self.scaling, SCALINGS)
        _choice(f"{path}.profile", self.profile, tuple(PROFILES))
        object.__setattr__(self, "weight_bits", _list(f"{path}.weight_bits", self.weight_bits, _bits))
        _int(f"{path}.iterations", self.iterations)
        _int(f"{path}.batch_size", self.batch_size)
        return self


@dataclass(frozen=True)
class OnChipSweep:
    """(b) Online fixed-point e-prop ("on-chip learning") from scratch or
    fine-tuning the float network, for ``batches`` minibatches of
    ``batch_size`` samples, with learning rate ``lr`` (an SGD rate on the
    summed gradient, mapped to m 2^e by the quantizer).

    Base points: every mode x profile x seed with the profile's own widths,
    ``rounding`` and ``trace_storage``. Variations: one field of ``vary`` at
    a time, around the base of each profile in ``vary_profiles`` and mode in
    ``vary_modes`` (one-at-a-time keeps the sweep linear in its values).
    ``float_optimizers``: the float e-prop runs with the same data and budget
    ("sgd" uses ``lr``, the exact float counterpart; "adam" the spec's)."""

    enabled: bool = True
    modes: tuple = ("finetune",)
    profiles: tuple = ("loihi2",)
    batches: int = 8
    batch_size: int = 8
    lr: float = 0.01
    rounding: str = "stochastic"
    trace_storage: str = "synapse"
    vary_profiles: tuple = ("loihi2",)
    vary_modes: tuple = ("finetune",)
    vary: dict = field(default_factory=lambda: {"trace_storage": ["neuron"]})
    float_optimizers: tuple = ("sgd", "adam")
    seeds: tuple | None = None

    def validated(self, path: str) -> "OnChipSweep":
        if not isinstance(self.enabled, bool):
            raise StudyConfigError(f"{path}.enabled: expected true or false")
        _check_seeds(self, path)
        prof = lambda p, v: _choice(p, v, tuple(PROFILES))  # noqa: E731
        mode = lambda p, v: _choice(p, v, MODES)  # noqa: E731
        object.__setattr__(self, "modes", _list(f"{path}.modes", self.modes, mode))
        object.__setattr__(self, "profiles", _list(f"{path}.profiles", self.profiles, prof))
        object.__setattr__(self, "vary_profiles", _list(f"{path}.vary_profiles", self.vary_profiles, prof, True))
        object.__setattr__(self, "vary_modes", _list(f"{path}.vary_modes", self.vary_modes, mode, True))
        object.__setattr__(self, "float_optimizers", _list(f"{path}.float_optimizers", self.float_optimizers,
                                                           lambda p, v: _choice(p, v, FLOAT_OPTIMIZERS), True))
        _int(f"{path}.batches", self.batches)
        _int(f"{path}.batch_size", self.batch_size)
        _float(f"{path}.lr", self.lr)
        _choice(f"{path}.rounding", self.rounding, ROUNDINGS)
        _choice(f"{path}.trace_storage", self.trace_storage, STORAGES)
        if not isinstance(self.vary, Mapping):
            raise StudyConfigError(f"{path}.vary: expected a table of field = [values]")
        checks = {"weight_bits": _bits, "trace_bits": _bits, "psi_bits": lambda p, v: _int(p, v, 1, 16),
                  "signal_bits": _bits, "rounding": lambda p, v: _choice(p, v, ROUNDINGS),
                  "trace_storage": lambda p, v: _choice(p, v, STORAGES), "lr": _float}
        vary = {}
        for key, values in self.vary.items():
            if key not in checks:
                raise StudyConfigError(f"{path}.vary.{key}: unknown field (known: {', '.join(VARY_KEYS)})")
            vary[key] = list(_list(f"{path}.vary.{key}", values, checks[key]))
        object.__setattr__(self, "vary", vary)
        return self


@dataclass(frozen=True)
class StudyConfig:
    """One quantization study. ``task_options`` are passed to the task
    (``get_task(task, **task_options)``); ``spec`` overrides the task's
    default network (timing and reset are always "loihi"/"zero", the
    fixed-point engine's). ``knee_tolerance``: a bit width is "flat" while
    the accuracy stays within this (absolute) of the reference."""

    task: str = "evidence"
    task_options: dict = field(default_factory=lambda: dict(n_cues=5, cue_ms=40, spacing_ms=20,
                                                            delay_ms=150, recall_ms=50))
    spec: dict = field(default_factory=dict)
    seeds: tuple = (0,)
    knee_tolerance: float = 0.05
    float: FloatTraining = field(default_factory=FloatTraining)
    test: TestSet = field(default_factory=TestSet)
    ptq: PTQSweep = field(default_factory=PTQSweep)
    qat: QATSweep = field(default_factory=QATSweep)
    onchip: OnChipSweep = field(default_factory=OnChipSweep)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "StudyConfig":
        if not isinstance(self.task, str):
            raise StudyConfigError(f"task: expected a task name, got {self.task!r}")
        for name in ("task_options", "spec"):
            if not isinstance(getattr(self, name), Mapping):
                raise StudyConfigError(f"{name}: expected a table")
        object.__setattr__(self, "seeds", _list("seeds", self.seeds, lambda p, v: _int(p, v, 0)))
        _float("knee_tolerance", self.knee_tolerance)
        for name in ("timing", "reset"):
            if name in self.spec and self.spec[name] != {"timing": "loihi", "reset": "zero"}[name]:
                raise StudyConfigError(f"spec.{name}: the fixed-point engine runs timing='loihi', reset='zero'")
        self.float.validated("float")
        self.test.validated("test")
        self.ptq.validated("ptq")
        self.qat.validated("qat")
        self.onchip.validated("onchip")
        for name in ("qat", "onchip"):
            extra = set(getattr(self, name).seeds or ()) - set(self.seeds)
            if extra:
                raise StudyConfigError(f"{name}.seeds: {sorted(extra)} not in the study's seeds {list(self.seeds)}")
        return self

    # ------------------------------------------------------------- io
    def to_dict(self) -> dict:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StudyConfig":
        nested = {"float": FloatTraining, "test": TestSet, "ptq": PTQSweep, "qat": QATSweep, "onchip": OnChipSweep}
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise StudyConfigError(f"{key}: unknown field (known: {', '.join(sorted(known))})")
            if key in nested:
                if not isinstance(value, Mapping):
                    raise StudyConfigError(f"{key}: expected a table")
                sub = {f.name for f in fields(nested[key])}
                bad = sorted(set(value) - sub)
                if bad:
                    raise StudyConfigError(f"{key}.{bad[0]}: unknown field (known: {', '.join(sorted(sub))})")
                kwargs[key] = nested[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "StudyConfig":
        path = Path(path)
        if not path.is_file():
            raise StudyConfigError(f"study config not found: {path}")
        try:
            text = path.read_text()
            if path.suffix == ".toml":
                from eprop_lava.spec import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except UnicodeDecodeError:
            raise StudyConfigError(f"study config {path} is not text (binary file?)") from None
        except Exception as exc:  # TOMLDecodeError / JSONDecodeError
            raise StudyConfigError(f"study config {path} is malformed: {exc}") from None
        if not isinstance(data, Mapping):
            raise StudyConfigError(f"study config {path}: expected a table of study fields, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except StudyConfigError as exc:
            raise StudyConfigError(f"study config {path}: {exc}") from None
