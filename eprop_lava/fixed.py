"""The fixed-point specification in code: widths, scaling, rounding, saturation.

Everything the fixed-point engine (:mod:`eprop_lava.engine.fixed_engine`), the
fixed-point neuron steps (:mod:`eprop_lava.neurons.fixed`) and the Lava
``fixed_pt`` ProcessModels compute goes through the helpers below, so the
arithmetic of Loihi is written once. docs/fixed_point.md tabulates the same
numbers for readers.

Integers are carried in numpy ``int64`` arrays; the declared widths are
enforced explicitly (wrap or saturate, as the profile says), because Lava's
``precision=`` annotations are documentation only (docs/lava_loihi.md §1.1).

Loihi's arithmetic reproduced here (docs/lava_loihi.md §2.1, Lava ``PyLifModelBitAcc``):

* decay of a state x by a 12-bit constant d, rounding toward zero::

      decay(x, d) = sgn(x (4096 - d)) * (|x (4096 - d)| >> 12)

* the synaptic current u is 24 bits and *wraps* (Lava's one-sided wrap:
  u > 2^23 -> u - 2^24, u <= -2^23 -> u + 2^24); the voltage v is 24 bits and
  *saturates* at +-(2^23 - 1);
* synaptic input and thresholds are MSB-aligned by ``<< 6``;
* Dense weights: 8-bit clip, then truncation of ``8 - num_weight_bits +
  mixed`` low bits (mixed-sign 8-bit weights are even, in [-256, 254]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

ROUNDINGS = ("toward_zero", "floor", "nearest", "stochastic")
OVERFLOWS = ("saturate", "wrap")

#: Loihi constants (docs/lava_loihi.md §2.1). Not profile fields: Lava's bit-accurate
#: LIF and Dense hard-code them, and the equivalence check depends on them.
DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6          # a_in << 6 into u; vth << 6
VTH_SHIFT = 6
UV_BITS = 24


class FixedPointError(ValueError):
    """A fixed-point profile field or value is invalid; the message names it."""


def narrowest_int(lo: int, hi: int, smallest: Any = np.int8) -> np.dtype:
    """The smallest signed integer type, from ``smallest`` up to int64, that
    holds every integer in [lo, hi] (the storage of fixed-point values whose
    range is known)."""
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if np.iinfo(dtype).bits < np.iinfo(smallest).bits:
            continue
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    raise FixedPointError(f"range [{lo}, {hi}] does not fit int64")


# ------------------------------------------------------------------ profiles
@dataclass(frozen=True)
class FixedPointProfile:
    """Widths and rounding of every state variable of fixed-point e-prop.

    Widths count magnitude bits; signed quantities carry a sign bit on top
    (Loihi's "8 bit + sign" weights are ``weight_bits=8``, range
    [-256, 255]). A trace of ``trace_bits=7`` holds 0..127.

    Neuron state (Loihi, fixed for every profile; see module constants):
    u 24-bit wrap, v 24-bit saturate, 12-bit decays, vth mantissa
    ``vth_bits`` (<< 6), bias mantissa ``bias_bits`` with a 3-bit exponent.

    E-prop state, per synapse unless noted (seed 002 Eqs. 2.13-2.37):

    ``trace_bits``      eligibility vector eps (filtered pre spikes, = z-bar for
                        LIF without reset), saturating; ``trace_impulse`` is
                        added per presynaptic spike.
    ``psi_bits``        graded pseudo-derivative psi sent by the neuron
                        (per neuron; psi / gamma in [-1, 1] maps to
                        +-(2^psi_bits - 1), gamma goes into the learning rate).
    ``tag_bits``        filtered eligibility trace e-bar (Loihi's tag t),
                        signed, saturating.
    ``signal_bits``     graded learning signal L (third factor), signed.
    ``error_frac_bits`` fractional bits of the readout error dE/dy.
    ``weight_bits``     weight mantissa, signed, saturating.
    ``accumulator_bits`` per-synapse sum of L * e-bar between weight updates,
                        saturating; each product is first shifted right by
                        ``product_shift`` (Loihi drops low bits of products
                        the same way, docs/lava_loihi.md §3.3).
    ``lr_mantissa_bits`` learning rates are m * 2^e with m in
                        [-2^(b-1), 2^(b-1) - 1] (Loihi: 4 bits, m in [-8, 7]).
    ``update_rounding`` rounding of the weight update ("stochastic" uses a
                        seeded numpy Generator per synapse matrix).
    ``product_rounding`` rounding of the right shifts inside trace products.
    ``error_rounding``  rounding of the output error's quantization
                        err_fx = round(err 2^error_exp).
    ``signal_rounding`` rounding of the learning signal's shift
                        L = round((B err) / 2^signal_shift). "stochastic"
                        (for either) draws from its own seeded generator,
                        independent of the weight updates' (see
                        ``fixed_engine.update_rngs``); "nearest" is the
                        default.
    """

    name: str = "custom"
    weight_bits: int = 8
    trace_bits: int = 7
    trace_impulse: int = 16
    psi_bits: int = 7
    tag_bits: int = 8
    signal_bits: int = 8
    error_frac_bits: int = 7
    accumulator_bits: int = 15
    product_shift: int = 4
    lr_mantissa_bits: int = 4
    vth_bits: int = 17
    bias_bits: int = 12
    update_rounding: str = "stochastic"
    product_rounding: str = "toward_zero"
    update_interval: int | None = None
    error_rounding: str = "nearest"
    signal_rounding: str = "nearest"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "FixedPointProfile":
        if not isinstance(self.name, str) or not self.name:
            raise FixedPointError(f"name: expected a non-empty string, got {self.name!r}")
        limits = dict(weight_bits=(1, 24), trace_bits=(1, 32), psi_bits=(1, 16), tag_bits=(1, 34),
                      signal_bits=(1, 24), error_frac_bits=(1, 24), accumulator_bits=(8, 62),
                      product_shift=(0, 32),
                      lr_mantissa_bits=(2, 16), vth_bits=(1, 17), bias_bits=(1, 12))
        for key, (lo, hi) in limits.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise FixedPointError(f"{key}: expected an integer, got {value!r}")
            if not lo <= value <= hi:
                raise FixedPointError(f"{key}: must lie in [{lo}, {hi}], got {value}")
        if isinstance(self.trace_impulse, bool) or not isinstance(self.trace_impulse, (int, np.integer)):
            raise FixedPointError(f"trace_impulse: expected an integer, got {self.trace_impulse!r}")
        if not 1 <= self.trace_impulse <= (1 << self.trace_bits) - 1:
            raise FixedPointError(f"trace_impulse: must lie in [1, 2^trace_bits - 1 = "
                                  f"{(1 << self.trace_bits) - 1}], got {self.trace_impulse}")
        if self.update_rounding not in ROUNDINGS:
            raise FixedPointError(f"update_rounding: unknown {self.update_rounding!r}; choose one of {ROUNDINGS}")
        if self.product_rounding not in ("toward_zero", "floor", "nearest"):
            raise FixedPointError(f"product_rounding: must be deterministic (toward_zero, floor, nearest), "
                                  f"got {self.product_rounding!r}")
        for key in ("error_rounding", "signal_rounding"):
            if getattr(self, key) not in ROUNDINGS:
                raise FixedPointError(f"{key}: unknown {getattr(self, key)!r}; choose one of {ROUNDINGS}")
        if self.update_interval is not None and (isinstance(self.update_interval, bool)
                                                 or not isinstance(self.update_interval, (int, np.integer))
                                                 or self.update_interval < 1):
            raise FixedPointError(f"update_interval: expected None (end of sample) or an integer >= 1, "
                                  f"got {self.update_interval!r}")
        return self

    # ranges ------------------------------------------------------------
    @property
    def weight_range(self) -> tuple[int, int]:
        return -(1 << self.weight_bits), (1 << self.weight_bits) - 1

    @property
    def trace_max(self) -> int:
        return (1 << self.trace_bits) - 1

    @property
    def psi_max(self) -> int:
        return (1 << self.psi_bits) - 1

    @property
    def tag_range(self) -> tuple[int, int]:
        return -(1 << self.tag_bits), (1 << self.tag_bits) - 1

    @property
    def signal_range(self) -> tuple[int, int]:
        return -(1 << self.signal_bits), (1 << self.signal_bits) - 1

    @property
    def accumulator_range(self) -> tuple[int, int]:
        return -((1 << self.accumulator_bits) - 1), (1 << self.accumulator_bits) - 1

    @property
    def lr_mantissa_range(self) -> tuple[int, int]:
        return -(1 << (self.lr_mantissa_bits - 1)), (1 << (self.lr_mantissa_bits - 1)) - 1

    def with_(self, **changes: Any) -> "FixedPointProfile":
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise FixedPointError(f"{key}: unknown profile field (known: {', '.join(sorted(known))})")
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def loihi2_profile(**changes: Any) -> FixedPointProfile:
    """Loihi 2's learning engine widths (docs/lava_loihi.md §3.3): 7-bit traces,
    8-bit + sign weights and tags, 15-bit + sign accumulator, learning-rate
    constants m * 2^e with m in [-8, 7]."""
    base = FixedPointProfile(name="loihi2", weight_bits=8, trace_bits=7, trace_impulse=16, psi_bits=7,
                             tag_bits=8, signal_bits=7, error_frac_bits=7, accumulator_bits=15,
                             product_shift=4, lr_mantissa_bits=4)
    return base.with_(**changes) if changes else base


def wide_profile(**changes: Any) -> FixedPointProfile:
    """A configurable wide profile for quantization studies and for holding
    fixed point against float e-prop: 32-bit eligibility traces (2^22 times
    the impulse of headroom: an Izhikevich neuron's eligibility grows by
    |6 + 0.08 v| per step, above 2^21 in tests/test_fixed_point.py's networks),
    34-bit tags, a 20-bit learning signal (the MSE error to +-64 with 14
    fractional bits), 12-bit psi and weights, a 60-bit accumulator and an 8-bit
    learning-rate mantissa; every product stays below 2^55 (int64 arithmetic).
    Any field can be overridden."""
    base = FixedPointProfile(name="wide", weight_bits=12, trace_bits=32, trace_impulse=1 << 10,
                             psi_bits=12, tag_bits=34, signal_bits=20, error_frac_bits=14,
                             accumulator_bits=60, product_shift=0, lr_mantissa_bits=8)
    return base.with_(**changes) if changes else base


PROFILES = {"loihi2": loihi2_profile, "wide": wide_profile}


def get_profile(name: str | FixedPointProfile, **changes: Any) -> FixedPointProfile:
    if isinstance(name, FixedPointProfile):
        return name.with_(**changes) if changes else name
    try:
        return PROFILES[name](**changes)
    except KeyError:
        raise FixedPointError(f"profile: unknown {name!r}; choose one of {', '.join(PROFILES)}") from None


# ------------------------------------------------------------------ integer helpers
def as_int(x: Any) -> np.ndarray:
    """int64 view of an integer array; refuses non-integral floats."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise FixedPointError("expected integer values, got non-integral floats")
    elif arr.dtype.kind not in "iub":
        raise FixedPointError(f"expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


# ------------------------------------------------------------------ elementwise kernels
#
# The fixed-point equations are written once, as elementwise kernels: functions
# of integers built from operators (+ - * >> << & comparisons) and the three
# primitives select / minimum / maximum only. Called with numpy int64 arrays they
# run vectorized (the step engine, the Lava ProcessModels, and everything when
# numba is absent). :func:`eprop_lava.engine.fused.compiled` compiles the same
# function objects with numba, binding the primitives to scalar versions, so the
# compiled per-element loops run this source, not a copy of it.

KERNEL_ATTR = "_fixed_point_kernel"
#: integer codes of the deterministic roundings inside kernels
ROUND_TOWARD_ZERO, ROUND_FLOOR, ROUND_NEAREST = 0, 1, 2
ROUND_CODES = {"toward_zero": ROUND_TOWARD_ZERO, "floor": ROUND_FLOOR, "nearest": ROUND_NEAREST}
V_MAX = (1 << (UV_BITS - 1)) - 1  # 24-bit saturation of v (and the other neuron states)


def kernel(fn):
    """Mark ``fn`` as an elementwise kernel (see above)."""
    setattr(fn, KERNEL_ATTR, True)
    return fn


def select(cond, a, b):
    """a where cond else b (a kernel primitive; scalar ``a if cond else b`` when compiled)."""
    return np.where(cond, a, b)


minimum = np.minimum  # kernel primitives (scalar min / max when compiled)
maximum = np.maximum


@kernel
def k_clip(x, lo, hi):
    """Saturation to [lo, hi]."""
    return minimum(maximum(x, lo), hi)


@kernel
def k_shift(x, shift, mode):
    """x / 2^shift with a deterministic rounding (mode: ROUND_* code):
    toward zero sgn(x) (|x| >> shift) = (x + ((x >> 63) & (2^shift - 1))) >> shift
    (Loihi's), floor x >> shift, nearest (x + 2^(shift - 1)) >> shift."""
    if shift == 0:
        return x + 0
    if mode == 0:
        return (x + ((x >> 63) & ((1 << shift) - 1))) >> shift
    if mode == 1:
        return x >> shift
    return (x + (1 << (shift - 1))) >> shift


@kernel
def k_decay(x, factor):
    """Loihi's decay toward zero with factor = 4096 - d - offset:
    sgn(x factor) (|x factor| >> 12)."""
    y = x * factor
    return (y + ((y >> 63) & 4095)) >> 12


@kernel
def k_wrap_int32(x):
    """What a C cast to int32 does (two's complement modulo 2^32)."""
    return ((x + 2147483648) & 4294967295) - 2147483648


@kernel
def k_wrap_u24(x):
    """Lava's one-sided 24-bit wrap of the current u (PyLifModelBitAcc):
    u > 2^23 -> u - 2^24; u <= -2^23 -> u + 2^24 (one correction only)."""
    return select(x > 8388608, x - 16777216, select(x <= -8388608, x + 16777216, x))


#: rounding code of :func:`k_requantize` for stochastic rounding (the caller draws,
#: :func:`stochastic_draws`); not a k_shift mode, so not in ROUND_CODES
ROUND_STOCHASTIC = 3
#: bits of :func:`k_requantize`'s flags (what the engine counts)
FLAG_NONZERO, FLAG_UNDERFLOW, FLAG_SATURATED = 1, 2, 4


@kernel
def k_requantize(x, draw, shift, mode, lo, hi):
    """x / 2^shift rounded and saturated to [lo, hi]: mode a ROUND_* code of
    :func:`k_shift`, or ROUND_STOCHASTIC: floor((x + draw) / 2^shift) with
    draw uniform in [0, 2^shift) (E = x / 2^shift; ``draw`` is read only in
    this mode). Returns (value, flags): FLAG_NONZERO where x != 0,
    FLAG_UNDERFLOW where a non-zero x rounded to 0, FLAG_SATURATED where the
    clip changed the rounded value."""
    if mode == ROUND_STOCHASTIC:
        q = k_shift(x + draw, shift, ROUND_FLOOR)
    else:
        q = k_shift(x, shift, mode)
    out = k_clip(q, lo, hi)
    live = x != 0
    flags = (select(live, FLAG_NONZERO, 0) + select(live & (q == 0), FLAG_UNDERFLOW, 0)
             + select(q != out, FLAG_SATURATED, 0))
    return out, flags


def shift_toward_zero(x: Any, shift: int | np.ndarray) -> np.ndarray:
    """sgn(x) * (|x| >> shift): Loihi's rounding toward zero (:func:`k_shift`;
    ``shift`` may be an array)."""
    x = np.asarray(x, dtype=np.int64)
    if np.ndim(shift) == 0:
        return k_shift(x, int(shift), ROUND_TOWARD_ZERO)
    mask = np.left_shift(1, np.asarray(shift, dtype=np.int64)) - 1
    return np.right_shift(x + (np.right_shift(x, 63) & mask), shift)


def shift_floor(x: Any, shift: int | np.ndarray) -> np.ndarray:
    """x >> shift (arithmetic shift, rounds toward -inf; Dense's weight_exp < 0)."""
    return np.right_shift(np.asarray(x, dtype=np.int64), shift)


def shift_nearest(x: Any, shift: int) -> np.ndarray:
    """(x + 2^(shift-1)) >> shift: round half up (:func:`k_shift`)."""
    return k_shift(np.asarray(x, dtype=np.int64), int(shift), ROUND_NEAREST)


def stochastic_draws(rng: np.random.Generator, shift: int, shape: tuple) -> np.ndarray:
    """The draws of stochastic rounding by 2^shift: integers uniform in
    [0, 2^shift), one per element in C order over ``shape``, so one generator
    reproduces the same numbers in the engine and in Lava."""
    return rng.integers(0, 1 << shift, size=shape, dtype=np.int64)


def shift_stochastic(x: Any, shift: int, rng: np.random.Generator) -> np.ndarray:
    """floor(x / 2^shift + r), r ~ U[0, 1) drawn from ``rng`` per element:
    unbiased (E = x / 2^shift), computed as floor((x + d) / 2^shift) with the
    integer draws d of :func:`stochastic_draws` (:func:`k_requantize`'s
    ROUND_STOCHASTIC)."""
    x = np.asarray(x, dtype=np.int64)
    if shift <= 0:
        return np.left_shift(x, -shift)
    return k_shift(x + stochastic_draws(rng, shift, x.shape), int(shift), ROUND_FLOOR)


def shift_round(x: Any, shift: int, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Right shift with the named rounding (one of :data:`ROUNDINGS`)."""
    if mode in ROUND_CODES:
        return k_shift(np.asarray(x, dtype=np.int64), int(shift), ROUND_CODES[mode])
    if mode == "stochastic":
        if rng is None:
            raise FixedPointError("stochastic rounding needs a seeded numpy Generator (rng)")
        return shift_stochastic(x, shift, rng)
    raise FixedPointError(f"rounding: unknown {mode!r}; choose one of {ROUNDINGS}")


def saturate(x: Any, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def saturate_signed(x: Any, bits: int) -> np.ndarray:
    """Clip to +-(2^bits - 1) (Loihi's symmetric saturation, e.g. v: bits=23)."""
    m = (1 << bits) - 1
    return np.clip(np.asarray(x, dtype=np.int64), -m, m)


def wrap_signed(x: Any, bits: int) -> np.ndarray:
    """Two's-complement wrap to ``bits`` bits (including the sign)."""
    x = np.asarray(x, dtype=np.int64)
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half


def wrap_int32(x: Any) -> np.ndarray:
    """What numpy int32 arithmetic does in Lava's models (:func:`k_wrap_int32`).
    A no-op when every value already fits, checked cheaply first."""
    x = np.asarray(x, dtype=np.int64)
    if x.size and -(1 << 31) <= x.min() and x.max() < (1 << 31):
        return x
    return k_wrap_int32(x)


def wrap_u24(x: Any) -> np.ndarray:
    """Lava's one-sided 24-bit wrap of the current u (:func:`k_wrap_u24`)."""
    x = np.asarray(x, dtype=np.int64)
    m = 1 << (UV_BITS - 1)
    if x.size and -m < x.min() and x.max() <= m:
        return x  # nothing to wrap (the common case)
    return k_wrap_u24(x)


def clip_v24(x: Any) -> np.ndarray:
    """Voltage saturation to +-(2^23 - 1)."""
    return saturate_signed(x, UV_BITS - 1)


def decay(x: Any, d: Any, offset: int = 0) -> np.ndarray:
    """Loihi's decay, rounding toward zero (:func:`k_decay`):
    sgn(x (4096 - d - offset)) * (|x (4096 - d - offset)| >> 12).
    offset=1 is the current's ds_offset (so du=4095 forgets u completely)."""
    factor = DECAY_UNITY - (np.asarray(d, dtype=np.int64) + offset)
    return k_decay(np.asarray(x, dtype=np.int64), factor)


def check_decay(name: str, d: Any) -> np.ndarray:
    """Validate a 12-bit decay constant (0..4096, Lava's du/dv registers hold 0..4095
    and the offset reaches 4096)."""
    arr = np.asarray(d)
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        raise FixedPointError(f"{name}: decay constants are integers in [0, 4096], got {d!r}")
    arr = arr.astype(np.int64)
    if np.any(arr < 0) or np.any(arr > DECAY_UNITY):
        raise FixedPointError(f"{name}: decay constants must lie in [0, 4096], got {d!r}")
    return arr


def decay_constant(factor: float) -> int:
    """12-bit decay d for a float per-step factor: 4096 - d ~= 4096 * factor."""
    if not 0.0 <= factor <= 1.0:
        raise FixedPointError(f"decay factor must lie in [0, 1], got {factor}")
    return int(DECAY_UNITY - round(DECAY_UNITY * factor))


@kernel
def k_weight_exp(x, exp):
    """x << exp for exp >= 0, x >> -exp (floor) otherwise: Dense's weight_exp."""
    if exp >= 0:
        return x << exp
    return x >> -exp


@kernel
def k_dense_output(total, weight_exp):
    """What a Dense sends for the integer sum total = sum_i w_ji s_i:
    wrap32(total << weight_exp) (>> -weight_exp, floor, for weight_exp < 0),
    as Lava's int32 channel holds it."""
    return k_wrap_int32(k_weight_exp(total, weight_exp))


def shift_left_or_right(x: Any, exp: int) -> np.ndarray:
    """x << exp for exp > 0, x >> -exp (floor) otherwise (:func:`k_weight_exp`)."""
    x = np.asarray(x, dtype=np.int64)
    if exp == 0:
        return x
    return k_weight_exp(x, int(exp))


# ------------------------------------------------------------------ Dense weights
def dense_sign_mode(weights: np.ndarray) -> str:
    """Lava's determine_sign_mode: 'excitatory', 'inhibitory' or 'mixed'."""
    w = np.asarray(weights)
    if w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def dense_weights(weights: Any, num_weight_bits: int = 8, sign_mode: str | None = None) -> np.ndarray:
    """The weights Lava's PyDenseModelBitAcc actually uses (docs/lava_loihi.md §2.2):
    clip to 8 bits for the sign mode, then drop ``8 - num_weight_bits + mixed``
    low bits (floor). Mixed-sign 8-bit weights become even, in [-256, 254]."""
    w = as_int(weights)
    if not 1 <= num_weight_bits <= 8:
        raise FixedPointError(f"num_weight_bits: must lie in [1, 8], got {num_weight_bits}")
    mode = sign_mode or dense_sign_mode(w)
    if mode not in ("excitatory", "inhibitory", "mixed"):
        raise FixedPointError(f"sign_mode: unknown {mode!r}")
    mixed = int(mode == "mixed")
    if mode == "inhibitory":
        w = -w
    w = np.clip(w, -256 * mixed, 255)
    k = 8 - num_weight_bits + mixed
    w = (w >> k) << k
    return -w if mode == "inhibitory" else w


#: Loihi's weight width: Lava's Dense clips its integers to 8 bits (+ sign) before truncating
DENSE_WEIGHT_BITS = 8


def dense_grid(sign_mode: str, num_weight_bits: int = DENSE_WEIGHT_BITS,
               matrix_sign_mode: str | None = None) -> tuple[int, int, int]:
    """(step, lo, hi): the integers :func:`dense_weights` keeps unchanged, i.e.
    the multiples of step = 2^(8 - num_weight_bits + mixed) in [lo, hi] with
    mixed [-256, 256 - step], excitatory [0, 256 - 2^(8 - b)], inhibitory the
    negatives (Lava clips an inhibitory matrix to [-255, 0] before truncating).

    ``matrix_sign_mode``: the sign mode Lava's Dense will determine for the
    matrix itself when ``sign_mode`` is that of a larger group (lava-dl netx
    chooses the bits of [w_in | w_rec] together but builds one Dense per
    matrix, each determining its own sign mode): the intersection of both
    grids, so an all-negative matrix in a mixed group never holds -256."""
    modes = [sign_mode] + ([matrix_sign_mode] if matrix_sign_mode else [])
    step, lo, hi = 1, -256, 255
    for mode in modes:
        if mode not in ("excitatory", "inhibitory", "mixed"):
            raise FixedPointError(f"sign_mode: unknown {mode!r}")
        s = 1 << (DENSE_WEIGHT_BITS - num_weight_bits + (mode == "mixed"))
        mlo, mhi = {"mixed": (-256, 256 - s), "excitatory": (0, 256 - s), "inhibitory": (-(256 - s), 0)}[mode]
        step, lo, hi = max(step, s), max(lo, mlo), min(hi, mhi)
    # steps are powers of two: the coarser one is a multiple of the finer; round the ends inward
    return step, -((-lo) // step) * step, (hi // step) * step


def round_to_dense_grid(x: Any, num_weight_bits: int = DENSE_WEIGHT_BITS, sign_mode: str | None = None,
                        matrix_sign_mode: str | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Float weights (already in integer units) -> the nearest integers on the
    grid of :func:`dense_grid` (ties to the even multiple of the step), so that
    Lava's Dense truncation (:func:`dense_weights`) keeps every one of them.
    With ``rng``: stochastic rounding on the grid, floor(x / step + u) step,
    u ~ U[0, 1) drawn per element in C order (unbiased inside the range).
    ``sign_mode`` defaults to the sign mode of the nearest integers of ``x``
    (Lava's determine_sign_mode: values above -1/2 that round to 0 do not make
    a matrix mixed). The grid's rounding can only narrow the sign mode further,
    and a value on a grid is on the grids of the narrower sign modes too."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= num_weight_bits <= DENSE_WEIGHT_BITS:
        raise FixedPointError(f"num_weight_bits: must lie in [1, 8], got {num_weight_bits}")
    if sign_mode is None:
        sign_mode = dense_sign_mode(np.rint(x)) if x.size else "mixed"
    step, lo, hi = dense_grid(sign_mode, num_weight_bits, matrix_sign_mode)
    q = np.rint(x / step) if rng is None else np.floor(x / step + rng.random(x.shape))
    return np.clip(q * step, lo, hi).astype(np.int64)


# ------------------------------------------------------------------ learning rates
@dataclass(frozen=True)
class LearningRate:
    """A learning-rate constant m * 2^e (Loihi: m in [-8, 7], docs/lava_loihi.md §3.2)."""

    mantissa: int
    exponent: int

    @property
    def value(self) -> float:
        return self.mantissa * 2.0 ** self.exponent

    def to_dict(self) -> dict:
        return {"mantissa": self.mantissa, "exponent": self.exponent}


def learning_rate(value: float, profile: FixedPointProfile) -> LearningRate:
    """The m * 2^e nearest to ``value`` (> 0) with m in the profile's mantissa
    range, using the largest mantissa magnitude that fits (most precision)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise FixedPointError(f"learning rate: expected a positive finite number, got {value!r}")
    m_max = profile.lr_mantissa_range[1]
    e = math.floor(math.log2(value / m_max))
    m = int(round(value / 2.0 ** e))
    while m > m_max:
        e += 1
        m = int(round(value / 2.0 ** e))
    return LearningRate(max(m, 1), e)


def apply_update(weights: np.ndarray, accumulator: np.ndarray, lr: LearningRate, profile: FixedPointProfile,
                 rng: np.random.Generator | None, counts: dict | None = None) -> np.ndarray:
    """w <- clip(w + round(-m * acc * 2^e)) with the profile's update rounding:
    the e-prop descent step of one update interval (seed 002 Eq. 2.37).
    counts: a dict whose "clipped" (weights the clip changed) and "of"
    (weights updated) are incremented."""
    prod = -lr.mantissa * np.asarray(accumulator, dtype=np.int64)
    if lr.exponent >= 0:
        delta = np.left_shift(prod, lr.exponent)
    else:
        delta = shift_round(prod, -lr.exponent, profile.update_rounding, rng)
    lo, hi = profile.weight_range
    raw = weights + delta
    out = np.clip(raw, lo, hi)
    if counts is not None:
        counts["clipped"] = counts.get("clipped", 0) + int(np.count_nonzero(raw != out))
        counts["of"] = counts.get("of", 0) + int(out.size)
    return out


def update_rng(seed: int, *key: int) -> np.random.Generator:
    """The generator of one synapse matrix's stochastic rounding: the same
    (seed, key) gives the same stream in the engine and in Lava."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))
