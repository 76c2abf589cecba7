"""Fixed-point step functions of the four neuron types and of their e-prop
eligibility vectors (Loihi arithmetic from :mod:`eprop_lava.fixed`).

The equations are those of the float modules (:mod:`eprop_lava.neurons.lif`,
``alif``, ``stdp_alif``, ``izhikevich``; seed 002 Eqs. 2.3-2.6, 3.15-3.38)
with the "loihi" timing and Loihi's reset to zero; only the arithmetic
differs. Each step is a pure function ``step(a_in, state, p) -> (z, post,
state)``: ``a_in`` is the integer Dense output of this step (sum_i w_ji s_i
shifted by weight_exp), ``post`` holds the graded values the neuron sends to
its afferent synapses (``psi``; ``jac`` for Izhikevich).

Conventions
-----------
LIF (Lava-exact, LAVA_BRIEF §2.1; ``PyLifModelBitAcc`` bit for bit when
``n_ref = 0``)::

    u   = wrap24( decay(u, du, offset 1) + (a_in << 6) )
    v   = clip24( decay(v, dv) + u + bias_mant << bias_exp )
    z   = v > vth << 6   (strict, as Loihi)  and not refractory
    v[z] = 0

``du = 4095`` makes u memoryless (u = this step's input): Bellec's LIF.
Refractoriness (``n_ref``) holds z at 0 for n_ref steps after a spike while v
keeps integrating, as the float LIF does; Lava's LIF has none (n_ref = 0).

ALIF: the adaptive threshold is kept in voltage units as
``theta = decay(theta, d_theta) + z_prev * theta_step`` (theta = beta a v_scale,
seed 002 Eq. 2.6 with rho = 1 - d_theta / 4096), spike iff v > (vth << 6) + theta,
24-bit saturating. STDP-ALIF additionally resets v to zero when its refractory
period ends (Eq. 3.15) and sends psi = -psi_max while refractory (Eq. 3.22).

psi (Eq. 2.18) is a graded value of ``psi_bits`` magnitude bits representing
psi / gamma (gamma goes into the learning rate)::

    psi = clip( (max(0, (vth << 6) - |v - A|) * psi_mul) >> psi_shift, 0, psi_max )

with psi_mul / 2^psi_shift ~= psi_max / (vth << 6): one multiply and one
shift per neuron, no division (what Loihi 2 microcode can do).

Izhikevich (Eqs. 3.25-3.28) has no Lava or Loihi 1 reference; the chosen
convention: v and u in Q``v_frac`` millivolts (default 2^14 per mV, so 24 bits
hold +-512 mV), 24-bit saturation, the constants 0.04, a and a b in Q28, every
product shifted back with rounding to nearest, spike iff v >= v_peak (as the
float model), reset folded into the next step; psi from a lookup table over
1/16 mV (Eq. 3.35), and the neuron also sends ``jac`` = 6 + 0.08 v in Q16, the
factor its synapses need (Eq. 3.34).

Why so fine: near threshold the Euler step of Eq. 3.27 multiplies a
difference in v by 6 + 0.08 v ~ 8 per step, so an error of 0.03 mV (the
0.04 v^2 term of Q16 constants with floor shifts, at v = -65 mV) grows to a
different spike within a few steps, and fixed-point e-prop then follows
other spikes than float e-prop on the same network. With Q14 millivolts, Q28
constants and rounding to nearest, the rest step is exact (-65 mV -> -68 mV,
tests/test_fixed_point.py) and spikes agree with the float model's on the
dequantized network.

Eligibility vectors (per synapse, trace units; ``impulse`` per pre spike,
``trace_bits`` saturation; see :func:`eligibility_step`):

* LIF:        eps_v' = decay(eps_v, dv) (1 - z_post) + impulse pre
* ALIF/STDP:  eps_v as LIF (STDP: (1 - z - end)), and
              eps_th' = decay(eps_th, d_theta) + (bpsi_mul psi_prev (eps_v - eps_th)) >> bpsi_shift
              (eps_th = beta eps_a, seed 002 Eqs. 2.20-2.22)
* Izhikevich: eps_v' = (1 - z) (jac eps_v >> 16) - eps_u + impulse pre ;
              eps_u' = (1 - z) (ab eps_v >> 24) + eps_u - (a eps_u >> 24)
* e = (psi (eps_v - eps_th)) >> psi_bits  (Eq. 2.28; eps_th = 0 for LIF/Izhikevich).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from eprop_lava.fixed import (
    ACT_SHIFT, DECAY_UNITY, UV_BITS, VTH_SHIFT, FixedPointError, FixedPointProfile, check_decay, clip_v24,
    decay, decay_same_dtype, saturate, saturate_owned, saturate_signed, shift_floor, shift_nearest, shift_round,
    shift_round_owned, wrap_int32,
    wrap_u24,
)

KINDS = ("lif", "alif", "stdp_alif", "izhikevich")
IZH_FRAC = 28      # fractional bits of the Izhikevich constants 0.04, a, a b
JAC_FRAC = 16      # fractional bits of the Izhikevich Jacobian factor jac = 6 + 0.08 v
IZH_PSI_LO = -128  # lowest millivolt of the Izhikevich psi table (exp(-158/30) ~ 0.005)
IZH_PSI_RES = 4    # the psi table holds 2^4 entries per millivolt


def _arr(name: str, value: Any, size: int, lo: int, hi: int) -> np.ndarray:
    """A per-neuron integer parameter (scalar or (size,)), range-checked."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        if np.any(arr != np.round(arr)):
            raise FixedPointError(f"{name}: expected integers, got {value!r}")
    elif arr.dtype.kind not in "iub":
        raise FixedPointError(f"{name}: expected integers, got {value!r}")
    arr = arr.astype(np.int64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != size):
        raise FixedPointError(f"{name}: expected a scalar or shape ({size},), got shape {arr.shape}")
    if np.any(arr < lo) or np.any(arr > hi):
        raise FixedPointError(f"{name}: must lie in [{lo}, {hi}], got {value!r}")
    return arr


@dataclass(frozen=True, eq=False)
class FixedNeuronParams:
    """Integer constants of one layer of fixed-point neurons (validated).

    Scalars or per-neuron arrays. Voltage units: Loihi's (threshold
    ``vth << 6``); a float model with scale S per unit of v has
    ``vth = round(v_th S / 64)`` and a weight w maps to ``w S / 2^(6 + weight_exp)``.
    """

    kind: str
    size: int
    du: Any = 4095
    dv: Any = 0
    vth: Any = 100
    bias_mant: Any = 0
    bias_exp: Any = 0
    n_ref: int = 0
    psi_bits: int = 7
    # ALIF / STDP-ALIF
    d_theta: Any = 0
    theta_step: Any = 0
    bpsi_mul: Any = 0
    bpsi_shift: int = 16
    # Izhikevich (v, u, c, d, v_peak in Q v_frac millivolts)
    v_frac: int = 14
    izh_a: Any = 5368709     # round(0.02 * 2^28)
    izh_ab: Any = 1073742    # round(0.004 * 2^28)
    izh_c: Any = -65 << 14
    izh_d: Any = 2 << 14
    izh_b_c: Any = -13 << 14  # initial u = b c
    v_peak: Any = 30 << 14

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FixedPointError(f"kind: unknown neuron type {self.kind!r}; choose one of {', '.join(KINDS)}")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise FixedPointError(f"size: expected an integer >= 1, got {self.size!r}")
        n = int(self.size)
        fix = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731 - frozen dataclass
        fix("du", check_decay("du", self.du))
        if np.any(self.du > 4095):
            raise FixedPointError("du: Lava's du register holds 0..4095 (the offset of 1 reaches 4096)")
        fix("dv", check_decay("dv", self.dv))
        if np.any(self.dv > 4095):
            raise FixedPointError("dv: Lava's dv register holds 0..4095")
        fix("vth", _arr("vth", self.vth, n, 0, (1 << 17) - 1))
        fix("bias_mant", _arr("bias_mant", self.bias_mant, n, -(1 << 12), (1 << 12) - 1))
        fix("bias_exp", _arr("bias_exp", self.bias_exp, n, -7, 7))
        if isinstance(self.n_ref, bool) or not isinstance(self.n_ref, (int, np.integer)) or not 0 <= self.n_ref <= 63:
            raise FixedPointError(f"n_ref: expected an integer in [0, 63] (Loihi's refractory delay), got {self.n_ref!r}")
        if self.kind == "stdp_alif" and self.n_ref < 1:
            raise FixedPointError("n_ref: STDP-ALIF needs a refractory period >= 1 (seed 002, Eq. 3.15)")
        if not isinstance(self.psi_bits, (int, np.integer)) or not 1 <= self.psi_bits <= 16:
            raise FixedPointError(f"psi_bits: expected an integer in [1, 16], got {self.psi_bits!r}")
        fix("d_theta", check_decay("d_theta", self.d_theta))
        fix("theta_step", _arr("theta_step", self.theta_step, n, 0, (1 << 23) - 1))
        fix("bpsi_mul", _arr("bpsi_mul", self.bpsi_mul, n, 0, (1 << 24) - 1))
        if not isinstance(self.bpsi_shift, (int, np.integer)) or not 0 <= self.bpsi_shift <= 40:
            raise FixedPointError(f"bpsi_shift: expected an integer in [0, 40], got {self.bpsi_shift!r}")
        if not isinstance(self.v_frac, (int, np.integer)) or not 8 <= self.v_frac <= 14:
            raise FixedPointError(f"v_frac: expected an integer in [8, 14], got {self.v_frac!r}")
        big = (1 << 23) - 1
        for name in ("izh_a", "izh_ab"):
            fix(name, _arr(name, getattr(self, name), n, 0, 1 << IZH_FRAC))
        for name in ("izh_c", "izh_d", "izh_b_c", "v_peak"):
            fix(name, _arr(name, getattr(self, name), n, -big, big))

    # derived constants (computed once) ----------------------------------
    @property
    def psi_max(self) -> int:
        return (1 << int(self.psi_bits)) - 1

    @cached_property
    def vth_scaled(self) -> np.ndarray:
        return np.left_shift(self.vth, VTH_SHIFT)

    @cached_property
    def bias(self) -> np.ndarray:
        """bias_mant << bias_exp (>> -bias_exp if negative), as Lava's scale_bias."""
        return np.where(self.bias_exp >= 0, np.left_shift(self.bias_mant, np.maximum(self.bias_exp, 0)),
                        np.right_shift(self.bias_mant, np.maximum(-self.bias_exp, 0)))

    @cached_property
    def psi_scale(self) -> tuple[np.ndarray, int]:
        """(psi_mul, psi_shift) with psi_mul / 2^psi_shift ~= psi_max / (vth << 6)."""
        vs = np.maximum(self.vth_scaled, 1)
        shift = 30
        mul = np.round(self.psi_max * float(1 << shift) / vs).astype(np.int64)
        return mul, shift

    @cached_property
    def u_memoryless(self) -> bool:
        """du = 4095 everywhere: decay(u, du, offset 1) is 0, u is this step's input."""
        return bool(np.all(self.du + 1 == DECAY_UNITY))

    @cached_property
    def has_bias(self) -> bool:
        return bool(np.any(self.bias != 0))

    @cached_property
    def izh_psi_table(self) -> np.ndarray:
        mv = np.arange(IZH_PSI_LO << IZH_PSI_RES, (30 << IZH_PSI_RES) + 1) / float(1 << IZH_PSI_RES)
        return np.round(self.psi_max * np.exp((mv - 30.0) / 30.0)).astype(np.int64)

    def to_dict(self) -> dict:
        out = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            out[name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


# --------------------------------------------------------------- shared pieces
def current_update(u: np.ndarray, a_in: np.ndarray, p: FixedNeuronParams) -> np.ndarray:
    """Lava's u update: int32 arithmetic (as numpy does it in PyLifModelBitAcc),
    then the one-sided 24-bit wrap."""
    act = wrap_int32(np.left_shift(np.asarray(a_in, dtype=np.int64), ACT_SHIFT))
    if p.u_memoryless:  # decay(u, 4095, offset 1) == 0: the sum is act (already int32)
        return wrap_u24(act)
    total = decay(u, p.du, offset=1)
    total += act
    return wrap_u24(wrap_int32(total))


def voltage_update(v: np.ndarray, u: np.ndarray, p: FixedNeuronParams) -> np.ndarray:
    """clip24(decay(v, dv) + u + bias), accumulated in place in decay's new array."""
    out = decay(v, p.dv)
    out += u
    if p.has_bias:
        out += p.bias
    return saturate_owned(out, -((1 << (UV_BITS - 1)) - 1), (1 << (UV_BITS - 1)) - 1)


def refractory(ref_prev: np.ndarray, z_prev: np.ndarray, n_ref: int) -> np.ndarray:
    """Remaining refractory steps (as :func:`eprop_lava.neurons.base.refractory_counter`)."""
    if n_ref == 0:
        return ref_prev  # always zero: no refractoriness (Lava's LIF)
    return np.where(z_prev > 0, n_ref, np.maximum(ref_prev - 1, 0))


def psi_lif(v: np.ndarray, threshold: np.ndarray, p: FixedNeuronParams) -> np.ndarray:
    """Graded psi / gamma of the LIF family (seed 002 Eq. 2.18)."""
    mul, shift = p.psi_scale
    d = np.subtract(v, threshold)  # the one new array; the rest in place
    np.abs(d, out=d)
    np.subtract(p.vth_scaled, d, out=d)
    np.maximum(d, 0, out=d)  # dist = max(vth - |v - A|, 0)
    d *= mul
    d >>= shift
    return np.minimum(d, p.psi_max, out=d)


# --------------------------------------------------------------- neuron steps
def initial_state(p: FixedNeuronParams, batch: int) -> dict:
    shape = (batch, p.size)
    zero = np.zeros(shape, dtype=np.int64)
    if p.kind == "izhikevich":
        return dict(v=zero + p.izh_c, u=zero + p.izh_b_c, z=zero.copy())
    state = dict(u=zero.copy(), v=zero.copy(), z=zero.copy(), ref=zero.copy())
    if p.kind in ("alif", "stdp_alif"):
        state["theta"] = zero.copy()
    if p.kind == "stdp_alif":
        state["end"] = zero.copy()
    return state


def lif_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """LIF (see module docstring; Lava's PyLifModelBitAcc when n_ref = 0)."""
    u = current_update(state["u"], a_in, p)
    v = voltage_update(state["v"], u, p)
    ref = refractory(state["ref"], state["z"], p.n_ref)
    spike = v > p.vth_scaled
    psi = psi_lif(v, p.vth_scaled, p)
    if p.n_ref:  # without refractoriness nothing is blocked
        free = ref <= 0
        spike &= free
        psi *= free
    z = spike.astype(np.int64)
    v *= ~spike  # v = 0 where it spiked (v is voltage_update's new array; a multiply beats a masked store)
    return z, dict(psi=psi), dict(u=u, v=v, z=z, ref=ref)


def _adaptive_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams, stdp: bool):
    u = current_update(state["u"], a_in, p)
    v = voltage_update(state["v"], u, p)
    theta = decay(state["theta"], p.d_theta)
    theta += state["z"] * p.theta_step
    saturate_owned(theta, 0, (1 << (UV_BITS - 1)) - 1)
    ref = refractory(state["ref"], state["z"], p.n_ref)
    threshold = theta + p.vth_scaled
    spike = v > threshold
    psi = psi_lif(v, threshold, p)
    if p.n_ref:
        free = ref <= 0
        spike &= free
        psi = np.where(free, psi, -p.psi_max) if stdp else np.multiply(psi, free, out=psi)
    z = spike.astype(np.int64)
    new = dict(u=u, theta=theta, z=z, ref=ref)
    if stdp:
        ending = ref == 1
        new["end"] = ending.astype(np.int64)
        v *= ~(spike | ending)
    else:
        v *= ~spike
    new["v"] = v
    return z, dict(psi=psi), new


def alif_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """ALIF (seed 002 Eqs. 2.4-2.6) with theta = beta a in voltage units."""
    return _adaptive_step(a_in, state, p, stdp=False)


def stdp_alif_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """STDP-ALIF (seed 002 Eqs. 3.15-3.22): reset at spike and at the end of the
    refractory period; psi = -psi_max while refractory."""
    return _adaptive_step(a_in, state, p, stdp=True)


def izhikevich_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """Izhikevich (seed 002 Eqs. 3.25-3.28, 3.35) in Q v_frac millivolts."""
    f = int(p.v_frac)
    one = 1 << f
    z_prev = state["z"] > 0
    vt = np.where(z_prev, p.izh_c, state["v"])
    ut = state["u"] + state["z"] * p.izh_d
    k004 = round(0.04 * (1 << IZH_FRAC))
    # (vt^2 >> f) first: |vt| < 2^23 and f >= 8, so every product stays below 2^62
    square = shift_nearest(shift_nearest(vt * vt, f) * k004, IZH_FRAC)
    act = np.left_shift(np.asarray(a_in, dtype=np.int64), ACT_SHIFT)
    v = saturate_signed(vt + square + 5 * vt + 140 * one - ut + act, UV_BITS - 1)
    u = saturate_signed(ut + shift_nearest(p.izh_ab * vt, IZH_FRAC) - shift_nearest(p.izh_a * ut, IZH_FRAC),
                        UV_BITS - 1)
    z = (v >= p.v_peak).astype(np.int64)
    lo = IZH_PSI_LO << IZH_PSI_RES
    level = np.clip(shift_floor(v, f - IZH_PSI_RES), lo, 30 << IZH_PSI_RES)
    psi = p.izh_psi_table[level - lo]
    k008 = round(0.08 * (1 << IZH_FRAC))
    jac = (6 << JAC_FRAC) + shift_nearest(v * k008, f + IZH_FRAC - JAC_FRAC)  # 6 + 0.08 v in Q16 (Eq. 3.34)
    return z, dict(psi=psi, jac=jac), dict(v=v, u=u, z=z)


STEPS = {"lif": lif_step, "alif": alif_step, "stdp_alif": stdp_alif_step, "izhikevich": izhikevich_step}


def step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """One step of any fixed-point neuron: (z, post, state)."""
    return STEPS[p.kind](a_in, state, p)


# --------------------------------------------------------------- e-prop eligibility
ELIGIBILITY_VARS = {"lif": ("v",), "alif": ("v", "th"), "stdp_alif": ("v", "th"), "izhikevich": ("v", "u")}


def initial_eligibility(p: FixedNeuronParams, shape: tuple[int, ...], dtype: Any = np.int64) -> dict:
    return {k: np.zeros(shape, dtype=dtype) for k in ELIGIBILITY_VARS[p.kind]}


def eligibility_fits_int32(p: FixedNeuronParams, profile: FixedPointProfile) -> bool:
    """Whether a LIF synapse's eligibility state and every intermediate of
    :func:`eligibility_step` and the engine's hidden synapse step stay below
    2^31 in magnitude, so int32 arrays give the same integers as int64:
    |eps_v| 4096, psi_max |eps_v|, |ebar| 4096 and |L| |ebar| (+ the rounding
    offset of a "nearest" product shift). LIF only: the ALIF threshold
    trace's gain bpsi_mul psi needs 64 bits."""
    if p.kind != "lif" or profile.product_shift > 30:
        return False
    tmax, lim = profile.trace_max, 1 << 31
    tag = -profile.tag_range[0]
    sig = -profile.signal_range[0]
    return (tmax * 4096 < lim and p.psi_max * tmax < lim and tag * 4096 < lim
            and sig * tag + (1 << profile.product_shift) < lim)


def post_record(p: FixedNeuronParams, z: np.ndarray, post: dict, record_prev: dict | None) -> dict:
    """What a synapse keeps about its post neuron from this step: spike, psi,
    the Izhikevich Jacobian factor, and for STDP-ALIF a refractory counter of
    its own (from the post spikes alone) to know when the period ends."""
    rec = dict(z=z, psi=post["psi"])
    if p.kind == "izhikevich":
        rec["jac"] = post["jac"]
    if p.kind == "stdp_alif":
        ref_prev = record_prev["ref"] if record_prev is not None else np.zeros_like(z)
        z_prev = record_prev["z"] if record_prev is not None else np.zeros_like(z)
        ref = refractory(ref_prev, z_prev, p.n_ref)
        rec["ref"] = ref
        rec["end"] = (ref == 1).astype(np.int64)
    return rec


def eligibility_step(p: FixedNeuronParams, eps: dict, record_prev: dict | None, record: dict,
                     pre: np.ndarray, profile: FixedPointProfile):
    """One step of the per-synapse eligibility vector and trace, fixed point.

    eps: dict of (..., post, pre) arrays (eps^{t-1}); record_prev / record:
    :func:`post_record` of steps t-1 and t ((..., post) arrays); pre: (..., pre)
    0/1 spikes entering v^t. Returns (eps^t, e^t) with e^t in trace units
    (seed 002 Eqs. 2.13, 2.26-2.28; see the module docstring)."""
    tmax = profile.trace_max
    imp = np.asarray(pre, dtype=np.int64)[..., None, :] * profile.trace_impulse
    rnd = profile.product_rounding
    def col(x: Any) -> np.ndarray:
        """A per-post factor (scalar, (post,) or (..., post)) broadcast over the pre axis."""
        x = np.asarray(x)
        return x if x.ndim == 0 else x[..., :, None]
    dtype = eps["v"].dtype  # int64, or int32 when eligibility_fits_int32
    if record_prev is None:
        zero = np.zeros(np.broadcast_shapes(eps["v"].shape, imp.shape), dtype=dtype)
        new = {k: zero.copy() for k in eps}
        new["v"] += imp
        saturate_owned(new["v"], -tmax, tmax)
    elif p.kind == "izhikevich":
        keep = 1 - col(record_prev["z"])
        ev, eu = eps["v"], eps["u"]
        new_v = keep * shift_round(col(record_prev["jac"]) * ev, JAC_FRAC, rnd) - eu + imp
        new_u = (keep * shift_round(col(p.izh_ab) * ev, IZH_FRAC, rnd) + eu
                 - shift_round(col(p.izh_a) * eu, IZH_FRAC, rnd))
        new = dict(v=saturate(new_v, -tmax, tmax), u=saturate(new_u, -tmax, tmax))
    else:
        # decay(eps_v, dv) (1 - cut) + imp: the factor (1 - cut) in {1, 0, -1} goes into the
        # decay's multiplier (rounding toward zero is odd, so the product is the same integer)
        cut = col(record_prev["z"])
        if p.kind == "stdp_alif":
            cut = cut + col(record_prev["end"])
        ev = decay_same_dtype(eps["v"], DECAY_UNITY - (DECAY_UNITY - col(p.dv)) * (1 - cut))
        ev += imp
        new = dict(v=saturate_owned(ev, -tmax, tmax))
        if "th" in eps:
            eth = eps["th"]
            gain = col(p.bpsi_mul) * col(record_prev["psi"])
            drive = np.subtract(eps["v"], eth)
            drive *= gain
            th = decay(eth, col(p.d_theta))
            th += shift_round_owned(drive, int(p.bpsi_shift), rnd)
            new["th"] = saturate_owned(th, -tmax, tmax)
    if "th" in new:
        e = np.subtract(new["v"], new["th"])
        e *= col(record["psi"])
    else:
        e = np.multiply(new["v"], col(record["psi"]), dtype=dtype)
    return new, shift_round_owned(e, int(p.psi_bits), rnd)
