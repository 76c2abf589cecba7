"""Evidence accumulation (seed 001 sec. 5.3; Bellec et al. 2020 Fig. 3; the
official ``tutorial_evidence_accumulation_with_alif.py`` and NEST's
``eprop_supervised_classification_evidence-accumulation_bsshslm_2020``).

40 inputs in 4 groups of 10: left cues, right cues, recall cue, background
noise. Seven cues of 100 ms, each on the left or the right, separated by
50 ms; a delay so that the sequence lasts 2250 ms; then a 150 ms recall cue.
Cue populations fire at 40 Hz during a cue, the noise population at 10 Hz
throughout. The label is the side that got more cues. Each trial's cues are
drawn left with probability 0.3 or 0.7 (chosen per trial), as the official
code does. Loss: cross-entropy over the recall window; the decision averages
the softmax over that window. Network: 50 LIF + 50 ALIF, tau_m = 20 ms,
v_th = 0.6, n_ref = 5, tau_a = 2000 ms, beta = 1.7 (1 - rho)/(1 - alpha),
two readouts with tau_out = 20 ms; Adam lr 5e-3; firing-rate target 10 Hz.

``swap_sides=True`` is a changed condition for on-chip adaptation: the two
cue populations trade places (a left cue drives the inputs that carried
right cues), so a network trained on the original task answers the wrong
side until it adapts. Labels still name the side that got more cues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eprop_lava.engine.network import Batch
from eprop_lava.spec import (
    LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, ReadoutSpec, RegularizationSpec,
)
from eprop_lava.tasks.base import check_option_types, classification_error, grouped_poisson_spikes, require


@dataclass
class EvidenceAccumulation:
    n_cues: int = 7
    cue_ms: int = 100
    spacing_ms: int = 50
    delay_ms: int = 1050
    recall_ms: int = 150
    n_per_group: int = 10
    cue_hz: float = 40.0
    noise_hz: float = 10.0
    left_probabilities: tuple = (0.3, 0.7)
    dt: float = 1.0
    swap_sides: bool = False

    name = "evidence"
    metric_name = "error"
    solved_below = 0.07

    def __post_init__(self) -> None:
        check_option_types(self)
        require(self, "dt", self.dt > 0, "must be > 0 ms")
        for option in ("n_cues", "n_per_group"):
            require(self, option, getattr(self, option) >= 1, "must be >= 1")
        for option in ("cue_ms", "recall_ms"):
            require(self, option, getattr(self, option) >= self.dt, f"must last at least one step ({self.dt} ms)")
        for option in ("spacing_ms", "delay_ms"):
            require(self, option, getattr(self, option) >= 0, "must be >= 0 ms")
        for option in ("cue_hz", "noise_hz"):  # a rate is a spike probability per step
            require(self, option, 0 <= getattr(self, option) * self.dt / 1000.0 <= 1,
                    f"must give a spike probability in [0, 1] per step (0 to {1000.0 / self.dt:g} Hz)")
        require(self, "cue_hz", self.cue_hz > 0, "must be > 0 Hz (the cues carry the evidence)")
        probs = self.left_probabilities
        require(self, "left_probabilities", len(probs) >= 1 and all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1 for p in probs),
            "must be a non-empty list of probabilities in [0, 1]")

    @property
    def steps(self) -> int:
        return int(round((self.n_cues * (self.cue_ms + self.spacing_ms) + self.delay_ms + self.recall_ms) / self.dt))

    @property
    def n_inputs(self) -> int:
        return 4 * self.n_per_group

    def default_spec(self) -> NetworkSpec:
        params = NeuronParams(tau_m=20.0, v_th=0.6, n_ref=5, gamma=0.3, tau_a=2000.0, beta=1.7)
        return NetworkSpec(
            n_inputs=self.n_inputs,
            layers=(LayerSpec(size=100, neuron="alif", adaptive_fraction=0.5, params=params),),
            readout=ReadoutSpec(n_outputs=2, kappa=math.exp(-self.dt / 20.0)),
            loss="cross_entropy",
            learning=LearningSpec(variant="random"),
            regularization=RegularizationSpec(form="bellec", target_hz=10.0, coefficient=1.0),
            optimizer=OptimizerSpec(kind="adam", lr=5e-3),
            dt=self.dt,
        )

    def batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        T, n, dt = self.steps, self.n_per_group, self.dt
        p_left = rng.choice(np.asarray(self.left_probabilities), size=batch_size)
        cue_left = rng.random((batch_size, self.n_cues)) < p_left[:, None]
        # rate per step, sample and input group (left, right, recall, noise); the
        # inputs of a group share it, so the spikes are drawn per group
        group_rate = np.zeros((T, batch_size, 4))
        group_rate[:, :, 3] = self.noise_hz * dt / 1000.0
        period = int(round((self.cue_ms + self.spacing_ms) / dt))
        cue_len = int(round(self.cue_ms / dt))
        cue_group = cue_left.astype(int) if self.swap_sides else (~cue_left).astype(int)  # (B, n_cues)
        samples = np.arange(batch_size)
        for k in range(self.n_cues):  # each sample's cue k drives its side's group
            group_rate[k * period:k * period + cue_len, samples, cue_group[:, k]] = self.cue_hz * dt / 1000.0
        recall = int(round(self.recall_ms / dt))
        group_rate[T - recall:, :, 2] = self.cue_hz * dt / 1000.0
        x = grouped_poisson_spikes(rng, group_rate, n)
        labels = (cue_left.sum(1) < self.n_cues / 2).astype(int)  # 0: more left cues, 1: more right
        target = np.zeros((T, batch_size, 2))
        target[:, np.arange(batch_size), labels] = 1.0
        mask = np.zeros((T, batch_size))
        mask[T - recall:] = 1.0 / recall
        return Batch(x=x, target=target, mask=mask, labels=labels)

    def metric(self, y: np.ndarray, batch: Batch) -> float:
        return classification_error(y, batch)
