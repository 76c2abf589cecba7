"""E-prop for LIF as Lava's own learning engine: a ``Loihi3FLearningRule`` on
``LearningDense`` and a ``LearningLIF`` that sends its traces; the readout's
rule (:func:`readout_learning_rule`) and the process that computes the
learning signal in closed loop from the readout (:class:`ClosedLoopLearningSignal`,
used by :mod:`eprop_lava.compile.native_learning`).

This is the form a Loihi 2 learning engine executes (docs/lava_loihi.md §3.5); the
exact reference is :class:`~eprop_lava.processes.EpropDense` with the
"loihi2" profile. The mapping, per synapse i -> j, ``t_epoch = 1``:

* ``x1``  presynaptic trace z-bar_i: impulse ``trace_impulse`` per spike,
  decay ``exp(-1/x1_tau) = (4096 - dv) / 4096`` (the LIF's voltage decay);
* ``y1``  psi_j, the graded pseudo-derivative (0..127), sent every step by
  :class:`EpropLearningLIF`;
* ``y2``, ``y3``  the learning signal split by sign, max(L_j, 0) and
  max(-L_j, 0) (traces are non-negative 7-bit values), from the graded input
  ``a_third_factor_in``;
* ``d`` (tag_2) a one-step delay line of x1 (``dd = x1 - d``), so the tag
  pairs psi^t with z-bar^{t-1} as e-prop does (Lava's x1 at step t already
  contains the spike of step t, docs/lava_loihi.md §3.5 (7)); ``pairing="raw"``
  uses x1 directly (no d) and keeps that one-step offset;
* ``t`` (tag_1) the kappa-filtered eligibility trace e-bar:
  ``dt = c_e u0 y1 d - c_k u0 t``;
* ``dw = -c_w u0 t y2 + c_w u0 t y3`` (descent on L e-bar, every step).

Constants are scaled so the bit-approximate arithmetic of
``PyLearningDenseModelBitApproximate`` (docs/lava_loihi.md §3.3: each product is
shifted right by max(0, sum of factor widths + 4 - 15) bits, then left by
e + 7, and the 2^7-scaled sum is stochastically rounded) gives the reference's
units: tag increment psi eps / 2^7 (``psi_bits = 7``) and weight change
lr L e-bar / 2^product_shift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from lava.magma.core.learning.constants import W_ACCUMULATOR_U, W_S_MANT
from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
from lava.magma.core.process.ports.ports import InPort, OutPort, RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LearningLIF

#: Factor widths of Lava's bit-approximate learning engine (constants.py:
#: FACTOR_TO_WIDTH_DICT): 7-bit traces, 9-bit (8 + sign) synaptic variables.
W_TRACE_FACTOR = 7
W_SYNVAR_FACTOR = 9
MANT_RANGE = (-8, 7)
#: post_factor="psi_cut" sends L offset-binary in y2 (y3 carries psi a_j): L + 64 in 0..127
SIGNAL_OFFSET = 64
EXP_RANGE = (-7, 8)


class LearningEngineError(ValueError):
    """A constant of the learning-engine rule cannot be expressed as m * 2^e
    with m in [-8, 7], e in [-7, 8]; the message names it."""


def product_shift(*widths: int) -> int:
    """Right shift the bit-approximate applier applies to one product:
    max(0, sum of factor widths + 4 - 15) (learning_rule_applier.py)."""
    return max(0, sum(widths) + W_S_MANT - W_ACCUMULATOR_U)


def m2e(value: float, name: str) -> tuple[int, int]:
    """The (m, e) with m * 2^e == value, m in [-8, 7], e in [-7, 8], with the
    largest |m| (the mantissa multiplies before the product's right shift, so
    a larger one keeps more low bits); raises
    LearningEngineError when ``value`` is not exactly representable."""
    if value == 0:
        raise LearningEngineError(f"{name}: zero is not a usable rule constant")
    for e in range(EXP_RANGE[0], EXP_RANGE[1] + 1):
        m = value / 2.0 ** e
        if m == round(m) and MANT_RANGE[0] <= m <= MANT_RANGE[1]:
            return int(m), e
    raise LearningEngineError(f"{name}: {value!r} is not m * 2^e with m in {list(MANT_RANGE)}, "
                              f"e in {list(EXP_RANGE)} (docs/lava_loihi.md §3.2)")


def nearest_m2e(value: float) -> tuple[int, int]:
    """The representable m * 2^e (m in [-8, 7], e in [-7, 8]) nearest to value > 0."""
    best = None
    for e in range(EXP_RANGE[1], EXP_RANGE[0] - 1, -1):
        for m in range(1, MANT_RANGE[1] + 1):
            err = abs(m * 2.0 ** e - value)
            if best is None or err < best[0]:
                best = (err, m, e)
    return best[1], best[2]


def _lit(m: int, e: int) -> str:
    """A rule-string literal for m * 2^e (sign handled by the caller)."""
    m = abs(m)
    if e == 0:
        return f"{m}"
    return f"2^{e}" if m == 1 else f"{m}*2^{e}"


@dataclass(frozen=True)
class EpropRule:
    """The e-prop rule strings and trace settings for one LearningDense, and
    the quantities they were derived from (JSON-serializable via to_dict)."""

    dw: str
    dd: str | None
    dt: str
    x1_impulse: float
    x1_tau: float
    pairing: str
    tag_increment: tuple        # (m, e) of the y1 * pre product
    kappa_decay: tuple          # (m, e): tag decay per step, (1 - kappa) = m 2^e
    kappa_target: float         # 1 - kappa of the reference (d_kappa / 4096)
    lr: tuple                   # (m, e) of the weight products
    rng_seed: int

    def learning_rule(self) -> Loihi3FLearningRule:
        """A fresh Lava rule object (one per LearningDense)."""
        return Loihi3FLearningRule(dw=self.dw, dd=self.dd, dt=self.dt, x1_impulse=self.x1_impulse,
                                   x1_tau=self.x1_tau, t_epoch=1, rng_seed=self.rng_seed)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kappa_decay"] = list(self.kappa_decay)
        out["tag_increment"] = list(self.tag_increment)
        out["lr"] = list(self.lr)
        out["kappa_decay_value"] = self.kappa_decay[0] * 2.0 ** self.kappa_decay[1]
        return out


def eprop_learning_rule(*, dv: int, d_kappa: int, lr: Any, trace_impulse: int = 16, psi_bits: int = 7,
                        product_shift_ref: int = 4, pairing: str = "delay", rng_seed: int = 0,
                        post_factor: str = "psi", pre_shift: int = 0, tag_shift: int = 0,
                        y_shift: int = 0) -> EpropRule:
    """E-prop (LIF) as a Loihi3FLearningRule matching the fixed-point reference.

    dv: the LIF's 12-bit voltage decay (x1 decays by (4096 - dv) / 4096);
    d_kappa: the reference's 12-bit kappa decay of e-bar; the tag decays by the
    nearest representable m 2^e to d_kappa / 4096 (exact when d_kappa is
    4096 m 2^e, e.g. 256 = 2^-4); lr: the reference's
    :class:`~eprop_lava.fixed.LearningRate` (m, e): Delta w = -m 2^e sum_t
    (L e-bar >> product_shift_ref); pairing: "delay" (psi^t with x1^{t-1} via
    d) or "raw" (psi^t with x1^t, the one-step offset); post_factor: "psi"
    (the graded y1 a neuron such as :class:`EpropLearningLIF` sends) or
    "spike" (psi_j^t replaced by psi_max z_j^t, the post spike Lava's own
    LearningDense records from ``s_in_bap`` as the dependency y0: what a
    standard LIF provides; the tag then grows only at post spikes) or
    "psi_cut" (:func:`_eprop_rule_cut`: with the eligibility reset at post
    spikes, for :class:`EpropLearningLIF` with ``cut``);
    pre_shift / tag_shift: x1's impulse divided by 2^pre_shift and the tag
    increment by 2^tag_shift, the weight constant multiplied by
    2^(pre_shift + tag_shift) (same update, fewer bits in x1 and t): how a
    learning rate below the dw constant's range (e >= -7) is reached."""
    if not (0 <= int(pre_shift) <= 4 and 0 <= int(tag_shift)):
        raise LearningEngineError(f"pre_shift {pre_shift!r}, tag_shift {tag_shift!r}: expected 0..4 and >= 0 "
                                  "(x1's impulse must stay an integer >= 1)")
    if post_factor not in ("psi", "spike", "psi_cut"):
        raise LearningEngineError(f"post_factor: expected 'psi', 'spike' or 'psi_cut', got {post_factor!r}")
    if post_factor == "psi_cut":
        return _eprop_rule_cut(dv=dv, d_kappa=d_kappa, lr=lr, trace_impulse=trace_impulse, psi_bits=psi_bits,
                               product_shift_ref=product_shift_ref, rng_seed=rng_seed, pre_shift=pre_shift,
                               tag_shift=tag_shift, y_shift=y_shift)
    if pairing not in ("delay", "raw"):
        raise LearningEngineError(f"pairing: expected 'delay' or 'raw', got {pairing!r}")
    if not 0 <= int(dv) < 4096:
        raise LearningEngineError(f"dv: expected a 12-bit decay in [0, 4095], got {dv!r}")
    if not 0 < int(d_kappa) < 4096:
        raise LearningEngineError(f"d_kappa: expected a decay in [1, 4095], got {d_kappa!r}")
    alpha = (4096 - int(dv)) / 4096.0
    # Lava: exp(-1/tau) per step; tau = 0 would clear the trace every step
    x1_tau = 1e9 if dv == 0 else -1.0 / math.log(alpha)

    # tag increment: c_e * (y1 * v >> s) * 2^7 / 2^7 == y1 * v / 2^psi_bits
    if pairing == "delay":
        s_e = product_shift(W_TRACE_FACTOR, W_SYNVAR_FACTOR)     # y1 * d: 7 + 9 + 4 - 15 = 5
        pre = "d"
    else:
        s_e = product_shift(W_TRACE_FACTOR, W_TRACE_FACTOR)      # y1 * x1: 7 + 7 + 4 - 15 = 3
        pre = "x1"
    if post_factor == "spike":  # y0 * d: one 9-bit factor, no shift; psi_max / 2^psi_bits ~= 1
        s_e = product_shift(W_SYNVAR_FACTOR if pairing == "delay" else W_TRACE_FACTOR)
        me, ee = m2e(2.0 ** (s_e - int(tag_shift)), "tag increment")
    else:
        me, ee = m2e(2.0 ** (s_e - psi_bits - int(tag_shift)), "tag increment")
    mk, ek = nearest_m2e(int(d_kappa) / 4096.0)
    # weight: c_w (t y >> 5) == lr.m 2^lr.e (L e-bar >> product_shift_ref)
    s_w = product_shift(W_SYNVAR_FACTOR, W_TRACE_FACTOR)         # t * y2: 9 + 7 + 4 - 15 = 5
    lr_m, lr_e = int(lr.mantissa), int(lr.exponent) + s_w - int(product_shift_ref) + int(pre_shift) + int(tag_shift)
    m2e(lr_m * 2.0 ** lr_e, "learning rate")  # validates the range
    if lr_m <= 0:
        raise LearningEngineError(f"learning rate: expected a positive mantissa, got {lr_m}")
    w_lit = _lit(lr_m, lr_e)
    post = "y0" if post_factor == "spike" else "u0*y1"
    dt = f"{_lit(me, ee)}*{post}*{pre} - {_lit(mk, ek)}*u0*t"
    dw = f"-{w_lit}*u0*t*y2 + {w_lit}*u0*t*y3"
    dd = "u0*x1 - u0*d" if pairing == "delay" else None
    return EpropRule(dw=dw, dd=dd, dt=dt, x1_impulse=float(trace_impulse) / 2 ** int(pre_shift), x1_tau=float(x1_tau),
                     pairing=pairing,
                     tag_increment=(me, ee), kappa_decay=(mk, ek), kappa_target=int(d_kappa) / 4096.0, lr=(lr_m, lr_e),
                     rng_seed=int(rng_seed))


def _eprop_rule_cut(*, dv: int, d_kappa: int, lr: Any, trace_impulse: int, psi_bits: int, product_shift_ref: int,
                    rng_seed: int, pre_shift: int, tag_shift: int, y_shift: int) -> EpropRule:
    """E-prop with the eligibility reset at post spikes (Loihi's reset to zero
    makes dv^{t+1}/dv^t = 0 after a spike). Since the last post spike t_j,
    eps_ji = x1_i - alpha^(t - t_j) x1_i(t_j): d holds x1 at the post neuron's
    last spike (dd = y0 x1 - y0 d, exact copies), the neuron sends
    y3 = psi alpha^(t - t_j) next to y1 = psi (both 2^-y_shift), so
    dt = c1 y1 x1 - c2 y3 d - (1 - kappa) t (products shifted by 3 and 5 bits:
    c1 = 2^(3 - psi_bits + y_shift - tag_shift), c2 = 2^(5 - ...)), and L
    arrives offset-binary in y2 = L + 64: dw = -c t y2 + 2 c t. The cost: x1 at
    step t already holds the pre spike of step t (one step early, no delay
    line left), |L| <= 64, and psi loses y_shift bits."""
    if not 0 <= int(d_kappa) < 4096 or not 0 < int(d_kappa):
        raise LearningEngineError(f"d_kappa: expected a decay in [1, 4095], got {d_kappa!r}")
    alpha = (4096 - int(dv)) / 4096.0
    x1_tau = 1e9 if dv == 0 else -1.0 / math.log(alpha)
    m1, e1 = m2e(2.0 ** (product_shift(W_TRACE_FACTOR, W_TRACE_FACTOR) - psi_bits + y_shift - tag_shift),
                 "tag increment (y1 x1)")
    m2, e2 = m2e(2.0 ** (product_shift(W_TRACE_FACTOR, W_SYNVAR_FACTOR) - psi_bits + y_shift - tag_shift),
                 "tag decrement (y3 d)")
    mk, ek = nearest_m2e(int(d_kappa) / 4096.0)
    s_w = product_shift(W_SYNVAR_FACTOR, W_TRACE_FACTOR)
    lr_m, lr_e = int(lr.mantissa), int(lr.exponent) + s_w - int(product_shift_ref) + int(pre_shift) + int(tag_shift)
    m2e(lr_m * 2.0 ** lr_e, "learning rate")
    m2e(lr_m * 2.0 ** (lr_e + 1), "learning rate (offset term)")
    offset_shift = int(math.log2(SIGNAL_OFFSET)) - s_w   # (t * 64) >> 5 = 2 t
    return EpropRule(dw=f"-{_lit(lr_m, lr_e)}*u0*t*y2 + {_lit(lr_m, lr_e + offset_shift)}*u0*t",
                     dd="y0*x1 - y0*d", dt=f"{_lit(m1, e1)}*u0*y1*x1 - {_lit(m2, e2)}*u0*y3*d - {_lit(mk, ek)}*u0*t",
                     x1_impulse=float(trace_impulse) / 2 ** int(pre_shift), x1_tau=float(x1_tau), pairing="cut",
                     tag_increment=(m1, e1), kappa_decay=(mk, ek), kappa_target=int(d_kappa) / 4096.0,
                     lr=(lr_m, lr_e), rng_seed=int(rng_seed))


def readout_learning_rule(*, d_kappa: int, lr: Any, trace_impulse: int = 16, product_shift_ref: int = 4,
                          rng_seed: int = 0, pre_shift: int = 0) -> EpropRule:
    """The readout's e-prop rule (seed 002 Eq. 2.38: Delta W_out = -lr sum_t
    err^t zbar^t) as a Loihi3FLearningRule whose third factor (y2 / y3 = the
    output error split by sign) arrives one step late (from
    :class:`ClosedLoopLearningSignal`).

    x1 is the presynaptic trace zbar (impulse ``trace_impulse``, decay
    (4096 - d_kappa) / 4096); d (tag_2) and t (tag_1) form a two-step delay
    line of it (dd = x1 - d, dt = d - t, exact integer copies), so the
    weight change of step t + 1, -c t y2 + c t y3 with the old t = x1^{t-1},
    multiplies err^t with the trace of the spikes up to z^{t-1}: the engine's
    pairing (x1 at step k already holds z^k, and err^t arrives at t + 1).
    pre_shift: x1's impulse / 2^pre_shift, the weight constant x 2^pre_shift."""
    if not 0 <= int(pre_shift) <= 4:
        raise LearningEngineError(f"pre_shift: expected 0..4 (x1's impulse must stay an integer >= 1), "
                                  f"got {pre_shift!r}")
    if not 0 < int(d_kappa) < 4096:
        raise LearningEngineError(f"d_kappa: expected a decay in [1, 4095], got {d_kappa!r}")
    x1_tau = -1.0 / math.log((4096 - int(d_kappa)) / 4096.0)
    s_w = product_shift(W_SYNVAR_FACTOR, W_TRACE_FACTOR)
    lr_m, lr_e = int(lr.mantissa), int(lr.exponent) + s_w - int(product_shift_ref) + int(pre_shift)
    if lr_m <= 0:
        raise LearningEngineError(f"readout learning rate: expected a positive mantissa, got {lr_m}")
    m2e(lr_m * 2.0 ** lr_e, "readout learning rate")
    w_lit = _lit(lr_m, lr_e)
    return EpropRule(dw=f"-{w_lit}*u0*t*y2 + {w_lit}*u0*t*y3", dd="u0*x1 - u0*d", dt="u0*d - u0*t",
                     x1_impulse=float(trace_impulse) / 2 ** int(pre_shift), x1_tau=float(x1_tau), pairing="delay2",
                     tag_increment=(1, 0), kappa_decay=(1, 0), kappa_target=int(d_kappa) / 4096.0,
                     lr=(lr_m, lr_e), rng_seed=int(rng_seed))


class EpropLearningLIF(LearningLIF):
    """Lava's LearningLIF (PyLifModelBitAcc dynamics) whose model sends, every
    step, the post spike on ``s_out_bap``, psi on ``s_out_y1`` and the learning
    signal received on ``a_third_factor_in`` split by sign on ``s_out_y2`` /
    ``s_out_y3`` (Lava's own model sends none of them, and a LearningDense
    waiting for them deadlocks). psi is the project's graded LIF
    pseudo-derivative (:func:`eprop_lava.neurons.fixed.psi_lif`,
    ``psi_bits`` magnitude bits) of v before the reset.

    ``record_steps`` rows of psi, z and the received signal are kept in
    ``psi_rec``, ``z_rec``, ``signal_rec`` for verification. ``psi_params``:
    the layer's :class:`~eprop_lava.neurons.fixed.FixedNeuronParams` (psi
    exactly as the engine's; default: built from vth and psi_bits).
    ``cut``: {"alpha", "y_shift"} for the rule with the eligibility reset
    (``post_factor="psi_cut"``): see the model."""

    def __init__(self, *, shape: tuple, du: int = 4095, dv: int = 0, vth: int = 100, bias_mant: Any = 0,
                 bias_exp: Any = 0, learning_rule: Any = None, psi_bits: int = 7, record_steps: int = 0,
                 psi_params: Any = None, cut: dict | None = None, name: str | None = None):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"shape: expected (n,), got {shape!r}")
        if not 1 <= int(psi_bits) <= 7:
            raise ValueError(f"psi_bits: y1 is a 7-bit trace; expected 1..7, got {psi_bits!r}")
        record_steps = int(record_steps)
        if record_steps < 0:
            raise ValueError(f"record_steps: expected >= 0, got {record_steps!r}")
        super().__init__(shape=shape, du=du, dv=dv, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp,
                         learning_rule=learning_rule, name=name, psi_bits=int(psi_bits), record_steps=record_steps,
                         psi_params=psi_params, cut=cut)
        rows = max(record_steps, 1)
        self.psi_rec = Var(shape=(rows, shape[0]), init=0)
        self.z_rec = Var(shape=(rows, shape[0]), init=0)
        self.signal_rec = Var(shape=(rows, shape[0]), init=0)


def split_signal(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y2, y3) = (max(L, 0), max(-L, 0)), each clipped to the 7-bit trace range."""
    s = np.asarray(signal, dtype=np.int64)
    return np.clip(s, 0, 127), np.clip(-s, 0, 127)


class TargetSource(RingBuffer):
    """The host's target and loss-mask stream (K + 1 values per step), sent
    as floats: Lava's fixed-point RingBuffer model sends int32, which would
    truncate a normalized loss mask (e.g. 1/150 per step) to 0."""


class ClosedLoopLearningSignal(AbstractProcess):
    """The learning signal of on-chip e-prop computed in closed loop from the
    readout during the run (on a Loihi 2 system: a process on an embedded CPU
    or the host, not a neurocore).

    Every step it reads the readout LIF's v (= the engine's y^t) through the
    RefPort ``y_ref`` (connect it with ``y_ref.connect_var(readout.v)``) in
    the management phase after the neurons' update, takes target and mask
    from ``target_in`` (K + 1 values), forms the output error and
    L^t = (B err^t) >> signal_shift with the engine's own
    :func:`~eprop_lava.engine.fixed_engine.output_error` and
    :func:`~eprop_lava.engine.fixed_engine.learning_signal` (seed 002
    Eq. 2.32 / 3.15), and sends it on the next step: L^t arrives at step
    t + 1 (one step later than in the engine, where L^t multiplies e-bar^{t-1}
    in the same step; here the learning engine pairs it with the tag after
    step t).

    Ports (all sent every step, the values computed at the previous step):
    ``signal_out`` (N,) L as graded spikes for a neuron's ``a_third_factor_in``;
    ``signal_pos_out`` / ``signal_neg_out`` (N,) max(L, 0), max(-L, 0) clipped
    to 7 bits, for a LearningDense's y2 / y3 inputs directly; ``err_pos_out`` /
    ``err_neg_out`` (K,) the output error split the same way (the readout
    synapses' third factor). ``record_steps`` rows of L, err and the y read
    are kept in ``signal_rec`` / ``err_rec`` / ``y_rec``."""

    def __init__(self, *, n_out: int, n_neurons: int, feedback: np.ndarray, loss: str, y_scale: float,
                 profile: Any, signal_shift: int, error_exp: int | None = None, record_steps: int = 0,
                 name: str | None = None):
        feedback = np.asarray(feedback)
        if feedback.shape != (int(n_neurons), int(n_out)):
            raise ValueError(f"feedback: expected shape {(int(n_neurons), int(n_out))}, got {feedback.shape}")
        record_steps = int(record_steps)
        if record_steps < 0:
            raise ValueError(f"record_steps: expected >= 0, got {record_steps!r}")
        super().__init__(n_out=int(n_out), n_neurons=int(n_neurons), loss=loss, y_scale=float(y_scale),
                         profile=profile, signal_shift=int(signal_shift),
                         error_exp=None if error_exp is None else int(error_exp), record_steps=record_steps,
                         name=name)
        K, N = int(n_out), int(n_neurons)
        self.target_in = InPort(shape=(K + 1,))
        self.y_ref = RefPort(shape=(K,))
        self.signal_out = OutPort(shape=(N,))
        self.signal_pos_out = OutPort(shape=(N,))
        self.signal_neg_out = OutPort(shape=(N,))
        self.err_pos_out = OutPort(shape=(K,))
        self.err_neg_out = OutPort(shape=(K,))
        self.feedback = Var(shape=(N, K), init=feedback)
        rows = max(record_steps, 1)
        self.signal_rec = Var(shape=(rows, N), init=0)
        self.err_rec = Var(shape=(rows, K), init=0)
        self.y_rec = Var(shape=(rows, K), init=0)
