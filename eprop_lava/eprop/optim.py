"""Optimizers over a flat dict of parameters (seed 002 sec. 3.5).

Adam (Eqs. 3.47-3.51): M = b1 M + (1 - b1) G; V = b2 V + (1 - b2) G^2, then
one of (``conventions.adam``):

* "bias_corrected": dW = -lr Mhat / (sqrt(Vhat) + eps), Mhat = M / (1 - b1^t),
  Vhat = V / (1 - b2^t) (Kingma & Ba, Algorithm 1), or -lr Mhat / sqrt(Vhat + eps)
  with ``epsilon_in_sqrt`` as Eq. 3.51 writes it;
* "epsilon_hat": dW = -lr sqrt(1 - b2^t) / (1 - b1^t) M / (sqrt(V) + eps), the
  form of TensorFlow's AdamOptimizer and NEST's ``WeightOptimizerAdam::optimize_``
  (models/weight_optimizer.cpp, NEST 3.10): the bias correction is folded into
  the step size and eps is not bias-corrected (Kingma & Ba sec. 2, "epsilon hat").
  The two differ only through eps: "epsilon_hat" equals "bias_corrected" with
  eps / sqrt(1 - b2^t) in place of eps.

SGD: dW = -lr G. ``lr_scale`` (OptimizerSpec) multiplies the learning rate of
the parameters whose names match a pattern (per-parameter-group rates).
"""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np

from eprop_lava.errors import UserError
from eprop_lava.spec import ADAM_FORMS, OptimizerSpec


class Optimizer:
    def __init__(self, spec: OptimizerSpec, adam: str = "bias_corrected"):
        if adam not in ADAM_FORMS:
            raise ValueError(f"adam form {adam!r}; choose one of {', '.join(ADAM_FORMS)}")
        self.spec = spec
        self.adam = adam
        self.step_count = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def learning_rate(self) -> float:
        """lr * lr_decay ** floor(iteration / lr_decay_every)."""
        s = self.spec
        return s.lr * s.lr_decay ** (self.step_count // s.lr_decay_every)

    def group_scale(self, name: str) -> float:
        """The factor of the first ``lr_scale`` pattern that matches a parameter name (1 if none)."""
        for pattern, factor in self.spec.lr_scale.items():
            if fnmatch.fnmatchcase(name, pattern):
                return float(factor)
        return 1.0

    def _check_patterns(self, names: Any) -> None:
        names = list(names)
        for pattern in self.spec.lr_scale:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise UserError(f"optimizer.lr_scale: pattern {pattern!r} matches no parameter "
                                f"(parameters: {', '.join(names)})")

    def deltas(self, grads: dict[str, Any]) -> dict[str, Any]:
        """The parameter changes for these gradients (advances the state)."""
        s = self.spec
        if self.step_count == 0 and s.lr_scale:
            self._check_patterns(grads)
        lr = self.learning_rate()
        self.step_count += 1
        t = self.step_count
        if s.kind == "sgd":
            return {k: -(lr * self.group_scale(k)) * g for k, g in grads.items()}
        if self.adam == "epsilon_hat":
            step = lr * (1 - s.beta2 ** t) ** 0.5 / (1 - s.beta1 ** t)
        out = {}
        for k, g in grads.items():
            m = self.m.get(k)
            v = self.v.get(k)
            m = (1 - s.beta1) * g if m is None else s.beta1 * m + (1 - s.beta1) * g
            v = (1 - s.beta2) * g * g if v is None else s.beta2 * v + (1 - s.beta2) * g * g
            self.m[k], self.v[k] = m, v
            scale = self.group_scale(k)
            if self.adam == "epsilon_hat":
                out[k] = -(step * scale) * m / (v ** 0.5 + s.epsilon)
                continue
            mhat = m / (1 - s.beta1 ** t)
            vhat = v / (1 - s.beta2 ** t)
            denom = (vhat + s.epsilon) ** 0.5 if s.epsilon_in_sqrt else vhat ** 0.5 + s.epsilon
            out[k] = -(lr * scale) * mhat / denom
        return out

    def state_dict(self) -> dict:
        return {"step_count": self.step_count,
                "m": {k: np.asarray(v) for k, v in self.m.items()},
                "v": {k: np.asarray(v) for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.m = {k: np.array(v) for k, v in state["m"].items()}
        self.v = {k: np.array(v) for k, v in state["v"].items()}
