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
LIF (Lava-exact, docs/lava_loihi.md §2.1; ``PyLifModelBitAcc`` bit for bit when
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
    ACT_SHIFT, DECAY_UNITY, ROUND_CODES, ROUND_NEAREST, V_MAX, VTH_SHIFT, FixedPointError, FixedPointProfile,
    check_decay, k_clip, k_decay, k_shift, k_wrap_int32, k_wrap_u24, kernel, maximum, minimum, narrowest_int,
    select,
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
    def kernel_constants(self) -> dict:
        """The per-neuron integer constants the kernels take, as contiguous
        (size,) int64 arrays (decay constants as multipliers 4096 - d - offset)."""
        n = int(self.size)

        def vec(a: Any) -> np.ndarray:
            return np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.int64), (n,)))

        mul, shift = self.psi_scale
        return dict(du_f=vec(DECAY_UNITY - (self.du + 1)), dv_f=vec(DECAY_UNITY - self.dv), bias=vec(self.bias),
                    vth_scaled=vec(self.vth_scaled), dth_f=vec(DECAY_UNITY - self.d_theta),
                    theta_step=vec(self.theta_step), psi_mul=vec(mul), psi_shift=int(shift),
                    bpsi_mul=vec(self.bpsi_mul), izh_a=vec(self.izh_a), izh_ab=vec(self.izh_ab),
                    izh_c=vec(self.izh_c), izh_d=vec(self.izh_d), v_peak=vec(self.v_peak))

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


# --------------------------------------------------------------- kernels
# Elementwise kernels (see eprop_lava.fixed): the only rendering of these
# equations. The numpy wrappers further down call them on (batch, neurons) or
# (batch, post, pre) arrays; engine/fused.py compiles the same functions into
# its per-element loops.
K004 = round(0.04 * (1 << IZH_FRAC))
K008 = round(0.08 * (1 << IZH_FRAC))
IZH_LEVEL_LO = IZH_PSI_LO << IZH_PSI_RES
IZH_LEVEL_HI = 30 << IZH_PSI_RES
#: bits of a neuron step's ``flags`` (the limits that acted; counted by the engine)
FLAG_V_SATURATED, FLAG_U_WRAPPED, FLAG_INT32_WRAPPED = 1, 2, 4


@kernel
def k_refractory(ref_prev, z_prev, n_ref):
    """Remaining refractory steps (as :func:`eprop_lava.neurons.base.refractory_counter`)."""
    return select(z_prev > 0, n_ref, maximum(ref_prev - 1, 0))


@kernel
def k_psi_lif(v, threshold, vth_scaled, psi_mul, psi_shift, psi_max):
    """Graded psi / gamma of the LIF family (seed 002 Eq. 2.18):
    min((max(vth - |v - A|, 0) psi_mul) >> psi_shift, psi_max)."""
    return minimum((maximum(vth_scaled - abs(v - threshold), 0) * psi_mul) >> psi_shift, psi_max)


@kernel
def k_lif_family(a_in, u, v, theta, ref, z_prev, du_f, dv_f, bias, vth_scaled, n_ref, adaptive, stdp,
                 dth_f, theta_step, psi_mul, psi_shift, psi_max):
    """One step of LIF / ALIF / STDP-ALIF (module docstring); du_f = 4095 - du,
    dv_f = 4096 - dv, dth_f = 4096 - d_theta. Returns (z, psi, u, v, theta, ref,
    end, flags).

    u = wrap24(wrap32(decay(u) + wrap32(a_in << 6))) (Lava's int32 sum and
    one-sided wrap; du = 4095 leaves u = this step's input), v = clip24(decay(v)
    + u + bias), theta = clip(decay(theta) + z_prev theta_step, 0, 2^23 - 1).
    flags: which of these limits acted (FLAG_* bits, compared with the value
    before the wrap or clip): v saturated, u wrapped at 24 bits, an int32 wrap
    inside the u sum."""
    a_shifted = a_in << ACT_SHIFT
    a_wrapped = k_wrap_int32(a_shifted)
    u_sum = k_decay(u, du_f) + a_wrapped
    u_sum_wrapped = k_wrap_int32(u_sum)
    u_new = k_wrap_u24(u_sum_wrapped)
    v_sum = k_decay(v, dv_f) + u_new + bias
    v_new = k_clip(v_sum, -V_MAX, V_MAX)
    flags = (select(v_new != v_sum, FLAG_V_SATURATED, 0) + select(u_new != u_sum_wrapped, FLAG_U_WRAPPED, 0)
             + select((a_wrapped != a_shifted) | (u_sum_wrapped != u_sum), FLAG_INT32_WRAPPED, 0))
    ref_new = ref
    if n_ref > 0:
        ref_new = k_refractory(ref, z_prev, n_ref)
    theta_new = theta
    if adaptive:
        theta_new = k_clip(k_decay(theta, dth_f) + z_prev * theta_step, 0, V_MAX)
    threshold = theta_new + vth_scaled
    spike = v_new > threshold
    psi = k_psi_lif(v_new, threshold, vth_scaled, psi_mul, psi_shift, psi_max)
    ending = ref_new == 1
    if n_ref > 0:
        free = ref_new <= 0
        spike = spike & free
        psi = select(free, psi, -psi_max if stdp else 0)
    reset = spike | ending if stdp else spike
    return (select(spike, 1, 0), psi, u_new, select(reset, 0, v_new), theta_new, ref_new,
            select(ending, 1, 0), flags)


@kernel
def k_izhikevich(a_in, v, u, z_prev, v_frac, izh_a, izh_ab, izh_c, izh_d, v_peak, psi_table):
    """One Izhikevich step (seed 002 Eqs. 3.25-3.28, 3.34-3.35) in Q v_frac mV.
    Returns (z, psi, jac, v, u, flags) (flags: FLAG_V_SATURATED when v was clipped)."""
    vt = select(z_prev > 0, izh_c, v)
    ut = u + z_prev * izh_d
    # (vt^2 >> f) first: |vt| < 2^23 and f >= 8, so every product stays below 2^62
    square = k_shift(k_shift(vt * vt, v_frac, ROUND_NEAREST) * K004, IZH_FRAC, ROUND_NEAREST)
    v_sum = vt + square + 5 * vt + (140 << v_frac) - ut + (a_in << ACT_SHIFT)
    v_new = k_clip(v_sum, -V_MAX, V_MAX)
    u_new = k_clip(ut + k_shift(izh_ab * vt, IZH_FRAC, ROUND_NEAREST) - k_shift(izh_a * ut, IZH_FRAC, ROUND_NEAREST),
                   -V_MAX, V_MAX)
    level = k_clip(v_new >> (v_frac - IZH_PSI_RES), IZH_LEVEL_LO, IZH_LEVEL_HI)
    psi = psi_table[level - IZH_LEVEL_LO]
    # 6 + 0.08 v in Q16 (Eq. 3.34)
    jac = (6 << JAC_FRAC) + k_shift(v_new * K008, v_frac + IZH_FRAC - JAC_FRAC, ROUND_NEAREST)
    return select(v_new >= v_peak, 1, 0), psi, jac, v_new, u_new, select(v_new != v_sum, FLAG_V_SATURATED, 0)


@kernel
def k_readout(y, a_in, d_kappa_f, bias):
    """Leaky readout y^t = clip24(decay(y^{t-1}, d_kappa) + (a_in << 6) + b) (seed 002 Eq. 3.12)."""
    return k_clip(k_decay(y, d_kappa_f) + (a_in << ACT_SHIFT) + bias, -V_MAX, V_MAX)


@kernel
def k_eligibility_lif_family(ev, eth, cut, dv_f, dth_f, gain, imp, psi, tmax, psi_bits, bpsi_shift, rnd,
                             adaptive):
    """One step of a LIF-family synapse's eligibility vector (module docstring):
    eps_v' = clip(decay(eps_v, dv) (1 - cut) + imp), cut = z_post (+ end for
    STDP-ALIF; decay rounds toward zero, an odd function, so the factor 1 - cut
    in {1, 0, -1} goes into its multiplier), and for ALIF / STDP-ALIF
    eps_th' = clip(decay(eps_th, d_theta) + (gain (eps_v - eps_th)) >> bpsi_shift)
    with gain = bpsi_mul psi^{t-1}; e = (psi (eps_v' - eps_th')) >> psi_bits
    (seed 002 Eqs. 2.20-2.28). Returns (eps_v', eps_th', e)."""
    ev_new = k_clip(k_decay(ev, dv_f * (1 - cut)) + imp, -tmax, tmax)
    eth_new = eth
    if adaptive:
        eth_new = k_clip(k_decay(eth, dth_f) + k_shift(gain * (ev - eth), bpsi_shift, rnd), -tmax, tmax)
    return ev_new, eth_new, k_shift((ev_new - eth_new) * psi, psi_bits, rnd)


@kernel
def k_eligibility_izhikevich(ev, eu, keep, jac, izh_ab, izh_a, imp, psi, tmax, psi_bits, rnd):
    """One step of an Izhikevich synapse's eligibility vector (Eqs. 3.29-3.38):
    eps_v' = keep (jac eps_v >> 16) - eps_u + imp, eps_u' = keep (ab eps_v >> 28)
    + eps_u - (a eps_u >> 28), keep = 1 - z_post^{t-1}; e = (psi eps_v') >> psi_bits."""
    ev_new = k_clip(keep * k_shift(jac * ev, JAC_FRAC, rnd) - eu + imp, -tmax, tmax)
    eu_new = k_clip(keep * k_shift(izh_ab * ev, IZH_FRAC, rnd) + eu - k_shift(izh_a * eu, IZH_FRAC, rnd), -tmax, tmax)
    return ev_new, eu_new, k_shift(ev_new * psi, psi_bits, rnd)


@kernel
def k_trace_product(ebar, e, signal, d_kappa_f, tag_lo, tag_hi, product_shift, rnd):
    """The e-prop product and filtered trace of one synapse (seed 002 Eq. 2.37,
    loihi timing): prod = (L^t ebar^{t-1}) >> product_shift (what the
    accumulator receives), ebar^t = clip(decay(ebar^{t-1}, d_kappa) + e^t).
    Returns (ebar^t, prod)."""
    return k_clip(k_decay(ebar, d_kappa_f) + e, tag_lo, tag_hi), k_shift(ebar * signal, product_shift, rnd)


@kernel
def k_presynaptic_trace(zbar, pre, d_kappa_f, impulse, tmax):
    """The readout synapses' presynaptic trace zbar^t = clip(decay(zbar^{t-1},
    d_kappa) + impulse z^{t-1}, 0, trace_max)."""
    return k_clip(k_decay(zbar, d_kappa_f) + impulse * pre, 0, tmax)


# --------------------------------------------------------------- numpy wrappers
def _i64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def refractory(ref_prev: np.ndarray, z_prev: np.ndarray, n_ref: int) -> np.ndarray:
    """Remaining refractory steps (:func:`k_refractory`)."""
    if n_ref == 0:
        return ref_prev  # always zero: no refractoriness (Lava's LIF)
    return k_refractory(_i64(ref_prev), _i64(z_prev), n_ref)


def psi_lif(v: np.ndarray, threshold: np.ndarray, p: FixedNeuronParams) -> np.ndarray:
    """Graded psi / gamma of the LIF family (:func:`k_psi_lif`)."""
    mul, shift = p.psi_scale
    return k_psi_lif(_i64(v), threshold, p.vth_scaled, mul, shift, p.psi_max)


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


def _lif_family_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    c = p.kernel_constants
    adaptive = p.kind in ("alif", "stdp_alif")
    stdp = p.kind == "stdp_alif"
    theta = state["theta"] if adaptive else 0
    z, psi, u, v, theta, ref, end, flags = k_lif_family(
        _i64(a_in), state["u"], state["v"], theta, state["ref"], state["z"], c["du_f"], c["dv_f"], c["bias"],
        c["vth_scaled"], int(p.n_ref), adaptive, stdp, c["dth_f"], c["theta_step"], c["psi_mul"],
        int(c["psi_shift"]), int(p.psi_max))
    new = dict(u=u, v=v, z=z, ref=_i64(ref) + 0 * z)
    if adaptive:
        new["theta"] = theta
    if stdp:
        new["end"] = end
    return z, dict(psi=psi, flags=flags), new


def lif_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """LIF (see module docstring; Lava's PyLifModelBitAcc when n_ref = 0)."""
    return _lif_family_step(a_in, state, p)


def alif_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """ALIF (seed 002 Eqs. 2.4-2.6) with theta = beta a in voltage units."""
    return _lif_family_step(a_in, state, p)


def stdp_alif_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """STDP-ALIF (seed 002 Eqs. 3.15-3.22): reset at spike and at the end of the
    refractory period; psi = -psi_max while refractory."""
    return _lif_family_step(a_in, state, p)


def izhikevich_step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """Izhikevich (seed 002 Eqs. 3.25-3.28, 3.35) in Q v_frac millivolts (:func:`k_izhikevich`)."""
    c = p.kernel_constants
    z, psi, jac, v, u, flags = k_izhikevich(_i64(a_in), state["v"], state["u"], state["z"], int(p.v_frac), c["izh_a"],
                                     c["izh_ab"], c["izh_c"], c["izh_d"], c["v_peak"], p.izh_psi_table)
    return z, dict(psi=psi, jac=jac, flags=flags), dict(v=v, u=u, z=z)


STEPS = {"lif": lif_step, "alif": alif_step, "stdp_alif": stdp_alif_step, "izhikevich": izhikevich_step}


def step(a_in: np.ndarray, state: dict, p: FixedNeuronParams):
    """One step of any fixed-point neuron: (z, post, state)."""
    return STEPS[p.kind](a_in, state, p)


# --------------------------------------------------------------- e-prop eligibility
ELIGIBILITY_VARS = {"lif": ("v",), "alif": ("v", "th"), "stdp_alif": ("v", "th"), "izhikevich": ("v", "u")}


def initial_eligibility(p: FixedNeuronParams, shape: tuple[int, ...], dtype: Any = np.int64) -> dict:
    return {k: np.zeros(shape, dtype=dtype) for k in ELIGIBILITY_VARS[p.kind]}


def eligibility_dtypes(p: FixedNeuronParams, profile: FixedPointProfile) -> tuple[Any, Any]:
    """The array types a LIF synapse's eligibility state is stored in by the
    compiled loops: eps_v and ebar each in the narrowest of int16 / int32 /
    int64 that holds the range the kernels clip it to ([-trace_max,
    trace_max], the tag range), so every value is the same integer and the
    loops move less memory (loihi2: int16 both). Not int8 for eps_v although
    loihi2's 7-bit traces fit: the 16-bit loop then widens and narrows every
    vector it loads and stores, and ran slower. Other neuron types: int64."""
    if p.kind != "lif":
        return np.int64, np.int64
    tag_lo, tag_hi = profile.tag_range
    return (narrowest_int(-profile.trace_max, profile.trace_max, np.int16).type,
            narrowest_int(tag_lo, tag_hi, np.int16).type)


def lif_synapse_fits_int32(p: FixedNeuronParams, profile: FixedPointProfile, batch: int) -> bool:
    """Whether every intermediate value of a LIF synapse's step
    (:func:`k_eligibility_lif_family` without adaptation, :func:`k_trace_product`)
    and of the batch sum of its products and the accumulator fits in int32,
    bounded from the ranges the kernels clip to: |eps_v| <= trace_max, |psi| <= psi_max,
    |ebar| <= 2^tag_bits, |L| <= 2^signal_bits, decay factors <= 4096. The
    compiled loops then run it in 32-bit lanes (:func:`eprop_lava.engine.fused.compiled`,
    narrow=True) with the same integers."""
    if p.kind != "lif":
        return False
    tmax, imp = profile.trace_max, profile.trace_impulse
    tag = max(-profile.tag_range[0], profile.tag_range[1])
    sig = max(-profile.signal_range[0], profile.signal_range[1])
    psi = int(p.psi_max)
    prod = (tag * sig >> profile.product_shift) + 1
    bounds = (
        tmax * DECAY_UNITY + DECAY_UNITY,            # decay(eps_v): product plus rounding offset
        tmax + imp,                                  # decay(eps_v) + impulse, before the clip
        tmax * psi + (1 << p.psi_bits),              # (eps_v psi) >> psi_bits
        tag * DECAY_UNITY + DECAY_UNITY,             # decay(ebar)
        tag + (tmax * psi >> p.psi_bits) + 1,        # decay(ebar) + e, before the clip
        tag * sig + (1 << profile.product_shift),    # (ebar L) >> product_shift
        batch * prod,                                # the batch sum of the products
        max(-profile.accumulator_range[0], profile.accumulator_range[1]) + batch * prod,  # acc + sum, clipped
    )
    return max(bounds) < (1 << 31) - 1


def readout_synapse_fits_int32(profile: FixedPointProfile, batch: int) -> bool:
    """Whether every intermediate value of a readout synapse's step
    (:func:`k_presynaptic_trace`, the product err zbar >> product_shift) and
    of the batch sum and the accumulator fits in int32, bounded from the
    ranges the kernels clip to: 0 <= zbar <= trace_max, |err| <= 2^signal_bits,
    decay factor <= 4096. The compiled loop then runs in 32-bit lanes with
    the same integers."""
    tmax, imp = profile.trace_max, profile.trace_impulse
    sig = max(-profile.signal_range[0], profile.signal_range[1])
    prod = (sig * tmax >> profile.product_shift) + 1
    bounds = (
        tmax * DECAY_UNITY + DECAY_UNITY,            # decay(zbar): product plus rounding offset
        tmax + abs(imp),                             # decay(zbar) + impulse, before the clip
        sig * tmax + (1 << profile.product_shift),   # (err zbar) >> product_shift
        batch * prod,                                # the batch sum of the products
        max(-profile.accumulator_range[0], profile.accumulator_range[1]) + batch * prod,  # acc + sum, clipped
    )
    return max(bounds) < (1 << 31) - 1


def lif_synapse_fits_int16(p: FixedNeuronParams, profile: FixedPointProfile, batch: int, d_kappa: int) -> bool:
    """Whether a LIF synapse's step runs in 16-bit lanes
    (:func:`eprop_lava.engine.fused.compiled`, narrow=16) with the same
    integers: every intermediate value of :func:`k_eligibility_lif_family`
    (without adaptation) and :func:`k_trace_product` fits int16, the decayed
    values lie in the domain of the 16-bit decay form (0 <= x <= 2047, factor
    in [0, 4096]), and the batch sum and the accumulator fit int32
    (:func:`lif_synapse_fits_int32`).

    The decay form and the rounding of e need eps_v >= 0 and ebar >= 0. Both
    hold by induction from the zero start: the impulse is >= 1 (the profile
    checks it), the decay factors dv_f (1 - z) and 4096 - d_kappa are >= 0,
    and a LIF neuron's psi is >= 0 (:func:`k_psi_lif` clips it to [0,
    psi_max]; refractory steps send 0). So decay(eps_v) + impulse pre >= 0,
    e = (eps_v psi) >> psi_bits >= 0 and decay(ebar) + e >= 0, and the clips
    to [-trace_max, trace_max] and to the tag range (lo <= 0 <= hi) keep them
    so (the 16-bit clip form drops the lower bound, which never acts). Then
    |ebar L| <= tag_hi 2^signal_bits, not 2^tag_bits 2^signal_bits: loihi2's
    largest product, 255 * 128 = 32640, fits int16.
    The bounds below for loihi2: 256, 143, 16257, 382, 32656 and 255."""
    if not lif_synapse_fits_int32(p, profile, batch):
        return False
    tmax, imp = profile.trace_max, profile.trace_impulse
    tag_lo, tag_hi = profile.tag_range
    if not (imp >= 0 and tag_lo <= 0 <= tag_hi and 0 <= d_kappa <= DECAY_UNITY):
        return False
    sig = max(-profile.signal_range[0], profile.signal_range[1])
    psi = int(p.psi_max)
    signed16 = (
        max(tmax, -tag_lo, tag_hi),                  # the clip bounds themselves
        tmax + imp,                                  # decay(eps_v) + impulse, before the clip
        tmax * psi + (1 << p.psi_bits),              # eps_v psi, plus a rounding offset
        tag_hi + (tmax * psi >> p.psi_bits) + 1,     # decay(ebar) + e, before the clip
        tag_hi * sig + (1 << profile.product_shift),  # |ebar L|, plus a rounding offset
    )
    decayed = max(tmax, tag_hi)  # the 16-bit decay form: 16 x < 2^15
    return max(signed16) < (1 << 15) and decayed <= 2047


def post_record(p: FixedNeuronParams, z: np.ndarray, post: dict, record_prev: dict | None) -> dict:
    """What a synapse keeps about its post neuron from this step: spike, psi,
    the Izhikevich Jacobian factor, and for STDP-ALIF a refractory counter of
    its own (from the post spikes alone, :func:`k_refractory`) to know when the
    period ends."""
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
    """One step of the per-synapse eligibility vector, fixed point.

    eps: dict of (..., post, pre) arrays (eps^{t-1}); record_prev / record:
    :func:`post_record` of steps t-1 and t ((..., post) arrays); pre: (..., pre)
    0/1 spikes entering v^t. Returns (eps^t, e^t) with e^t in trace units
    (seed 002 Eqs. 2.13, 2.26-2.28; :func:`k_eligibility_lif_family`,
    :func:`k_eligibility_izhikevich`). At the first step (record_prev None)
    eps^{t-1} = 0, so the post factors of step t-1 do not matter."""
    tmax = profile.trace_max
    imp = _i64(pre)[..., None, :] * profile.trace_impulse
    rnd = ROUND_CODES[profile.product_rounding]
    c = p.kernel_constants

    def col(x: Any) -> np.ndarray:
        """A per-post factor (scalar, (post,) or (..., post)) broadcast over the pre axis."""
        x = np.asarray(x)
        return x if x.ndim == 0 else x[..., :, None]

    prev = record_prev if record_prev is not None else {k: np.zeros_like(v) for k, v in record.items()}
    psi = col(_i64(record["psi"]))
    if p.kind == "izhikevich":
        ev, eu, e = k_eligibility_izhikevich(_i64(eps["v"]), _i64(eps["u"]), col(1 - _i64(prev["z"])),
                                             col(_i64(prev["jac"])), col(c["izh_ab"]), col(c["izh_a"]), imp, psi,
                                             tmax, int(p.psi_bits), rnd)
        return dict(v=ev, u=eu), e
    cut = _i64(prev["z"]) + (_i64(prev["end"]) if p.kind == "stdp_alif" else 0)
    adaptive = "th" in eps
    ev, eth, e = k_eligibility_lif_family(
        _i64(eps["v"]), _i64(eps["th"]) if adaptive else 0, col(cut), col(c["dv_f"]), col(c["dth_f"]),
        col(c["bpsi_mul"] * _i64(prev["psi"])), imp, psi, tmax, int(p.psi_bits), int(p.bpsi_shift), rnd, adaptive)
    new = dict(v=ev)
    if adaptive:
        new["th"] = eth
    return new, e
