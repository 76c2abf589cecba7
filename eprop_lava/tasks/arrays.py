"""Train on given input spikes and targets: a task that serves arrays from an .npz file.

    eprop-lava train arrays --task-option data=FILE.npz [--task-option order=sequential]
                            [--init-params PARAMS.npz] [--config spec.toml]

The file holds

* ``x``      (S, T, n_inputs): the input of each of S samples (spikes or any values);
* ``target`` (S, T, K): class probabilities (cross-entropy) or target values (MSE);
* ``mask``   (S, T), optional: the weight of each step in the loss (default 1 / T:
  the loss is a time average per sample);
* ``labels`` (S,), optional: the class of each sample; with labels the task
  is a classification (cross-entropy, metric "error" = wrong decisions over
  the masked window), without them a regression (MSE, metric "mse").

A batch is ``batch_size`` samples: drawn without replacement from the
training rng (``order="random"``), or the next ones in file order, cycling
(``order="sequential"``: batch k holds samples kB .. kB + B - 1 mod S, where k
counts the batches this task object has served; a resumed run starts again at
sample 0). ``valid=FILE.npz`` gives validation/test data in the same format
(default: the training file). The default network (``default_spec``) is one
ALIF layer of 100 neurons (half adaptive) with the evidence task's
parameters; a spec file or ``--set spec....`` changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eprop_lava.engine.network import Batch
from eprop_lava.errors import UserError
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, ReadoutSpec
from eprop_lava.tasks.base import classification_error


def load_arrays(path: str | Path, option: str = "data") -> dict:
    """The arrays of one file, checked (one-line UserError naming the file and the problem)."""
    from eprop_lava.training import read_npz  # training imports the tasks

    path = Path(path)
    data = read_npz(path, f"task arrays: {option}={path}")
    for key in ("x", "target"):
        if key not in data:
            raise UserError(f"task arrays: {path} has no array {key!r} (needs x (S, T, n_inputs) and target (S, T, K))")
    x, target = np.asarray(data["x"], dtype=np.float64), np.asarray(data["target"], dtype=np.float64)
    if x.ndim != 3:
        raise UserError(f"task arrays: {path}: x must have shape (samples, steps, n_inputs), got {x.shape}")
    S, T = x.shape[:2]
    if target.ndim != 3 or target.shape[:2] != (S, T):
        raise UserError(f"task arrays: {path}: target must have shape ({S}, {T}, K), got {target.shape}")
    mask = np.asarray(data["mask"], dtype=np.float64) if "mask" in data else np.full((S, T), 1.0 / T)
    if mask.shape != (S, T):
        raise UserError(f"task arrays: {path}: mask must have shape ({S}, {T}), got {mask.shape}")
    labels = None
    if "labels" in data:
        labels = np.asarray(data["labels"])
        if labels.shape != (S,) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"task arrays: {path}: labels must be {S} integers, got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= target.shape[2]:
            raise UserError(f"task arrays: {path}: labels must lie in [0, {target.shape[2]})")
    for name, arr in (("x", x), ("target", target), ("mask", mask)):
        if not np.all(np.isfinite(arr)):
            raise UserError(f"task arrays: {path}: {name} has non-finite values")
    return {"x": x, "target": target, "mask": mask, "labels": labels}


@dataclass
class ArrayTask:
    data: str = ""
    valid: str | None = None
    order: str = "random"
    split: str = "train"
    name: str = "arrays"
    _cursor: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not self.data:
            raise UserError("task arrays: needs --data FILE.npz (or --task-option data=FILE.npz; arrays x, target[, mask, labels])")
        if self.order not in ("random", "sequential"):
            raise UserError(f"task arrays: order={self.order!r}; choose random or sequential")
        source = self.valid if (self.split != "train" and self.valid) else self.data
        self.arrays = load_arrays(source, "valid" if source == self.valid else "data")
        self.classification = self.arrays["labels"] is not None
        self.metric_name = "error" if self.classification else "mse"
        self.solved_below = None

    @property
    def samples(self) -> int:
        return self.arrays["x"].shape[0]

    def default_spec(self) -> NetworkSpec:
        x, target = self.arrays["x"], self.arrays["target"]
        params = NeuronParams(tau_m=20.0, v_th=0.6, n_ref=5, gamma=0.3, tau_a=2000.0, beta=1.7)
        return NetworkSpec(n_inputs=x.shape[2], layers=(LayerSpec(size=100, neuron="alif", params=params),),
                           readout=ReadoutSpec(n_outputs=target.shape[2]),
                           loss="cross_entropy" if self.classification else "mse")

    def batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        S = self.samples
        if self.order == "sequential":
            idx = (self._cursor + np.arange(batch_size)) % S
            self._cursor = int((self._cursor + batch_size) % S)
        else:
            idx = rng.choice(S, size=batch_size, replace=batch_size > S)
        a = self.arrays
        labels = None if a["labels"] is None else a["labels"][idx]
        return Batch(x=np.ascontiguousarray(a["x"][idx].transpose(1, 0, 2)),
                     target=np.ascontiguousarray(a["target"][idx].transpose(1, 0, 2)),
                     mask=np.ascontiguousarray(a["mask"][idx].T), labels=labels)

    def metric(self, y: np.ndarray, batch: Batch) -> float:
        if self.classification:
            return classification_error(y, batch)
        w = batch.mask[..., None]
        return float((w * (y - batch.target) ** 2).sum() / max(w.sum() * y.shape[-1], 1e-300))

    def __reduce__(self) -> Any:  # the arrays are reloaded from the file, not pickled
        return (ArrayTask, (self.data, self.valid, self.order, self.split))
