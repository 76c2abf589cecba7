"""The compiled artifact: a self-describing directory.

    DIR/
      manifest.json        format, versions, spec, training config, target,
                           fixed-point network description (scalars), the
                           quantization report, the core map, the resource
                           and energy estimate, and the sha256, size, dtype
                           and shape of every array file; its own checksum
                           covers everything else in it
      arrays/NAME.npy      integer weights, per-neuron constants, the
                           readout bias, the feedback matrix, and the float
                           parameters (float.NAME) for the float comparison

It is written into a temporary sibling directory and renamed into place, so
a crash never leaves a half-written artifact under DIR. :func:`load_artifact`
checks every checksum before building anything: a truncated, edited, missing
or unexpected file gives :class:`~eprop_lava.errors.CheckpointError` naming
the file, never a different network. The manifest plus arrays rebuild the
:class:`~eprop_lava.engine.fixed_engine.FixedNetwork`, which is what the Lava
process graph (:func:`eprop_lava.models.build_network`) is built from.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.errors import CheckpointError
from eprop_lava.fixed import FixedPointProfile, LearningRate
from eprop_lava.neurons import fixed as fx
from eprop_lava.spec import NetworkSpec, SpecError

FORMAT = "eprop-lava-artifact/1"
MANIFEST = "manifest.json"
ARRAYS = "arrays"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    """Versions of the packages that define the artifact's meaning."""
    from importlib import metadata

    out = {}
    for pkg in ("eprop-lava", "numpy", "lava-nc", "lava-dl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# ------------------------------------------------------------------ FixedNetwork <-> arrays + JSON
def _neuron_to(p: fx.FixedNeuronParams, prefix: str, arrays: dict) -> dict:
    out: dict = {}
    for f in fields(p):
        v = getattr(p, f.name)
        if isinstance(v, np.ndarray) and v.ndim > 0:
            arrays[f"{prefix}.{f.name}"] = v.astype(np.int64)
            out[f.name] = {"array": f"{prefix}.{f.name}"}
        elif isinstance(v, np.ndarray):
            out[f.name] = int(v)
        elif isinstance(v, (np.integer,)):
            out[f.name] = int(v)
        else:
            out[f.name] = v
    return out


def _lr(lr: LearningRate | None) -> dict | None:
    return None if lr is None else lr.to_dict()


def network_to(net: fe.FixedNetwork) -> tuple[dict, dict]:
    """(JSON description, {name: array}) of a FixedNetwork."""
    arrays: dict = {}
    layers = []
    for r, L in enumerate(net.layers):
        arrays[f"layers.{r}.w_in"] = L.w_in.astype(np.int64)
        if L.w_rec is not None:
            arrays[f"layers.{r}.w_rec"] = L.w_rec.astype(np.int64)
        layers.append({"neuron": _neuron_to(L.neuron, f"layers.{r}.neuron", arrays),
                       "w_in": f"layers.{r}.w_in", "w_rec": None if L.w_rec is None else f"layers.{r}.w_rec",
                       "weight_exp": int(L.weight_exp), "lr": _lr(L.lr), "w_scale": float(L.w_scale),
                       "grad_scale": float(L.grad_scale),
                       "weight_exp_rec": None if L.weight_exp_rec is None else int(L.weight_exp_rec)})
    ro = net.readout
    arrays["readout.w"] = ro.w.astype(np.int64)
    arrays["readout.bias"] = np.asarray(ro.bias, dtype=np.int64)
    arrays["feedback.b"] = net.feedback.astype(np.int64)
    desc = {"profile": net.profile.to_dict(), "layers": layers, "signal_shift": int(net.signal_shift),
            "error_exp": None if net.error_exp is None else int(net.error_exp),
            "seed": int(net.seed),
            "readout": {"w": "readout.w", "bias": "readout.bias", "d_kappa": int(ro.d_kappa),
                        "y_scale": float(ro.y_scale), "weight_exp": int(ro.weight_exp), "lr": _lr(ro.lr),
                        "grad_scale": float(ro.grad_scale)},
            "feedback": "feedback.b"}
    return desc, arrays


def network_from(spec: NetworkSpec, desc: dict, arrays: dict) -> fe.FixedNetwork:
    """Rebuild the FixedNetwork (validated by its own constructors)."""
    def arr(name: str) -> np.ndarray:
        if name not in arrays:
            raise CheckpointError(f"artifact: array {name!r} named in the manifest is missing")
        return arrays[name]

    def lr(d: dict | None) -> LearningRate | None:
        return None if d is None else LearningRate(int(d["mantissa"]), int(d["exponent"]))

    profile = FixedPointProfile(**desc["profile"])
    layers = []
    for L in desc["layers"]:
        kw = {k: (arr(v["array"]) if isinstance(v, dict) else v) for k, v in L["neuron"].items()}
        neuron = fx.FixedNeuronParams(**kw)
        layers.append(fe.FixedLayer(neuron, arr(L["w_in"]), None if L["w_rec"] is None else arr(L["w_rec"]),
                                    int(L["weight_exp"]), lr(L["lr"]), float(L["w_scale"]),
                                    float(L["grad_scale"]),
                                    None if L.get("weight_exp_rec") is None else int(L["weight_exp_rec"])))
    r = desc["readout"]
    readout = fe.FixedReadout(arr(r["w"]), int(r["d_kappa"]), arr(r["bias"]), float(r["y_scale"]),
                              int(r["weight_exp"]), lr(r["lr"]), float(r["grad_scale"]))
    error_exp = desc.get("error_exp")  # absent in artifacts written before it was chosen: the profile's
    return fe.FixedNetwork(spec, profile, layers, readout, arr(desc["feedback"]), int(desc["signal_shift"]),
                           int(desc["seed"]), None if error_exp is None else int(error_exp))


# ------------------------------------------------------------------ writing
@dataclass
class Artifact:
    """A loaded (verified) artifact."""

    path: Path
    manifest: dict
    spec: NetworkSpec
    net: fe.FixedNetwork
    float_params: dict = field(repr=False, default_factory=dict)

    @property
    def target(self) -> str:
        return self.manifest["target"]["name"]


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_siblings(out: Path) -> list[str]:
    """Remove the temporary (``.NAME.PID-*.tmp``) and replaced
    (``.NAME.old-PID-*``) directories that an interrupted write of the
    artifact ``out`` left next to it, when the process that made them is gone."""
    removed = []
    for entry in out.parent.glob(f".{glob.escape(out.name)}.*"):
        rest = entry.name[len(out.name) + 2:]
        tag = rest[4:] if rest.startswith("old-") else (rest[:-4] if rest.endswith(".tmp") else "")
        pid = tag.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return sorted(removed)


def write_artifact(out: str | Path, manifest: dict, arrays: dict, extra_files: dict | None = None) -> Path:
    """Write ``manifest`` (JSON-able), ``arrays`` and ``extra_files``
    ({name: bytes}: the report and the core-map PNG) atomically into ``out``.
    An existing artifact at ``out`` is replaced only after the new one is
    complete; any other existing non-empty directory is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise CheckpointError(f"--out {out} is a non-empty directory that is not an artifact; choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out)
    # the writer's pid in the name tells a later writer whether it is still at work
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}-", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the artifact is an ordinary directory
    try:
        (tmp / ARRAYS).mkdir()
        files = {}
        for name, a in sorted(arrays.items()):
            a = np.asarray(a)
            data = _npy_bytes(a)
            rel = f"{ARRAYS}/{name}.npy"
            with open(tmp / rel, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            files[rel] = {"sha256": sha256_bytes(data), "bytes": len(data), "dtype": str(a.dtype),
                          "shape": list(a.shape)}
        for name, data in sorted((extra_files or {}).items()):
            if "/" in name or name in (MANIFEST, ARRAYS):
                raise ValueError(f"extra file name {name!r} is reserved or nested")
            with open(tmp / name, "wb") as f:
                f.write(data)
            files[name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
        manifest = dict(manifest)
        manifest["format"] = FORMAT
        manifest["files"] = files
        manifest["manifest_sha256"] = sha256_bytes(_canonical(manifest))
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time() * 1e6)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------ loading
def read_manifest(path: str | Path) -> dict:
    """The manifest of an artifact directory, with its own checksum verified."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CheckpointError(f"artifact not found: {path} is not a directory")
    if not mpath.is_file():
        raise CheckpointError(f"artifact {path}: {MANIFEST} is missing (not a compiled artifact?)")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"artifact {path}: {MANIFEST} is truncated or not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise CheckpointError(f"artifact {path}: {MANIFEST} has format {got!r}, expected {FORMAT!r}")
    if manifest.get("manifest_sha256") != sha256_bytes(_canonical(manifest)):
        raise CheckpointError(f"artifact {path}: {MANIFEST} was edited after compilation (its checksum does not "
                              "match); compile again")
    return manifest


def verify_files(path: Path, manifest: dict) -> None:
    """Every listed file present with its size and sha256; no unlisted arrays."""
    listed = manifest.get("files", {})
    for rel, info in sorted(listed.items()):
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"artifact {path}: {rel} is missing")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(f"artifact {path}: {rel} has {size} bytes, the manifest says {info['bytes']} "
                                  "(truncated or replaced)")
        if sha256_file(f) != info["sha256"]:
            raise CheckpointError(f"artifact {path}: {rel} does not match its sha256 checksum (edited or corrupt)")
    present = {f"{ARRAYS}/{p.name}" for p in (path / ARRAYS).glob("*")} if (path / ARRAYS).is_dir() else set()
    extra = sorted(present - set(listed))
    if extra:
        raise CheckpointError(f"artifact {path}: {extra[0]} is not listed in the manifest (added after compilation)")


def load_arrays(path: Path, manifest: dict) -> dict:
    out = {}
    for rel, info in manifest["files"].items():
        if not rel.startswith(f"{ARRAYS}/"):
            continue
        name = rel[len(ARRAYS) + 1:-len(".npy")]
        try:
            a = np.load(path / rel, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
            raise CheckpointError(f"artifact {path}: {rel} is not a readable .npy file ({exc})") from None
        if list(a.shape) != info["shape"] or str(a.dtype) != info["dtype"]:
            raise CheckpointError(f"artifact {path}: {rel} has shape {a.shape} {a.dtype}, the manifest says "
                                  f"{info['shape']} {info['dtype']}")
        out[name] = a
    return out


def load_artifact(path: str | Path) -> Artifact:
    """Verify and load an artifact directory."""
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    arrays = load_arrays(path, manifest)
    try:
        spec = NetworkSpec.from_dict(manifest["spec"])
    except (SpecError, KeyError) as exc:
        raise CheckpointError(f"artifact {path}: the manifest's spec is invalid ({exc})") from None
    try:
        net = network_from(spec, manifest["network"], arrays)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"artifact {path}: the fixed-point network does not rebuild ({exc})") from None
    floats = {k[len("float."):]: v for k, v in arrays.items() if k.startswith("float.")}
    return Artifact(path, manifest, spec, net, floats)


def jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> JSON types (for manifests and --json output)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_result(path: "os.PathLike | str", result: dict) -> None:
    """Write a benchmark's result dict as JSON (atomically, its folder made),
    with the machine it ran on (platform, CPUs, load average at the end,
    package versions) under "machine", and say where."""
    import platform
    from pathlib import Path

    from eprop_lava.training import atomic_write_text

    path = Path(path)
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "loadavg_end": list(os.getloadavg()), "versions": versions()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(jsonable({**result, "machine": {**machine, **result.get("machine", {})}}),
                                       indent=2))
    print(f"results: {path}")
