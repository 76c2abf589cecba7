"""Quantization-aware training with a straight-through estimator (STE), and
stochastic rounding for post-training quantization, both through public
APIs (the float e-prop gradient and the fixed-point quantizer).

The quantizer :func:`eprop_lava.engine.fixed_engine.quantize` scales each
hidden layer so its largest afferent weight (input or recurrent) uses the
whole mantissa, and the readout likewise. :func:`fake_quantize` applies the
same grid in float: w_q = round(w s) / s, s = w_max_int / max|w|. QAT runs
the float e-prop forward/gradient on w_q and applies the update to the
float shadow weights w (dL/dw := dL/dw_q, the STE), so training sees the
weight grid the chip will use. The neuron state stays float during QAT; only
the weights are fake-quantized (the dominant error at low bit widths, see
docs/studies.md).
"""

from __future__ import annotations

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import eprop_gradient
from eprop_lava.training import apply_update
from eprop_lava.eprop.optim import Optimizer
from eprop_lava.fixed import FixedPointProfile


def _wmax_int(profile: FixedPointProfile) -> int:
    lo, hi = profile.weight_range
    return min(-lo, hi)


def _shift(profile: FixedPointProfile, scaling: str, reference_bits: int = 8) -> int:
    """The weight exponent k of :func:`ptq_network`."""
    return 0 if scaling == "mantissa" else max(0, min(7, reference_bits - profile.weight_bits))


def fake_quantize(spec, params: dict, profile: FixedPointProfile, scaling: str = "mantissa") -> dict:
    """The float weights the fixed-point network of :func:`ptq_network` will
    hold: w_q = fe.weight_integers(w, s) / s (clip(round(w s)), on the Dense
    grid at 8 bits) with s = (2^(b+k) - 1) / (2^k max|w|)
    per hidden layer (input and recurrent together) and for the readout."""
    q = dict(params)
    k = _shift(profile, scaling)
    scale_int = _wmax_int(profile.with_(weight_bits=profile.weight_bits + k)) / 2.0 ** k

    def fq(w, s):  # the reference quantizer's rounding (8 bits: each matrix on its Lava Dense grid)
        return fe.weight_integers(w, s, profile) / s

    for r, layer in enumerate(spec.layers):
        names = [f"layers.{r}.w_in"] + ([f"layers.{r}.w_rec"] if layer.recurrent else [])
        wmax = max(max(float(np.abs(params[n]).max()) for n in names), 1e-12)
        for n in names:
            q[n] = fq(params[n], scale_int / wmax)
    wmax = max(float(np.abs(params["readout.w"]).max()), 1e-12)
    q["readout.w"] = fq(params["readout.w"], scale_int / wmax)
    return q


def train_qat(task, spec, params: dict, profile: FixedPointProfile, iterations: int, batch_size: int,
              seed: int, scaling: str = "mantissa") -> dict:
    """``iterations`` steps of e-prop with Adam (spec.optimizer) on
    fake-quantized weights, straight-through to the float weights."""
    ops = make_ops("numpy", dtype="float64")
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    optimizer = Optimizer(spec.optimizer)
    rng = np.random.default_rng([seed, 21])
    for _ in range(iterations):
        batch = task.batch(rng, batch_size)
        _, grads, _ = eprop_gradient(spec, fake_quantize(spec, params, profile, scaling), batch, ops)
        apply_update(spec, params, optimizer, {k: ops.to_numpy(v) for k, v in grads.items()})
    return params


SCALINGS = ("mantissa", "exponent")


def ptq_network(spec, params: dict, profile: FixedPointProfile, rounding: str = "nearest",
                scaling: str = "mantissa", rng: np.random.Generator | None = None,
                reference_bits: int = 8) -> fe.FixedNetwork:
    """Post-training quantization of ``params`` to ``profile.weight_bits``.

    scaling="mantissa" is the reference quantizer (:func:`fe.quantize`):
    weight exponent 0, so the voltage scale, and with it the threshold
    mantissa vth = round(v_th S / 64), shrinks with the weight width; at 2-3
    bits vth is a few units and its rounding error changes the dynamics.
    scaling="exponent" keeps the voltage scale of a ``reference_bits``-bit
    mapping and puts the difference k = reference_bits - weight_bits (at most
    7, Loihi's largest weight exponent) into Dense's ``weight_exp``: integer
    weights round(w S_ref / 2^k), sent as (sum w s) << k. Only the weights
    are coarse; thresholds, decays and adaptation keep their resolution.

    rounding: "nearest" or "stochastic" (floor(x + u), u ~ U[0, 1), unbiased),
    applied once, from the float weights."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling: choose one of {', '.join(SCALINGS)}, got {scaling!r}")
    bits = profile.weight_bits
    k = _shift(profile, scaling, reference_bits)
    net = fe.quantize(spec, params, profile.with_(weight_bits=bits + k) if k else profile)
    if k == 0 and rounding == "nearest":
        return net
    if rounding == "stochastic" and rng is None:
        raise ValueError("stochastic rounding needs rng")

    def q(w, s):  # the reference quantizer's rounding at 2^-k of the scale (8 bits: on the Dense grid)
        return fe.weight_integers(w, s / 2.0 ** k, profile, rng if rounding == "stochastic" else None)

    for r, L in enumerate(net.layers):
        L.w_in = q(params[f"layers.{r}.w_in"], L.w_scale)
        if L.w_rec is not None:
            L.w_rec = q(params[f"layers.{r}.w_rec"], L.w_scale)
            np.fill_diagonal(L.w_rec, 0)
        L.weight_exp = L.weight_exp + k
    net.readout.w = q(params["readout.w"], net.readout.y_scale / 64.0)
    net.readout.weight_exp = net.readout.weight_exp + k
    net.profile = profile
    return net


def stochastic_requantize(net: fe.FixedNetwork, params: dict, rng: np.random.Generator) -> fe.FixedNetwork:
    """Replace the nearest-rounded integer weights of ``net`` (from
    :func:`fe.quantize` of ``params``) by stochastically rounded ones on the
    same grid: floor(w s + u), u ~ U[0, 1) per weight (unbiased; at 8 bits in
    steps of the matrix's Dense grid)."""
    out = net.copy()

    def sr(w, s):  # floor(w s + u) on the grid fe.quantize uses (8 bits: the Dense grid, in its steps)
        return fe.weight_integers(w, s, out.profile, rng)

    for r, L in enumerate(out.layers):
        L.w_in = sr(params[f"layers.{r}.w_in"], L.w_scale)
        if L.w_rec is not None:
            L.w_rec = sr(params[f"layers.{r}.w_rec"], L.w_scale)
            np.fill_diagonal(L.w_rec, 0)
    out.readout.w = sr(params["readout.w"], out.readout.y_scale / 64.0)
    return out
