"""The single description of a network: typed, validated, JSON/TOML round trip.

Every field is validated at construction and a bad value raises
:class:`SpecError` naming the field (``layers[1].params.tau_m``), never a bare
assertion. Decays are given as time constants in milliseconds for neurons and
as the per-step decay ``kappa`` for the readout (seed 002, Eq. 3.12), because
that is how the sources state them.

Conventions that must be named (see docs/architecture.md):

* ``timing="bellec"``: input x^t and the previous layer's z^t act in the same
  step, recurrent spikes one step later (seed 002, Eqs. 2.4, 3.10, 3.14); the
  readout sees z^t.
* ``timing="loihi"``: every synaptic hop delays one step, as Lava's Dense
  does: a layer sees x^{t-1} or z_{r-1}^{t-1}, and the readout sees z^{t-1}.
* ``reset="subtract"`` (Bellec: v -= v_th after a spike) or ``"zero"``
  (Loihi's LIF). STDP-ALIF and Izhikevich neurons define their own reset.
* ``conventions``: the scalings and counting rules in which this toolkit's
  defaults differ from the official TensorFlow code and NEST
  (:class:`ConventionSpec`); ``conventions="tf"`` selects all of the official
  code's at once.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from eprop_lava.errors import UserError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10
    import tomli as tomllib

NEURON_TYPES = ("lif", "alif", "stdp_alif", "izhikevich")
TIMINGS = ("bellec", "loihi")
RESETS = ("subtract", "zero")
LOSSES = ("cross_entropy", "mse")
VARIANTS = ("symmetric", "random", "adaptive")
FIRING_RATE_FORMS = ("none", "bellec", "online")
OPTIMIZERS = ("adam", "sgd")
INPUT_SCALINGS = ("none", "one_minus_alpha")
READOUT_INPUT_SCALINGS = ("none", "one_minus_kappa")
READOUT_BIASES = ("trained", "untrained")
ADAM_FORMS = ("bias_corrected", "epsilon_hat")
REFRACTORY_COUNTS = ("blocked_steps", "t_ref_steps")
SURROGATE_SCALES = ("gamma", "gamma_over_v_th")
BATCH_REDUCTIONS = ("sum", "mean")
RATE_AVERAGES = ("batch", "sample")
LOGGED_LOSSES = ("total", "task")
RESET_TIMINGS = ("next_step", "same_step")


class SpecError(UserError, ValueError):
    """A network specification field is invalid; the message names the field."""


# ----------------------------------------------------------------- validators
def _finite(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{path}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SpecError(f"{path}: must be finite, got {value}")
    return value


def _positive(path: str, value: Any) -> float:
    value = _finite(path, value)
    if value <= 0:
        raise SpecError(f"{path}: must be > 0, got {value}")
    return value


def _nonnegative(path: str, value: Any) -> float:
    value = _finite(path, value)
    if value < 0:
        raise SpecError(f"{path}: must be >= 0, got {value}")
    return value


def _open_unit(path: str, value: Any) -> float:
    value = _finite(path, value)
    if not 0.0 < value < 1.0:
        raise SpecError(f"{path}: decay must lie in (0, 1), got {value}")
    return value


def _count(path: str, value: Any, minimum: int = 1) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
        raise SpecError(f"{path}: expected an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise SpecError(f"{path}: must be >= {minimum}, got {value}")
    return value


def _choice(path: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise SpecError(f"{path}: unknown value {value!r}{did_you_mean(value, options)}; "
                        f"choose one of {', '.join(options)}")
    return value


# ---------------------------------------------------------------- conventions
@dataclass(frozen=True)
class ConventionSpec:
    """Named conventions: where the official TensorFlow e-prop code (Bellec et
    al. 2020, github.com/IGITUGraz/eligibility_propagation) and NEST's
    ``*_bsshslm_2020`` models differ from this toolkit's defaults. ``preset``
    names the set the other fields started from (:data:`CONVENTION_PRESETS`);
    fields given explicitly override it.

    input_scaling (seed 001 Eq. 1.19 / seed 002 Eq. 2.4 have none):
      "none":            v^{t+1} = alpha v^t + I^{t+1} - z^t v_th
      "one_minus_alpha": v^{t+1} = alpha v^t + (1 - alpha) I^{t+1} - z^t v_th
        (TF ``LightLIF``/``LightALIF``, models.py; NEST
        ``regular_spike_arrival = False``: P_z_in = 1 - exp(-dt / tau_m)).
    readout_input_scaling (seed 002 Eq. 3.12 has none):
      "none":            y^t = kappa y^{t-1} + W_out z^t + b
      "one_minus_kappa": y^t = kappa y^{t-1} + (1 - kappa) (W_out z^t + b)
        (TF ``exp_convolve(z, decay_out)`` before the readout; NEST
        ``eprop_readout_bsshslm_2020`` with ``regular_spike_arrival = False``).
        The readout gradients and the learning signal carry the same factor:
        L_j^t = (1 - kappa) sum_k B_jk Ybar_k^t.
    readout_bias: "trained" (the default) or "untrained" (b stays at its
      initial value, 0 unless given; TF and NEST have no readout bias).
    adam (seed 002 Eqs. 3.47-3.51):
      "bias_corrected": dW = -lr Mhat / (sqrt(Vhat) + eps) (Kingma & Ba, Alg. 1;
        ``optimizer.epsilon_in_sqrt`` gives Eq. 3.51's sqrt(Vhat + eps))
      "epsilon_hat":    dW = -lr sqrt(1 - b2^t) / (1 - b1^t) M / (sqrt(V) + eps)
        (TF's AdamOptimizer; NEST ``weight_optimizer.cpp``: eps is not
        bias-corrected, Kingma & Ba sec. 2 "epsilon hat").
    refractory_count (``params.n_ref``):
      "blocked_steps": n_ref steps after a spike cannot spike (psi = 0);
      "t_ref_steps":   n_ref = t_ref / dt as in TF and NEST, whose counter is
        set to n_ref at the spike and decremented before the check, so
        n_ref - 1 steps are blocked (NEST t_ref = 5 ms blocks 4 steps).
    surrogate_scale (seed 002 Eq. 2.18):
      "gamma":           psi = gamma max(0, 1 - |v - A| / v_th)
      "gamma_over_v_th": psi = (gamma / v_th) max(0, 1 - |v - A| / v_th)
        (TF ``pseudo_derivative(v_scaled, dampening_factor) / thr``; NEST
        ``surrogate_gradient_height = gamma / V_th``).
    batch_reduction: "sum" (loss and gradients summed over the batch) or
      "mean" (TF's reduce_mean; NEST divides the summed gradient by
      ``batch_size``). The firing-rate regularizer is scaled with the task
      loss, so its coefficient keeps its meaning under both.
    rate_average (the Bellec regularizer, ``regularization.form = "bellec"``):
      "batch":  f_j = rate over the batch and the sequence (TF:
                reduce_mean(z, axis=(0, 1)));
      "sample": f_bj = rate of each sample over its sequence (NEST: one rate
                per update interval), E_reg = c sum_b sum_j (f_bj - f0)^2.
    reset_timing (reset="subtract"; seed 001 Eq. 1.19):
      "next_step": v^{t+1} = alpha v^t + g I^{t+1} - z^t v_th (the seeds, TF,
        NEST ``*_bsshslm_2020``: the spike's reset enters the next step);
      "same_step": v^{t+1} = alpha (v^t - z^t v_th) + g I^{t+1} (NEST 3.10's
        event-based ``eprop_iaf``, ``eprop_iaf_adapt``: v_m -= V_th in the
        step that spikes, so the reset decays with the membrane).
    logged_loss: "total" (task loss + regularizer in the ``loss`` column) or
      "task" (``loss`` is the task loss, as TF and NEST print it); both ways
      the log also holds ``task_loss`` and ``rate_loss`` separately.
    """

    preset: str = "eprop-lava"
    input_scaling: str | None = None
    readout_input_scaling: str | None = None
    readout_bias: str | None = None
    adam: str | None = None
    refractory_count: str | None = None
    surrogate_scale: str | None = None
    batch_reduction: str | None = None
    rate_average: str | None = None
    logged_loss: str | None = None
    reset_timing: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in CONVENTION_PRESETS:
            raise SpecError(f"conventions.preset: unknown value {self.preset!r}; "
                            f"choose one of {', '.join(CONVENTION_PRESETS)}")
        for name, value in CONVENTION_PRESETS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def validated(self, path: str) -> "ConventionSpec":
        for name, options in _CONVENTION_CHOICES.items():
            _choice(f"{path}.{name}", getattr(self, name), options)
        return self

    def differs_from(self, preset: str) -> list[str]:
        """Names of the conventions that differ from a preset's."""
        return [k for k, v in CONVENTION_PRESETS[preset].items() if getattr(self, k) != v]


_CONVENTION_CHOICES = {
    "input_scaling": INPUT_SCALINGS,
    "readout_input_scaling": READOUT_INPUT_SCALINGS,
    "readout_bias": READOUT_BIASES,
    "adam": ADAM_FORMS,
    "refractory_count": REFRACTORY_COUNTS,
    "surrogate_scale": SURROGATE_SCALES,
    "batch_reduction": BATCH_REDUCTIONS,
    "rate_average": RATE_AVERAGES,
    "logged_loss": LOGGED_LOSSES,
    "reset_timing": RESET_TIMINGS,
}

#: "eprop-lava": this toolkit's defaults (the seeds' equations as written).
#: "tf": the official TensorFlow code (tutorial_pattern_generation.py's LightLIF
#: with its (1 - alpha) input; its evidence task's EligALIF has none: use
#: input_scaling = "none" there). "nest-bsshslm-2020": NEST 3.10's
#: ``*_bsshslm_2020`` models with their defaults (regular_spike_arrival = True
#: in the recurrent neurons, False in the readout; one firing rate per
#: sequence). "nest-eprop": the forward conventions of NEST 3.10's
#: event-based ``eprop_iaf``, ``eprop_iaf_adapt`` and ``eprop_readout``
#: (spikes arrive with their full weight in both, the reset acts in the
#: spiking step); their learning (a weight update at every step, no reset
#: between sequences, an online rate regularizer) has no counterpart here:
#: docs/benchmarks.md section 8.
CONVENTION_PRESETS: dict[str, dict[str, str]] = {
    "eprop-lava": dict(input_scaling="none", readout_input_scaling="none", readout_bias="trained",
                       adam="bias_corrected", refractory_count="blocked_steps", surrogate_scale="gamma",
                       batch_reduction="sum", rate_average="batch", logged_loss="total",
                       reset_timing="next_step"),
    "tf": dict(input_scaling="one_minus_alpha", readout_input_scaling="one_minus_kappa", readout_bias="untrained",
               adam="epsilon_hat", refractory_count="t_ref_steps", surrogate_scale="gamma_over_v_th",
               batch_reduction="mean", rate_average="batch", logged_loss="task",
               reset_timing="next_step"),
    "nest-bsshslm-2020": dict(input_scaling="none", readout_input_scaling="one_minus_kappa",
                              readout_bias="untrained", adam="epsilon_hat", refractory_count="t_ref_steps",
                              surrogate_scale="gamma_over_v_th", batch_reduction="mean", rate_average="sample",
                              logged_loss="task", reset_timing="next_step"),
    "nest-eprop": dict(input_scaling="none", readout_input_scaling="none", readout_bias="untrained",
                       adam="epsilon_hat", refractory_count="t_ref_steps", surrogate_scale="gamma_over_v_th",
                       batch_reduction="mean", rate_average="sample", logged_loss="task",
                       reset_timing="same_step"),
}


def conventions_from(value: Any, path: str = "conventions") -> ConventionSpec:
    """A ConventionSpec from a preset name, a table (``preset`` plus
    overrides) or a ConventionSpec."""
    if isinstance(value, ConventionSpec):
        return value.validated(path)
    if isinstance(value, str):
        return ConventionSpec(preset=value).validated(path)
    if isinstance(value, Mapping):
        return _build(ConventionSpec, value, path)
    raise SpecError(f"{path}: expected a preset name ({', '.join(CONVENTION_PRESETS)}) or a table, "
                    f"got {value!r}")


# ----------------------------------------------------------- neuron parameters
@dataclass(frozen=True)
class NeuronParams:
    """Parameters shared by the LIF family (seed 001, Eqs. 1.19-1.24).

    tau_m: membrane time constant (ms), alpha = exp(-dt / tau_m).
    v_th: baseline threshold. n_ref: refractory steps (psi = 0 while refractory).
    gamma: dampening of the pseudo-derivative (seed 002, Eq. 2.18).
    tau_a, tau_a_max: adaptation time constant (ms); when tau_a_max is set the
      adaptive neurons span [tau_a, tau_a_max] linearly (seed 001, sec. 5.3.2).
    beta: adaptation strength; with beta_scaling="bellec" the strength of
      neuron j is beta * (1 - rho_j) / (1 - alpha) (seed 001, sec. 5.3.2),
      with "none" it is beta itself.
    Izhikevich (seed 002, Eqs. 3.25-3.28): a, b, c (reset potential), d
      (recovery jump), v_peak (spike threshold); tau_m, v_th, n_ref, beta
      are ignored for it.
    """

    tau_m: float = 20.0
    v_th: float = 0.6
    n_ref: int = 5
    gamma: float = 0.3
    tau_a: float = 2000.0
    tau_a_max: float | None = None
    beta: float = 1.7
    beta_scaling: str = "bellec"
    a: float = 0.02
    b: float = 0.2
    c: float = -65.0
    d: float = 2.0
    v_peak: float = 30.0

    def validated(self, path: str) -> "NeuronParams":
        _positive(f"{path}.tau_m", self.tau_m)
        _positive(f"{path}.v_th", self.v_th)
        _count(f"{path}.n_ref", self.n_ref, minimum=0)
        _nonnegative(f"{path}.gamma", self.gamma)
        _positive(f"{path}.tau_a", self.tau_a)
        if self.tau_a_max is not None:
            _positive(f"{path}.tau_a_max", self.tau_a_max)
            if self.tau_a_max < self.tau_a:
                raise SpecError(f"{path}.tau_a_max: must be >= tau_a ({self.tau_a}), got {self.tau_a_max}")
        _nonnegative(f"{path}.beta", self.beta)
        _choice(f"{path}.beta_scaling", self.beta_scaling, ("bellec", "none"))
        for name in ("a", "b", "c", "d", "v_peak"):
            _finite(f"{path}.{name}", getattr(self, name))
        return self


@dataclass(frozen=True)
class LayerSpec:
    """One recurrent layer. ``adaptive_fraction`` is the fraction of ALIF
    neurons (beta > 0) in an ``alif`` or ``stdp_alif`` layer; the first
    ``size - round(f * size)`` neurons are non-adaptive (LIF). It is ignored
    for ``lif`` and ``izhikevich`` layers. ``weight_scale`` multiplies the
    initial afferent weights (N(0, 1/n_pre) by default). A ``bidirectional``
    layer (seed 002 sec. 3.4; Bellec et al.'s TIMIT network) has a second
    population of ``size`` neurons that reads the sequence backwards in time;
    both feed the next layer and the readout, so it outputs 2 * size."""

    size: int
    neuron: str = "alif"
    adaptive_fraction: float = 0.5
    recurrent: bool = True
    weight_scale: float = 1.0
    bidirectional: bool = False
    params: NeuronParams = field(default_factory=NeuronParams)

    def validated(self, path: str) -> "LayerSpec":
        _count(f"{path}.size", self.size)
        _choice(f"{path}.neuron", self.neuron, NEURON_TYPES)
        frac = _finite(f"{path}.adaptive_fraction", self.adaptive_fraction)
        if not 0.0 <= frac <= 1.0:
            raise SpecError(f"{path}.adaptive_fraction: must lie in [0, 1], got {frac}")
        _positive(f"{path}.weight_scale", self.weight_scale)
        if not isinstance(self.recurrent, bool):
            raise SpecError(f"{path}.recurrent: expected true or false, got {self.recurrent!r}")
        if not isinstance(self.bidirectional, bool):
            raise SpecError(f"{path}.bidirectional: expected true or false, got {self.bidirectional!r}")
        self.params.validated(f"{path}.params")
        if self.neuron == "stdp_alif" and self.params.n_ref < 1:
            raise SpecError(f"{path}.params.n_ref: STDP-ALIF needs a refractory period >= 1 (seed 002, Eq. 3.15)")
        return self

    @property
    def n_outputs(self) -> int:
        """Neurons this layer sends to the next layer and the readout."""
        return 2 * self.size if self.bidirectional else self.size

    @property
    def n_adaptive(self) -> int:
        if self.neuron in ("lif", "izhikevich"):
            return 0
        return int(round(self.adaptive_fraction * self.size))


@dataclass(frozen=True)
class ReadoutSpec:
    """Leaky readout y^t = kappa y^{t-1} + sum_r W_out,r z_r^t + b
    (seed 002, Eq. 3.12), connected to every layer."""

    n_outputs: int = 2
    kappa: float = math.exp(-1.0 / 20.0)

    def validated(self, path: str) -> "ReadoutSpec":
        _count(f"{path}.n_outputs", self.n_outputs)
        _open_unit(f"{path}.kappa", self.kappa)
        return self


@dataclass(frozen=True)
class LearningSpec:
    """E-prop variant (seed 001, sec. 4.1.5): B = W_out^T (symmetric), a fixed
    random B (random, entries N(0, feedback_std^2)), or Kolen-Pollack adaptive B
    that receives W_out's updates while both decay by adaptive_decay
    (seed 001, Eqs. 4.39-4.40)."""

    variant: str = "random"
    feedback_std: float = 1.0
    adaptive_decay: float = 1e-3

    def validated(self, path: str) -> "LearningSpec":
        _choice(f"{path}.variant", self.variant, VARIANTS)
        _positive(f"{path}.feedback_std", self.feedback_std)
        decay = _nonnegative(f"{path}.adaptive_decay", self.adaptive_decay)
        if decay >= 1:
            raise SpecError(f"{path}.adaptive_decay: decay must lie in [0, 1), got {decay}")
        return self


@dataclass(frozen=True)
class RegularizationSpec:
    """Firing-rate regularization towards target_hz.

    form="bellec": E_reg = B c sum_j (f_j - f0)^2 with f_j the rate over the
      batch and sequence, combined with the eligibility trace (Bellec et al.
      2020, official code; the factor B, the batch size, matches their
      batch-mean task loss to our batch-sum one).
    form="online": seed 002, Eqs. 3.39-3.43: the running average f^{av,t} of
      each sample, applied to all afferent weights without the eligibility
      trace. (The thesis writes the sign as (f_target - f_av); we use the
      descent direction of Eq. 3.39, c * (f_av - f_target).)
    l2: weight decay coefficient c_L2 (seed 002, Eq. 3.44).
    """

    form: str = "bellec"
    target_hz: float = 10.0
    coefficient: float = 0.0
    l2: float = 0.0

    def validated(self, path: str) -> "RegularizationSpec":
        _choice(f"{path}.form", self.form, FIRING_RATE_FORMS)
        _nonnegative(f"{path}.target_hz", self.target_hz)
        _nonnegative(f"{path}.coefficient", self.coefficient)
        _nonnegative(f"{path}.l2", self.l2)
        return self


@dataclass(frozen=True)
class OptimizerSpec:
    """Adam (seed 002, Eqs. 3.47-3.51) or SGD. ``epsilon_in_sqrt`` selects
    Eq. 3.51's sqrt(V + eps) instead of Kingma & Ba's sqrt(V) + eps (for
    ``conventions.adam = "bias_corrected"``; where eps goes in TF's form is
    ``conventions.adam``). The learning rate is multiplied by ``lr_decay``
    every ``lr_decay_every`` iterations (seed 001, sec. 5.1.4: x0.7 every 100).
    ``lr_scale`` gives parameter groups their own learning rate: a table from
    a parameter-name pattern (shell style, e.g. ``"readout.*"``,
    ``"layers.*.w_rec"``) to a factor on lr; the first matching pattern
    applies, unmatched parameters use lr itself."""

    kind: str = "adam"
    lr: float = 5e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    epsilon_in_sqrt: bool = False
    lr_decay: float = 1.0
    lr_decay_every: int = 100
    lr_scale: dict = field(default_factory=dict)

    def validated(self, path: str) -> "OptimizerSpec":
        _choice(f"{path}.kind", self.kind, OPTIMIZERS)
        _positive(f"{path}.lr", self.lr)
        for name in ("beta1", "beta2"):
            value = _finite(f"{path}.{name}", getattr(self, name))
            if not 0.0 <= value < 1.0:
                raise SpecError(f"{path}.{name}: must lie in [0, 1), got {value}")
        _positive(f"{path}.epsilon", self.epsilon)
        if not isinstance(self.epsilon_in_sqrt, bool):
            raise SpecError(f"{path}.epsilon_in_sqrt: expected true or false")
        decay = _positive(f"{path}.lr_decay", self.lr_decay)
        if decay > 1:
            raise SpecError(f"{path}.lr_decay: must lie in (0, 1], got {decay}")
        _count(f"{path}.lr_decay_every", self.lr_decay_every)
        if not isinstance(self.lr_scale, Mapping):
            raise SpecError(f"{path}.lr_scale: expected a table from parameter-name pattern to factor, "
                            f"got {self.lr_scale!r}")
        for pattern, factor in self.lr_scale.items():
            if not isinstance(pattern, str) or not pattern:
                raise SpecError(f"{path}.lr_scale: pattern {pattern!r} must be a non-empty string")
            _nonnegative(f"{path}.lr_scale[{pattern!r}]", factor)
        return self


@dataclass(frozen=True)
class NetworkSpec:
    """A multi-layer RSNN (seed 002, Eqs. 3.10-3.14) with a leaky readout."""

    n_inputs: int
    layers: tuple[LayerSpec, ...]
    readout: ReadoutSpec = field(default_factory=ReadoutSpec)
    loss: str = "cross_entropy"
    learning: LearningSpec = field(default_factory=LearningSpec)
    regularization: RegularizationSpec = field(default_factory=RegularizationSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    timing: str = "bellec"
    reset: str = "subtract"
    dt: float = 1.0
    seed: int = 0
    conventions: ConventionSpec = field(default_factory=ConventionSpec)

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.conventions, ConventionSpec):
            object.__setattr__(self, "conventions", conventions_from(self.conventions))
        self.validate()

    def validate(self) -> "NetworkSpec":
        _count("n_inputs", self.n_inputs)
        if not isinstance(self.layers, tuple) or not self.layers:
            raise SpecError("layers: at least one layer is required")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LayerSpec):
                raise SpecError(f"layers[{i}]: expected a LayerSpec, got {type(layer).__name__}")
            layer.validated(f"layers[{i}]")
        self.readout.validated("readout")
        _choice("loss", self.loss, LOSSES)
        self.learning.validated("learning")
        self.regularization.validated("regularization")
        self.optimizer.validated("optimizer")
        _choice("timing", self.timing, TIMINGS)
        _choice("reset", self.reset, RESETS)
        _positive("dt", self.dt)
        _count("seed", self.seed, minimum=0)
        conv = self.conventions.validated("conventions")
        if conv.input_scaling != "none":
            for i, layer in enumerate(self.layers):
                if layer.neuron not in ("lif", "alif"):
                    raise SpecError(f"conventions.input_scaling: {conv.input_scaling!r} is defined for lif and "
                                    f"alif layers; layers[{i}] is {layer.neuron!r}")
        if conv.reset_timing == "same_step":
            if self.reset != "subtract":
                raise SpecError(f"conventions.reset_timing: 'same_step' is defined for reset = 'subtract'; "
                                f"reset is {self.reset!r}")
            for i, layer in enumerate(self.layers):
                if layer.neuron not in ("lif", "alif"):
                    raise SpecError(f"conventions.reset_timing: 'same_step' is defined for lif and alif layers; "
                                    f"layers[{i}] is {layer.neuron!r}")
        if conv.refractory_count == "t_ref_steps":
            for i, layer in enumerate(self.layers):
                if layer.neuron == "stdp_alif" and layer.params.n_ref < 2:
                    raise SpecError(f"layers[{i}].params.n_ref: STDP-ALIF needs a refractory period >= 1 step, "
                                    "which is n_ref >= 2 with conventions.refractory_count = 't_ref_steps'")
        if conv.adam == "epsilon_hat" and self.optimizer.epsilon_in_sqrt:
            raise SpecError("optimizer.epsilon_in_sqrt: has no meaning with conventions.adam = 'epsilon_hat'")
        return self

    # --------------------------------------------------------------- derived
    @property
    def n_neurons(self) -> int:
        return sum(layer.n_outputs for layer in self.layers)

    def layer_offsets(self) -> list[tuple[int, int]]:
        """(start, stop) of each layer in the concatenated neuron vector
        (both directions of a bidirectional layer: forward first)."""
        out, start = [], 0
        for layer in self.layers:
            out.append((start, start + layer.n_outputs))
            start += layer.n_outputs
        return out

    def replace(self, **changes: Any) -> "NetworkSpec":
        return replace(self, **changes)

    # ----------------------------------------------------------- round trip
    def to_dict(self) -> dict:
        """Plain data; the conventions as their preset plus the fields that
        differ from it, so that changing the preset in a file changes them all."""
        data = _strip_none(asdict(self))
        conv = self.conventions
        data["conventions"] = {"preset": conv.preset,
                               **{k: getattr(conv, k) for k in conv.differs_from(conv.preset)}}
        return data

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetworkSpec":
        return _build(cls, data, "")

    @classmethod
    def from_json(cls, text: str) -> "NetworkSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec JSON is malformed: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_toml(cls, text: str) -> "NetworkSpec":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"spec TOML is malformed: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "NetworkSpec":
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file not found: {path}")
        text = path.read_text()
        return cls.from_toml(text) if path.suffix == ".toml" else cls.from_json(text)


def _strip_none(obj: Any) -> Any:
    """TOML has no null: drop None-valued optional fields (they default to None)."""
    if isinstance(obj, dict):
        return {k: _strip_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_strip_none(v) for v in obj]
    return obj


_NESTED = {
    "layers": LayerSpec,
    "params": NeuronParams,
    "readout": ReadoutSpec,
    "learning": LearningSpec,
    "regularization": RegularizationSpec,
    "optimizer": OptimizerSpec,
}


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise SpecError(f"{path or 'spec'}: expected a table/object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{path}." if path else ""
        raise SpecError(f"{where}{unknown[0]}: unknown field{did_you_mean(unknown[0], known)} "
                        f"(known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        if key == "layers":
            if not isinstance(value, (list, tuple)):
                raise SpecError("layers: expected a list of layers")
            kwargs[key] = tuple(_build(LayerSpec, v, f"layers[{i}]") for i, v in enumerate(value))
        elif key == "conventions" and cls is NetworkSpec:
            kwargs[key] = conventions_from(value, sub)
        elif key in _NESTED and is_dataclass(_NESTED[key]):
            kwargs[key] = _build(_NESTED[key], value, sub)
        else:
            kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise SpecError(f"{path or 'spec'}: {exc}") from None
    if cls is not NetworkSpec and hasattr(obj, "validated"):
        obj.validated(path)
    return obj
