"""Batched fixed-point inference and online e-prop learning: the fast CPU
simulation of Loihi behaviour (numpy, vectorized over the batch).

Timing is "loihi" (every synaptic hop delays one step, as Lava's Dense) and
neurons reset to zero. The arithmetic is :mod:`eprop_lava.fixed`; the neuron
equations are :mod:`eprop_lava.neurons.fixed`; the synapse functions below
(:func:`dense_output`, :func:`hidden_synapse_step`, :func:`readout_synapse_step`,
:func:`output_error`, :func:`learning_signal`, :func:`apply_interval_update`)
are called unchanged by the Lava ``fixed_pt`` ProcessModels
(:mod:`eprop_lava.models`), so "Lava equals the engine" tests the wiring.

One step t of a network (seed 002 Eqs. 3.10-3.14, fixed point):

1. each layer r receives a_r^t = D_in,r^{t-1} + D_rec,r^{t-1} (Dense buffers of
   the previous step), steps its neurons: z_r^t, psi_r^t;
2. the Dense buffers for t+1: D = (W s^t) << weight_exp (floor shift if < 0);
3. the readout integrates y^t = decay(y^{t-1}, d_kappa) + (W_out z^{t-1} << 6) + b;
4. the error dE/dy^t (softmax for cross-entropy: off-chip, float, quantized to
   the network's error exponent, chosen from the loss mask by
   :func:`error_exponent`) and the learning signal L^t = (B err^t) >> signal_shift;
5. each learning synapse (per sample b, post j, pre i) updates its eligibility
   vector eps^t, accumulates acc += (L_j^t ebar_ji^{t-1}) >> product_shift
   (loihi timing: L^t pairs with ebar^{t-1}, as the float engine's online
   e-prop), then ebar^t = decay(ebar^{t-1}, d_kappa) + e^t; readout synapses
   accumulate err_k^t zbar_j^t with zbar the kappa-filtered presynaptic trace;
6. at the end of each update interval (profile.update_interval steps, or the
   end of the sample) w += round(-m acc 2^e) (stochastic rounding with one
   seeded generator per synapse matrix), acc = 0. With batch B > 1 the
   accumulators are summed over the batch (minibatch); with B = 1 this is a
   single chip learning sample after sample.

Fixed-point learning covers the input, recurrent and readout weights (and
the adaptive feedback, which receives W_out's updates); the readout bias and
the firing-rate regularizers are not learned in fixed point.
"""

from __future__ import annotations


import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Sequence

import numpy as np

from eprop_lava.engine import fused
from eprop_lava.engine.backend import cpu_threads, one_blas_thread
from eprop_lava.engine.memory import retain_freed_memory
from eprop_lava.fixed import (
    ACT_SHIFT, DECAY_UNITY, DENSE_WEIGHT_BITS, FLAG_NONZERO, FLAG_SATURATED, FLAG_UNDERFLOW, ROUND_CODES, ROUND_FLOOR,
    ROUND_STOCHASTIC, FixedPointError, FixedPointProfile, LearningRate, apply_update, decay_constant, get_profile,
    k_dense_output, k_requantize, k_weight_exp, learning_rate, narrowest_int, round_to_dense_grid, shift_round,
    stochastic_draws, update_rng, wrap_int32,
)
from eprop_lava.neurons import fixed as fx
from eprop_lava.neurons.base import adaptation_constants, decay as float_decay
from eprop_lava.spec import NetworkSpec

READOUT_KEY = 1000  # rng key of the readout matrices: (seed, READOUT_KEY, layer)
#: rng keys of the stochastic rounding of the output error (seed, SIGNAL_KEY, 0) and of
#: the learning signal (seed, SIGNAL_KEY, 1): streams of their own, apart from the weight updates'
SIGNAL_KEY = 2000
#: fractional bits below the error's last bit that its non-nearest roundings see: the float
#: error is first held as an integer with error_exp + ERROR_DITHER_BITS fractional bits
#: (exact to 2^-24 of a level), then shifted right by ERROR_DITHER_BITS with the profile's rounding
ERROR_DITHER_BITS = 24


# ======================================================================= data
@dataclass(eq=False)
class FixedLayer:
    """One layer: integer neuron constants and afferent weights.
    ``grad_scale`` converts this layer's accumulator to the float e-prop
    gradient (dE/dW ~= acc * grad_scale; float weight = w_fx / w_scale)."""

    neuron: fx.FixedNeuronParams
    w_in: np.ndarray
    w_rec: np.ndarray | None = None
    weight_exp: int = 0
    lr: LearningRate | None = None
    w_scale: float = 1.0
    grad_scale: float = 1.0
    weight_exp_rec: int | None = None   # the recurrent Dense's own exponent (None: weight_exp)

    @property
    def rec_exp(self) -> int:
        """Exponent of the recurrent Dense: float w_rec = w_int 2^(rec_exp - weight_exp) / w_scale."""
        return self.weight_exp if self.weight_exp_rec is None else int(self.weight_exp_rec)

    @property
    def rec_lr(self) -> LearningRate | None:
        """The learning rate in w_rec's integer units (2^(weight_exp - rec_exp) times w_in's)."""
        if self.lr is None or self.rec_exp == self.weight_exp:
            return self.lr
        return LearningRate(self.lr.mantissa, self.lr.exponent + self.weight_exp - self.rec_exp)


@dataclass(eq=False)
class FixedReadout:
    """Leaky non-spiking readout (seed 002 Eq. 3.12) in fixed point."""

    w: np.ndarray            # (K, N_total)
    d_kappa: int
    bias: np.ndarray         # (K,) added every step, y units
    y_scale: float           # y_fx / y_scale = float y
    weight_exp: int = 0
    lr: LearningRate | None = None
    grad_scale: float = 1.0


@dataclass(eq=False)
class FixedNetwork:
    """Everything the fixed-point engine and the Lava fixed_pt models need."""

    spec: NetworkSpec
    profile: FixedPointProfile
    layers: list
    readout: FixedReadout
    feedback: np.ndarray     # (N_total, K) B in integer units
    signal_shift: int
    seed: int = 0
    #: fractional bits of the output error (err_fx = err 2^error_exp); None:
    #: the profile's error_frac_bits. :func:`error_exponent` chooses it from
    #: the loss mask so the quantized error is not rounded away.
    error_exp: int | None = None

    @property
    def error_bits(self) -> int:
        return self.profile.error_frac_bits if self.error_exp is None else int(self.error_exp)

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.spec.layers):
            raise FixedPointError(f"layers: spec has {len(self.spec.layers)} layers, got {len(self.layers)}")
        src = self.spec.n_inputs
        lo, hi = self.profile.weight_range
        for r, (L, ls) in enumerate(zip(self.layers, self.spec.layers)):
            if L.neuron.kind != ls.neuron or L.neuron.size != ls.size:
                raise FixedPointError(f"layers[{r}].neuron: expected {ls.neuron} x {ls.size}, "
                                      f"got {L.neuron.kind} x {L.neuron.size}")
            for name, shape in (("w_in", (ls.size, src)), ("w_rec", (ls.size, ls.size))):
                w = getattr(L, name)
                if w is None:
                    if name == "w_rec" and ls.recurrent:
                        raise FixedPointError(f"layers[{r}].w_rec: the spec's layer is recurrent")
                    continue
                if w.shape != shape:
                    raise FixedPointError(f"layers[{r}].{name}: expected shape {shape}, got {w.shape}")
                if w.min() < lo or w.max() > hi:
                    raise FixedPointError(f"layers[{r}].{name}: weights must lie in [{lo}, {hi}]")
            src = ls.size
        K, N = self.spec.readout.n_outputs, self.spec.n_neurons
        if self.readout.w.shape != (K, N):
            raise FixedPointError(f"readout.w: expected shape {(K, N)}, got {self.readout.w.shape}")
        if self.feedback.shape != (N, K):
            raise FixedPointError(f"feedback: expected shape {(N, K)}, got {self.feedback.shape}")

    def copy(self) -> "FixedNetwork":
        layers = [replace(L, w_in=L.w_in.copy(), w_rec=None if L.w_rec is None else L.w_rec.copy())
                  for L in self.layers]
        return replace(self, layers=layers, readout=replace(self.readout, w=self.readout.w.copy()),
                       feedback=self.feedback.copy())

    def weights(self) -> dict:
        """Integer weights named like the float parameters."""
        out = {}
        for r, L in enumerate(self.layers):
            out[f"layers.{r}.w_in"] = L.w_in.copy()
            if L.w_rec is not None:
                out[f"layers.{r}.w_rec"] = L.w_rec.copy()
        out["readout.w"] = self.readout.w.copy()
        out["feedback.b"] = self.feedback.copy()
        return out


# ======================================================================= quantizer
def _wexp_for(wmax: float, v_scale: float, wmax_int: int) -> int:
    """Smallest weight_exp with max|w| v_scale / 2^(6 + exp) <= wmax_int."""
    if wmax <= 0:
        return 0
    return int(math.ceil(math.log2(wmax * v_scale / 64.0 / wmax_int)))


def error_exponent(profile: FixedPointProfile, mask_max: float, mask_sum: float) -> int:
    """Fractional bits E of the output error err_fx = round(mask (p - t) 2^E),
    chosen from the loss mask (|p - t| <= 1 for cross-entropy, the unit of
    MSE errors), as the largest E with

    * no saturation of the error itself: mask_max 2^E <= 2^signal_bits - 1;
    * no saturation of a readout accumulator over one sample even in the worst
      case (|p - t| = 1 at every masked step, trace z-bar at its maximum):
      mask_sum 2^E trace_max / 2^product_shift <= 2^accumulator_bits - 1.

    mask_max is the largest per-step weight, mask_sum the largest per-sample
    sum of the mask. For the evidence task (mask 1/150 over 150 steps) in the
    loihi2 profile: E = min(14, 12) = 12, so a fully wrong step gives 27
    levels where 7 fixed fractional bits gave at most one."""
    if not (mask_max > 0 and math.isfinite(mask_max) and mask_sum > 0 and math.isfinite(mask_sum)):
        raise FixedPointError(f"loss mask: expected positive finite weights, got max {mask_max}, sum {mask_sum}")
    hi = profile.signal_range[1]
    by_range = math.floor(math.log2(hi / mask_max))
    by_acc = math.floor(math.log2(profile.accumulator_range[1] * 2.0 ** profile.product_shift
                                  / (mask_sum * profile.trace_max)))
    return int(max(0, min(by_range, by_acc, 24)))


def signal_shift_for(feedback: np.ndarray, err_max: int, profile: FixedPointProfile) -> int:
    """The right shift of L = (B err) >> shift: the smallest with
    max_j sum_k |B_jk| err_max <= 2^signal_bits - 1 (L never saturates).
    err_max is the largest error magnitude in integer levels."""
    worst = max(int(np.abs(feedback).sum(1).max(initial=0)), 1) * max(int(err_max), 1)
    return max(0, int(math.ceil(math.log2(worst / profile.signal_range[1]))))


def mask_extent(mask: np.ndarray) -> tuple[float, float]:
    """(largest per-step weight, largest per-sample sum) of a (T, B) loss mask."""
    m = np.abs(np.asarray(mask, dtype=np.float64))
    if m.ndim == 1:
        m = m[:, None]
    return float(m.max(initial=0.0)), float(m.sum(0).max(initial=0.0))


def weight_integers(w: np.ndarray, scale: float, profile: FixedPointProfile,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Float weights -> integer weights w_int = round(w scale) in the profile's range
    (with ``rng``: stochastic rounding floor(w scale + u), u ~ U[0, 1) per weight).

    With Loihi's 8-bit weights (``profile.weight_bits == 8``) each matrix is
    rounded to nearest on the grid of the Lava ``Dense`` that holds it
    (:func:`eprop_lava.fixed.round_to_dense_grid`, sign mode determined from
    the matrix as Lava does): a mixed-sign matrix holds even values in
    [-256, 254], an inhibitory one [-255, 0], so an integer weight means the
    same in the engine, the e-prop processes and Lava's ``Dense``. Other widths
    are study widths and keep every integer of their range: 12 bits (the wide
    profile) do not fit a Dense at all; a b < 8 bit matrix would be held
    exactly by a Dense as w << (8 - b) with weight_exp lowered by 8 - b (the
    Dense's floor shift of a multiple of 2^(8 - b) is exact), not as w."""
    x = np.asarray(w, dtype=np.float64) * scale
    if profile.weight_bits == DENSE_WEIGHT_BITS:
        return round_to_dense_grid(x, rng=rng)
    lo, hi = profile.weight_range
    q = np.rint(x) if rng is None else np.floor(x + rng.random(x.shape))
    return np.clip(q, lo, hi).astype(np.int64)


def quantize(spec: NetworkSpec, params: dict, profile: FixedPointProfile | str = "loihi2",
             lr: float | None = None, seed: int | None = None, loss_mask: np.ndarray | None = None) -> FixedNetwork:
    """The reference float -> fixed mapping (docs/lava_loihi.md §2.1 "Float->fixed mapping").

    LIF family: weight exponent 0 and the voltage scale chosen so the largest
    afferent weight uses the whole mantissa; vth = v_th S / 64, dv from alpha,
    du = 4095 (no synaptic filter: Bellec's LIF), theta_step = beta S.
    Izhikevich: 2^v_frac units per mV and weight_exp chosen to fit.
    Integer weights: :func:`weight_integers` (8-bit profiles: each matrix on
    its own Lava Dense grid, so Lava's Dense applies them unchanged).
    Learning rates: ``lr`` (default spec.optimizer.lr, read as an SGD rate on
    the summed gradient) mapped to m 2^e per matrix.
    loss_mask (T, B): the task's loss mask; given, the output error's
    fractional bits come from :func:`error_exponent` (otherwise the
    profile's error_frac_bits) and the learning signal's shift from
    :func:`signal_shift_for` with the largest error the mask allows.
    The learning rates absorb both scales (grad_scale), so an accumulated
    update means the same float gradient step whatever exponent is chosen."""
    if spec.timing != "loihi" or spec.reset != "zero":
        raise FixedPointError("timing/reset: the fixed-point engine implements timing='loihi' and reset='zero' "
                              f"(Loihi's Dense delay and LIF reset), got timing={spec.timing!r}, reset={spec.reset!r}")
    profile = get_profile(profile)
    lr = spec.optimizer.lr if lr is None else lr
    wlo, whi = profile.weight_range
    wmax_int = min(-wlo, whi)
    if loss_mask is not None:
        mask_max, mask_sum = mask_extent(loss_mask)
        ef = error_exponent(profile, mask_max, mask_sum)
        err_max = min(profile.signal_range[1], int(math.ceil(mask_max * 2.0 ** ef)))
        error_exp: int | None = ef
    else:
        ef = profile.error_frac_bits
        err_max = 1 << ef
        error_exp = None
    imp = profile.trace_impulse
    # readout and feedback first: the hidden learning rates depend on the signal scale
    w_out = np.asarray(params["readout.w"], dtype=np.float64)
    y_scale = 64.0 * wmax_int / max(np.abs(w_out).max(), 1e-12)
    w_out_fx = weight_integers(w_out, y_scale / 64.0, profile)
    if spec.learning.variant == "symmetric":
        feedback = w_out_fx.T.copy()
        b_scale = y_scale / 64.0
    else:
        b = np.asarray(params["feedback.b"], dtype=np.float64)
        b_scale = wmax_int / max(np.abs(b).max(), 1e-12)
        feedback = np.clip(np.rint(b * b_scale), wlo, whi).astype(np.int64)
        if spec.learning.variant == "adaptive":  # Kolen-Pollack: B follows W_out's units
            b_scale_target = y_scale / 64.0
            feedback = np.clip(np.rint(b * b_scale_target), wlo, whi).astype(np.int64)
            b_scale = b_scale_target
    if spec.loss != "cross_entropy":
        # an MSE error is unbounded: L = B err stays unsaturated over the error's whole range
        err_max = profile.signal_range[1]
    signal_shift = signal_shift_for(feedback, err_max, profile)
    ps = profile.product_shift
    layers = []
    for r, ls in enumerate(spec.layers):
        w_in = np.asarray(params[f"layers.{r}.w_in"], dtype=np.float64)
        w_rec = np.asarray(params[f"layers.{r}.w_rec"], dtype=np.float64) if ls.recurrent else None
        wmax = max(np.abs(w_in).max(), 0 if w_rec is None else np.abs(w_rec).max(), 1e-12)
        p = ls.params
        if ls.neuron == "izhikevich":
            v_frac = 14
            v_scale = float(1 << v_frac)
            # weight_exp >= 0: a negative exponent floor-shifts every Dense sum, an error of up
            # to 2^(6 + weight_exp) units per step that the Izhikevich upswing amplifies (see
            # neurons/fixed.py); 2^14 units per mV leave the weights 1/256 mV of resolution
            wexp = max(0, min(7, _wexp_for(wmax, v_scale, wmax_int)))
            q = lambda mv: int(round(mv * v_scale))  # noqa: E731
            neuron = fx.FixedNeuronParams(
                "izhikevich", ls.size, psi_bits=profile.psi_bits, v_frac=v_frac,
                izh_a=int(round(p.a * (1 << fx.IZH_FRAC))), izh_ab=int(round(p.a * p.b * (1 << fx.IZH_FRAC))),
                izh_c=q(p.c), izh_d=q(p.d),
                izh_b_c=q(p.b * p.c), v_peak=q(p.v_peak))
            gamma = p.gamma
        else:
            wexp = 0
            v_scale = 64.0 * wmax_int / wmax
            vth = int(round(p.v_th * v_scale / 64.0))
            if vth >= 1 << 17:  # keep the threshold mantissa in 17 bits
                raise FixedPointError(f"layers[{r}].params.v_th: threshold mantissa {vth} exceeds 17 bits")
            alpha = float_decay(p.tau_m, spec.dt)
            kw: dict[str, Any] = dict(du=4095, dv=decay_constant(alpha), vth=vth, n_ref=p.n_ref,
                                      psi_bits=profile.psi_bits)
            if ls.neuron in ("alif", "stdp_alif"):
                beta, rho = adaptation_constants(ls, spec.dt)
                bpsi_shift = 24
                kw.update(theta_step=np.rint(beta * v_scale).astype(np.int64),
                          d_theta=np.array([decay_constant(x) for x in rho]),
                          bpsi_mul=np.rint(beta * p.gamma / ((1 << profile.psi_bits) - 1)
                                           * (1 << bpsi_shift)).astype(np.int64),
                          bpsi_shift=bpsi_shift)
            neuron = fx.FixedNeuronParams(ls.neuron, ls.size, **kw)
            gamma = p.gamma
        w_scale = v_scale / 2.0 ** (ACT_SHIFT + wexp)
        w_in_fx = weight_integers(w_in, w_scale, profile)
        w_rec_fx = None
        if w_rec is not None:
            w_rec_fx = weight_integers(w_rec, w_scale, profile)
            np.fill_diagonal(w_rec_fx, 0)
        psi_max = (1 << profile.psi_bits) - 1
        # acc ~= g * (imp psi_max / (gamma 2^psi_bits)) * (2^ef b_scale / 2^signal_shift) / 2^ps
        per_acc = (imp * psi_max / (gamma * (1 << profile.psi_bits))) * ((1 << ef) * b_scale
                                                                          / 2.0 ** signal_shift) / 2.0 ** ps
        grad_scale = 1.0 / per_acc
        layers.append(FixedLayer(neuron, w_in_fx, w_rec_fx, wexp, None, w_scale, grad_scale))
    out_grad_scale = 2.0 ** ps / ((1 << ef) * imp)
    readout = FixedReadout(w_out_fx, decay_constant(spec.readout.kappa),
                           np.rint(np.asarray(params["readout.b"]) * y_scale).astype(np.int64), y_scale, 0,
                           None, out_grad_scale)
    net = FixedNetwork(spec, profile, layers, readout, feedback, signal_shift, spec.seed if seed is None else seed,
                       error_exp)
    set_learning_rates(net, lr)
    return net


def set_learning_rates(net: FixedNetwork, lr: float, hidden_lr: float | None = None) -> None:
    """Map float SGD rates (on the summed e-prop gradient) to each matrix's
    m 2^e, in place: the update m acc 2^e of an accumulator acc ~= dE/dW /
    grad_scale, in integer weight units (w_fx = w w_scale), is the float step
    lr dE/dW w_scale, so m 2^e = lr w_scale grad_scale. ``hidden_lr``: the
    input and recurrent rate (default ``lr``); the readout takes ``lr``."""
    for L in net.layers:
        L.lr = learning_rate((lr if hidden_lr is None else hidden_lr) * L.w_scale * L.grad_scale, net.profile)
    ro = net.readout
    ro.lr = learning_rate(lr * (ro.y_scale / 64.0) / 2.0 ** ro.weight_exp * ro.grad_scale, net.profile)


# ======================================================================= synapse functions
def dense_output(w: np.ndarray, s: np.ndarray, weight_exp: int, parallel: bool = False,
                 as_int32: bool = False) -> np.ndarray:
    """Dense: (sum_i w_ji s_i) << weight_exp (>> -weight_exp, floor), sent as
    int32 (what Lava's channel holds). s (..., pre) 0/1; w (post, pre) int.
    The values are int64 (callers add them up); as_int32=True returns an
    int32 array (the same values). Integer sums in compiled loops
    (:func:`eprop_lava.engine.fused.project_integers`), in int32 when no
    partial sum can leave it (8-bit weights: twice the lanes); otherwise
    float BLAS, exact here (integers far below 2^53)."""
    n_pre = w.shape[1]
    bound = int(np.abs(w).max(initial=0)) * n_pre
    narrow = (bound << max(weight_exp, 0)) < (1 << 31)  # every partial sum and the shifted total fit in int32
    # parallel=False by default: the step-by-step engine may already run in threads
    acc = fused.project_integers(s, w.astype(np.int32 if narrow else np.int64, copy=False), parallel=parallel) \
        if fused.available() else None
    if acc is None:
        # float32 holds every partial sum exactly while |sum| <= 256 n_pre < 2^24
        ftype = np.float32 if bound < (1 << 24) else np.float64
        acc = (np.asarray(s, dtype=ftype) @ w.T.astype(ftype)).astype(np.int64)
    elif acc.dtype.kind == "f":  # float spikes (the step engine's input): exact integer sums
        acc = acc.astype(np.int64)
    if narrow:  # the wrap cannot act
        out = k_weight_exp(acc, int(weight_exp)) if weight_exp else acc
    else:
        out = k_dense_output(acc.astype(np.int64, copy=False), int(weight_exp))
    return out.astype(np.int32 if as_int32 else np.int64, copy=False)


def readout_step(y: np.ndarray, a_in: np.ndarray, ro: FixedReadout) -> np.ndarray:
    """y^t = clip24(decay(y^{t-1}, d_kappa) + (a_in << 6) + b) (seed 002 Eq. 3.12;
    :func:`~eprop_lava.neurons.fixed.k_readout`)."""
    return fx.k_readout(np.asarray(y, dtype=np.int64), np.asarray(a_in, dtype=np.int64), DECAY_UNITY - ro.d_kappa,
                        ro.bias)


def _softmax_fixed_order(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis with a fixed summation order, so a sample
    gives the same bits alone (Lava) and inside a batch (engine)."""
    K = x.shape[-1]
    m = x[..., 0]
    for k in range(1, K):
        m = np.maximum(m, x[..., k])
    e = np.exp(x - m[..., None])
    s = e[..., 0].copy()
    for k in range(1, K):
        s = s + e[..., k]
    return e / s[..., None]


def output_error(y: np.ndarray, target: np.ndarray, mask: np.ndarray, loss: str, y_scale: float,
                 profile: FixedPointProfile, error_exp: int | None = None, stats: dict | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """err^t = mask (softmax(y) - target) (cross-entropy, seed 002 Eq. 2.32) or
    mask (y - target) (MSE), times 2^error_exp (default: the profile's
    error_frac_bits), rounded by the profile's ``error_rounding`` and
    saturated to the signal range. Runs off the neurocores (host): the
    softmax is float. "nearest" is numpy's rint of the float (half to even);
    the other roundings take the integer rint(err 2^(error_exp + 24)) and
    shift it right by 24 (:func:`~eprop_lava.fixed.shift_round`; stochastic:
    E[err_fx] = err 2^error_exp to 2^-24 of a level; draws from ``rng`` in
    the order of :func:`learning_signal`).
    stats: a dict whose counts "error_values", "error_underflow" (non-zero
    error rounded to 0) and "error_saturated" are incremented."""
    yf = np.asarray(y, dtype=np.float64) / y_scale
    if loss == "cross_entropy":
        err = _softmax_fixed_order(yf) - target
    elif loss == "mse":
        err = yf - target
    else:
        raise FixedPointError(f"loss: unknown {loss!r}")
    err = np.asarray(mask, dtype=np.float64)[..., None] * err
    lo, hi = profile.signal_range
    exact = err * float(1 << (profile.error_frac_bits if error_exp is None else int(error_exp)))
    if profile.error_rounding == "nearest":
        q = np.rint(exact)
    else:  # clipped first to just outside the range, so the fine integer stays below 2^50
        fine = np.rint(np.clip(exact, lo - 1, hi + 1) * float(1 << ERROR_DITHER_BITS)).astype(np.int64)
        q = shift_round(fine, ERROR_DITHER_BITS, profile.error_rounding, rng)
    out = np.clip(q, lo, hi).astype(np.int64)
    if stats is not None:
        _count(stats, "error", exact != 0, q == 0, q != out)
    return out


def _count(stats: dict, name: str, live: np.ndarray, zero: np.ndarray, clipped: np.ndarray) -> None:
    """values: non-zero before quantization; underflow: of those, 0 after;
    saturated: clipped to the range."""
    _add_counts(stats, name, int(np.count_nonzero(live)), int(np.count_nonzero(live & zero)),
                int(np.count_nonzero(clipped)))


def _add_counts(stats: dict, name: str, values: int, underflow: int, saturated: int) -> None:
    for key, n in (("values", values), ("underflow", underflow), ("saturated", saturated)):
        stats[f"{name}_{key}"] = stats.get(f"{name}_{key}", 0) + int(n)


#: from this many learning-signal values (steps x samples x neurons) on, the
#: compiled loop forms them (one pass, the counts included); below, numpy
#: (a Lava step or a step of the step engine: no threads started for it)
COMPILED_SIGNAL_ELEMENTS = 1 << 15


def learning_signal(err: np.ndarray, feedback: np.ndarray, shift: int, profile: FixedPointProfile,
                    stats: dict | None = None, per_layer: Sequence | None = None,
                    rng: np.random.Generator | None = None, narrow: bool = False) -> np.ndarray:
    """L^t = (B err^t) >> signal_shift, rounded by the profile's
    ``signal_rounding`` (default nearest; stochastic: E[L] = B err / 2^s),
    saturated to signal_bits: the graded third factor each neuron's
    synapses receive. The rounding, the saturation and what is counted are
    :func:`~eprop_lava.fixed.k_requantize`, run on numpy arrays or, for
    large blocks, inside one compiled loop (:func:`eprop_lava.engine.fused.run_fixed_learning_signal`).
    Stochastic draws (:func:`~eprop_lava.fixed.stochastic_draws`): one value
    per element in C order over (steps, batch, unit), the steps of a block
    one after another; numpy's default generator (PCG64) keeps the half of a
    64-bit word it has not used across calls, so a block of steps (compiled
    engine) draws the same numbers as the same steps one at a time (step
    engine, Lava with batch 1), checked in tests/test_signal_rounding.py.
    stats: counts "signal_values" (B err != 0), "signal_underflow" (of
    those, L = 0) and "signal_saturated" (L clipped) are incremented;
    per_layer: (neuron slice, dict) pairs that receive the same counts of
    their own neurons. narrow: L in the narrowest signed integer type that
    holds the signal range (int8 for 7-bit signals), else int64 (the same
    integers; what the compiled synapse loops read, a fraction of the bytes)."""
    err = np.asarray(err)
    if err.dtype.kind not in "iu":
        err = err.astype(np.int64)
    feedback = np.asarray(feedback)
    N, K = feedback.shape
    shape = err.shape[:-1] + (N,)
    lo, hi = profile.signal_range
    shift = int(shift)
    if shift < 0:
        raise FixedPointError(f"signal_shift: expected a right shift >= 0, got {shift}")
    if profile.signal_rounding in ROUND_CODES:
        mode, draws = ROUND_CODES[profile.signal_rounding], None
    elif profile.signal_rounding == "stochastic":
        if rng is None:
            raise FixedPointError("stochastic rounding needs a seeded numpy Generator (rng)")
        # shift 0: nothing to round, nothing drawn (as shift_stochastic)
        mode, draws = (ROUND_STOCHASTIC, stochastic_draws(rng, shift, shape)) if shift > 0 else (ROUND_FLOOR, None)
    else:
        raise FixedPointError(f"signal_rounding: unknown {profile.signal_rounding!r}")
    counting = stats is not None or bool(per_layer)
    if fused.available() and math.prod(shape) >= COMPILED_SIGNAL_ELEMENTS and K <= 8:
        out, counts = fused.run_fixed_learning_signal(err.reshape(-1, K), feedback, shift, mode,
                                                      None if draws is None else draws.reshape(-1, N), lo, hi,
                                                      narrowest_int(lo, hi) if narrow else np.int64)
        out = out.reshape(shape)
        if counting:  # counts (3, N): values, underflow, saturated per neuron
            if stats is not None:
                _add_counts(stats, "signal", *counts.sum(1))
            for sl, layer_counts in per_layer or ():
                _add_counts(layer_counts, "signal", *counts[:, sl].sum(1))
        return out
    err = err.astype(np.int64, copy=False)
    if K <= 8:
        # integer sums over the few outputs: exact, and no BLAS call (whose threads stall on a
        # loaded machine); the same integers as the float product below
        fb = feedback.astype(np.int64, copy=False)
        acc = err[..., 0, None] * fb[:, 0]
        for k in range(1, K):
            acc += err[..., k, None] * fb[:, k]
    else:  # float64 holds every partial sum exactly (integers far below 2^53)
        acc = np.rint(err.astype(np.float64) @ feedback.T.astype(np.float64)).astype(np.int64)
    out, flags = k_requantize(acc, 0 if draws is None else draws, shift, mode, lo, hi)
    if narrow:
        out = out.astype(narrowest_int(lo, hi))
    if counting:
        # each flag once over (steps, batch, neurons); the layers count their slices of it
        live, under, clipped = (flags & FLAG_NONZERO) != 0, (flags & FLAG_UNDERFLOW) != 0, (flags & FLAG_SATURATED) != 0
        if stats is not None:
            _add_counts(stats, "signal", *(np.count_nonzero(f) for f in (live, under, clipped)))
        for sl, layer_counts in per_layer or ():
            _add_counts(layer_counts, "signal", *(np.count_nonzero(f[..., sl]) for f in (live, under, clipped)))
    return out


def new_hidden_synapse(p: fx.FixedNeuronParams, batch: int, n_pre: int,
                       profile: FixedPointProfile | None = None) -> dict:
    """Per-synapse state (int64; the compiled loops choose their own storage)."""
    shape = (batch, p.size, n_pre)
    return dict(eps=fx.initial_eligibility(p, shape), ebar=np.zeros(shape, dtype=np.int64),
                acc=np.zeros((p.size, n_pre), dtype=np.int64), rec=None)


def hidden_synapse_step(syn: dict, p: fx.FixedNeuronParams, record: dict, pre: np.ndarray, signal: np.ndarray,
                        d_kappa: int, profile: FixedPointProfile) -> dict:
    """One step of an e-prop synapse matrix (all per-synapse state local):
    record = post_record of this step, pre (B, pre) spikes entering v^t,
    signal (B, post) the learning signal L^t. The eligibility vector, the
    product and the filtered trace are the kernels of :mod:`eprop_lava.neurons.fixed`;
    acc = clip(acc + sum_b prod) once per step (the batch shares one accumulator)."""
    eps, e = fx.eligibility_step(p, syn["eps"], syn["rec"], record, pre, profile)
    tag_lo, tag_hi = profile.tag_range
    ebar, prod = fx.k_trace_product(syn["ebar"], e, np.asarray(signal, dtype=np.int64)[..., :, None],
                                    DECAY_UNITY - d_kappa, tag_lo, tag_hi, profile.product_shift,
                                    ROUND_CODES[profile.product_rounding])
    acc = fx.k_clip(syn["acc"] + prod.sum(0), *profile.accumulator_range)
    return dict(eps=eps, ebar=ebar, acc=acc, rec=record)


def new_readout_synapse(batch: int, n_out: int, n_pre: int) -> dict:
    return dict(zbar=np.zeros((batch, n_pre), dtype=np.int64), acc=np.zeros((n_out, n_pre), dtype=np.int64))


def readout_synapse_step(syn: dict, pre: np.ndarray, err: np.ndarray, d_kappa: int,
                         profile: FixedPointProfile) -> dict:
    """zbar^t = decay(zbar^{t-1}, d_kappa) + impulse z^{t-1} (the presynaptic
    trace, the same for every output; :func:`~eprop_lava.neurons.fixed.k_presynaptic_trace`);
    acc += (err^t zbar^t) >> product_shift (dE/dW_out = sum_t err^t zbar^t, seed 002 Eq. 2.38)."""
    zbar = fx.k_presynaptic_trace(syn["zbar"], np.asarray(pre, dtype=np.int64), DECAY_UNITY - d_kappa,
                                  profile.trace_impulse, profile.trace_max)
    prod = fx.k_shift(np.asarray(err, dtype=np.int64)[:, :, None] * zbar[:, None, :], profile.product_shift,
                      ROUND_CODES[profile.product_rounding])
    acc = fx.k_clip(syn["acc"] + prod.sum(0), *profile.accumulator_range)
    return dict(zbar=zbar, acc=acc)


def apply_interval_update(w: np.ndarray, syn: dict, lr: LearningRate, profile: FixedPointProfile,
                          rng: np.random.Generator, zero_diagonal: bool = False,
                          counts: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """End of an update interval: (new weights, actual change); resets acc.
    counts: weight clipping, as :func:`~eprop_lava.fixed.apply_update`."""
    new = apply_update(w, syn["acc"], lr, profile, rng, counts)
    if zero_diagonal:
        np.fill_diagonal(new, 0)
    syn["acc"] = np.zeros_like(syn["acc"])
    return new, new - w


def is_update_step(local_step: int, steps: int, interval: int | None) -> bool:
    """local_step counts 1..steps within a sample."""
    return local_step == steps or (interval is not None and local_step % interval == 0)


def layer_slices(spec: NetworkSpec) -> list[slice]:
    return [slice(a, b) for a, b in spec.layer_offsets()]


def signal_rngs(seed: int) -> dict:
    """The generators of the output error's and the learning signal's
    stochastic rounding, keys (SIGNAL_KEY, 0) and (SIGNAL_KEY, 1), seeded
    with the network's seed (Lava's LearningSignal builds the same)."""
    return {(SIGNAL_KEY, i): update_rng(seed, SIGNAL_KEY, i) for i in (0, 1)}


def signal_generators(seed: int, rngs: dict | None, profile: FixedPointProfile | None = None) -> tuple:
    """(error, signal) generators of a run: those of ``rngs``, added to it
    when missing (so they persist across samples with the dict); fresh ones
    when rngs is None (a run without learning). (None, None) when
    ``profile`` is given and rounds neither stochastically (nothing to draw)."""
    if profile is not None and "stochastic" not in (profile.error_rounding, profile.signal_rounding):
        return None, None
    rngs = {} if rngs is None else rngs
    if (SIGNAL_KEY, 0) not in rngs or (SIGNAL_KEY, 1) not in rngs:
        for key, g in signal_rngs(seed).items():
            rngs.setdefault(key, g)
    return rngs[(SIGNAL_KEY, 0)], rngs[(SIGNAL_KEY, 1)]


def update_rngs(net: FixedNetwork) -> dict:
    """One generator per learning matrix, keyed as the Lava models key them,
    and the two of :func:`signal_rngs`."""
    rngs = signal_rngs(net.seed)
    for r, L in enumerate(net.layers):
        rngs[(r, 0)] = update_rng(net.seed, r, 0)
        if L.w_rec is not None:
            rngs[(r, 1)] = update_rng(net.seed, r, 1)
        rngs[(READOUT_KEY, r)] = update_rng(net.seed, READOUT_KEY, r)
    return rngs


# ======================================================================= simulation
@dataclass
class FixedRun:
    """Outputs of one sample per batch element (time-major, integers)."""

    z: list                    # per layer (T, B, N_r)
    y: np.ndarray              # (T, B, K)
    psi: list = field(default_factory=list)
    err: np.ndarray | None = None
    signal: np.ndarray | None = None
    states: list = field(default_factory=list)  # per layer: dict of (T, B, N) (record_state=True)
    #: limits that acted during the run (:func:`new_counters`)
    counters: dict = field(default_factory=dict)


#: neuron quantities counted per layer: (counter name, index in a layer's counts)
NEURON_COUNTERS = ("v_saturated", "u_wrapped", "a_in_wrapped")


def new_counters(net: "FixedNetwork", T: int, B: int, learn: bool) -> dict:
    """Zeroed counters of one run: per layer ``{"of": T B N neuron steps,
    "v_saturated", "u_wrapped" (24-bit one-sided wrap of u), "a_in_wrapped"
    (an int32 wrap on the way into u: the sum of the Dense inputs, a_in << 6
    or decay(u) + a_in << 6)}``; learning adds per matrix ``{"clipped": weights
    the update clipped, "of": weights updated}`` (``w_in``, ``w_rec`` per
    layer, ``w`` under "readout"), per layer its neurons' learning-signal
    counts ("signal_values", "signal_underflow", "signal_saturated" of
    :func:`learning_signal`) and under "learning" the network's output error
    and learning signal counts of :func:`output_error` / :func:`learning_signal`.
    Izhikevich layers count v's and a_in's limits (their u saturates, it has
    no wrap)."""
    out: dict = {}
    for r, L in enumerate(net.layers):
        out[f"layers.{r}"] = {"of": T * B * int(L.neuron.size), **{k: 0 for k in NEURON_COUNTERS}}
    if learn:
        out["readout"] = {}
        out["learning"] = {}
    return out


def _add_neuron_counts(counters: dict, r: int, counts: Any) -> None:
    layer = counters[f"layers.{r}"]
    for k, c in zip(NEURON_COUNTERS, counts):
        layer[k] += int(c)


def _step_counts(a_sum: np.ndarray, a_in: np.ndarray, flags: np.ndarray) -> tuple[int, int, int]:
    """One step's neuron counts from the kernel's flags and the a_in sum before / after its int32 wrap."""
    flags = np.asarray(flags)
    if a_in is a_sum and not flags.any():  # wrap_int32 returns its input when nothing wrapped: the common case
        return 0, 0, 0
    return (int(np.count_nonzero(flags & fx.FLAG_V_SATURATED)), int(np.count_nonzero(flags & fx.FLAG_U_WRAPPED)),
            int(np.count_nonzero((a_sum != a_in) | ((flags & fx.FLAG_INT32_WRAPPED) != 0))))


def _layer_counters(counters: dict, slices: list) -> list:
    """(neuron slice, layer counters) pairs for :func:`learning_signal`'s per-layer counts."""
    return [(sl, counters[f"layers.{r}"]) for r, sl in enumerate(slices)]


def add_counters(total: dict, more: dict) -> dict:
    """total += more, key by key through the nesting of :func:`new_counters` (in place; returns total)."""
    for k, v in more.items():
        if isinstance(v, dict):
            add_counters(total.setdefault(k, {}), v)
        else:
            total[k] = total.get(k, 0) + v
    return total


def _finish_counters(counters: dict, learn_stats: dict | None, stats: dict | None) -> dict:
    if learn_stats is not None:
        counters["learning"] = dict(learn_stats)
        if stats is not None:
            for k, v in learn_stats.items():
                stats[k] = stats.get(k, 0) + v
    return counters


@dataclass(frozen=True)
class SynapseRule:
    """Where a hidden synapse's e-prop state lives, as three functions:

    new(neuron, batch, n_pre, profile) -> state
    record(neuron, z, post, state_in) -> the layer's postsynaptic record (or None)
    step(state, neuron, record, post, pre, signal, d_kappa, profile) -> state

    :data:`PER_SYNAPSE` is exact e-prop (eligibility per synapse); studies add
    approximations such as ReckOn's per-neuron traces (studies/onchip.py)."""

    new: Any
    record: Any
    step: Any


PER_SYNAPSE = SynapseRule(
    new=new_hidden_synapse,
    record=lambda p, z, post, syn: fx.post_record(p, z, post, syn["rec"]),
    step=lambda syn, p, rec, post, pre, sig, d_kappa, prof: hidden_synapse_step(syn, p, rec, pre, sig, d_kappa, prof),
)


def simulate(net: FixedNetwork, x: np.ndarray, target: np.ndarray | None = None, mask: np.ndarray | None = None,
             learn: bool = False, rngs: dict | None = None, record_state: bool = False,
             on_update: Any = None, synapses: "SynapseRule | None" = None, stats: dict | None = None) -> FixedRun:
    """Run one sample per batch element, x (T, B, n_in) of 0/1 spikes.

    learn=True: online e-prop updates ``net``'s weights in place at every
    update interval (rngs: from :func:`update_rngs`, kept across samples).
    on_update(net, syn_in, syn_rec, syn_out, rngs, slices) replaces the weight
    update (used by :func:`accumulated_gradients` to read the accumulators).
    synapses: how hidden synapses keep their e-prop state (default
    :data:`PER_SYNAPSE`, exact e-prop; studies pass other rules).
    stats (learn=True): a dict in which :func:`output_error` and
    :func:`learning_signal` count values, underflows and saturations."""
    synapses = synapses or PER_SYNAPSE
    # every block allocates and frees (steps x batch x neurons) temporaries: keep them in the heap
    # (measured: the learning signal of a 300-step batch of 16 took 8.1 ms with fresh pages, 1.6 ms without)
    retain_freed_memory()
    if not record_state and compiled_inference(net) and (not learn or synapses is PER_SYNAPSE):
        return _simulate_compiled(net, x, target, mask, learn, rngs, on_update, stats)
    with one_blas_thread():
        chunks = _inference_chunks(np.shape(x)[1] if np.ndim(x) == 3 else 0, learn)
        if len(chunks) < 2:
            return _simulate(net, x, target, mask, learn, rngs, record_state, on_update, synapses, stats)
        # Inference: samples are independent, and numpy releases the GIL inside
        # each elementwise pass, so batch slices run in parallel threads with
        # results identical to one pass (every operation is per sample).
        from concurrent.futures import ThreadPoolExecutor

        def part(sl: slice) -> FixedRun:
            pick = (lambda a: None if a is None else np.asarray(a)[:, sl])
            return _simulate(net, np.asarray(x)[:, sl], pick(target), pick(mask), False, None, record_state,
                             None, synapses)

        with ThreadPoolExecutor(len(chunks)) as pool:
            runs = list(pool.map(part, chunks))
        return _concat_runs(runs)


def compiled_inference(net: "FixedNetwork") -> bool:
    """True when the network runs in the compiled loops of
    :mod:`eprop_lava.engine.fused` (inference and exact e-prop learning):
    numba present (and not switched off); every neuron type has them."""
    return fused.available() and all(L.neuron.kind in fused.FIXED_MODELS for L in net.layers)


def _check_inputs(net: "FixedNetwork", x: np.ndarray, target, mask, need_error: bool, spikes: bool = False):
    """The inputs checked (one line naming the input and the problem); with
    spikes=True (the compiled engine) x comes back as (T + 1, B, n_inputs)
    int8 rows, row 0 the zeros before the sample, converted in the same pass
    that checks the values."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != net.spec.n_inputs:
        raise FixedPointError(f"x: expected shape (T, B, n_inputs={net.spec.n_inputs}), got {x.shape}")
    rows = np.empty((x.shape[0] + 1,) + x.shape[1:], np.int8) if spikes else None
    if spikes and x.dtype.kind in "biuf" and fused.available():
        rows[0] = 0
        bad = fused.spikes_to_int8(x, rows[1:])
    else:
        bad = np.any((x != 0) & (x != 1))
        if spikes and not bad:
            rows[0] = 0
            rows[1:] = x
    if bad:
        raise FixedPointError("x: the fixed-point engine takes 0/1 input spikes")
    T, B, _ = x.shape
    if spikes:
        x = rows
    K = net.spec.readout.n_outputs
    if need_error:
        if target is None:
            raise FixedPointError("target: learning needs a target (T, B, K)")
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (T, B, K):
            raise FixedPointError(f"target: expected shape {(T, B, K)}, got {target.shape}")
        mask = np.ones((T, B)) if mask is None else np.asarray(mask, dtype=np.float64)
        if mask.shape != (T, B):
            raise FixedPointError(f"mask: expected shape {(T, B)}, got {mask.shape}")
    return x, target, mask


def psi_dtype(net: "FixedNetwork") -> np.dtype:
    """The smallest signed integer type that holds every layer's psi
    (|psi| <= psi_max; Izhikevich: its table): int8 for 7-bit psi. The
    records of a long batch are (T, B, N): a quarter of int32's memory."""
    top = 0
    for L in net.layers:
        p = L.neuron
        top = max(top, int(np.abs(p.izh_psi_table).max()) if p.kind == "izhikevich" else int(p.psi_max))
    return narrowest_int(-top, top)


#: Inference runs in blocks of about this many (step x sample x neuron)
#: elements: the per-block temporaries (the input Dense output, 4 bytes an
#: element) stay ~16 MB and are reused, instead of (T, B, N) arrays the
#: operating system must hand over fresh on every call (measured: the first of
#: three identical batch-2,048 runs took 2.5 s, the third 0.41 s).
INFERENCE_BLOCK_ELEMENTS = 1 << 22


def _block_edges(T: int, B: int, width: int, interval: int | None, learn: bool) -> list:
    """Block boundaries 0 = e_0 < ... < e_n = T: learning, the update
    intervals (weights change only at their ends); inference, blocks of
    about :data:`INFERENCE_BLOCK_ELEMENTS` elements (any split gives the same
    integers: everything crossing a boundary is carried)."""
    if learn:
        return list(range(0, T, interval)) + [T] if interval else [0, T]
    step = max(1, INFERENCE_BLOCK_ELEMENTS // max(1, B * width))
    return list(range(0, T, step)) + [T]


def _simulate_compiled(net: "FixedNetwork", x: np.ndarray, target, mask, learn: bool = False,
                       rngs: dict | None = None, on_update: Any = None, stats: dict | None = None) -> "FixedRun":
    """The step engine's computation, block by block in compiled loops.

    Weights change only at the end of an update interval, so within one
    interval (a block of steps) everything is known from the spikes: layer by
    layer, each layer's input Dense over the block is one event-driven product
    and its neurons one compiled loop (:func:`fused.run_fixed_layer`); then the
    readout, the output error and the learning signal for the whole block
    (:func:`output_error`, :func:`learning_signal`: elementwise per step, so the
    same integers as step by step); then every synapse's eligibility, trace and
    accumulator (:func:`fused.run_fixed_layer_synapses`,
    :func:`fused.run_fixed_readout_synapses`); then the update of the step
    engine (:func:`_update_all`, the same generators in the same order).

    What crosses a block boundary is carried: neuron, synapse and readout
    state, the last spikes, and the Dense outputs already on their way (sent at
    the block's last step with the weights before the update, as Lava's Dense
    and the step engine do).

    Spikes and post records are kept in (T + 1, B, N) buffers whose row 0 is
    the step before the sample (zeros): row t + 1 holds step t, so rows
    [t0, t1) are a block's delayed spikes z^{t-1} and rows [t0, t1 + 1) the
    post records a synapse block reads, as views (no copies)."""
    need_error = learn or target is not None
    x_buf, target, mask = _check_inputs(net, x, target, mask, need_error, spikes=True)
    T, B = x_buf.shape[0] - 1, x_buf.shape[1]
    spec, prof, ro = net.spec, net.profile, net.readout
    K = spec.readout.n_outputs
    slices = layer_slices(spec)
    if learn and rngs is None:
        rngs = update_rngs(net)
    err_rng, sig_rng = signal_generators(net.seed, rngs, prof)
    states = [fx.initial_state(L.neuron, B) for L in net.layers]
    y = np.zeros((B, K), np.int64)
    # the Dense outputs sent at the previous block's last step
    sent_in = [np.zeros((B, L.neuron.size), np.int64) for L in net.layers]
    sent_rec = [np.zeros((B, L.neuron.size), np.int64) for L in net.layers]
    sent_out = np.zeros((B, K), np.int64)
    z_buf = [np.empty((T + 1, B, L.neuron.size), np.int8) for L in net.layers]
    psi_buf = [np.empty((T + 1, B, L.neuron.size), psi_dtype(net)) for L in net.layers]
    # what only learning synapses read: Izhikevich's Jacobian, STDP-ALIF's cut = z + end
    jac_buf = [np.empty((T + 1, B, L.neuron.size), np.int64) if learn and L.neuron.kind == "izhikevich" else None
               for L in net.layers]
    cut_buf = [np.empty((T + 1, B, L.neuron.size), np.int8) if learn and L.neuron.kind == "stdp_alif" else None
               for L in net.layers]
    for bufs in (z_buf, psi_buf, jac_buf, cut_buf):
        for buf in bufs:
            if buf is not None:
                buf[0] = 0
    if learn:
        pairs = [fused.new_compiled_layer_synapses(L.neuron, B, L.w_in.shape[1], L.w_rec is not None, prof,
                                                   ro.d_kappa) for L in net.layers]
        syn_in, syn_rec = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
        syn_out = [dict(zbar=np.zeros((B, L.neuron.size), np.int64), acc=np.zeros((K, L.neuron.size), np.int64))
                   for L in net.layers]
    width = max([spec.n_inputs] + [L.neuron.size for L in net.layers])
    edges = _block_edges(T, B, width, prof.update_interval, learn)
    y_seq = np.empty((T, B, K), np.int64)
    err_seq = np.empty((T, B, K), np.int64) if need_error else None
    counters = new_counters(net, T, B, learn)
    learn_stats = {} if learn else None
    update = on_update or partial(_update_all, counts=counters)
    for t0, t1 in zip(edges[:-1], edges[1:]):
        src = x_buf  # the layer's input spikes: step t in row t + 1
        for r, L in enumerate(net.layers):
            # the input arriving at t: sent at t - 1 (src row t), the input Dense summed inside the
            # layer's loop; the first step's was sent in the previous block
            rows = slice(t0 + 1, t1 + 1)
            out = fused.run_fixed_layer(L.neuron, None, L.w_rec, L.rec_exp, states[r], sent_rec[r], learn,
                                        out=dict(z=z_buf[r][rows], psi=psi_buf[r][rows],
                                                 jac=None if jac_buf[r] is None else jac_buf[r][rows]),
                                        inputs=(src[t0:t1], L.w_in, L.weight_exp, sent_in[r]))
            _add_neuron_counts(counters, r, out["counts"])
            if cut_buf[r] is not None:
                np.add(out["z"], out["end"], out=cut_buf[r][rows])
            src = z_buf[r]
        # readout: y^t sees z^{t-1}
        a_out = np.empty((t1 - t0, B, K), np.int64)
        a_out[0] = sent_out
        if t1 - t0 > 1:
            a_out[1:] = 0
            for r in range(len(net.layers)):
                # serial: a fraction of a millisecond, less than a parallel region costs on a loaded machine
                a_out[1:] += dense_output(ro.w[:, slices[r]], z_buf[r][t0 + 1:t1], ro.weight_exp, as_int32=True)
            a_out[1:] = wrap_int32(a_out[1:])
        y_seq[t0:t1] = fused.run_fixed_readout(a_out, y, ro.d_kappa, ro.bias)
        if need_error:
            err_seq[t0:t1] = output_error(y_seq[t0:t1], target[t0:t1], mask[t0:t1], spec.loss, ro.y_scale, prof,
                                          net.error_exp, learn_stats, err_rng)
        # what is sent at the block's last step, with the weights before any update (after the
        # sample's last block nothing receives it)
        if t1 < T:
            sent_out = np.zeros((B, K), np.int64)
            for r, L in enumerate(net.layers):
                z_last = z_buf[r][t1]
                sent_in[r] = dense_output(L.w_in, (x_buf if r == 0 else z_buf[r - 1])[t1], L.weight_exp)
                if L.w_rec is not None:
                    sent_rec[r] = dense_output(L.w_rec, z_last, L.rec_exp)
                sent_out = sent_out + dense_output(ro.w[:, slices[r]], z_last, ro.weight_exp)
            sent_out = wrap_int32(sent_out)
        if learn:
            signal = learning_signal(err_seq[t0:t1], net.feedback, net.signal_shift, prof, learn_stats,
                                     _layer_counters(counters, slices), sig_rng, narrow=True)
            for r, L in enumerate(net.layers):
                records = slice(t0, t1 + 1)  # the step before the block, then the block's steps
                rec = dict(z=z_buf[r][records], psi=psi_buf[r][records],
                           jac=None if jac_buf[r] is None else jac_buf[r][records],
                           cut=z_buf[r][records] if cut_buf[r] is None else cut_buf[r][records])
                sig = np.ascontiguousarray(signal[:, :, slices[r]])
                pre_in = (x_buf if r == 0 else z_buf[r - 1])[t0:t1]  # z^{t-1}: rows t0 .. t1 - 1
                fused.run_fixed_layer_synapses(L.neuron, syn_in[r], syn_rec[r], pre_in, z_buf[r][t0:t1], rec, sig,
                                               ro.d_kappa, prof)
                fused.run_fixed_readout_synapses(syn_out[r], z_buf[r][t0:t1], err_seq[t0:t1], ro.d_kappa, prof)
            update(net, syn_in, syn_rec, syn_out, rngs, slices)
    return FixedRun(z=[buf[1:] for buf in z_buf], y=y_seq, psi=[buf[1:] for buf in psi_buf], err=err_seq,
                    counters=_finish_counters(counters, learn_stats, stats))


# Below this many samples per thread the per-step Python overhead dominates and
# threads do not pay off.
MIN_SAMPLES_PER_THREAD = 64


def _inference_chunks(batch: int, learn: bool) -> list:
    if learn or batch < 2 * MIN_SAMPLES_PER_THREAD:
        return []
    n = min(cpu_threads(), batch // MIN_SAMPLES_PER_THREAD)
    if n < 2:
        return []
    edges = [batch * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _concat_runs(runs: list) -> "FixedRun":
    def cat(items):
        return None if items[0] is None else np.concatenate(items, axis=1)

    first = runs[0]
    out = FixedRun(z=[cat([r.z[i] for r in runs]) for i in range(len(first.z))], y=cat([r.y for r in runs]),
                   psi=[cat([r.psi[i] for r in runs]) for i in range(len(first.psi))],
                   err=cat([r.err for r in runs]), signal=cat([r.signal for r in runs]))
    # inference chunks: every counter sums over the samples
    out.counters = {}
    for r in runs:
        add_counters(out.counters, r.counters)
    out.states = [{k: cat([r.states[i][k] for r in runs]) for k in first.states[i]} for i in range(len(first.states))]
    return out


def _simulate(net: FixedNetwork, x: np.ndarray, target: np.ndarray | None, mask: np.ndarray | None,
              learn: bool, rngs: dict | None, record_state: bool, on_update: Any, synapses: "SynapseRule",
              stats: dict | None = None) -> FixedRun:
    need_error = learn or target is not None
    x, target, mask = _check_inputs(net, x, target, mask, need_error)
    T, B, _ = x.shape
    spec, prof, ro = net.spec, net.profile, net.readout
    K = spec.readout.n_outputs
    if learn and rngs is None:
        rngs = update_rngs(net)
    err_rng, sig_rng = signal_generators(net.seed, rngs, prof)
    slices = layer_slices(spec)
    n_layers = len(net.layers)
    states = [fx.initial_state(L.neuron, B) for L in net.layers]
    buf_in = [np.zeros((B, L.neuron.size), dtype=np.int64) for L in net.layers]
    buf_rec = [np.zeros((B, L.neuron.size), dtype=np.int64) for L in net.layers]
    buf_out = [np.zeros((B, K), dtype=np.int64) for _ in net.layers]
    y = np.zeros((B, K), dtype=np.int64)
    z_prev = [np.zeros((B, L.neuron.size), dtype=np.int64) for L in net.layers]
    x_prev = np.zeros((B, spec.n_inputs), dtype=np.int64)
    if learn:
        syn_in = [synapses.new(L.neuron, B, L.w_in.shape[1], prof) for L in net.layers]
        syn_rec = [synapses.new(L.neuron, B, L.neuron.size, prof) if L.w_rec is not None else None
                   for L in net.layers]
        syn_out = [new_readout_synapse(B, K, L.neuron.size) for L in net.layers]
    # The first layer's Dense output depends only on x: one GEMM for all steps.
    first_in = dense_output(net.layers[0].w_in, x, net.layers[0].weight_exp) if not learn else None
    z_seq = [np.zeros((T, B, L.neuron.size), dtype=np.int8) for L in net.layers]
    psi_seq = [np.zeros((T, B, L.neuron.size), dtype=psi_dtype(net)) for L in net.layers]
    y_seq = np.zeros((T, B, K), dtype=np.int64)
    err_seq = np.zeros((T, B, K), dtype=np.int64) if need_error else None
    st_seq = [{k: [] for k in s} for s in states] if record_state else []
    counters = new_counters(net, T, B, learn)
    learn_stats = {} if learn else None
    update = on_update or partial(_update_all, counts=counters)
    for t in range(T):
        zs, posts = [], []
        for r, L in enumerate(net.layers):
            a_sum = buf_in[r] + buf_rec[r]
            a_in = wrap_int32(a_sum)
            z, post, states[r] = fx.step(a_in, states[r], L.neuron)
            _add_neuron_counts(counters, r, _step_counts(a_sum, a_in, post["flags"]))
            zs.append(z)
            posts.append(post)
            z_seq[r][t] = z
            psi_seq[r][t] = post["psi"]
            if record_state:
                for k, v in states[r].items():
                    st_seq[r][k].append(v)
        # readout at t sees z^{t-1} through the Dense buffers
        a_out = buf_out[0]
        for r in range(1, n_layers):
            a_out = a_out + buf_out[r]
        y = readout_step(y, wrap_int32(a_out), ro)
        y_seq[t] = y
        if need_error:
            err = output_error(y, target[t], mask[t], spec.loss, ro.y_scale, prof, net.error_exp, learn_stats, err_rng)
            err_seq[t] = err
        # Dense buffers for t+1 (weights before this step's update)
        for r, L in enumerate(net.layers):
            if r == 0:
                buf_in[0] = first_in[t] if first_in is not None else dense_output(L.w_in, x[t], L.weight_exp)
            else:
                buf_in[r] = dense_output(L.w_in, zs[r - 1], L.weight_exp)
            if L.w_rec is not None:
                buf_rec[r] = dense_output(L.w_rec, zs[r], L.rec_exp)
            buf_out[r] = dense_output(ro.w[:, slices[r]], zs[r], ro.weight_exp)
        if learn:
            signal = learning_signal(err, net.feedback, net.signal_shift, prof, learn_stats,
                                     _layer_counters(counters, slices), sig_rng)
            for r, L in enumerate(net.layers):
                p = L.neuron
                sig = signal[:, slices[r]]
                pre_in = x_prev if r == 0 else z_prev[r - 1]
                rec = synapses.record(p, zs[r], posts[r], syn_in[r])  # shared by both matrices
                syn_in[r] = synapses.step(syn_in[r], p, rec, posts[r], pre_in, sig, ro.d_kappa, prof)
                if syn_rec[r] is not None:
                    syn_rec[r] = synapses.step(syn_rec[r], p, rec, posts[r], z_prev[r], sig, ro.d_kappa, prof)
                syn_out[r] = readout_synapse_step(syn_out[r], z_prev[r], err, ro.d_kappa, prof)
            if is_update_step(t + 1, T, prof.update_interval):
                update(net, syn_in, syn_rec, syn_out, rngs, slices)
        if learn:
            x_prev = x[t].astype(np.int64)
        z_prev = zs
    run = FixedRun(z=z_seq, y=y_seq, psi=psi_seq, err=err_seq,
                   counters=_finish_counters(counters, learn_stats, stats))
    if record_state:
        run.states = [{k: np.stack(v) for k, v in s.items()} for s in st_seq]
    return run


def _update_all(net: FixedNetwork, syn_in, syn_rec, syn_out, rngs, slices, counts: dict | None = None) -> None:
    """The weight update of every learning matrix; counts (from
    :func:`new_counters`): weight clipping per layer and readout."""
    prof, ro = net.profile, net.readout

    def of(key: str, matrix: str) -> dict | None:
        return None if counts is None else counts[key].setdefault(matrix, {})

    for r, L in enumerate(net.layers):
        L.w_in, _ = apply_interval_update(L.w_in, syn_in[r], L.lr, prof, rngs[(r, 0)], counts=of(f"layers.{r}", "w_in"))
        if syn_rec[r] is not None:
            L.w_rec, _ = apply_interval_update(L.w_rec, syn_rec[r], L.rec_lr, prof, rngs[(r, 1)], zero_diagonal=True,
                                               counts=of(f"layers.{r}", "w_rec"))
        w_new, delta = apply_interval_update(ro.w[:, slices[r]], syn_out[r], ro.lr, prof, rngs[(READOUT_KEY, r)],
                                             counts=of("readout", "w"))
        ro.w[:, slices[r]] = w_new
        if net.spec.learning.variant != "random":
            # symmetric: B stays W_out^T; adaptive (Kolen-Pollack): B receives W_out's update
            net.feedback[slices[r], :] = np.clip(net.feedback[slices[r], :] + delta.T, *prof.weight_range)


def train_online(net: FixedNetwork, samples: Sequence[tuple], rngs: dict | None = None) -> list[FixedRun]:
    """Online fixed-point e-prop over samples in order: each (x, target, mask)
    with x (T, B, n_in); weights change at every update interval and carry
    over to the next sample (neuron and synapse state restart per sample)."""
    rngs = update_rngs(net) if rngs is None else rngs
    return [simulate(net, x, target, mask, learn=True, rngs=rngs) for (x, target, mask) in samples]


def accumulated_gradients(net: FixedNetwork, x: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """The fixed-point e-prop accumulators of one batch converted to float
    gradient units (acc * grad_scale), without changing the weights: for
    comparing fixed-point against float e-prop (quantization, nothing else)."""
    probe = net.copy()
    probe.profile = probe.profile.with_(update_interval=None)
    grads: dict[str, np.ndarray] = {}
    captured = {}

    def capture(netx, syn_in, syn_rec, syn_out, rngs, slices):  # noqa: ARG001 - same signature as _update_all
        for r, L in enumerate(netx.layers):
            captured[f"layers.{r}.w_in"] = syn_in[r]["acc"] * L.grad_scale
            if syn_rec[r] is not None:  # no self-connections: the diagonal is not a parameter
                captured[f"layers.{r}.w_rec"] = syn_rec[r]["acc"] * (1 - np.eye(L.neuron.size)) * L.grad_scale
        captured["readout.w"] = np.concatenate([s["acc"] for s in syn_out], axis=1) * netx.readout.grad_scale

    simulate(probe, x, target, mask, learn=True, on_update=capture)
    grads.update(captured)
    return grads
