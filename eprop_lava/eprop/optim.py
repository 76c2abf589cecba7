"""Optimizers over a flat dict of parameters (seed 002 sec. 3.5).

Adam (Eqs. 3.47-3.51): M = b1 M + (1 - b1) G; V = b2 V + (1 - b2) G^2;
dW = -lr Mhat / (sqrt(Vhat) + eps), or -lr Mhat / sqrt(Vhat + eps) with
``epsilon_in_sqrt`` as Eq. 3.51 writes it. SGD: dW = -lr G.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eprop_lava.spec import OptimizerSpec


class Optimizer:
    def __init__(self, spec: OptimizerSpec):
        self.spec = spec
        self.step_count = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def learning_rate(self) -> float:
        """lr * lr_decay ** floor(iteration / lr_decay_every)."""
        s = self.spec
        return s.lr * s.lr_decay ** (self.step_count // s.lr_decay_every)

    def deltas(self, grads: dict[str, Any]) -> dict[str, Any]:
        """The parameter changes for these gradients (advances the state)."""
        s = self.spec
        lr = self.learning_rate()
        self.step_count += 1
        if s.kind == "sgd":
            return {k: -lr * g for k, g in grads.items()}
        out = {}
        for k, g in grads.items():
            m = self.m.get(k)
            v = self.v.get(k)
            m = (1 - s.beta1) * g if m is None else s.beta1 * m + (1 - s.beta1) * g
            v = (1 - s.beta2) * g * g if v is None else s.beta2 * v + (1 - s.beta2) * g * g
            self.m[k], self.v[k] = m, v
            mhat = m / (1 - s.beta1 ** self.step_count)
            vhat = v / (1 - s.beta2 ** self.step_count)
            denom = (vhat + s.epsilon) ** 0.5 if s.epsilon_in_sqrt else vhat ** 0.5 + s.epsilon
            out[k] = -lr * mhat / denom
        return out

    def state_dict(self) -> dict:
        return {"step_count": self.step_count,
                "m": {k: np.asarray(v) for k, v in self.m.items()},
                "v": {k: np.asarray(v) for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.m = {k: np.array(v) for k, v in state["m"].items()}
        self.v = {k: np.array(v) for k, v in state["v"].items()}
