"""Float -> fixed point for a trained network, with a searched weight scale
and an account of what quantization costs.

Builds on the reference quantizer :func:`eprop_lava.engine.fixed_engine.quantize`
(docs/lava_loihi.md §2.1 "Float->fixed mapping": ``dv`` from alpha, ``du = 4095``,
``vth = v_th S / 64``, ``theta_step = beta S``, learning-rate constants
m 2^e, psi and trace scaling of the loihi2 profile). That quantizer scales
every layer by its largest weight (max-abs). Here:

* **Clip level search.** For each weight group (a layer's input and
  recurrent matrices share one voltage scale S and one ``weight_exp`` in the
  engine; the readout has its own) the clip level c is searched over
  ``max|w| 2^(-j/8)``, j = 0..:data:`SEARCH_STEPS`, minimizing the squared
  weight error (rounding plus clipping). The reference quantizer is then
  called with the weights clipped to c, so every derived constant (vth,
  theta_step, learning rates, gradient scales, feedback) follows from the
  chosen scale through the one implementation of those equations.
* **Loihi weight grid.** Weights are rounded to nearest on the grid Lava's
  ``Dense`` actually uses (docs/lava_loihi.md §2.2, :func:`eprop_lava.fixed.dense_weights`):
  ``num_weight_bits`` b in 1..8; mixed-sign matrices hold multiples of
  2^(9-b) in [-256, 256 - 2^(9-b)] (8-bit mixed: even values), one-signed
  matrices multiples of 2^(8-b) in [0, 256 - 2^(8-b)] (or the negatives).
  Rounding to nearest on that grid here means Lava's truncation is the
  identity, so the engine, our Lava processes and lava-dl netx agree.
  ``grid="dense"`` (default) gives every matrix the grid of its own Dense
  (Lava's Dense determines the sign mode per matrix: an all-positive input
  matrix keeps odd values and 255 next to a mixed-sign recurrent one);
  ``grid="netx"`` puts a layer's input and recurrent matrices on one grid
  (the sign mode of [w_in | w_rec]), which is what lava-dl netx's
  RecurrentDense reproduces (it optimises the two matrices together), and
  puts the readout bias on netx's fixed bias_exp = 6. Each matrix stays on
  its own Dense's grid as well (netx builds one Dense per matrix, which
  determines its own sign mode): an all-negative input matrix next to a
  mixed-sign recurrent one holds no -256, which its Dense would clip to -255.
* **Biases** (the readout's) become ``mant << exp`` with a 13-bit signed
  mantissa (|mant| <= 4095) and the smallest exponent in 0..7 that fits
  (Lava's ``bias_mant``/``bias_exp``, docs/lava_loihi.md §2.1); with ``grid="netx"``
  the exponent is at least 6.

The report gives, per matrix, the relative RMS error, the largest absolute
error (float units), the fraction of clipped weights and the grid; per layer
the threshold and decay rounding; and the learning constants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.errors import UserError
from eprop_lava.fixed import FixedPointError, dense_grid, get_profile, round_to_dense_grid
from eprop_lava.neurons.base import decay as float_decay
from eprop_lava.spec import NetworkSpec

SEARCH_STEPS = 40          # clip levels max * 2^(-j/8), j = 0..40: down to 1/32 of the max
BIAS_MANT_MAX = (1 << 12) - 1
BIAS_EXP_MAX = 7
NETX_BIAS_EXP = 6          # lava-dl netx fixes bias_exp = 6 (netx/hdf5.py get_neuron_params)
GRIDS = ("dense", "netx")


class QuantizationError(UserError):
    """The network cannot be expressed in Loihi's fixed point as asked."""


# ------------------------------------------------------------------ the weight grid
@dataclass(frozen=True)
class WeightGrid:
    """Integer weights Lava's Dense holds for ``bits`` (1..8) and a sign mode
    (docs/lava_loihi.md §2.2): multiples of ``step`` in [lo, hi]
    (:func:`eprop_lava.fixed.dense_grid`). ``matrix_sign_mode``: the sign mode
    Lava's Dense determines for the matrix alone when ``sign_mode`` is a
    group's (``grid="netx"``); the grid is then the intersection of both."""

    bits: int
    sign_mode: str
    matrix_sign_mode: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 8:
            raise QuantizationError(f"weight bits: Loihi weight mantissas have 1..8 bits, got {self.bits!r}")
        for mode in (self.sign_mode, self.matrix_sign_mode or "mixed"):
            if mode not in ("mixed", "excitatory", "inhibitory"):
                raise QuantizationError(f"sign mode: unknown {mode!r}")

    @property
    def _grid(self) -> tuple[int, int, int]:
        return dense_grid(self.sign_mode, self.bits, self.matrix_sign_mode)

    @property
    def step(self) -> int:
        return self._grid[0]

    @property
    def lo(self) -> int:
        return self._grid[1]

    @property
    def hi(self) -> int:
        return self._grid[2]

    def round(self, x: np.ndarray) -> np.ndarray:
        """Nearest grid value (ties to even multiple), clipped to the range."""
        return round_to_dense_grid(x, self.bits, self.sign_mode, self.matrix_sign_mode)

    def clipped(self, x: np.ndarray) -> np.ndarray:
        """Mask of values outside the representable range (before rounding)."""
        x = np.asarray(x, dtype=np.float64)
        return (x < self.lo - self.step / 2) | (x > self.hi + self.step / 2)


def sign_mode_of(*mats: np.ndarray | None) -> str:
    """Lava's determine_sign_mode over one or more matrices of a Dense group."""
    vals = [np.asarray(m) for m in mats if m is not None and np.asarray(m).size]
    if not vals:
        return "mixed"
    lo = min(float(v.min()) for v in vals)
    hi = max(float(v.max()) for v in vals)
    if lo >= 0:
        return "excitatory"
    if hi <= 0:
        return "inhibitory"
    return "mixed"


# ------------------------------------------------------------------ reports
@dataclass(frozen=True)
class MatrixQuantization:
    """How one float matrix became integers: ``scale`` maps float -> integer
    units (w_int ~= w * scale), ``clip`` is the float level that maps to the
    grid's end, errors are in float units."""

    name: str
    shape: tuple
    bits: int
    sign_mode: str
    step: int
    scale: float
    clip: float
    max_abs: float
    rel_rms_error: float
    max_abs_error: float
    clipped_fraction: float
    search_index: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class LayerQuantization:
    """Neuron constants of one layer: integer value and relative rounding error."""

    layer: int
    neuron: str
    vth: int
    vth_rel_error: float
    dv: int
    alpha: float
    alpha_fixed: float
    weight_exp: int
    lr_mantissa: int | None
    lr_exponent: int | None
    lr_rel_error: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantizationReport:
    weight_bits: dict
    matrices: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    readout: dict = field(default_factory=dict)
    learning: dict = field(default_factory=dict)
    search: str = "mse"
    grid: str = "dense"

    def to_dict(self) -> dict:
        return {"weight_bits": self.weight_bits, "search": self.search, "grid": self.grid,
                "matrices": [m.to_dict() for m in self.matrices],
                "layers": [layer.to_dict() for layer in self.layers],
                "readout": self.readout, "learning": self.learning}

    def worst(self) -> MatrixQuantization:
        return max(self.matrices, key=lambda m: m.rel_rms_error)


# ------------------------------------------------------------------ helpers
def _weight_bits(weight_bits: Any, n_layers: int) -> dict:
    """{"layers.r": b, "readout": b} from an int (all) or a mapping."""
    keys = [f"layers.{r}" for r in range(n_layers)] + ["readout"]
    if isinstance(weight_bits, (int, np.integer)) and not isinstance(weight_bits, bool):
        out = {k: int(weight_bits) for k in keys}
    elif isinstance(weight_bits, dict):
        unknown = sorted(set(weight_bits) - set(keys) - {"default"})
        if unknown:
            raise QuantizationError(f"weight bits: unknown group {unknown[0]!r} (known: {', '.join(keys)})")
        default = weight_bits.get("default", 8)
        out = {k: int(weight_bits.get(k, default)) for k in keys}
    else:
        raise QuantizationError(f"weight bits: expected an integer 1..8 or a mapping, got {weight_bits!r}")
    for k, b in out.items():
        if not 1 <= b <= 8:
            raise QuantizationError(f"weight bits of {k}: Loihi weight mantissas have 1..8 bits, got {b}")
    return out


def _matrix_error(w: np.ndarray, scale: float, grid: WeightGrid, diag_zero: bool = False) -> tuple:
    """(squared error sum, quantized ints, clipped mask) of w at this scale."""
    x = w * scale
    q = grid.round(x)
    if diag_zero:
        np.fill_diagonal(q, 0)
    err = w - q / scale
    return float(np.sum(err * err)), q, grid.clipped(x)


def _groups(spec: NetworkSpec, params: dict) -> list:
    """Weight groups sharing one scale: (key, [param names])."""
    groups = []
    for r, ls in enumerate(spec.layers):
        names = [f"layers.{r}.w_in"] + ([f"layers.{r}.w_rec"] if ls.recurrent else [])
        groups.append((f"layers.{r}", names))
    groups.append(("readout", ["readout.w"]))
    return groups


def _clipped_params(params: dict, groups: list, levels: dict) -> dict:
    out = dict(params)
    for key, names in groups:
        c = levels[key]
        for n in names:
            out[n] = np.clip(np.asarray(params[n], dtype=np.float64), -c, c)
    return out


def _group_scale(net: fe.FixedNetwork, key: str) -> float:
    """float -> integer weight units of a group, as the reference quantizer chose."""
    if key == "readout":
        return net.readout.y_scale / 64.0 / 2.0 ** net.readout.weight_exp
    r = int(key.split(".")[1])
    return float(net.layers[r].w_scale)


def quantize_bias(b_int: np.ndarray, min_exp: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mant, exp, value) with value = mant << exp, |mant| <= 4095, the
    smallest exp in min_exp..7 that fits (Loihi's bias, docs/lava_loihi.md §2.1)."""
    b = np.asarray(b_int, dtype=np.float64)
    exp = np.array([next((e for e in range(min_exp, BIAS_EXP_MAX + 1) if abs(v) / 2.0 ** e <= BIAS_MANT_MAX + 0.5),
                         BIAS_EXP_MAX) for v in b.ravel()], dtype=np.int64).reshape(b.shape)
    mant = np.clip(np.rint(b / 2.0 ** exp), -BIAS_MANT_MAX, BIAS_MANT_MAX).astype(np.int64)
    return mant, exp, np.left_shift(mant, exp)


# ------------------------------------------------------------------ the compiler's quantizer
def quantize_network(spec: NetworkSpec, params: dict, weight_bits: Any = 8, profile: Any = "loihi2",
                     search: bool = True, lr: float | None = None,
                     loss_mask: Any = None, grid: str = "dense") -> tuple[fe.FixedNetwork, QuantizationReport]:
    """Trained float parameters -> (FixedNetwork, QuantizationReport).
    ``loss_mask`` (T, B): the task's loss mask, from which the output
    error's exponent is chosen (:func:`eprop_lava.engine.fixed_engine.error_exponent`).

    ``weight_bits``: 1..8 for all groups, or {"layers.0": 6, "readout": 8,
    "default": 8}. ``search=False`` gives max-abs scaling (the reference
    quantizer's choice) on the same grid, for comparison. ``grid``: "dense"
    (each matrix on its own Dense's grid) or "netx" (a layer's input and
    recurrent matrices on one grid, readout bias exponent >= 6)."""
    if grid not in GRIDS:
        raise QuantizationError(f"grid: expected one of {', '.join(GRIDS)}, got {grid!r}")
    if spec.timing != "loihi" or spec.reset != "zero":
        raise QuantizationError(
            f"the network was trained with timing={spec.timing!r}, reset={spec.reset!r}; Loihi delays every "
            "synaptic hop by one step and resets v to zero (docs/lava_loihi.md §2.1-2.2). Compile it with "
            "--loihi-timing to convert (run then reports the float metric before and after), or train it "
            "for the chip with --set spec.timing=loihi --set spec.reset=zero")
    for r, ls in enumerate(spec.layers):
        if getattr(ls, "bidirectional", False):
            raise QuantizationError(f"layers[{r}] is bidirectional: its backward population reads the sequence "
                                    "in reverse, which a chip running online cannot do; compile unidirectional "
                                    "networks")
    prof = get_profile(profile)
    bits = _weight_bits(weight_bits, len(spec.layers))
    groups = _groups(spec, params)
    fparams = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    gmax = {key: max(float(np.abs(fparams[n]).max()) for n in names) for key, names in groups}
    for key, m in gmax.items():
        if not math.isfinite(m):
            raise QuantizationError(f"{key}: weights are not finite")
    if grid == "netx":  # one sign mode per group: netx optimises [w_in | w_rec] together
        grids = {n: WeightGrid(bits[key], sign_mode_of(*[fparams[m] for m in names]), sign_mode_of(fparams[n]))
                 for key, names in groups for n in names}
    else:  # Lava's Dense determines the sign mode of each matrix on its own
        grids = {n: WeightGrid(bits[key], sign_mode_of(fparams[n])) for key, names in groups for n in names}
    # 1. scan clip levels (all groups at the same relative level per reference call)
    n_steps = SEARCH_STEPS if search else 0
    sse = {key: [] for key, _ in groups}
    for j in range(n_steps + 1):
        levels = {key: max(gmax[key], 1e-12) * 2.0 ** (-j / 8.0) for key in gmax}
        try:
            net = fe.quantize(spec, _clipped_params(fparams, groups, levels), prof, lr=lr, loss_mask=loss_mask)
        except FixedPointError as exc:
            if j == 0:
                raise QuantizationError(f"{exc}: the layer's weights are too small against its threshold for "
                                        "Loihi's 17-bit threshold mantissa (v_th is expressed in units of the "
                                        "largest weight)") from None
            break  # a lower clip level only raises the threshold mantissa further
        for key, names in groups:
            scale = _group_scale(net, key)
            total = 0.0
            for n in names:
                e, _, _ = _matrix_error(fparams[n], scale, grids[n], diag_zero=n.endswith("w_rec"))
                total += e
            sse[key].append(total)
    best = {key: int(np.argmin(v)) for key, v in sse.items()}
    levels = {key: max(gmax[key], 1e-12) * 2.0 ** (-best[key] / 8.0) for key in gmax}
    # 2. the reference quantizer at the chosen levels, then the Loihi grid
    net = fe.quantize(spec, _clipped_params(fparams, groups, levels), prof, lr=lr, loss_mask=loss_mask)
    report = QuantizationReport(weight_bits=bits, search="mse over clip levels" if search else "max-abs", grid=grid)
    scales = {}
    for key, names in groups:
        scale = _group_scale(net, key)
        scales[key] = scale
        for n in names:
            w = fparams[n]
            g = grids[n]
            e, q, clipped = _matrix_error(w, scale, g, diag_zero=n.endswith("w_rec"))
            denom = float(np.sum(w * w)) or 1.0
            report.matrices.append(MatrixQuantization(
                n, tuple(w.shape), g.bits, g.sign_mode, g.step, scale,
                levels[key], gmax[key], math.sqrt(e / denom),
                float(np.max(np.abs(w - q / scale))) if w.size else 0.0, float(np.mean(clipped)), best[key]))
            _store(net, n, q)
    if spec.learning.variant == "symmetric":
        net.feedback = net.readout.w.T.copy()  # B = W_out^T in the same integer units
    # 3. the readout bias as Loihi's mantissa and exponent
    mant, exp, value = quantize_bias(net.readout.bias, NETX_BIAS_EXP if grid == "netx" else 0)
    b_float = np.asarray(params["readout.b"], dtype=np.float64)
    net.readout = replace(net.readout, bias=value)
    report.readout = {"y_scale": net.readout.y_scale, "d_kappa": int(net.readout.d_kappa),
                      "kappa": spec.readout.kappa, "kappa_fixed": 1 - (int(net.readout.d_kappa)) / 4096.0,
                      "bias_mant": mant.tolist(), "bias_exp": exp.tolist(),
                      "bias_max_abs_error": float(np.max(np.abs(b_float - value / net.readout.y_scale)))
                      if b_float.size else 0.0}
    for r, (L, ls) in enumerate(zip(net.layers, spec.layers)):
        p = ls.params
        if ls.neuron == "izhikevich":
            vth, vth_err, dv, alpha, alpha_fx = 0, 0.0, 0, 1.0, 1.0
        else:
            vth = int(np.max(L.neuron.vth))
            exact = p.v_th * L.w_scale * 2.0 ** L.weight_exp
            vth_err = abs(vth - exact) / exact if exact else 0.0
            dv = int(np.max(L.neuron.dv))
            alpha = float_decay(p.tau_m, spec.dt)
            alpha_fx = 1 - dv / 4096.0
        lrq = L.lr
        want = None
        if lrq is not None:
            want = (spec.optimizer.lr if lr is None else lr) * L.w_scale * L.grad_scale
        report.layers.append(LayerQuantization(
            r, ls.neuron, vth, float(vth_err), dv, float(alpha), float(alpha_fx), int(L.weight_exp),
            None if lrq is None else int(lrq.mantissa), None if lrq is None else int(lrq.exponent),
            None if lrq is None or not want else float(abs(lrq.value - want) / want)))
    report.learning = {"profile": prof.to_dict(), "signal_shift": int(net.signal_shift),
                       "error_exp": int(net.error_bits),
                       "psi_bits": prof.psi_bits, "trace_impulse": prof.trace_impulse,
                       "readout_lr": None if net.readout.lr is None else net.readout.lr.to_dict(),
                       "note": "psi / gamma is sent as a psi_bits graded value (gamma folded into the "
                               "learning rate); a presynaptic spike adds trace_impulse to the trace; "
                               "learning rates are m 2^e with the profile's mantissa (docs/lava_loihi.md §3.2-3.3)"}
    # validate the finished network again (shapes, ranges)
    net = fe.FixedNetwork(net.spec, net.profile, net.layers, net.readout, net.feedback, net.signal_shift, net.seed,
                          net.error_exp)
    return net, report


#: compile warns when more than this fraction of a matrix's non-zero weights
#: quantize to zero ("mostly zero": the layer has lost most of its synapses)
ZERO_FRACTION_WARNING = 0.5
#: ... or when a matrix's relative RMS error ||w - q/scale|| / ||w|| exceeds this
REL_ERROR_WARNING = 0.5


def _stored(net: fe.FixedNetwork, name: str) -> np.ndarray:
    if name == "readout.w":
        return net.readout.w
    _, r, which = name.split(".")
    return getattr(net.layers[int(r)], which)


def quantization_warnings(report: QuantizationReport, net: fe.FixedNetwork, params: dict,
                          zero_limit: float = ZERO_FRACTION_WARNING,
                          error_limit: float = REL_ERROR_WARNING) -> list[str]:
    """One line per matrix that quantized badly: most of its non-zero float
    weights became integer 0, or its relative RMS error is above ``error_limit``."""
    out = []
    for m in report.matrices:
        w = np.asarray(params[m.name])
        q = np.asarray(_stored(net, m.name))
        nonzero = w != 0
        zero_fraction = float(np.mean(q[nonzero] == 0)) if np.any(nonzero) else 0.0
        if zero_fraction > zero_limit:
            out.append(f"{m.name}: {100 * zero_fraction:.1f}% of its non-zero weights quantize to 0 at "
                       f"{m.bits} bits (largest |w| {m.max_abs:.3g} sets the scale; the rest fall below one step)")
        elif m.rel_rms_error > error_limit:
            out.append(f"{m.name}: relative RMS quantization error {m.rel_rms_error:.2f} > {error_limit} "
                       f"at {m.bits} bits")
    return out


def _store(net: fe.FixedNetwork, name: str, q: np.ndarray) -> None:
    if name == "readout.w":
        net.readout.w = q
        return
    _, r, which = name.split(".")
    setattr(net.layers[int(r)], which, q)


def dequantize(net: fe.FixedNetwork) -> dict:
    """Float parameters equivalent to the integer weights (for reports)."""
    out = {}
    for r, L in enumerate(net.layers):
        s = L.w_scale
        out[f"layers.{r}.w_in"] = L.w_in / s
        if L.w_rec is not None:
            out[f"layers.{r}.w_rec"] = L.w_rec / s
    out["readout.w"] = net.readout.w / (net.readout.y_scale / 64.0)
    out["readout.b"] = net.readout.bias / net.readout.y_scale
    return out
