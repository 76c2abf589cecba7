"""Compiled time loops for the numpy backend (numba): the fast CPU path.

The reference engine calls the neuron step functions once per time step, so a
2,250-step sequence of a 100-neuron layer costs thousands of small numpy calls
whose dispatch, not arithmetic, sets the time (docs/benchmarks.md). Two loops
are compiled here:

* :func:`run_lif_family`: the forward pass of a LIF/ALIF population. It is the
  compiled form of :func:`eprop_lava.neurons.alif.step` (LIF is the case
  beta = 0) with the membrane of :func:`eprop_lava.neurons.base.membrane_update`
  (its input gain included),
  the refractory counter of :func:`~eprop_lava.neurons.base.refractory_counter`,
  firing by :func:`~eprop_lava.neurons.base.fire` and psi by
  :func:`~eprop_lava.neurons.base.pseudo_derivative` (seed 002 Eqs. 2.4-2.6,
  2.18), evaluated in the same order so that each value equals the
  reference's. Recurrent input is event-driven: a spike of neuron i adds
  row i of W_rec^T, so the cost per step is (spikes x N), not N^2. Samples are
  independent, so the batch is split over threads and each thread runs whole
  sequences (no synchronization per step). ``tests/test_fused.py`` holds this
  loop to the reference step functions for both neuron types, both resets and
  both timings.
* :func:`adjoint_block`: e-prop's per-neuron backward recursion
  (:func:`eprop_lava.eprop.traces.local_adjoint`) for any neuron model: it
  takes the Jacobian entries the model computes (``transition_jacobian``,
  ``spike_jacobian`` evaluated on the whole trajectory), so no model's
  equations are repeated here; only the loop is compiled.

Without numba (e.g. a GPU machine without it), or with
``EPROP_LAVA_FUSED=0``, the engine runs the reference loops unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

try:  # numba comes with librosa; the engine works without it
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised on machines without numba
    numba = None

FUSED_MODELS = ("lif", "alif")


def _variants(fn):
    """(parallel, serial) compiled versions of one loop, each compiled on
    first use: the parallel one splits its prange over threads; the serial one
    (prange runs as range) releases the GIL, for callers that run their own
    threads (the fixed-point step engine's Dense products). The serial copy
    gets its own name so numba's on-disk cache keeps the two apart."""
    import types

    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                               fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + "_serial"
    # error_model="numpy": no zero-division checks (they block vectorization; 2x in the serial loop)
    return (njit(parallel=True, cache=True, error_model="numpy")(fn),
            njit(nogil=True, cache=True, error_model="numpy")(clone))


def available() -> bool:
    """True when the compiled loops can be used (numba importable and not
    switched off with EPROP_LAVA_FUSED=0)."""
    return numba is not None and os.environ.get("EPROP_LAVA_FUSED", "1") != "0"


if numba is not None:

    def _lif_family(external, w_rec_t, has_rec, alpha, gain, v_th, gamma, n_ref, subtract, beta, rho, one, zero,
                    z_out, x_out, free_out, psi_out):  # pragma: no cover - compiled
        # one, zero: constants of the array's dtype, so float32 arithmetic stays
        # float32 as in numpy (a float64 literal would promote it).
        T, B, N = external.shape
        for b in prange(B):
            v = np.zeros(N, external.dtype)
            a = np.zeros(N, external.dtype)
            z = np.zeros(N, external.dtype)
            ref = np.zeros(N, external.dtype)
            current = np.empty(N, external.dtype)
            rec = np.zeros(N, external.dtype)
            for t in range(T):
                for j in range(N):
                    current[j] = external[t, b, j]
                if has_rec:
                    _recurrent_events(z, w_rec_t, rec)
                    for j in range(N):
                        current[j] = current[j] + rec[j]
                for j in range(N):
                    z_prev = z[j]
                    if subtract:
                        v[j] = alpha * v[j] + gain * current[j] - v_th * z_prev
                    else:
                        v[j] = alpha * v[j] * (one - z_prev) + gain * current[j]
                    a[j] = rho[j] * a[j] + z_prev
                    if z_prev > zero:
                        ref[j] = n_ref
                    else:
                        ref[j] = max(ref[j] - one, zero)
                    free = ref[j] <= zero
                    x = v[j] - (v_th + beta[j] * a[j])
                    z[j] = one if (x >= zero and free) else zero
                    z_out[t, b, j] = z[j]
                    x_out[t, b, j] = x
                    free_out[t, b, j] = free
                    psi_out[t, b, j] = gamma * max(one - abs(x) / v_th, zero) if free else zero

    def _adjoint_block(lam0, lam1, j00, j01, j10, j11, used, d, mu, out):  # pragma: no cover - compiled
        # mu_c^t = lam_c^t + sum_r mu_r^{t+1} J_rc^t for hidden size d <= 2, for
        # the block's steps from last to first; mu (2, B, N) carries mu^{t+1}
        # in and leaves with the block's first mu. Inputs may be zero-strided.
        S, B, N = out.shape
        for b in prange(B):
            for t in range(S - 1, -1, -1):
                for j in range(N):
                    m0 = mu[0, b, j]
                    m1 = mu[1, b, j]
                    new0 = lam0[t, b, j]
                    if used[0, 0]:
                        new0 = new0 + m0 * j00[t, b, j]
                    if d > 1:
                        if used[1, 0]:
                            new0 = new0 + m1 * j10[t, b, j]
                        new1 = lam1[t, b, j]
                        if used[0, 1]:
                            new1 = new1 + m0 * j01[t, b, j]
                        if used[1, 1]:
                            new1 = new1 + m1 * j11[t, b, j]
                        mu[1, b, j] = new1
                    mu[0, b, j] = new0
                    out[t, b, j] = new0


    def _outer_events(delta, pre, chunks, split_rows, out):  # pragma: no cover - compiled
        # out[., i, j] += pre[r, i] delta[r, j] over pre[r, i] != 0. split_rows: thread c
        # takes rows c of chunks into its own out[c] (summed after); otherwise it
        # takes a range of presynaptic i of one shared out[0] (no private copies).
        R, J = delta.shape
        I = pre.shape[1]
        for c in prange(chunks):
            ci = np.int64(c)  # prange's index is unsigned; mixed with 0 it would unify to float
            k = ci if split_rows else 0
            r0 = ci * R // chunks if split_rows else 0
            r1 = (ci + 1) * R // chunks if split_rows else R
            i0 = 0 if split_rows else ci * I // chunks
            i1 = I if split_rows else (ci + 1) * I // chunks
            for r in range(r0, r1):
                for i in range(i0, i1):
                    p = pre[r, i]
                    if p != 0:
                        for j in range(J):
                            out[k, i, j] += p * delta[r, j]


    def _project_events(x, w_t, out):  # pragma: no cover - compiled
        # out[r, j] = sum_i x[r, i] w_t[i, j] over the nonzero x[r, i]
        R, I = x.shape
        J = w_t.shape[1]
        for r in prange(R):
            for j in range(J):
                out[r, j] = 0
            for i in range(I):
                p = x[r, i]
                if p != 0:
                    for j in range(J):
                        out[r, j] += p * w_t[i, j]



    @njit(cache=True, inline="always")
    def _recurrent_events(z, w_rec_t, rec):  # pragma: no cover - compiled
        # rec = z^{t-1} W_rec^T as the sum of the rows of W_rec^T whose neuron
        # spiked: (spikes x N) additions instead of N^2 multiply-adds
        rec[:] = 0
        for i in range(z.shape[0]):
            if z[i] != 0:
                for j in range(rec.shape[0]):
                    rec[j] += w_rec_t[i, j]

    @njit(cache=True, inline="always")
    def _decay(x, factor):  # pragma: no cover - compiled
        # Loihi's decay toward zero: sgn(x f) (|x f| >> 12), f = 4096 - d - offset
        # branch-free (so the neuron loop vectorizes): add 4095 to negatives, then floor-shift
        y = x * factor
        return (y + ((y >> 63) & 4095)) >> 12

    @njit(cache=True, inline="always")
    def _wrap_int32(x):  # pragma: no cover - compiled
        return ((x + 2147483648) & 4294967295) - 2147483648

    def _fixed_lif_family(ext, w_rec_t, has_rec, weight_exp, du_f, memoryless, dv_f, bias, vth, n_ref,
                          adaptive, dth_f, theta_step, psi_mul, psi_shift, psi_max,
                          z_out, psi_out):  # pragma: no cover - compiled
        T, B, N = ext.shape
        m24 = 1 << 23
        for b in prange(B):
            u = np.zeros(N, np.int64)
            v = np.zeros(N, np.int64)
            theta = np.zeros(N, np.int64)
            ref = np.zeros(N, np.int64)
            z = np.zeros(N, np.int64)
            rec = np.zeros(N, w_rec_t.dtype)
            for t in range(T):
                if has_rec:
                    _recurrent_events(z, w_rec_t, rec)
                for j in range(N):
                    r = np.int64(rec[j])
                    r = _wrap_int32(r << weight_exp if weight_exp >= 0 else r >> -weight_exp)
                    a_in = _wrap_int32(np.int64(ext[t, b, j]) + r)
                    act = _wrap_int32(a_in << 6)
                    total = act if memoryless else _wrap_int32(_decay(u[j], du_f[j]) + act)
                    if total > m24:  # Lava's one-sided 24-bit wrap of u
                        total -= 2 * m24
                    elif total <= -m24:
                        total += 2 * m24
                    u[j] = total
                    vj = _decay(v[j], dv_f[j]) + total + bias[j]
                    vj = min(max(vj, -(m24 - 1)), m24 - 1)
                    z_prev = z[j]
                    if n_ref > 0:
                        ref[j] = n_ref if z_prev > 0 else max(ref[j] - 1, 0)
                    threshold = vth[j]
                    if adaptive:
                        th = _decay(theta[j], dth_f[j]) + z_prev * theta_step[j]
                        theta[j] = min(max(th, 0), m24 - 1)
                        threshold = theta[j] + vth[j]
                    spike = vj > threshold
                    d = vth[j] - abs(vj - threshold)
                    psi = min((max(d, 0) * psi_mul[j]) >> psi_shift, psi_max)
                    if n_ref > 0 and ref[j] > 0:
                        spike = False
                        psi = 0
                    z[j] = 1 if spike else 0
                    v[j] = 0 if spike else vj
                    z_out[t, b, j] = z[j]
                    psi_out[t, b, j] = psi


    KERNELS = {f.__name__: _variants(f) for f in (_lif_family, _adjoint_block, _outer_events, _project_events,
                                                   _fixed_lif_family)}


def _kernel(name: str, parallel: bool):
    if parallel:
        _launch_threads()
    return KERNELS[name][0 if parallel else 1]


_threads_launched = False


def _launch_threads() -> None:
    """Start numba's thread pool without fixing multiprocessing's start method.

    numba's launch asks ``multiprocessing.get_start_method()``, which sets the
    process-wide default context as a side effect; Lava then fails at import
    with "context has already been set" (it calls set_start_method('fork')).
    So an engine run followed by a Lava run in one process (``eprop-lava run``,
    the benchmarks) would break. The launch happens once; if the start method
    was unset before, it is unset again afterwards."""
    global _threads_launched
    if _threads_launched:
        return
    import multiprocessing.context as mp_context

    from numba.np.ufunc import parallel as numba_parallel

    default = mp_context._default_context
    unset = getattr(default, "_actual_context", "unknown") is None
    numba_parallel._launch_threads()
    if unset:
        default._actual_context = None
    _threads_launched = True


def supports(model: Any, ops: Any) -> bool:
    """Whether :func:`run_lif_family` can replace the reference loop."""
    return (available() and getattr(ops, "fused", False) and not ops.autograd
            and getattr(model, "name", None) in FUSED_MODELS)


def run_lif_family(model: Any, const: Any, external: np.ndarray, w_rec_t: np.ndarray | None):
    """Forward pass of one LIF/ALIF population on its input current
    ``external`` (T, B, N) = W_in pre^t. Returns (z, records) exactly as the
    reference loop in :func:`eprop_lava.engine.network.run_population`."""
    T, B, N = external.shape
    dtype = external.dtype
    external = np.ascontiguousarray(external)
    beta = np.broadcast_to(np.asarray(getattr(const, "beta", 0.0), dtype=dtype), (N,)).copy()
    rho = np.broadcast_to(np.asarray(getattr(const, "rho", 0.0), dtype=dtype), (N,)).copy()
    rec = np.zeros((1, N), dtype) if w_rec_t is None else np.ascontiguousarray(w_rec_t, dtype=dtype)
    z = np.empty((T, B, N), dtype)
    x = np.empty((T, B, N), dtype)
    free = np.empty((T, B, N), np.bool_)
    psi = np.empty((T, B, N), dtype)
    _kernel("_lif_family", True)(external, rec, w_rec_t is not None, dtype.type(const.alpha),
                dtype.type(getattr(const, "input_gain", 1.0)), dtype.type(const.v_th),
                dtype.type(const.gamma), dtype.type(const.n_ref), const.reset == "subtract", beta, rho,
                dtype.type(1), dtype.type(0), z, x, free, psi)
    return z, dict(x=x, free=free, z=z, psi=psi)


# Elements (steps x batch x neurons) per block of the backward recursion:
# small enough that a block's Jacobians stay in cache.
ADJOINT_BLOCK_ELEMENTS = 1 << 16


def adjoint_block(lam: list, jac: list, mu: np.ndarray, out: np.ndarray) -> None:
    """One block of :func:`eprop_lava.eprop.traces.local_adjoint`'s backward
    recursion over the model's Jacobian entries for the block's steps (None,
    scalars, per-neuron or (S, B, N) arrays; hidden size d <= 2). ``mu``
    (2, B, N) holds mu^{t+1} of the step after the block and is updated in
    place; out (S, B, N) receives mu_v."""
    d = len(lam)
    if d > 2:
        raise ValueError(f"the compiled adjoint takes hidden sizes up to 2, got {d}")
    shape, dtype = out.shape, out.dtype
    zero = np.zeros((), dtype)

    def view(entry):
        return np.broadcast_to(zero if entry is None else np.asarray(entry, dtype=dtype), shape)

    lam = list(lam) + [None] * (2 - d)
    jac = [[jac[r][c] if r < d and c < d else None for c in range(2)] for r in range(2)]
    used = np.array([[jac[r][c] is not None for c in range(2)] for r in range(2)])
    _kernel("_adjoint_block", True)(view(lam[0]), view(lam[1]), view(jac[0][0]), view(jac[0][1]), view(jac[1][0]),
                   view(jac[1][1]), used, d, mu, out)


# Above this fraction of nonzero presynaptic values a dense GEMM is faster.
EVENT_DENSITY = 0.1


def sum_outer_events(delta: np.ndarray, pre: np.ndarray) -> np.ndarray | None:
    """sum over (t, b) of delta[t, b, j] pre[t, b, i] -> (J, I), visiting only
    the nonzero presynaptic values (spikes): the weight gradient of seed 002
    Eq. 2.37 costs (spikes x J) instead of (T B I J). None when pre is too
    dense for this to pay off."""
    d2 = np.ascontiguousarray(delta.reshape(-1, delta.shape[-1]))
    p2 = np.ascontiguousarray(pre.reshape(-1, pre.shape[-1]))
    if not _sparse(p2):
        return None
    chunks = max(1, min(numba.get_num_threads(), p2.shape[1]))
    dtype = np.result_type(d2, p2)
    # Rows split over threads is faster, but needs a private (I, J) sum per
    # thread: only while those copies are small next to the inputs.
    split_rows = chunks > 1 and chunks * p2.shape[1] * d2.shape[1] <= d2.size
    out = np.zeros((chunks if split_rows else 1, p2.shape[1], d2.shape[1]), dtype)
    _kernel("_outer_events", True)(d2, p2, chunks, split_rows, out)
    return (out.sum(0) if split_rows else out[0]).T


def _sparse(rows: np.ndarray) -> bool:
    sample = rows[:: max(1, rows.shape[0] // 2048)]  # the density of ~2,048 rows is enough to decide
    return np.count_nonzero(sample) <= EVENT_DENSITY * sample.size


def project_events(x: np.ndarray, w_t: np.ndarray, parallel: bool = True) -> np.ndarray | None:
    """x[..., i] w_t[i, j] visiting only the nonzero x (spikes): the synaptic
    input of a whole sequence at (spikes x J) cost; exact for integer arrays.
    None when x is too dense. parallel=False for callers in their own threads."""
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    if not _sparse(x2):
        return None
    out = np.empty((x2.shape[0], w_t.shape[1]), np.result_type(x2, w_t))
    _kernel("_project_events", parallel)(x2, np.ascontiguousarray(w_t), out)
    return out.reshape(*x.shape[:-1], w_t.shape[1])


FIXED_MODELS = ("lif", "alif")


def run_fixed_lif_family(p: Any, ext: np.ndarray, w_rec: np.ndarray | None, weight_exp: int):
    """Fixed-point inference of one LIF/ALIF layer over a whole sequence: the
    compiled form of :func:`eprop_lava.neurons.fixed.lif_step` /
    ``alif`` (Loihi arithmetic of :mod:`eprop_lava.fixed`: decay toward zero,
    int32 and one-sided 24-bit wraps, 24-bit saturation, graded psi) with the
    recurrent Dense (:func:`eprop_lava.engine.fixed_engine.dense_output`)
    event-driven. ``ext`` (T, B, N) is this layer's input Dense output that
    arrives at step t. Returns (z int8, psi int32), (T, B, N) each; bit for
    bit the step-by-step engine's (tests/test_fused.py)."""
    from eprop_lava.fixed import DECAY_UNITY

    T, B, N = ext.shape
    vec = lambda a: np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.int64), (N,)))  # noqa: E731
    mul, shift = p.psi_scale
    z = np.empty((T, B, N), np.int8)
    psi = np.empty((T, B, N), np.int32)
    if w_rec is None:
        rec = np.zeros((1, N), np.int32)
    else:
        w_rec = np.asarray(w_rec, np.int64)
        # int32 sums (twice the SIMD width) when no partial sum can overflow them
        small = int(np.abs(w_rec).max(initial=0)) * N < (1 << 31)
        rec = np.ascontiguousarray(w_rec.T.astype(np.int32 if small else np.int64))
    if ext.dtype not in (np.int32, np.int64):
        ext = ext.astype(np.int64)
    _kernel("_fixed_lif_family", True)(np.ascontiguousarray(ext), rec, w_rec is not None, int(weight_exp),
                      vec(DECAY_UNITY - (np.asarray(p.du) + 1)), bool(p.u_memoryless), vec(DECAY_UNITY - p.dv),
                      vec(p.bias), vec(p.vth_scaled), int(p.n_ref), p.kind == "alif",
                      vec(DECAY_UNITY - p.d_theta), vec(p.theta_step), vec(mul), int(shift), int(p.psi_max), z, psi)
    return z, psi
