"""Process interfaces of e-prop on Lava (ports, Vars, parameters as data).

Where each quantity lives on a chip (docs/fixed_point.md):

* neuron (:class:`EpropNeuron`): u, v, adaptive threshold, refractory counter;
  sends spikes on ``s_out`` and the graded pseudo-derivative psi (and, for
  Izhikevich, its Jacobian factor) on ``post_out`` (shape (2, n));
* synapse (:class:`EpropDense`): weights, the per-synapse eligibility vector
  eps, the filtered trace e-bar (Loihi's tag) and the update accumulator;
  inputs: presynaptic spikes ``s_in``, the post neuron's spikes ``zpost_in`` and
  psi ``post_in``, the learning signal ``signal_in`` (graded third factor);
* readout synapse (:class:`ReadoutDense`) with the presynaptic trace z-bar,
  the leaky non-spiking :class:`Readout`, and :class:`LearningSignal`, which
  runs off the neurocores (softmax, target comparison, feedback matrix B).

Every run is "loihi" timing: each Dense delays by one step. Per-sample
resets happen in the management phase after every ``sample_steps`` steps.
Records (``*_rec`` Vars, ``record_steps`` rows) exist for verification.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from eprop_lava.neurons import fixed as fx
from eprop_lava.neurons import get_model


class _Validated(AbstractProcess):
    """Our Processes validate their arguments before AbstractProcess.__init__;
    a class-level runtime of None keeps Lava's __del__ (which calls stop())
    quiet on an instance whose construction was refused."""

    _runtime = None


def _check_steps(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


class EpropNeuron(_Validated):
    """A layer of e-prop neurons (base class; use the four subclasses).

    Parameters: ``fixed`` (:class:`~eprop_lava.neurons.fixed.FixedNeuronParams`,
    for fixed_pt models) and/or ``layer`` (a :class:`~eprop_lava.spec.LayerSpec`,
    with ``dt``, for floating_pt models); ``sample_steps`` (state reset period;
    0 = never); ``record_steps`` (rows of the z/psi records)."""

    kind = ""
    state_names: tuple = ()

    def __init__(self, *, n: int, fixed: fx.FixedNeuronParams | None = None, layer: Any = None, dt: float = 1.0,
                 sample_steps: int = 0, record_steps: int = 0, name: str | None = None):
        n = _check_steps("n", n, 1)
        if fixed is None and layer is None:
            raise ValueError(f"{type(self).__name__}: give fixed= (fixed_pt) and/or layer= (floating_pt) parameters")
        if fixed is not None and (fixed.kind != self.kind or fixed.size != n):
            raise ValueError(f"fixed: expected {self.kind} parameters of size {n}, got {fixed.kind} x {fixed.size}")
        if layer is not None and (layer.neuron != self.kind or layer.size != n):
            raise ValueError(f"layer: expected a {self.kind} layer of size {n}, got {layer.neuron} x {layer.size}")
        sample_steps = _check_steps("sample_steps", sample_steps, 0)
        record_steps = _check_steps("record_steps", record_steps, 0)
        super().__init__(n=n, fixed=fixed, layer=layer, dt=dt, sample_steps=sample_steps,
                         record_steps=record_steps, name=name)
        self.a_in = InPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.post_out = OutPort(shape=(2, n))  # row 0: psi, row 1: Jacobian factor (Izhikevich) or 0
        init = self.initial_values(n, fixed, layer, dt)
        for key in self.state_names:
            setattr(self, key, Var(shape=(n,), init=init[key]))
        rows = max(record_steps, 1)
        self.z_rec = Var(shape=(rows, n), init=0)
        self.psi_rec = Var(shape=(rows, n), init=0)

    @classmethod
    def initial_values(cls, n: int, fixed: Any, layer: Any, dt: float) -> dict:
        """Initial state of every Var in ``state_names``: the fixed models use
        theta (threshold in voltage units), the float models a (adaptation);
        each model's unused Vars stay zero."""
        if fixed is not None:
            init = {k: v[0] for k, v in fx.initial_state(fixed, 1).items()}
        else:
            from eprop_lava.engine.backend import make_ops

            ops = make_ops("numpy")
            model = get_model(cls.kind)
            const = model.constants(layer, dt, "zero", ops)
            init = {k: np.asarray(v)[0] for k, v in model.initial_state(1, n, const, ops).items()}
        return {k: init.get(k, np.zeros(n)) for k in cls.state_names}


class EpropLIF(EpropNeuron):
    """LIF (seed 002 Eqs. 2.3-2.4; fixed point: Lava's PyLifModelBitAcc)."""

    kind = "lif"
    state_names = ("u", "v", "z", "ref")


class EpropALIF(EpropNeuron):
    """Adaptive LIF (seed 002 Eqs. 2.5-2.6)."""

    kind = "alif"
    state_names = ("u", "v", "theta", "a", "z", "ref")


class EpropSTDPALIF(EpropNeuron):
    """STDP-ALIF (seed 002 Eqs. 3.15-3.22)."""

    kind = "stdp_alif"
    state_names = ("u", "v", "theta", "a", "z", "ref", "end")


class EpropIzhikevich(EpropNeuron):
    """Izhikevich (seed 002 Eqs. 3.25-3.38)."""

    kind = "izhikevich"
    state_names = ("v", "u", "z")


NEURON_PROCESSES = {cls.kind: cls for cls in (EpropLIF, EpropALIF, EpropSTDPALIF, EpropIzhikevich)}


class EpropDense(_Validated):
    """Dense synapses with e-prop state (weights (n_post, n_pre) integers for
    fixed_pt, floats for floating_pt).

    Learning parameters (fixed_pt): ``post`` (the post layer's
    FixedNeuronParams), ``profile``, ``d_kappa`` (readout decay), ``lr``
    (:class:`~eprop_lava.fixed.LearningRate`), ``rng_key`` (seed, layer,
    matrix) of the stochastic rounding, ``signal_slice`` (this layer's part
    of the learning-signal vector of length ``n_signal``), ``zero_diagonal``
    for recurrent matrices."""

    def __init__(self, *, weights: np.ndarray, weight_exp: int = 0, learn: bool = False, post: Any = None,
                 profile: Any = None, d_kappa: int = 0, lr: Any = None, rng_key: tuple = (0, 0, 0),
                 signal_slice: tuple = (0, 0), n_signal: int = 1, zero_diagonal: bool = False,
                 sample_steps: int = 0, name: str | None = None):
        weights = np.asarray(weights)
        if weights.ndim != 2:
            raise ValueError(f"weights: expected a (n_post, n_pre) matrix, got shape {weights.shape}")
        if learn and (post is None or profile is None or lr is None):
            raise ValueError("EpropDense: learn=True needs post=, profile= and lr=")
        n_post, n_pre = weights.shape
        super().__init__(weight_exp=int(weight_exp), learn=bool(learn), post=post, profile=profile,
                         d_kappa=int(d_kappa), lr=lr, rng_key=tuple(rng_key), signal_slice=tuple(signal_slice),
                         zero_diagonal=bool(zero_diagonal),
                         sample_steps=_check_steps("sample_steps", sample_steps, 0), name=name)
        self.s_in = InPort(shape=(n_pre,))
        self.a_out = OutPort(shape=(n_post,))
        self.zpost_in = InPort(shape=(n_post,))
        self.post_in = InPort(shape=(2, n_post))
        self.signal_in = InPort(shape=(int(n_signal),))
        self.weights = Var(shape=(n_post, n_pre), init=weights)


class ReadoutDense(_Validated):
    """Readout synapses W_out[:, slice of one layer] (K, n_pre) with the
    presynaptic trace z-bar; receive the output error ``err_in`` and send the
    actual weight changes on ``dw_out`` ((K, n_total), zero outside this
    layer's columns) so the feedback matrix can follow them."""

    def __init__(self, *, weights: np.ndarray, weight_exp: int = 0, learn: bool = False, profile: Any = None,
                 d_kappa: int = 0, lr: Any = None, rng_key: tuple = (0, 0, 0), col_slice: tuple = (0, 0),
                 n_total: int = 1, sample_steps: int = 0, name: str | None = None):
        weights = np.asarray(weights)
        if weights.ndim != 2:
            raise ValueError(f"weights: expected a (K, n_pre) matrix, got shape {weights.shape}")
        if learn and (profile is None or lr is None):
            raise ValueError("ReadoutDense: learn=True needs profile= and lr=")
        K, n_pre = weights.shape
        super().__init__(weight_exp=int(weight_exp), learn=bool(learn), profile=profile, d_kappa=int(d_kappa),
                         lr=lr, rng_key=tuple(rng_key), col_slice=tuple(col_slice), n_total=int(n_total),
                         sample_steps=_check_steps("sample_steps", sample_steps, 0), name=name)
        self.s_in = InPort(shape=(n_pre,))
        self.a_out = OutPort(shape=(K,))
        self.err_in = InPort(shape=(K,))
        self.dw_out = OutPort(shape=(K, int(n_total)))
        self.weights = Var(shape=(K, n_pre), init=weights)


class Readout(_Validated):
    """Leaky non-spiking readout y^t = kappa y^{t-1} + a_in^t + b (seed 002
    Eq. 3.12). fixed_pt: ``fixed`` (:class:`~eprop_lava.engine.fixed_engine.FixedReadout`);
    floating_pt: ``kappa`` and ``bias``."""

    def __init__(self, *, n_out: int, fixed: Any = None, kappa: float = 0.95, bias: Any = None,
                 sample_steps: int = 0, record_steps: int = 0, name: str | None = None):
        n_out = _check_steps("n_out", n_out, 1)
        bias = np.zeros(n_out) if bias is None else np.asarray(bias, dtype=np.float64)
        super().__init__(n_out=n_out, fixed=fixed, kappa=float(kappa), bias=bias,
                         sample_steps=_check_steps("sample_steps", sample_steps, 0),
                         record_steps=_check_steps("record_steps", record_steps, 0), name=name)
        self.a_in = InPort(shape=(n_out,))
        self.y_out = OutPort(shape=(n_out,))
        self.y = Var(shape=(n_out,), init=0)
        self.y_rec = Var(shape=(max(record_steps, 1), n_out), init=0)


class LearningSignal(_Validated):
    """Error against the target stream and the learning signal L = B err
    (symmetric, random or adaptive B; softmax for cross-entropy). Runs off
    the neurocores on a chip. ``target_in`` carries (target_1..K, mask).
    ``seed``: the network's seed, which seeds the stochastic rounding of the
    error and the signal (fixed_engine.signal_rngs) when the profile asks."""

    def __init__(self, *, n_out: int, n_total: int, feedback: np.ndarray, loss: str = "cross_entropy",
                 signal_shift: int = 0, profile: Any = None, y_scale: float = 1.0, update_feedback: bool = False,
                 error_exp: int | None = None, seed: int = 0, name: str | None = None):
        feedback = np.asarray(feedback)
        if feedback.shape != (n_total, n_out):
            raise ValueError(f"feedback: expected shape {(n_total, n_out)}, got {feedback.shape}")
        super().__init__(n_out=int(n_out), n_total=int(n_total), loss=loss, signal_shift=int(signal_shift),
                         profile=profile, y_scale=float(y_scale), update_feedback=bool(update_feedback),
                         error_exp=None if error_exp is None else int(error_exp), seed=int(seed), name=name)
        self.y_in = InPort(shape=(n_out,))
        self.target_in = InPort(shape=(n_out + 1,))
        self.dw_in = InPort(shape=(n_out, n_total))
        self.err_out = OutPort(shape=(n_out,))
        self.signal_out = OutPort(shape=(n_total,))
        self.feedback = Var(shape=(n_total, n_out), init=feedback)


class EpropRSNN(_Validated):
    """A hierarchical multi-layer RSNN with readout and learning signal, built
    from a :class:`~eprop_lava.engine.fixed_engine.FixedNetwork` (fixed_pt) or
    a NetworkSpec and float parameters (floating_pt, inference).

    Ports: ``x_in`` (n_inputs,) spikes; ``target_in`` (K + 1,) target and
    mask (only with learn=True); ``y_out`` (K,)."""

    def __init__(self, *, net: Any = None, spec: Any = None, params: dict | None = None, learn: bool = False,
                 sample_steps: int = 0, record_steps: int = 0, name: str | None = None):
        if net is None and (spec is None or params is None):
            raise ValueError("EpropRSNN: give net= (a FixedNetwork) or spec= and params= (float)")
        spec = net.spec if net is not None else spec
        super().__init__(net=net, spec=spec, params=params, learn=bool(learn),
                         sample_steps=_check_steps("sample_steps", sample_steps, 0),
                         record_steps=_check_steps("record_steps", record_steps, 0), name=name)
        K = spec.readout.n_outputs
        self.x_in = InPort(shape=(spec.n_inputs,))
        self.target_in = InPort(shape=(K + 1,))
        self.y_out = OutPort(shape=(K,))
