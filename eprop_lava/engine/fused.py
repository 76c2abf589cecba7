"""Compiled time loops for the numpy backend (numba): the fast CPU path.

The reference engine calls the neuron step functions once per time step, so a
2,250-step sequence of a 100-neuron layer costs thousands of small numpy calls
whose dispatch, not arithmetic, sets the time (docs/benchmarks.md). These loops
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
* :func:`traced_adjoint_gradients`: e-prop's per-neuron backward recursion
  (:func:`eprop_lava.eprop.traces.local_adjoint`) for any neuron model, with
  the model's ``transition_jacobian`` and ``spike_jacobian`` traced once on
  symbolic records into the loop's expressions (so no model's equations are
  repeated here and no (T, B, N) array of a Jacobian exists), the learning
  signal formed per step and, for spike inputs, the weight gradients summed
  in the same loop. :func:`adjoint_block` is the same recursion over Jacobian
  entries evaluated as arrays, for Jacobians that cannot be traced.
* :func:`readout_backward`: the loss, dE/dy, the reverse readout filter and
  the readout gradients in one sweep backward over time.
* the fixed-point loops (inference and online e-prop learning of all four
  neuron types): they call the elementwise kernels of :mod:`eprop_lava.fixed`
  and :mod:`eprop_lava.neurons.fixed`, compiled by :func:`compiled` from the
  very functions the step engine and the Lava models run in numpy.

Without numba (e.g. a GPU machine without it), or with
``EPROP_LAVA_FUSED=0``, the engine runs the reference loops unchanged.
"""

from __future__ import annotations

import os
import sys
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

    def _lif_family(external, w_rec_t, has_rec, alpha, gain, v_th, reset_amount, gamma, n_ref, subtract, beta, rho,
                    one, zero, z_out, x_out, free_out, psi_out, keep_events, event_end, event_index,
                    event_value, chunks):  # pragma: no cover - compiled
        # one, zero: constants of the array's dtype, so float32 arithmetic stays
        # float32 as in numpy (a float64 literal would promote it).
        # keep_events: the spikes of each step are also written as an event list
        # (EventRows) - the list the recurrent input is summed from anyway, kept
        # for the backward pass.
        # Thread ch takes the samples of chunk ch and sweeps time outermost: each step
        # reads and writes one contiguous (samples x N) slab of every array (measured
        # 1.5x faster than one sample's whole sequence at a time, as in the adjoint).
        T, B, N = external.shape
        for ch in prange(chunks):
            b0 = ch * B // chunks
            b1 = (ch + 1) * B // chunks
            Bc = b1 - b0
            v = np.zeros((Bc, N), external.dtype)
            a = np.zeros((Bc, N), external.dtype)
            z = np.zeros((Bc, N), external.dtype)
            ref = np.zeros((Bc, N), external.dtype)
            current = np.empty(N, external.dtype)
            rec = np.zeros(N, external.dtype)
            spiked = np.empty((Bc, N), np.int64)  # per sample, the neurons that spiked at the previous step
            n_spiked = np.zeros(Bc, np.int64)
            pos = np.zeros(Bc, np.int64)
            for t in range(T):
                for bb in range(Bc):
                    b = b0 + bb
                    for j in range(N):
                        current[j] = external[t, b, j]
                    if has_rec:
                        # rec = z^{t-1} W_rec^T as the sum of the rows of W_rec^T whose neuron
                        # spiked, in increasing neuron order (as _recurrent_events)
                        rec[:] = 0
                        for q in range(n_spiked[bb]):
                            i = spiked[bb, q]
                            for j in range(N):
                                rec[j] += w_rec_t[i, j]
                        for j in range(N):
                            current[j] = current[j] + rec[j]
                    for j in range(N):
                        z_prev = z[bb, j]
                        if subtract:
                            v[bb, j] = alpha * v[bb, j] + gain * current[j] - reset_amount * z_prev
                        else:
                            v[bb, j] = alpha * v[bb, j] * (one - z_prev) + gain * current[j]
                        a[bb, j] = rho[j] * a[bb, j] + z_prev
                        if z_prev > zero:
                            ref[bb, j] = n_ref
                        else:
                            ref[bb, j] = max(ref[bb, j] - one, zero)
                        free = ref[bb, j] <= zero
                        x = v[bb, j] - (v_th + beta[j] * a[bb, j])
                        z[bb, j] = one if (x >= zero and free) else zero
                        z_out[t, b, j] = z[bb, j]
                        x_out[t, b, j] = x
                        free_out[t, b, j] = free
                        psi_out[t, b, j] = gamma * max(one - abs(x) / v_th, zero) if free else zero
                    n = 0
                    for j in range(N):
                        if z[bb, j] != zero:
                            spiked[bb, n] = j
                            n += 1
                    n_spiked[bb] = n
                    if keep_events:
                        p = pos[bb]
                        for q in range(n):
                            event_index[b, p + q] = spiked[bb, q]
                            event_value[b, p + q] = one
                        pos[bb] = p + n
                        event_end[t, b] = pos[bb]

    def _adjoint_block(direct, ybar, feedback, rate, gain, d0, d1, has_d, j00, j01, j10, j11, used, d, mu,
                       out):  # pragma: no cover - compiled
        # mu_c^t = lam_c^t + sum_r mu_r^{t+1} J_rc^t for hidden size d <= 2, for
        # the block's steps from last to first; mu (2, B, N) carries mu^{t+1}
        # in and leaves with the block's first mu. Inputs may be zero-strided.
        # lam_c^t = g L^t D_c^t with the learning signal L formed here, not stored:
        # direct: L = ybar (S, B, N) given; else L_j = sum_k B_jk ybar_k + rate_j
        # (learning_signal.learning_signal plus the rate signal), ybar (S, B, K).
        S, B, N = out.shape
        K = ybar.shape[2]
        for b in prange(B):
            for t in range(S - 1, -1, -1):
                for j in range(N):
                    if direct:
                        sig = ybar[t, b, j]
                    else:
                        sig = ybar[t, b, 0] * feedback[j, 0]
                        for k in range(1, K):
                            sig = sig + ybar[t, b, k] * feedback[j, k]
                        sig = sig + rate[b, j]
                    sig = sig * gain
                    m0 = mu[0, b, j]
                    m1 = mu[1, b, j]
                    new0 = sig * d0[t, b, j] if has_d[0] else sig * 0
                    if used[0, 0]:
                        new0 = new0 + m0 * j00[t, b, j]
                    if d > 1:
                        if used[1, 0]:
                            new0 = new0 + m1 * j10[t, b, j]
                        new1 = sig * d1[t, b, j] if has_d[1] else sig * 0
                        if used[0, 1]:
                            new1 = new1 + m0 * j01[t, b, j]
                        if used[1, 1]:
                            new1 = new1 + m1 * j11[t, b, j]
                        mu[1, b, j] = new1
                    mu[0, b, j] = new0
                    out[t, b, j] = new0


    def _readout_backward(y, target, mask, readout_in, cross_entropy, kappa, gain, scale, shift, chunks, weights,
                          dense, ybar_out, loss_out, grad_w, grad_b):  # pragma: no cover - compiled
        # The readout's backward pass, one sweep from the last step to the first
        # (chunk c of the samples per thread, time outermost, private sums): at a masked
        # step the error e^t = m^t (softmax(y^t) - target^t) (cross entropy) or
        # m^t (y^t - target^t) (MSE) and the loss term; Ybar^t = scale e^t + kappa Ybar^{t+1};
        # g Ybar^t goes to ybar_out[t - shift] and into sum_t g Ybar^t (bias) and
        # sum_t g Ybar^t readout_in^t: dense (vectorized over the inputs, for few outputs)
        # or over the nonzero (spike) inputs only. float64 sums.
        T, B, K = y.shape
        N = readout_in.shape[2]
        for c in prange(chunks):
            ci = np.int64(c)
            b0, b1 = ci * B // chunks, (ci + 1) * B // chunks
            acc = np.zeros((b1 - b0, K), np.float64)
            err = np.zeros(K, np.float64)
            gy = np.zeros(K, np.float64)
            loss = 0.0
            if shift:
                for b in range(b0, b1):
                    for k in range(K):
                        ybar_out[T - 1, b, k] = 0
            for t in range(T - 1, -1, -1):
                for b in range(b0, b1):
                    m = np.float64(mask[t, b])
                    if m != 0:
                        if cross_entropy:
                            top = np.float64(y[t, b, 0])
                            for k in range(1, K):
                                top = max(top, np.float64(y[t, b, k]))
                            total = 0.0
                            for k in range(K):
                                total += np.exp(np.float64(y[t, b, k]) - top)
                            lse = top + np.log(total)
                            for k in range(K):
                                log_p = np.float64(y[t, b, k]) - lse
                                loss -= m * np.float64(target[t, b, k]) * log_p
                                err[k] = m * (np.exp(log_p) - np.float64(target[t, b, k]))
                        else:
                            for k in range(K):
                                diff = np.float64(y[t, b, k]) - np.float64(target[t, b, k])
                                loss += 0.5 * m * diff * diff
                                err[k] = m * diff
                        for k in range(K):
                            acc[b - b0, k] = scale * err[k] + kappa * acc[b - b0, k]
                    else:
                        for k in range(K):
                            acc[b - b0, k] = kappa * acc[b - b0, k]
                    for k in range(K):
                        gy[k] = gain * acc[b - b0, k]
                        grad_b[c, k] += gy[k]
                        if t >= shift:
                            ybar_out[t - shift, b, k] = gy[k]
                    if not weights:  # the readout gradient is summed elsewhere (traced_adjoint_gradients)
                        continue
                    if dense:
                        for k in range(K):
                            g_k = gy[k]
                            for i in range(N):
                                grad_w[c, k, i] += g_k * readout_in[t, b, i]
                    else:
                        for i in range(N):
                            p = np.float64(readout_in[t, b, i])
                            if p != 0:
                                for k in range(K):
                                    grad_w[c, k, i] += gy[k] * p
            loss_out[c] = scale * loss

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


    def _project_events(x, bits, w_t, out, keep_events, event_end, event_index, event_value,
                        chunks):  # pragma: no cover - compiled
        # out[t, b, j] = sum_i x[t, b, i] w_t[i, j] over the nonzero x[t, b, i] (plain rows
        # come as (1, rows, I)); keep_events: the nonzero values are also written as an
        # event list (EventRows). bits: x's memory as integers: one vectorized OR of a row
        # tells whether it holds any event (most rows of sparse spikes do not), so only
        # those rows are searched value by value. Thread ch takes the samples of chunk ch,
        # time outermost: contiguous (samples x J) slabs of out
        T, B, I = x.shape
        J = w_t.shape[1]
        for ch in prange(chunks):
            b0 = ch * B // chunks
            b1 = (ch + 1) * B // chunks
            pos = np.zeros(b1 - b0, np.int64)
            for t in range(T):
                for b in range(b0, b1):
                    for j in range(J):
                        out[t, b, j] = 0
                    row_bits = 0
                    for i in range(I):
                        row_bits |= bits[t, b, i]
                    n = pos[b - b0]
                    for i in range(I if row_bits != 0 else 0):
                        p = x[t, b, i]
                        if p != 0:
                            for j in range(J):
                                out[t, b, j] += p * w_t[i, j]
                            if keep_events:
                                event_index[b, n] = i
                                event_value[b, n] = p
                                n += 1
                    if keep_events:
                        pos[b - b0] = n
                        event_end[t, b] = n

    def _project_listed(end, index, value, w_t, col0, reverse, shift, out):  # pragma: no cover - compiled
        # out[t', b, j] += value w_t[col0 + index, j] over the events of an EventRows, with
        # t' = t + shift in real time (t' = T - 1 - t + shift for a population run backwards)
        T, B = end.shape
        J = w_t.shape[1]
        for b in prange(B):
            for t in range(T):
                tt = (T - 1 - t if reverse else t) + shift
                if tt < T:
                    for q in range(end[t - 1, b] if t > 0 else 0, end[t, b]):
                        i = index[b, q] + col0
                        p = value[b, q]
                        for j in range(J):
                            out[tt, b, j] += p * w_t[i, j]

    def _project_few(x, w, out):  # pragma: no cover - compiled
        # out[r, j] = sum_i x[r, i] w[j, i] for few outputs j: one dot product per output over
        # every input (a vectorized loop; testing each input for a spike costs more)
        R, I = x.shape
        J = w.shape[0]
        for r in prange(R):
            for j in range(J):
                out[r, j] = 0
                total = out[r, j]  # a zero of out's type
                for i in range(I):
                    total += x[r, i] * w[j, i]
                out[r, j] = total

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
    def _integer_events(s, w_t, total, idx):  # pragma: no cover - compiled
        # total = s W^T for integer spikes s and integer W^T (w_t), as the sum of the rows of
        # W^T whose input spiked, eight (then four) rows per pass over total: one read and write
        # of total per eight spikes instead of one. The spikes are first listed without a branch
        # (a branch per input mispredicts at the firing rates of a recurrent layer). Integers:
        # any order of the sum gives the same value (the caller's dtype holds every partial sum).
        n = 0
        for i in range(s.shape[0]):
            idx[n] = i
            n += 1 if s[i] != 0 else 0
        total[:] = 0
        k = 0
        while k + 8 <= n:
            a, b, c, d = idx[k], idx[k + 1], idx[k + 2], idx[k + 3]
            e, f, g, h = idx[k + 4], idx[k + 5], idx[k + 6], idx[k + 7]
            for j in range(total.shape[0]):
                total[j] += (((w_t[a, j] + w_t[b, j]) + (w_t[c, j] + w_t[d, j]))
                             + ((w_t[e, j] + w_t[f, j]) + (w_t[g, j] + w_t[h, j])))
            k += 8
        if k + 4 <= n:
            a, b, c, d = idx[k], idx[k + 1], idx[k + 2], idx[k + 3]
            for j in range(total.shape[0]):
                total[j] += (w_t[a, j] + w_t[b, j]) + (w_t[c, j] + w_t[d, j])
            k += 4
        while k < n:
            a = idx[k]
            for j in range(total.shape[0]):
                total[j] += w_t[a, j]
            k += 1

    KERNELS = {f.__name__: _variants(f) for f in (_lif_family, _adjoint_block, _readout_backward, _outer_events,
                                                   _project_events, _project_listed,
                                                   _project_few)}


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


def thread_count() -> int:
    """numba's thread count, its pool started by :func:`_launch_threads`
    first: ``numba.get_num_threads()`` starts the pool itself when it is not
    running, and so would set multiprocessing's start method."""
    _launch_threads()
    return numba.get_num_threads()


def supports(model: Any, ops: Any) -> bool:
    """Whether :func:`run_lif_family` can replace the reference loop."""
    return (available() and getattr(ops, "fused", False) and not ops.autograd
            and getattr(model, "name", None) in FUSED_MODELS)


def run_lif_family(model: Any, const: Any, external: np.ndarray, w_rec_t: np.ndarray | None,
                   events: bool = False):
    """Forward pass of one LIF/ALIF population on its input current
    ``external`` (T, B, N) = W_in pre^t. Returns (z, records) exactly as the
    reference loop in :func:`eprop_lava.engine.network.run_population`;
    events=True: (z, records, :class:`EventRows` of z)."""
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
    rows = EventRows.empty((T, B, N), dtype) if events else None
    _kernel("_lif_family", True)(external, rec, w_rec_t is not None, dtype.type(const.alpha),
                dtype.type(getattr(const, "input_gain", 1.0)), dtype.type(const.v_th),
                dtype.type(getattr(const, "reset_amount", const.v_th)), dtype.type(const.gamma), dtype.type(const.n_ref), const.reset == "subtract", beta, rho,
                dtype.type(1), dtype.type(0), z, x, free, psi, events,
                *(EventRows.none(dtype) if rows is None else rows.arrays()), _chunks(B))
    return (z, dict(x=x, free=free, z=z, psi=psi)) + ((rows,) if events else ())


# Elements (steps x batch x neurons) per block of the backward recursion. Each
# block is one parallel region, and on a machine shared by more runnable
# threads than cores each region's start waits for a time slice (measured:
# ~20 ms per region at load 12 on 2 cores, against 0.04 ms of work at 20 steps
# x 32 x 100): so few, large blocks (4 MB per float32 Jacobian entry), which
# still keep the block's Jacobians, not (T, B, N) arrays of them.
ADJOINT_BLOCK_ELEMENTS = 1 << 20


def adjoint_block(signal: Any, dz_dh: list, jac: list, mu: np.ndarray, out: np.ndarray, gain: float = 1.0) -> None:
    """One block of :func:`eprop_lava.eprop.traces.local_adjoint`'s backward
    recursion over the model's spike Jacobians dz/dh_c and transition Jacobian
    entries for the block's steps (None, scalars, per-neuron or (S, B, N)
    arrays; hidden size d <= 2): lam_c^t = gain L^t dz^t/dh_c^t. ``signal`` is
    the learning signal L of the block (S, B, N), or a tuple (ybar (S, B, K),
    feedback B (N, K), rate (N,) or (B, N) or None) from which the loop forms
    L^t = ybar^t B^T + rate per step (:func:`eprop_lava.eprop.learning_signal.learning_signal`;
    no (S, B, N) array of it is made). ``mu`` (2, B, N) holds mu^{t+1} of the
    step after the block and is updated in place; out (S, B, N) receives mu_v."""
    d = len(dz_dh)
    if d > 2:
        raise ValueError(f"the compiled adjoint takes hidden sizes up to 2, got {d}")
    shape, dtype = out.shape, out.dtype
    zero = np.zeros((), dtype)

    def view(entry, like=shape):
        return np.broadcast_to(zero if entry is None else np.asarray(entry, dtype=dtype), like)

    if isinstance(signal, tuple):
        ybar, feedback, rate = signal
        direct = False
        ybar, feedback = np.ascontiguousarray(ybar, dtype), np.ascontiguousarray(feedback, dtype)
        rate = view(rate, shape[1:])
    else:
        direct, ybar, feedback, rate = True, np.asarray(signal, dtype), np.zeros((0, 0), dtype), view(None, shape[1:])
    dz_dh = list(dz_dh) + [None] * (2 - d)
    has_d = np.array([D is not None for D in dz_dh])
    jac = [[jac[r][c] if r < d and c < d else None for c in range(2)] for r in range(2)]
    used = np.array([[jac[r][c] is not None for c in range(2)] for r in range(2)])
    _kernel("_adjoint_block", True)(direct, ybar, feedback, rate, dtype.type(gain), view(dz_dh[0]), view(dz_dh[1]),
                                    has_d, view(jac[0][0]), view(jac[0][1]), view(jac[1][0]), view(jac[1][1]),
                                    used, d, mu, out)


class _Term:
    """A symbolic value at one (step, sample, neuron) while a model's Jacobian
    functions are traced: arithmetic builds the source of the expression. Any
    other use (a comparison, ``if``, a numpy function) raises TypeError and the
    caller keeps the evaluated arrays instead."""

    __array_ufunc__ = None  # numpy defers to the reflected operators (or fails) instead of wrapping

    def __init__(self, src: str):
        self.src = src

    @staticmethod
    def _src(other: Any) -> str:
        if isinstance(other, _Term):
            return other.src
        if isinstance(other, (bool, int, float, np.integer, np.floating)) and not isinstance(other, np.bool_):
            return repr(float(other))
        raise TypeError(f"cannot trace {type(other).__name__}")

    def _op(self, op: str, other: Any, reflected: bool = False) -> "_Term":
        a, b = self.src, self._src(other)
        return _Term(f"({b} {op} {a})" if reflected else f"({a} {op} {b})")

    def __add__(self, o): return self._op("+", o)
    def __radd__(self, o): return self._op("+", o, True)
    def __sub__(self, o): return self._op("-", o)
    def __rsub__(self, o): return self._op("-", o, True)
    def __mul__(self, o): return self._op("*", o)
    def __rmul__(self, o): return self._op("*", o, True)
    def __truediv__(self, o): return self._op("/", o)
    def __rtruediv__(self, o): return self._op("/", o, True)
    def __neg__(self): return _Term(f"(-{self.src})")

    def __bool__(self):
        raise TypeError("a traced value has no truth value")


class _TracedRecords(dict):
    """record[key] -> the term ``r{i}[t, b, j]``; the keys used, in order."""

    def __init__(self, records: dict):
        super().__init__()
        self.records, self.used = records, []

    def __getitem__(self, key):
        if key not in self.records:
            raise KeyError(key)
        if key not in self.used:
            self.used.append(key)
        return _Term(f"r{self.used.index(key)}[t, b, j]")


class _TracedConstants:
    """const.name -> the term ``c[i, j]`` for a numeric constant (scalar or per
    neuron), the value itself for anything else (strings such as ``reset``)."""

    def __init__(self, const: Any):
        self._const, self._used = const, []

    def __getattr__(self, name):
        value = getattr(self._const, name)
        if isinstance(value, (str, bool, np.bool_)) or value is None:
            return value
        if name not in self._used:
            self._used.append(name)
        return _Term(f"c[{self._used.index(name)}, j]")


def _trace(entry: Any) -> str | None:
    """Source of one Jacobian entry (None for a structural zero)."""
    if entry is None:
        return None
    return _Term._src(entry)


#: Up to this many readout outputs the adjoint's source writes the learning
#: signal's K terms out (one loop over the neurons instead of K + 1; measured
#: 1 ms of the 8.5 ms backward loop at K = 2).
INLINE_OUTPUTS = 4


def _adjoint_source(dz_dh: list, jac: list, n_records: int, direct: bool, outputs: int = INLINE_OUTPUTS + 1) -> str:
    """The compiled recursion for traced Jacobians (see :func:`traced_adjoint_gradients`).
    Its switches are arguments (one compiled loop per model and signal form):
    fuse_in sums delta^t pre_in^t over the nonzero inputs (per thread, into
    g_in); fuse_rec / fuse_out sum, at each step's spikes z^t, delta^{t+1} z^t
    (g_rec) and ybar^t z^t (g_out, the readout gradient); without ``store``,
    out holds only the last two steps (out[t % 2]) and delta is not kept.
    ``outputs``: the readout's K, up to INLINE_OUTPUTS written into the source."""
    d = len(dz_dh)
    signal = "signal[j]"
    args = ", ".join(f"r{i}" for i in range(n_records))
    lines = [
        "def adjoint_traced(ybar, feedback_t, rate, gain, c, mu, out, chunks, pre_in, spikes, g_in, g_rec, g_out, "
        "fuse_in, fuse_rec, fuse_out, store, pre_listed, pre_end, pre_index, pre_value, spikes_listed, "
        "spike_end, spike_index, spike_value" + (", " + args if args else "") + "):",
        "    S, B, K = ybar.shape",
        "    N = out.shape[2]",
        # thread ch takes the samples of chunk ch and sweeps time outermost: each step
        # reads one contiguous (samples x N) slab (1.5x faster than a sample's whole sequence at a time)
        "    for ch in prange(chunks):",
        "        ci = np.int64(ch)",
        "        signal = np.empty(N, out.dtype)",
        "        for t in range(S - 1, -1, -1):",
        "            now = t if store else t % 2",
        "            after = t + 1 if store else (t + 1) % 2",
        "            for b in range(ci * B // chunks, (ci + 1) * B // chunks):",
    ]
    if direct:
        signal = "ybar[t, b, j]"
    elif outputs <= INLINE_OUTPUTS:  # L^t = ybar^t B^T + rate, the K terms written out in the loop over j
        lines += [f"                y{k} = ybar[t, b, {k}]" for k in range(outputs)]
        total = "rate[b, j]"
        for k in range(outputs):
            total = f"({total} + y{k} * feedback_t[{k}, j])"  # the order of the loop below
        signal = total
    else:  # L^t = ybar^t B^T + rate, one output k at a time (so the loops over j vectorize)
        lines += ["                for j in range(N):",
                  "                    signal[j] = rate[b, j]",
                  "                for k in range(K):",
                  "                    y_k = ybar[t, b, k]",
                  "                    for j in range(N):",
                  "                        signal[j] += y_k * feedback_t[k, j]"]
    lines += ["                for j in range(N):",
              f"                    sig = {signal} * gain"]
    lines += [f"                    m{r} = mu[{r}, b, j]" for r in range(d)]
    for col in range(d):
        terms = [f"sig * {dz_dh[col]}" if dz_dh[col] is not None else "sig * 0"]
        terms += [f"m{r} * {jac[r][col]}" for r in range(d) if jac[r][col] is not None]
        lines.append(f"                    new{col} = " + " + ".join(terms))
    lines += [f"                    mu[{col}, b, j] = new{col}" for col in range(d)]
    lines += ["                    out[now, b, j] = new0",
              # the row of delta is in cache: the weight gradient's events are added now
              # the events: from the forward pass's lists where it kept them
              # (pre_count[t, b] > -1), else found by looking at every value
              "                if fuse_in and pre_listed:",
              "                    for q in range(pre_end[t - 1, b] if t > 0 else 0, pre_end[t, b]):",
              "                        i = pre_index[b, q]",
              "                        p = pre_value[b, q]",
              "                        for j in range(N):",
              "                            g_in[ch, i, j] += p * out[now, b, j]",
              "                elif fuse_in:",
              "                    for i in range(pre_in.shape[2]):",
              "                        p = pre_in[t, b, i]",
              "                        if p != 0:",
              "                            for j in range(N):",
              "                                g_in[ch, i, j] += p * out[now, b, j]",
              # one pass over z^t serves both (delta^{t+1} is the step just done)
              "                if (fuse_rec or fuse_out) and spikes_listed:",
              "                    for q in range(spike_end[t - 1, b] if t > 0 else 0, spike_end[t, b]):",
              "                        i = spike_index[b, q]",
              "                        p = spike_value[b, q]",
              "                        if fuse_rec and t + 1 < S:",
              "                            for j in range(N):",
              "                                g_rec[ch, i, j] += p * out[after, b, j]",
              "                        if fuse_out:",
              "                            for k in range(K):",
              "                                g_out[ch, i, k] += p * ybar[t, b, k]",
              "                elif fuse_rec or fuse_out:",
              "                    for i in range(N):",
              "                        p = spikes[t, b, i]",
              "                        if p != 0:",
              "                            if fuse_rec and t + 1 < S:",
              "                                for j in range(N):",
              "                                    g_rec[ch, i, j] += p * out[after, b, j]",
              "                            if fuse_out:",
              "                                for k in range(K):",
              "                                    g_out[ch, i, k] += p * ybar[t, b, k]"]
    return "\n".join(lines) + "\n"


_TRACED_KERNELS: dict = {}


def _compile_source(source: str):
    """njit(parallel) of a generated loop. The source is written once to a
    file named by its digest (numba's on-disk cache needs a source file), so a
    later process loads the compiled loop instead of compiling it again."""
    import hashlib
    import importlib.util

    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    if digest in _TRACED_KERNELS:
        return _TRACED_KERNELS[digest]
    header = "import numpy as np\nfrom numba import njit, prange\n\n"
    footer = "\nadjoint_traced = njit(parallel=True, cache=True, error_model='numpy')(adjoint_traced)\n"
    text = header + source + footer
    folder = os.environ.get("EPROP_LAVA_KERNEL_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "eprop_lava", "kernels")
    path = os.path.join(folder, f"adjoint_{digest}.py")
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)  # atomic: concurrent processes see the whole file or none
        name = f"eprop_lava_adjoint_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # numba's cache finds the loop's module by this name
        spec.loader.exec_module(module)
        kernel = module.adjoint_traced
    except OSError:  # no writable cache folder: compile in memory (each process compiles once)
        namespace: dict = {"np": np, "prange": prange}
        exec(compile(source, f"<adjoint {digest}>", "exec"), namespace)
        kernel = njit(parallel=True, error_model="numpy")(namespace["adjoint_traced"])
    _TRACED_KERNELS[digest] = kernel
    return kernel


def traced_adjoint(model: Any, const: Any, records: dict, signal: Any, gain: float) -> np.ndarray | None:
    """delta (T, B, N) of :func:`traced_adjoint_gradients` (no weight gradients), or None."""
    out = traced_adjoint_gradients(model, const, records, signal, gain)
    return None if out is None else out[0]


def traced_adjoint_gradients(model: Any, const: Any, records: dict, signal: Any, gain: float,
                             pre_in: np.ndarray | None = None, spikes: np.ndarray | None = None,
                             recurrent: bool = False, readout: bool = False,
                             pre_events: "EventRows | None" = None, spike_events: "EventRows | None" = None):
    """e-prop's per-neuron backward recursion (:func:`eprop_lava.eprop.traces.local_adjoint`)
    over the whole sequence in one compiled loop that evaluates the model's
    Jacobians per element instead of reading (T, B, N) arrays of them.

    The model's own ``spike_jacobian`` and ``transition_jacobian`` are called
    once on symbolic records and constants: the arithmetic they do becomes the
    loop's expressions (e.g. ALIF's J_aa = rho - beta psi reads psi and two
    per-neuron constants), so no model's equations are written here. A model
    whose Jacobians need more than arithmetic (a comparison, a numpy function)
    returns None: the caller evaluates them as arrays (:func:`adjoint_block`).
    ``signal`` as in :func:`adjoint_block` (in the direct form a (T, B, N) signal, whose
    last axis the loop reads as ybar's); ``spikes`` the population's own
    z (T, B, N). Returns (delta (T, B, N) = g mu_v, sum_t delta^t (x) pre_in^t,
    sum_{t>=1} delta^t (x) z^{t-1} (with ``recurrent``), sum_t ybar^t (x) z^t
    (with ``readout``, for a signal given as factors)): the weight gradients
    (N, I) of seed 002 Eq. 2.37 and the readout gradient (K, N) of this
    population's columns (ybar as dE/dz^t sees it, so under either timing
    sum_t ybar^t z^t = g sum_t Ybar^t readout_in^t) summed in the same loop
    while each step's delta is in cache, over the nonzero (spike) values; None
    for one not asked for, from dense values, or whose per-thread sums would
    be large (the caller then forms it from delta). delta is None when every
    gradient asked for was summed in the loop (it is then never stored).
    ``pre_events`` / ``spike_events``: the :class:`EventRows` of pre_in / spikes
    kept by the forward pass, if any (the loop then reads each step's events
    instead of searching for them)."""
    traced_records, traced_const = _TracedRecords(records), _TracedConstants(const)
    try:
        dz_dh = [_trace(e) for e in model.spike_jacobian(traced_records, traced_const)]
        jac = [[_trace(e) for e in row] for row in model.transition_jacobian(traced_records, traced_const)]
    except TypeError:
        return None
    d = len(dz_dh)
    if len(jac) != d or any(len(row) != d for row in jac):
        return None
    if isinstance(signal, tuple):
        ybar, feedback, rate = signal
        (T, B, _), N = ybar.shape, feedback.shape[0]
        dtype = ybar.dtype
    else:
        T, B, N = signal.shape
        dtype = signal.dtype
    try:
        c = np.stack([np.broadcast_to(np.asarray(getattr(const, k), dtype=dtype), (N,)) for k in traced_const._used]) \
            if traced_const._used else np.zeros((1, N), dtype)
    except (TypeError, ValueError):  # a constant that is not one value per neuron
        return None
    arrays = []
    for key in traced_records.used:
        a = np.asarray(records[key])
        arrays.append(np.ascontiguousarray(a if a.dtype == dtype else a.astype(dtype)))
    zero = np.zeros((), dtype)
    if isinstance(signal, tuple):
        direct = False
        ybar, feedback = np.ascontiguousarray(ybar, dtype), np.ascontiguousarray(np.asarray(feedback, dtype).T)
        # a real (B, N) array: a zero-strided view would keep the loop from vectorizing
        rate = np.ascontiguousarray(np.broadcast_to(zero if rate is None else np.asarray(rate, dtype), (B, N)))
    else:
        direct, ybar, feedback, rate = True, np.asarray(signal, dtype), np.zeros((0, 0), dtype), np.zeros((1, 1), dtype)
    chunks = max(1, min(thread_count(), B))

    def fusable(pre, width, rows):
        # sparse (known from the forward pass's event list, else sampled), and the
        # per-thread (width x N) sums small next to delta itself
        if pre is None or chunks * width * N > T * B * N:
            return False
        if rows is not None and rows.end.shape == (T, B):
            return rows.density(np.shape(pre)[-1]) <= EVENT_DENSITY
        return _sparse(np.asarray(pre).reshape(-1, np.asarray(pre).shape[-1]))

    fuse_in = fusable(pre_in, 0 if pre_in is None else np.asarray(pre_in).shape[-1], pre_events)
    spikes_sparse = (recurrent or readout) and fusable(spikes, N if recurrent else 0, spike_events)
    fuse_rec = recurrent and spikes_sparse
    fuse_out = readout and not direct and spikes_sparse
    empty3 = np.zeros((1, 1, 1), dtype)
    pre_in_c = np.ascontiguousarray(pre_in, dtype) if fuse_in else empty3
    spikes_c = np.ascontiguousarray(spikes, dtype) if (fuse_rec or fuse_out) else empty3
    # the sums in the run's precision, as the reference's products (float32 sums: 1 ms less of 8.5)
    g_in = np.zeros((chunks, pre_in_c.shape[2], N), dtype) if fuse_in else np.zeros((1, 1, 1), dtype)
    g_rec = np.zeros((chunks, N, N), dtype) if fuse_rec else np.zeros((1, 1, 1), dtype)
    g_out = np.zeros((chunks, N, ybar.shape[2]), dtype) if fuse_out else np.zeros((1, 1, 1), dtype)
    # delta itself is needed only for a gradient left to the caller
    store = not (fuse_in and (fuse_rec or not recurrent) and (fuse_out or not readout))
    kernel = _compile_source(_adjoint_source(dz_dh, jac, len(arrays), direct, ybar.shape[2]))
    _launch_threads()
    out = np.empty((T if store else 2, B, N), dtype)
    mu = np.zeros((d, B, N), dtype)  # mu^T = 0
    def listed(rows, used):
        # the forward pass's event list of an array the loop reads (in its dtype), else none
        ok = used and rows is not None and rows.end.shape == (T, B) and rows.value.dtype == dtype
        return (True,) + rows.arrays() if ok else (False,) + EventRows.none(dtype)

    kernel(ybar, feedback, rate, dtype.type(gain), c, mu, out, chunks, pre_in_c, spikes_c, g_in, g_rec, g_out,
           bool(fuse_in), bool(fuse_rec), bool(fuse_out), bool(store), *listed(pre_events, fuse_in),
           *listed(spike_events, fuse_rec or fuse_out), *arrays)
    return (out if store else None, g_in.sum(0).T.astype(dtype) if fuse_in else None,
            g_rec.sum(0).T.astype(dtype) if fuse_rec else None,
            g_out.sum(0).T.astype(dtype) if fuse_out else None)


# Up to this many readout outputs the readout gradient adds every input (a
# vectorized loop: ~3x faster than testing each input for a spike at K = 2).
DENSE_READOUT_OUTPUTS = 4


def readout_backward(kind: str, y: np.ndarray, target: np.ndarray, mask: np.ndarray, readout_in: np.ndarray | None,
                     kappa: float, gain: float = 1.0, scale: float = 1.0, shift: int = 0):
    """The readout's side of the backward pass in one compiled sweep over time,
    the compiled form of :func:`eprop_lava.eprop.loss.task_loss_and_error`
    (cross-entropy, seed 002 Eqs. 2.31-2.32, or MSE, seed 001 Eq. 4.24, times
    ``scale``: :func:`~eprop_lava.eprop.loss.batch_scale`), the reverse readout
    filter and :func:`eprop_lava.engine.gradients.readout_gradients`:

        Ybar^t = dE/dy^t + kappa Ybar^{t+1},  dE/dW_out = g sum_t Ybar^t readout_in^t,  dE/db = g sum_t Ybar^t

    Returns (task loss, dE/dW_out (K, N), dE/db (K,), g Ybar (T, B, K) moved
    ``shift`` steps earlier: shift = 1 gives the Ybar^{t+1} that dE/dz^t sees
    under Loihi timing, zero at the last step). Only (T, B, K) and (K, N) arrays
    are made; the error itself is never stored. With readout_in None the
    readout weight gradient is left out (None). None for a loss it does not know."""
    if kind not in ("cross_entropy", "mse"):
        return None
    T, B, K = y.shape
    dtype = y.dtype
    chunks = max(1, min(thread_count(), B))
    ybar = np.empty((T, B, K), dtype)
    loss = np.zeros(chunks)
    weights = readout_in is not None
    grad_w = np.zeros((chunks, K, readout_in.shape[2] if weights else 0))
    grad_b = np.zeros((chunks, K))
    _kernel("_readout_backward", True)(np.ascontiguousarray(y), np.ascontiguousarray(target, dtype),
                                       np.ascontiguousarray(mask, dtype),
                                       np.ascontiguousarray(readout_in) if weights else np.zeros((1, 1, 1), dtype),
                                       kind == "cross_entropy", float(kappa), float(gain), float(scale), int(shift),
                                       chunks, weights, K <= DENSE_READOUT_OUTPUTS, ybar, loss, grad_w, grad_b)
    return (float(loss.sum()), grad_w.sum(0).astype(dtype) if weights else None, grad_b.sum(0).astype(dtype),
            ybar)


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
    chunks = max(1, min(thread_count(), p2.shape[1]))
    dtype = np.result_type(d2, p2)
    # Rows split over threads is faster, but needs a private (I, J) sum per
    # thread: only while those copies are small next to the inputs.
    split_rows = chunks > 1 and chunks * p2.shape[1] * d2.shape[1] <= d2.size
    out = np.zeros((chunks if split_rows else 1, p2.shape[1], d2.shape[1]), dtype)
    _kernel("_outer_events", True)(d2, p2, chunks, split_rows, out)
    return (out.sum(0) if split_rows else out[0]).T


def _untouched(shape: tuple, dtype: Any) -> np.ndarray:
    """np.empty whose memory becomes resident page by page as it is written:
    numpy advises the kernel to back large arrays with 2 MiB pages, so that the
    first event of a sample's list would make 2 MiB of it resident (measured:
    the whole capacity of a 5% dense list). Large arrays here are an anonymous
    map advised against huge pages instead (4 KiB pages)."""
    import mmap

    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size < (4 << 20) or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.empty(shape, dtype)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)  # private, as malloc's memory (copied on write after a fork)
    buffer.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buffer, dtype).reshape(shape)  # the array keeps the map (unmapped with it)


class EventRows:
    """The nonzero values of a (T, B, W) array as one event list per sample:
    sample b's events of step t are ``index[b, q]`` (position w, increasing)
    and ``value[b, q]`` for end[t - 1, b] <= q < end[t, b] (end[-1, b] = 0;
    end is time-major, as the loops that read it sweep the samples innermost).
    Written by the forward loops while they look for spikes anyway
    (:func:`run_lif_family`, :func:`project_events`), so the backward pass
    (:func:`traced_adjoint_gradients`) reads each step's few events instead of
    searching (T, B, W) values again. One compact list per sample (not a row
    of W slots per step): the backward pass reads it from cache, not memory."""

    def __init__(self, end: np.ndarray, index: np.ndarray, value: np.ndarray):
        self.end, self.index, self.value = end, index, value

    @classmethod
    def empty(cls, shape: tuple, dtype: Any) -> "EventRows":
        T, B, W = shape
        itype = np.int16 if W <= np.iinfo(np.int16).max else np.int32
        # room for every value; only the pages the events fill are ever touched
        return cls(np.empty((T, B), np.int64), _untouched((B, T * W), itype), _untouched((B, T * W), dtype))

    @staticmethod
    def none(dtype: Any) -> tuple:
        """Placeholder arrays for a loop that keeps no events."""
        return np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int16), np.zeros((1, 1), dtype)

    def arrays(self) -> tuple:
        return self.end, self.index, self.value

    def density(self, width: int) -> float:
        """The fraction of the (T, B, width) values that are events."""
        T, B = self.end.shape
        return float(self.end[-1].sum()) / max(1, T * B * width) if T else 0.0

    def counts(self, width: int) -> np.ndarray:
        """sum_t of the array (B, width): per sample, its values added up per
        position (integer counts of 0/1 spikes are exact in any float type)."""
        B = self.index.shape[0]
        out = np.empty((B, width), self.value.dtype)
        for b in range(B):
            n = int(self.end[-1, b]) if self.end.shape[0] else 0
            out[b] = np.bincount(self.index[b, :n], weights=self.value[b, :n], minlength=width)
        return out

    def dense(self, width: int) -> np.ndarray:
        """The (T, B, width) array these events describe (for tests)."""
        T, B = self.end.shape
        out = np.zeros((T, B, width), self.value.dtype)
        for b in range(B):
            for t in range(T):
                q0, q1 = (self.end[t - 1, b] if t else 0), self.end[t, b]
                out[t, b, self.index[b, q0:q1]] = self.value[b, q0:q1]
        return out


def project_listed(parts: list, w_t: np.ndarray, steps: int, batch: int, shift: int = 0) -> np.ndarray:
    """sum_i s[t, b, i] w_t[i, j] (T, B, J) from event lists instead of the
    array s: ``parts`` lists (EventRows, first column of s, reversed) per
    block of s's columns, in column order (so each sum adds its terms in
    increasing i, as :func:`project_events` does); reversed: the events are
    in reversed time. shift = 1 delays by one step (out[t] sees s[t - 1])."""
    dtype = np.result_type(w_t, *(rows.value for rows, _, _ in parts))
    out = np.zeros((steps, batch, w_t.shape[1]), dtype)
    w_t = np.ascontiguousarray(w_t, dtype)
    for rows, col0, reverse in parts:
        _kernel("_project_listed", True)(*rows.arrays(), w_t, int(col0), bool(reverse), int(shift), out)
    return out


def _chunks(samples: int, parallel: bool = True) -> int:
    """Tasks of a loop that sweeps time outermost over chunks of samples: one per thread."""
    return max(1, min(thread_count() if parallel else 1, samples))


def _bits(a: np.ndarray) -> np.ndarray:
    """a's memory as integers of the same width: a value is not 0 exactly when
    its bits are not all 0, except -0.0 (its row is then searched for nothing)."""
    if a.dtype.kind in "iub":
        return a.view(np.int8) if a.dtype.kind == "b" else a
    return a.view({2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize])


def _sparse(rows: np.ndarray) -> bool:
    sample = rows[:: max(1, rows.shape[0] // 2048)]  # the density of ~2,048 rows is enough to decide
    return np.count_nonzero(sample) <= EVENT_DENSITY * sample.size


def project_events(x: np.ndarray, w_t: np.ndarray, parallel: bool = True, events: bool = False):
    """x[..., i] w_t[i, j] visiting only the nonzero x (spikes): the synaptic
    input of a whole sequence at (spikes x J) cost; exact for integer arrays.
    None when x is too dense. parallel=False for callers in their own threads.
    events=True: returns (product, :class:`EventRows` of x), the events found
    on the way, for the backward pass."""
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    if not _sparse(x2):
        return None
    dtype = np.result_type(x2, w_t)
    if events:  # samples (T, B, I): the event list is kept per sample
        x3 = np.ascontiguousarray(x)
        rows = EventRows.empty(x3.shape, x3.dtype)
        out = np.empty(x3.shape[:2] + (w_t.shape[1],), dtype)
        _kernel("_project_events", parallel)(x3, _bits(x3), np.ascontiguousarray(w_t), out, True, *rows.arrays(),
                                             _chunks(x3.shape[1], parallel))
        return out, rows
    out = np.empty((1, x2.shape[0], w_t.shape[1]), dtype)
    _kernel("_project_events", parallel)(x2[None], _bits(x2[None]), np.ascontiguousarray(w_t), out, False,
                                         *EventRows.none(x2.dtype), _chunks(x2.shape[0], parallel))
    return out.reshape(*x.shape[:-1], w_t.shape[1])


#: products of up to this many rows run compiled whatever the input's density:
#: a BLAS call this small costs less than waking its threads (measured: the
#: (64 x 100) recurrent Dense at a block's end took 0.02 ms alone, 4 ms
#: right after a parallel compiled loop)
SMALL_PRODUCT_ROWS = 4096


def project_integers(x: np.ndarray, w: np.ndarray, parallel: bool = True) -> np.ndarray | None:
    """x[..., i] w[j, i] of integer-valued arrays (w (J, I)), exact, in
    compiled loops: for up to :data:`DENSE_READOUT_OUTPUTS` outputs one dot
    product per output, otherwise over the nonzero x only (events). The
    sums run in numpy's result type of x and w (int32 for spikes and int32
    weights: the caller proves they fit). None for a large dense x with many
    outputs (BLAS is faster there)."""
    I = x.shape[-1]
    x2 = np.ascontiguousarray(x.reshape(-1, I))
    J = w.shape[0]
    out = np.empty((x2.shape[0], J), np.result_type(x2, w))
    if J <= DENSE_READOUT_OUTPUTS:
        _kernel("_project_few", parallel)(x2, np.ascontiguousarray(w), out)
    elif x2.shape[0] <= SMALL_PRODUCT_ROWS or _sparse(x2):
        _kernel("_project_events", parallel)(x2[None], _bits(x2[None]), np.ascontiguousarray(w.T), out[None], False,
                                             *EventRows.none(x2.dtype), _chunks(x2.shape[0], parallel))
    else:
        return None
    return out.reshape(*x.shape[:-1], J)


# ======================================================================= fixed point
# The fixed-point loops below run the elementwise kernels of eprop_lava.fixed and
# eprop_lava.neurons.fixed, compiled by :func:`compiled`: the loops hold no
# fixed-point equation of their own, only the iteration (batch, time, neurons,
# synapses), the recurrent events and the batch sum of the accumulator.
FIXED_MODELS = ("lif", "alif", "stdp_alif", "izhikevich")


def compiled(fn, narrow: int = 0):
    """The numba version of an elementwise kernel (``@kernel`` of
    :mod:`eprop_lava.fixed`): the same code object with its globals rebound,
    kernels it calls to their compiled versions and the primitives select /
    minimum / maximum to scalar ones, inlined into the caller.

    narrow: the lane width the rounding primitives k_clip / k_shift / k_decay
    are bound to. 0 (or False): as written, int64. 32 (or True): their
    32-bit-lane forms (:data:`_NARROW_PRIMITIVES`), so the kernel's arithmetic
    runs in int32 lanes (twice the int64 lanes per vector instruction); only
    for callers that proved every intermediate value fits in int32
    (:func:`eprop_lava.neurons.fixed.lif_synapse_fits_int32`). 16: their
    16-bit-lane forms (:data:`_NARROW16_PRIMITIVES`, k_decay for x >= 0 only),
    for callers that proved every intermediate fits in int16 and every decayed
    value is non-negative (:func:`eprop_lava.neurons.fixed.lif_synapse_fits_int16`).
    Then the integers are the same."""
    from eprop_lava import fixed as fixed_arith

    narrow = 32 if narrow is True else int(narrow)
    forms = {0: {}, 32: _NARROW_PRIMITIVES, 16: _NARROW16_PRIMITIVES}[narrow]
    key = (fn.__module__, fn.__qualname__, narrow)
    if key not in _COMPILED:
        glb = dict(fn.__globals__)
        for name in fn.__code__.co_names:  # the globals the kernel uses
            value = fn.__globals__.get(name)
            if name in _SCALAR_PRIMITIVES and value is getattr(fixed_arith, name, None):
                glb[name] = _SCALAR_PRIMITIVES[name]
            elif name in forms and value is getattr(fixed_arith, name, None):
                glb[name] = forms[name]
            elif value is not fn and getattr(value, fixed_arith.KERNEL_ATTR, False):
                glb[name] = compiled(value, narrow)
        clone = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
        _COMPILED[key] = njit(inline="always")(clone)
    return _COMPILED[key]


_COMPILED: dict = {}


def _source_tag() -> str:
    """A digest of the kernels' source: part of the compiled loops' names, so
    numba's on-disk cache (keyed by this file) never serves loops compiled
    from older kernels."""
    import hashlib
    import inspect

    from eprop_lava import fixed as fixed_arith
    from eprop_lava.neurons import fixed as fixed_neurons

    text = inspect.getsource(fixed_arith) + inspect.getsource(fixed_neurons)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _fixed_loop(fn, constants: dict | None = None):
    """A fixed-point loop compiled in parallel, cached under a name that carries
    the kernels' digest; the kernels are bound as globals of the clone, and so
    are ``constants`` (numba freezes globals: each set compiles its own
    specialization, with shifts and branches known to the compiler). The
    constant NARROW (if given: 32 or 16) binds the kernels in that lane
    width (:func:`compiled`); a name ``<primitive>_int32`` (e.g. k_clip_int32)
    binds that primitive's 32-bit-lane form whatever NARROW."""
    from eprop_lava import fixed as fixed_arith
    from eprop_lava.neurons import fixed as fixed_neurons

    constants = constants or {}
    narrow = int(constants.get("NARROW", 0))
    glb = dict(fn.__globals__)
    glb.update(constants)
    for name in fn.__code__.co_names:
        if name.endswith("_int32") and name[:-len("_int32")] in _NARROW_PRIMITIVES:
            glb[name] = _NARROW_PRIMITIVES[name[:-len("_int32")]]
            continue
        for mod in (fixed_arith, fixed_neurons):
            value = getattr(mod, name, None)
            if getattr(value, fixed_arith.KERNEL_ATTR, False):
                glb[name] = compiled(value, narrow)
            elif name.startswith(("FLAG_", "ROUND_")) and isinstance(value, int):  # flag bits, rounding codes
                glb[name] = value
        own = fn.__globals__.get(name)
        if glb.get(name) is own and getattr(own, fixed_arith.KERNEL_ATTR, False):
            glb[name] = compiled(own, narrow)  # a loop helper of this module (_layer_input)
    name = "_".join([fn.__name__, _source_tag()] + [f"{k.lower()}{int(v)}" for k, v in sorted(constants.items())])
    clone = types.FunctionType(fn.__code__, glb, name, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = name
    # the readout has K values per step: too little work to share out over threads; SERIAL: the
    # caller's choice for a small block (:data:`PARALLEL_MIN_ELEMENTS`)
    parallel = fn.__name__ not in SERIAL_LOOPS and not constants.get("SERIAL", False)
    return njit(parallel=parallel, cache=True, error_model="numpy")(clone)


SERIAL_LOOPS = ("_fixed_readout",)

#: Loops with less work than this many elements run on one thread: on the shared
#: 2-core machine a parallel region waits for a time slice whenever another process
#: holds a core (measured at load 2: the readout synapses of the benchmark's learning
#: run, 1.9 M elements, 0.9 ms on one thread and 8 ms over two; the learning signal
#: 1.1 ms and 6.8 ms), and on an idle machine two threads would save half a millisecond.
PARALLEL_MIN_ELEMENTS = 1 << 22


if numba is not None:
    import types

    _SCALAR_PRIMITIVES = {
        "select": njit(inline="always")(lambda cond, a, b: a if cond else b),
        "minimum": njit(inline="always")(lambda a, b: min(a, b)),
        "maximum": njit(inline="always")(lambda a, b: max(a, b)),
    }

    # The 32-bit-lane forms of fixed.py's rounding primitives: the same
    # operations with every result cast to int32, so LLVM keeps the whole
    # chain (the kernels' products and sums between primitives included) in
    # 32-bit lanes. Equal to k_clip / k_shift / k_decay whenever every true
    # intermediate value fits in int32 (tests/test_fused.py checks them against
    # the int64 forms over the whole range the callers prove).
    def _k_clip32(x, lo, hi):  # pragma: no cover - compiled
        # selects, not min / max: numba types the builtins' int32 results as int64
        x, lo, hi = np.int32(x), np.int32(lo), np.int32(hi)
        x = lo if x < lo else x
        return hi if x > hi else x

    def _k_shift32(x, shift, mode):  # pragma: no cover - compiled
        x = np.int32(x)
        if shift == 0:
            return x
        if mode == 0:
            return np.int32(np.int32(x + np.int32(np.int32(x >> 31) & np.int32((1 << shift) - 1))) >> shift)
        if mode == 1:
            return np.int32(x >> shift)
        return np.int32(np.int32(x + np.int32(1 << (shift - 1))) >> shift)

    def _k_decay32(x, factor):  # pragma: no cover - compiled
        y = np.int32(x * factor)
        return np.int32(np.int32(y + np.int32(np.int32(y >> 31) & np.int32(4095))) >> 12)

    _NARROW_PRIMITIVES = {"k_clip": njit(inline="always")(_k_clip32), "k_shift": njit(inline="always")(_k_shift32),
                          "k_decay": njit(inline="always")(_k_decay32)}

    # The 16-bit-lane forms: the same casts to int16, for the LIF synapse loop
    # (_fixed_lif_synapses). k_decay's int64 form multiplies x by f <= 4096,
    # a product of up to 28 bits; for 0 <= x <= 2047 the form below takes the
    # high half of the 16 x 16-bit product (16 x) f (one vpmulhw):
    #   ((16 x) f) >> 16 = floor(x f / 4096),
    # exact since both factors are non-negative and below 2^15 (f in [0, 4096];
    # f = 0 gives 0: a row whose post neuron spiked). For x >= 0 Loihi's
    # toward-zero decay is this floor. Only for the bounds of
    # neurons.fixed.lif_synapse_fits_int16 (there eps_v, ebar >= 0);
    # tests/test_fused.py checks the forms against the int64 ones over that
    # whole range. The clip drops its lower bound (x >= 0 >= lo there). Two
    # other exact forms of the decay ran slower: x - ceil(x (4096 - f) /
    # 4096) needs a select for f = 0, which LLVM compiled to a branch per
    # vector, and (x (f >> 6) + ((x (f & 63)) >> 6)) >> 6 costs six operations.
    def _k_clip16_nonnegative(x, lo, hi):  # pragma: no cover - compiled
        # x >= 0 >= lo: the lower bound never acts
        x, hi = np.int16(x), np.int16(hi)
        return hi if x > hi else x

    def _k_shift16(x, shift, mode):  # pragma: no cover - compiled
        x = np.int16(x)
        if shift == 0:
            return x
        if mode == 0:
            return np.int16(np.int16(x + np.int16(np.int16(x >> 15) & np.int16((1 << shift) - 1))) >> shift)
        if mode == 1:
            return np.int16(x >> shift)
        return np.int16(np.int16(x + np.int16(1 << (shift - 1))) >> shift)

    def _k_decay16_nonnegative(x, factor):  # pragma: no cover - compiled
        return np.int16((np.int32(np.int16(x << 4)) * np.int32(np.int16(factor))) >> 16)  # LLVM: vpmulhw

    _NARROW16_PRIMITIVES = {"k_clip": njit(inline="always")(_k_clip16_nonnegative),
                            "k_shift": njit(inline="always")(_k_shift16),
                            "k_decay": njit(inline="always")(_k_decay16_nonnegative)}

    def _layer_input(t, b, ext, pre, w_in_t, in_exp, in_first, has_rec, z_b, w_rec_t, weight_exp, rec_first,
                     total, rec, idx, a_in, wrapped):  # pragma: no cover - compiled
        # What a layer's neurons receive at step t of sample b, into a_in (N,): the input Dense
        # (ext[t, b] given, or with ext empty in_first at t = 0 and the rows of W_in^T whose input
        # spiked at t - 1), plus the recurrent Dense (rec_first at t = 0, then the rows of
        # W_rec^T of the neurons that spiked, z_b) wrapped to int32; wrapped[j]: that sum wrapped.
        # The one rendering of both layer loops' input (they differ only in the neuron kernel).
        N = a_in.shape[0]
        if ext.shape[0] != 0:
            for j in range(N):
                a_in[j] = ext[t, b, j]
        elif t == 0:
            for j in range(N):
                a_in[j] = in_first[b, j]
        else:  # the rows of W_in^T whose input spiked at t - 1
            _integer_events(pre[t, b], w_in_t, total, idx)
            for j in range(N):
                a_in[j] = k_dense_output(np.int64(total[j]), in_exp)
        if has_rec:
            if t > 0:
                _integer_events(z_b, w_rec_t, rec, idx)
            for j in range(N):
                r = rec_first[b, j] if t == 0 else k_dense_output(np.int64(rec[j]), weight_exp)
                a_sum = a_in[j] + r
                a_in[j] = k_wrap_int32(a_sum)
                wrapped[j] = a_in[j] != a_sum

    from eprop_lava.fixed import k_dense_output, k_wrap_int32, kernel  # noqa: E402 - what _layer_input calls

    _layer_input = kernel(_layer_input)  # compiled with the kernels it calls (fused.compiled)

    def _fixed_lif_family_layer(ext, pre, w_in_t, in_exp, in_first, w_rec_t, weight_exp, rec_first, du_f, dv_f,
                                bias, vth, n_ref, dth_f, theta_step, psi_mul, psi_shift, psi_max, u, v, theta, ref, z,
                                z_out, psi_out, end_out, counts):  # pragma: no cover - compiled
        # The input arriving at each step: ext (S, B, N) (the input Dense's output), or, with ext
        # empty, pre (S, B, I) spikes sent through W_in (w_in_t = W_in^T) at steps 1.., in_first
        # (B, N) the output arriving at the first step; rec_first (B, N): the recurrent Dense output
        # arriving at the first step (both sent before the previous update); u, v, theta, ref, z
        # (B, N): the state, updated in place. counts (B, 3): per sample, the neuron steps whose
        # flags had FLAG_V_SATURATED, FLAG_U_WRAPPED, FLAG_INT32_WRAPPED (or whose a_in sum
        # wrapped), added to. HAS_REC, REFRACTORY (n_ref > 0), ADAPTIVE, STDP, KEEP_END are
        # compile-time constants (_fixed_loop): the neuron's branches fold away.
        S, B, N = z_out.shape
        for b in prange(B):
            rec = np.zeros(N, w_rec_t.dtype)
            total = np.zeros(N, w_in_t.dtype)
            idx = np.empty(max(N, pre.shape[2]), np.int64)  # the spiking inputs of one step
            a_in = np.empty(N, np.int64)
            wrapped = np.zeros(N, np.bool_)
            # counted in locals, written once per sample (no shared cache lines between threads)
            n_sat, n_uwrap, n_i32 = 0, 0, 0
            for t in range(S):
                _layer_input(t, b, ext, pre, w_in_t, in_exp, in_first, HAS_REC, z[b], w_rec_t, weight_exp,
                             rec_first, total, rec, idx, a_in, wrapped)
                # rows as 1-D views (2-D indexing had kept the readout synapses' loop from vectorizing)
                u_b, v_b, th_b, ref_b, z_b = u[b], v[b], theta[b], ref[b], z[b]
                z_t, psi_t, end_t = z_out[t, b], psi_out[t, b], end_out[t, b] if KEEP_END else end_out[0, 0]
                for j in range(N):
                    zj, psij, uj, vj, thj, refj, endj, flags = k_lif_family(
                        a_in[j], u_b[j], v_b[j], th_b[j], ref_b[j], z_b[j], du_f[j], dv_f[j], bias[j],
                        vth[j], n_ref if REFRACTORY else 0, ADAPTIVE, STDP, dth_f[j], theta_step[j], psi_mul[j],
                        psi_shift, psi_max)
                    n_sat += flags & FLAG_V_SATURATED
                    n_uwrap += (flags & FLAG_U_WRAPPED) >> 1
                    n_i32 += 1 if (wrapped[j] or (flags & FLAG_INT32_WRAPPED) != 0) else 0
                    u_b[j] = uj
                    v_b[j] = vj
                    th_b[j] = thj
                    ref_b[j] = refj
                    z_b[j] = zj
                    z_t[j] = zj
                    psi_t[j] = psij
                    if KEEP_END:  # learning STDP-ALIF synapses need it; inference does not
                        end_t[j] = endj
            counts[b, 0] += n_sat
            counts[b, 1] += n_uwrap
            counts[b, 2] += n_i32

    def _fixed_izhikevich_layer(ext, pre, w_in_t, in_exp, in_first, w_rec_t, weight_exp, rec_first, v_frac, izh_a,
                                izh_ab, izh_c, izh_d, v_peak, psi_table, v, u, z, z_out, psi_out, jac_out,
                                counts):  # pragma: no cover - compiled
        # inputs as _fixed_lif_family_layer's; HAS_REC a compile-time constant
        S, B, N = z_out.shape
        for b in prange(B):
            rec = np.zeros(N, w_rec_t.dtype)
            total = np.zeros(N, w_in_t.dtype)
            idx = np.empty(max(N, pre.shape[2]), np.int64)  # the spiking inputs of one step
            a_in = np.empty(N, np.int64)
            wrapped = np.zeros(N, np.bool_)
            # counted in locals, written once per sample (no shared cache lines between threads)
            n_sat, n_i32 = 0, 0
            for t in range(S):
                _layer_input(t, b, ext, pre, w_in_t, in_exp, in_first, HAS_REC, z[b], w_rec_t, weight_exp,
                             rec_first, total, rec, idx, a_in, wrapped)
                if HAS_REC:
                    for j in range(N):
                        n_i32 += 1 if wrapped[j] else 0
                v_b, u_b, z_b = v[b], u[b], z[b]  # 1-D row views (as the LIF family's loop)
                z_t, psi_t, jac_t = z_out[t, b], psi_out[t, b], jac_out[t, b]
                for j in range(N):
                    zj, psij, jacj, vj, uj, flags = k_izhikevich(a_in[j], v_b[j], u_b[j], z_b[j], v_frac,
                                                                 izh_a[j], izh_ab[j], izh_c[j], izh_d[j], v_peak[j],
                                                                 psi_table)
                    n_sat += flags & FLAG_V_SATURATED
                    v_b[j] = vj
                    u_b[j] = uj
                    z_b[j] = zj
                    z_t[j] = zj
                    psi_t[j] = psij
                    jac_t[j] = jacj
            counts[b, 0] += n_sat
            counts[b, 2] += n_i32

    def _fixed_hidden_synapses(pre, z_rec, psi_rec, jac_rec, cut_rec, signal, eps_v, eps_2, ebar, acc, dv_f, dth_f,
                               bpsi_mul, izh_ab, izh_a, impulse, tmax, dk_f, tag_lo, tag_hi, acc_lo,
                               acc_hi, total_like):  # pragma: no cover - compiled
        # pre (S, B, I): spikes entering v^t; z_rec, psi_rec, jac_rec, cut_rec (S + 1, B, J): the
        # post records, row 0 the step before the block; signal (S, B, J); eps_v, eps_2, ebar
        # (B, J, I) and acc (J, I) updated in place. Post neurons are independent: one per task.
        # IZHIKEVICH, ADAPTIVE, RND, PRODUCT_SHIFT, PSI_BITS, BPSI_SHIFT are compile-time
        # constants of each compiled specialization (see _fixed_loop): branch-free inner loops.
        S, B, I = pre.shape
        J = acc.shape[0]
        for j in prange(J):
            total = np.zeros_like(total_like)  # int32 in the 32-bit-lane form
            for t in range(S):
                total[:] = 0
                for b in range(B):
                    sig = np.int64(signal[t, b, j])
                    psi = np.int64(psi_rec[t + 1, b, j])
                    keep = 1 - np.int64(z_rec[t, b, j])
                    jac = np.int64(jac_rec[t, b, j]) if IZHIKEVICH else np.int64(0)
                    cut = np.int64(cut_rec[t, b, j])
                    gain = bpsi_mul[j] * np.int64(psi_rec[t, b, j])
                    ev_row = eps_v[b, j]
                    e2_row = eps_2[b, j]
                    eb_row = ebar[b, j]
                    pre_row = pre[t, b]
                    for i in range(I):
                        imp = impulse * np.int64(pre_row[i])
                        if IZHIKEVICH:
                            ev, e2, e = k_eligibility_izhikevich(ev_row[i], e2_row[i], keep, jac, izh_ab[j], izh_a[j],
                                                                 imp, psi, tmax, PSI_BITS, RND)
                            e2_row[i] = e2
                        elif ADAPTIVE:
                            ev, e2, e = k_eligibility_lif_family(ev_row[i], e2_row[i], cut, dv_f[j], dth_f[j], gain,
                                                                 imp, psi, tmax, PSI_BITS, BPSI_SHIFT, RND, True)
                            e2_row[i] = e2
                        else:  # LIF: no threshold trace (eps_2 unused)
                            ev, e2, e = k_eligibility_lif_family(ev_row[i], 0, cut, dv_f[j], 0, 0, imp, psi, tmax,
                                                                 PSI_BITS, 0, RND, False)
                        eb, prod = k_trace_product(eb_row[i], e, sig, dk_f, tag_lo, tag_hi, PRODUCT_SHIFT, RND)
                        ev_row[i] = ev
                        eb_row[i] = eb
                        if sig != 0:  # invariant in i: LLVM splits the loop, and without L the product is dead
                            total[i] += prod
                for i in range(I):
                    acc[j, i] = k_clip(acc[j, i] + total[i], acc_lo, acc_hi)

    def _fixed_lif_synapses(pre, z_rec, psi_rec, signal, eps_v, ebar, acc, acc_2, dv_f, impulse, tmax, dk_f,
                            tag_lo, tag_hi, acc_lo, acc_hi):  # pragma: no cover - compiled
        # _fixed_hidden_synapses for LIF where neurons.fixed.lif_synapse_fits_int16 holds (NARROW = 16:
        # the kernels in 16-bit lanes). E_RND: e = (eps_v psi) >> psi_bits of non-negative values,
        # where toward zero is floor. The rows may hold two matrices of one layer side by side
        # (run_fixed_layer_synapses): pre (S, B, I), eps_v and ebar (J, B, I) with I >= I1 + I2
        # (padding; post neuron first: a post neuron's rows lie together, measured 5% faster than
        # (B, J, I)), the accumulators acc (J, I1) and acc_2 (J, I2; I2 = 0 for one matrix).
        # PRE_IMPULSE: pre holds the impulses impulse z (int8), else the 0/1 spikes z.
        S, B, I = pre.shape
        J, I1 = acc.shape
        # operands cast to int16 (exact: the fits rule bounds them), and the impulse truncated to int16:
        # numba types every integer operation as int64, and LLVM keeps a product in 16-bit lanes only
        # where it sees 16-bit operands
        impulse16, dk16 = np.int16(impulse), np.int16(dk_f)
        for j in prange(J):
            # SIGN_SPLIT: the products of rows with L > 0 go to pos, of rows with L < 0 to neg (the
            # row picks its sum: no per-synapse sign); otherwise all to pos
            pos = np.zeros(I, np.int32)
            neg = np.zeros(I, np.int32)
            dv16 = np.int16(dv_f[j])
            for t in range(S):
                pos[:] = 0
                neg[:] = 0
                for b in range(B):
                    sig = np.int16(signal[t, b, j])
                    # SIGN_SPLIT (toward-zero products): ebar >= 0 here, and rounding toward zero
                    # is odd, so (ebar L) >> s = sgn(L) ((ebar |L|) >> s) with the floor shift on
                    # a non-negative product (P_RND): the sign goes to the sum, not the rounding
                    factor = np.int16(-sig if SIGN_SPLIT and sig < 0 else sig)
                    total = neg if SIGN_SPLIT and sig < 0 else pos
                    cut = np.int16(z_rec[t, b, j])
                    psi = np.int16(psi_rec[t + 1, b, j])
                    ev_row = eps_v[j, b]
                    eb_row = ebar[j, b]
                    pre_row = pre[t, b]
                    for i in range(I):
                        imp = np.int16(pre_row[i]) if PRE_IMPULSE else np.int16(impulse16 * np.int16(pre_row[i]))
                        ev, _, e = k_eligibility_lif_family(ev_row[i], 0, cut, dv16, 0, 0, imp, psi, tmax,
                                                            PSI_BITS, 0, E_RND, False)
                        eb, prod = k_trace_product(eb_row[i], e, factor, dk16, tag_lo, tag_hi, PRODUCT_SHIFT, P_RND)
                        ev_row[i] = ev
                        eb_row[i] = eb
                        if sig != 0:  # invariant in i: without L the product is dead
                            total[i] += prod
                for i in range(I1):  # fits int32: lif_synapse_fits_int32
                    acc[j, i] = k_clip_int32(acc[j, i] + (pos[i] - neg[i]), acc_lo, acc_hi)
                for i in range(acc_2.shape[1]):
                    acc_2[j, i] = k_clip_int32(acc_2[j, i] + (pos[I1 + i] - neg[I1 + i]), acc_lo, acc_hi)

    def _fixed_readout_synapses(pre, err, zbar, acc, dk_f, impulse, tmax, acc_lo, acc_hi,
                                chunks):  # pragma: no cover - compiled
        # pre (S, B, I) = z^{t-1}; err (S, B, K); zbar (B, I) and acc (K, I) updated in place.
        # Thread c takes the presynaptic neurons of chunk c; every inner loop runs over them
        # (contiguous, vectorized), the batch sum of a step in total before acc's clip.
        # PRODUCT_SHIFT and RND are compile-time constants (_fixed_loop).
        # NARROW = 32 (readout_synapse_fits_int32): zbar, acc, err and the sums in 32-bit lanes
        S, B, I = pre.shape
        K = err.shape[2]
        vtype = np.int32 if NARROW == 32 else np.int64
        for c in prange(chunks):
            ci = np.int64(c)
            i0, i1 = ci * I // chunks, (ci + 1) * I // chunks
            n = i1 - i0
            total = np.zeros((K, n), vtype)
            for t in range(S):
                total[:] = 0
                for b in range(B):
                    z_row = zbar[b, i0:i1]
                    pre_row = pre[t, b, i0:i1]
                    if K_OUT:  # K_OUT outputs, a compile-time constant: one pass over the row
                        e_t = err[t, b]
                        for i in range(n):
                            z = k_presynaptic_trace(z_row[i], vtype(pre_row[i]), dk_f, impulse, tmax)
                            z_row[i] = z
                            for k in range(K_OUT):
                                total[k, i] += k_shift(vtype(e_t[k]) * z, PRODUCT_SHIFT, RND)
                        continue
                    for i in range(n):
                        z_row[i] = k_presynaptic_trace(z_row[i], vtype(pre_row[i]), dk_f, impulse, tmax)
                    for k in range(K):
                        e = vtype(err[t, b, k])
                        if e != 0:  # a zero error adds zero products in every rounding
                            t_row = total[k]
                            for i in range(n):
                                t_row[i] += k_shift(e * z_row[i], PRODUCT_SHIFT, RND)
                for k in range(K):
                    a_row = acc[k, i0:i1]
                    t_row = total[k]
                    for i in range(n):
                        a_row[i] = k_clip(a_row[i] + t_row[i], acc_lo, acc_hi)

    def _fixed_readout(a_out, y, dk_f, bias, y_out):  # pragma: no cover - compiled
        S, B, K = a_out.shape
        for b in range(B):
            for t in range(S):
                for k in range(K):
                    y[b, k] = k_readout(y[b, k], np.int64(a_out[t, b, k]), dk_f, bias[k])
                    y_out[t, b, k] = y[b, k]

    def _fixed_learning_signal(err, feedback_t, draws, lo, hi, chunks, out, counts):  # pragma: no cover - compiled
        # err (R, K): the rows (steps x samples) of the output error; feedback_t (K, N) = B^T;
        # draws (R, N) (read with ROUND_STOCHASTIC only); out (R, N) receives L; counts
        # (chunks, 3, N): per thread and neuron the FLAG_NONZERO, FLAG_UNDERFLOW and
        # FLAG_SATURATED values. SHIFT and MODE are compile-time constants (_fixed_loop).
        R, K = err.shape
        N = out.shape[1]
        for c in prange(chunks):
            ci = np.int64(c)
            # NARROW = 32 (the caller bounded every sum below 2^31): the sums and k_requantize in
            # 32-bit lanes, twice the int64 lanes per vector
            acc = np.empty(N, np.int32 if NARROW == 32 else np.int64)
            # counted in this task's own rows and added once (stores into the shared
            # counts array inside the loop kept it from vectorizing)
            # (in int32 lanes with NARROW = 32: a task counts at most R < 2^31 rows)
            ctype = np.int32 if NARROW == 32 else np.int64
            n_live, n_under, n_sat = np.zeros(N, ctype), np.zeros(N, ctype), np.zeros(N, ctype)
            for r in range(ci * R // chunks, (ci + 1) * R // chunks):
                e0 = np.int32(err[r, 0]) if NARROW == 32 else np.int64(err[r, 0])
                for j in range(N):
                    acc[j] = e0 * feedback_t[0, j]
                for k in range(1, K):
                    ek = np.int32(err[r, k]) if NARROW == 32 else np.int64(err[r, k])
                    for j in range(N):
                        acc[j] += ek * feedback_t[k, j]
                out_r = out[r]
                for j in range(N):
                    draw = draws[r, j] if MODE == ROUND_STOCHASTIC else np.int64(0)
                    if NARROW == 32:
                        value, flags = k_requantize(acc[j], np.int32(draw), SHIFT, MODE, np.int32(lo), np.int32(hi))
                    else:
                        value, flags = k_requantize(acc[j], draw, SHIFT, MODE, lo, hi)
                    out_r[j] = value
                    f = ctype(flags)
                    n_live[j] += f & ctype(FLAG_NONZERO)
                    n_under[j] += (f & ctype(FLAG_UNDERFLOW)) >> 1
                    n_sat[j] += (f & ctype(FLAG_SATURATED)) >> 2
            for j in range(N):
                counts[c, 0, j] += n_live[j]
                counts[c, 1, j] += n_under[j]
                counts[c, 2, j] += n_sat[j]

    @njit(parallel=True, cache=True)
    def _fill_spikes_int8(x, out):  # pragma: no cover - compiled
        # out = x as int8 for 0/1 spikes x (S, B, I) of any numeric type; returns how many
        # values were neither 0 nor 1 (NaN included): one pass instead of numpy's four
        S = x.shape[0]
        bad = np.zeros(S, np.int64)
        for t in prange(S):
            n = 0
            for b in range(x.shape[1]):
                row, o = x[t, b], out[t, b]
                for i in range(row.shape[0]):
                    v = row[i]
                    n += 0 if (v == 0 or v == 1) else 1
                    o[i] = np.int8(1 if v == 1 else 0)
            bad[t] = n
        return bad.sum()

    @njit(parallel=True, cache=True)
    def _fill_impulse_rows(first, second, scale, out):  # pragma: no cover - compiled
        # out[t, b] = scale (first[t, b], second[t, b], 0 ...): the rows of _impulse_rows
        S, B, W = out.shape
        n1, n2 = first.shape[2], second.shape[2]
        scale8 = np.int8(scale)
        for t in prange(S):
            for b in range(B):
                row = out[t, b]
                for i in range(n1):
                    row[i] = np.int8(first[t, b, i] * scale8)
                for i in range(n2):
                    row[n1 + i] = np.int8(second[t, b, i] * scale8)
                for i in range(n1 + n2, W):
                    row[i] = 0

    FIXED_LOOPS: dict = {}


def _fixed(name: str, **constants: Any):
    """A fixed-point loop (specialized on ``constants``), compiled on first use."""
    key = (name, tuple(sorted(constants.items())))
    if key not in FIXED_LOOPS:
        FIXED_LOOPS[key] = _fixed_loop(globals()[name], constants)
    _launch_threads()
    return FIXED_LOOPS[key]


def _rec_weights(w_rec: np.ndarray | None, n: int) -> np.ndarray:
    """W^T for the event-driven Dense sums (a spike of input i adds row i) in
    the narrowest of int16 / int32 / int64 that no partial sum can overflow
    (8-bit weights into up to 127 neurons: int16, twice int32's lanes); a
    (1, n) zero for no matrix."""
    if w_rec is None:
        return np.zeros((1, n), np.int32)
    from eprop_lava.fixed import narrowest_int

    w_rec = np.asarray(w_rec, np.int64)
    bound = int(np.abs(w_rec).max(initial=0)) * w_rec.shape[1]
    return np.ascontiguousarray(w_rec.T.astype(narrowest_int(-bound, bound, np.int16)))


def run_fixed_layer(p: Any, ext: np.ndarray | None, w_rec: np.ndarray | None, weight_exp: int, state: dict,
                    rec_first: np.ndarray | None = None, keep_records: bool = False, out: dict | None = None,
                    inputs: tuple | None = None) -> dict:
    """A block of steps of one fixed-point layer (any of the four types), the
    neurons stepped by :func:`eprop_lava.neurons.fixed.k_lif_family` /
    :func:`~eprop_lava.neurons.fixed.k_izhikevich` and the recurrent Dense
    (:func:`eprop_lava.engine.fixed_engine.dense_output`, each value
    :func:`~eprop_lava.fixed.k_dense_output`) event-driven.

    ext (S, B, N): the input Dense output arriving at each step, or None with
    ``inputs`` = (pre, w_in, in_exp, in_first): the input Dense inside the
    loop, event-driven as the recurrent one: pre (S, B, I) the spikes, row s
    arriving at step s through w_in (N, I) with exponent in_exp, except the
    first step's, in_first (B, N), sent before the block (with the weights
    before an update). state: the
    layer's state dict ((B, N) int64 arrays, :func:`~eprop_lava.neurons.fixed.initial_state`),
    updated in place; rec_first (B, N): the recurrent Dense output arriving at
    the block's first step (default zero: the start of a sample). Returns the
    records (S, B, N): z (int8), psi (int32), jac (Izhikevich, int64) and,
    with keep_records, end (STDP-ALIF, int8: what its synapses need), and
    ``counts`` (3,): the neuron steps in which v saturated, u wrapped at 24
    bits, and an int32 wrap happened on the way into u (the a_in sum or the
    kernel's u sum; :data:`~eprop_lava.neurons.fixed.FLAG_V_SATURATED` etc.).
    out: optional C-contiguous (S, B, N) arrays ``z``, ``psi`` (any signed
    integer type holding psi) and ``jac`` (Izhikevich) the records are written
    into, e.g. views of a caller's (T, B, N) buffers.
    Bit for bit the step engine's (tests/test_fused.py)."""
    if inputs is None:
        S, B, N = ext.shape
        if ext.dtype not in (np.int32, np.int64):
            ext = ext.astype(np.int64)
        ext = np.ascontiguousarray(ext)
        pre, w_in_t, in_exp, in_first = np.zeros((1, 1, 1), np.int8), np.zeros((1, N), np.int32), 0, None
    else:
        pre, w_in, in_exp, in_first = inputs
        S, B = pre.shape[:2]
        N = w_in.shape[0]
        ext = np.zeros((0, 1, 1), np.int32)
        pre, w_in_t = np.ascontiguousarray(pre), _rec_weights(w_in, N)
    in_first = np.zeros((B, N), np.int64) if in_first is None else np.ascontiguousarray(in_first, np.int64)
    c = p.kernel_constants
    rec = _rec_weights(w_rec, N)
    first = np.zeros((B, N), np.int64) if rec_first is None else np.ascontiguousarray(rec_first, np.int64)
    given = out or {}
    out = dict(z=given.get("z"), psi=given.get("psi"))
    if out["z"] is None:
        out["z"] = np.empty((S, B, N), np.int8)
    if out["psi"] is None:
        out["psi"] = np.empty((S, B, N), np.int32)
    counts = np.zeros((B, 3), np.int64)
    inputs_args = (ext, pre, w_in_t, int(in_exp), in_first, rec, int(weight_exp), first)
    if p.kind == "izhikevich":
        out["jac"] = given.get("jac") if given.get("jac") is not None else np.empty((S, B, N), np.int64)
        _fixed("_fixed_izhikevich_layer", HAS_REC=w_rec is not None)(
            *inputs_args, int(p.v_frac), c["izh_a"], c["izh_ab"], c["izh_c"], c["izh_d"], c["v_peak"],
            p.izh_psi_table, state["v"], state["u"], state["z"], out["z"], out["psi"], out["jac"], counts)
        out["counts"] = counts.sum(0)
        return out
    keep_end = p.kind == "stdp_alif" and keep_records
    end = np.empty((S, B, N) if keep_end else (1, 1, 1), np.int8)
    zero = np.zeros((B, N), np.int64)
    theta = state.get("theta", zero)
    # the constants take few values (not n_ref or psi_shift themselves: each value would compile its own loop)
    loop = _fixed("_fixed_lif_family_layer", HAS_REC=w_rec is not None, REFRACTORY=int(p.n_ref) > 0,
                  ADAPTIVE=p.kind != "lif", STDP=p.kind == "stdp_alif", KEEP_END=keep_end)
    loop(*inputs_args, c["du_f"], c["dv_f"], c["bias"], c["vth_scaled"], int(p.n_ref), c["dth_f"], c["theta_step"],
         c["psi_mul"], int(c["psi_shift"]), int(p.psi_max), state["u"], state["v"], theta, state["ref"], state["z"],
         out["z"], out["psi"], end, counts)
    out["counts"] = counts.sum(0)
    if "end" in state:  # the neuron's own end-of-refractory flag: ref == 1
        state["end"][:] = state["ref"] == 1
    if keep_end:
        out["end"] = end
    return out


def run_fixed_hidden_synapses(p: Any, syn: dict, pre: np.ndarray, records: dict, signal: np.ndarray,
                              d_kappa: int, profile: Any) -> None:
    """A block of steps of one e-prop synapse matrix: per synapse the
    eligibility kernel of :mod:`eprop_lava.neurons.fixed`, the product and the
    filtered trace (:func:`~eprop_lava.neurons.fixed.k_trace_product`), and the
    accumulator clip(acc + sum_b prod) once per step. pre (S, B, I) spikes
    entering v^t; records: z, psi, jac (Izhikevich only; None otherwise), cut
    (S + 1, B, J), row 0 the step before the block; signal (S, B, J). syn (from :func:`new_compiled_synapse`) is
    updated in place. LIF synapses run in 16-bit lanes where
    :func:`~eprop_lava.neurons.fixed.lif_synapse_fits_int16` holds, else in
    32-bit lanes where :func:`~eprop_lava.neurons.fixed.lif_synapse_fits_int32`
    does."""
    from eprop_lava.fixed import DECAY_UNITY, ROUND_CODES
    from eprop_lava.neurons.fixed import lif_synapse_fits_int16, lif_synapse_fits_int32

    c = p.kernel_constants
    tag_lo, tag_hi = profile.tag_range
    acc_lo, acc_hi = profile.accumulator_range
    rnd = ROUND_CODES[profile.product_rounding]
    B = pre.shape[1]
    if lif_synapse_fits_int16(p, profile, B, d_kappa) and syn["eps_v"].dtype.itemsize <= 2:
        # the loop's (post, batch, pre) order: copied in and out (once per block; the loop visits
        # every value once per step)
        eps_v, ebar = (aligned_copy(syn[k].transpose(1, 0, 2)) for k in ("eps_v", "ebar"))
        _run_lif_synapses16(p, eps_v, ebar, syn["acc"], np.zeros((p.size, 0), np.int64),
                            _impulse_rows(pre, None, pre.shape[2], profile), records, signal, d_kappa, profile)
        syn["eps_v"][...] = eps_v.transpose(1, 0, 2)
        syn["ebar"][...] = ebar.transpose(1, 0, 2)
        return
    narrow = lif_synapse_fits_int32(p, profile, B)
    loop = _fixed("_fixed_hidden_synapses", NARROW=32 if narrow else 0, IZHIKEVICH=p.kind == "izhikevich",
                  ADAPTIVE=p.kind in ("alif", "stdp_alif"), RND=rnd, PRODUCT_SHIFT=int(profile.product_shift),
                  PSI_BITS=int(p.psi_bits), BPSI_SHIFT=int(p.bpsi_shift) if p.kind in ("alif", "stdp_alif") else 0)
    jac = records.get("jac")
    if jac is None:  # read only by Izhikevich synapses
        jac = np.zeros((1, 1, 1), np.int64)
    loop(np.ascontiguousarray(pre), records["z"], records["psi"], jac, records["cut"],
         np.ascontiguousarray(signal, np.int64), syn["eps_v"], syn["eps_2"], syn["ebar"], syn["acc"], c["dv_f"],
         c["dth_f"], c["bpsi_mul"], c["izh_ab"], c["izh_a"], int(profile.trace_impulse), int(profile.trace_max),
         DECAY_UNITY - int(d_kappa), tag_lo, tag_hi, acc_lo, acc_hi,
         np.zeros(pre.shape[2], np.int32 if narrow else np.int64))


def _run_lif_synapses16(p: Any, eps_v: np.ndarray, ebar: np.ndarray, acc: np.ndarray, acc_2: np.ndarray,
                        pre: np.ndarray, records: dict, signal: np.ndarray, d_kappa: int, profile: Any) -> None:
    """_fixed_lif_synapses on eps_v / ebar (post, batch, pre) and pre (S, B, I)
    0/1 spikes, or the impulses trace_impulse z (int8) where
    :func:`impulses_fit_int8`."""
    from eprop_lava.fixed import DECAY_UNITY, ROUND_CODES, ROUND_FLOOR, ROUND_TOWARD_ZERO

    tag_lo, tag_hi = profile.tag_range
    acc_lo, acc_hi = profile.accumulator_range
    rnd = ROUND_CODES[profile.product_rounding]
    # e = (eps_v psi) >> psi_bits of non-negative values (lif_synapse_fits_int16): toward zero is floor
    # toward-zero products of ebar >= 0: the sign of L apart, the floor shift on the magnitude
    split = rnd == ROUND_TOWARD_ZERO
    loop = _fixed("_fixed_lif_synapses", NARROW=16, PRODUCT_SHIFT=int(profile.product_shift),
                  PSI_BITS=int(p.psi_bits), E_RND=ROUND_FLOOR if rnd == ROUND_TOWARD_ZERO else rnd,
                  SIGN_SPLIT=split, P_RND=ROUND_FLOOR if split else rnd, PRE_IMPULSE=impulses_fit_int8(profile))
    loop(np.ascontiguousarray(pre), records["z"], records["psi"], np.ascontiguousarray(signal), eps_v, ebar, acc,
         acc_2, p.kernel_constants["dv_f"], int(profile.trace_impulse), int(profile.trace_max),
         DECAY_UNITY - int(d_kappa), tag_lo, tag_hi, acc_lo, acc_hi)


def impulses_fit_int8(profile: Any) -> bool:
    """Whether the 16-bit LIF synapse loop receives its presynaptic input as
    the impulses trace_impulse z in int8 (trace_impulse <= 127; loihi2's is
    16) instead of 0/1 spikes it multiplies: one operation less per synapse
    and step, and the same bytes."""
    return 0 <= int(profile.trace_impulse) <= 127


def spikes_to_int8(x: np.ndarray, out: np.ndarray) -> int:
    """out[...] = x (S, B, I) of 0/1 spikes as int8 in one compiled pass;
    returns how many values of x were neither 0 nor 1 (out is then not
    the input: the caller rejects it)."""
    x = np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    _launch_threads()  # often the first parallel loop of a process: launched without fixing the start method
    return int(_fill_spikes_int8(x, out))


def _impulse_rows(first: np.ndarray, second: np.ndarray | None, width: int, profile: Any) -> np.ndarray:
    """(S, B, width) int8: the presynaptic spikes of ``first`` and ``second``
    (arrays (S, B, n) of 0/1; second may be None) side by side, times
    trace_impulse where :func:`impulses_fit_int8`; zero padding after them."""
    if second is None:
        second = np.zeros(first.shape[:2] + (0,), np.int8)
    out = np.empty(first.shape[:2] + (width,), np.int8)
    scale = int(profile.trace_impulse) if impulses_fit_int8(profile) else 1
    _fill_impulse_rows(np.ascontiguousarray(first, np.int8), np.ascontiguousarray(second, np.int8), scale, out)
    return out


def run_fixed_layer_synapses(p: Any, syn_in: dict, syn_rec: dict | None, pre_in: np.ndarray,
                             pre_rec: np.ndarray | None, records: dict, signal: np.ndarray, d_kappa: int,
                             profile: Any) -> None:
    """A block of steps of both e-prop synapse matrices of one layer (input,
    and recurrent unless syn_rec is None; arguments as
    :func:`run_fixed_hidden_synapses`, pre_rec the layer's own delayed
    spikes). Where :func:`new_compiled_layer_synapses` gave them one joint
    state (LIF in 16-bit lanes), both run in one pass whose rows hold the
    input and the recurrent synapses of a post neuron side by side: the post
    records are read and the row set up once per (step, sample, post neuron)
    instead of twice, and the rows are longer. Otherwise one
    :func:`run_fixed_hidden_synapses` per matrix."""
    joint = syn_in.get("joint")
    if joint is None or syn_rec is None:
        run_fixed_hidden_synapses(p, syn_in, pre_in, records, signal, d_kappa, profile)
        if syn_rec is not None:
            run_fixed_hidden_synapses(p, syn_rec, pre_rec, records, signal, d_kappa, profile)
        return
    pre = _impulse_rows(pre_in, pre_rec, joint["eps_v"].shape[2], profile)
    _run_lif_synapses16(p, joint["eps_v"], joint["ebar"], syn_in["acc"], syn_rec["acc"], pre, records, signal,
                        d_kappa, profile)


def aligned_zeros(shape: tuple, dtype: Any, align: int = 64) -> np.ndarray:
    """np.zeros(shape, dtype) whose data starts on an ``align``-byte boundary
    (numpy promises 16): the 16-bit synapse loop's rows are 32-byte multiples,
    so with the start aligned no vector load straddles two cache lines
    (measured: with the state 16 bytes past a line, half of them did, and
    the loop took ~6% longer in alternating runs of the benchmark's batch)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.zeros(n * dtype.itemsize + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n * dtype.itemsize].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``a`` on a 64-byte boundary (:func:`aligned_zeros`)."""
    out = aligned_zeros(a.shape, a.dtype)
    out[...] = a
    return out


def new_compiled_layer_synapses(p: Any, batch: int, n_in: int, recurrent: bool, profile: Any,
                                d_kappa: int) -> tuple[dict, dict | None]:
    """(input, recurrent or None) synapse states of one layer
    (:func:`new_compiled_synapse`). A recurrent LIF layer whose synapses run in
    16-bit lanes (:func:`~eprop_lava.neurons.fixed.lif_synapse_fits_int16`)
    gets one joint eps_v / ebar array (post, batch, n_in + post, padded to a
    multiple of 16: the order of :func:`run_fixed_layer_synapses`' loop) of
    which the two states are (batch, post, pre) views; acc stays one array per
    matrix."""
    from eprop_lava.neurons.fixed import eligibility_dtypes, lif_synapse_fits_int16

    if not (recurrent and lif_synapse_fits_int16(p, profile, batch, d_kappa)):
        return (new_compiled_synapse(p, batch, n_in, profile),
                new_compiled_synapse(p, batch, p.size, profile) if recurrent else None)
    eps_dtype, ebar_dtype = eligibility_dtypes(p, profile)
    # rows padded to whole 16-lane vectors: no remainder loop per row (the padding sees no spike and stays 0)
    shape = (p.size, batch, -(-(n_in + p.size) // 16) * 16)
    joint = dict(eps_v=aligned_zeros(shape, eps_dtype), ebar=aligned_zeros(shape, ebar_dtype))
    states = []
    for part, n in ((slice(0, n_in), n_in), (slice(n_in, n_in + p.size), p.size)):
        states.append(dict(eps_v=joint["eps_v"].transpose(1, 0, 2)[:, :, part],
                           eps_2=np.zeros((batch, p.size, 0), eps_dtype),
                           ebar=joint["ebar"].transpose(1, 0, 2)[:, :, part], acc=np.zeros((p.size, n), np.int64)))
    states[0]["joint"] = joint
    return states[0], states[1]


def new_compiled_synapse(p: Any, batch: int, n_pre: int, profile: Any) -> dict:
    """Per-synapse state of the compiled loops: eps_v, eps_2 (eps_th or eps_u;
    unused for LIF) and ebar (batch, post, pre), in the narrowest types that
    hold every value (:func:`~eprop_lava.neurons.fixed.eligibility_dtypes`;
    computed wider, stored narrow: the same integers), and acc."""
    from eprop_lava.neurons.fixed import eligibility_dtypes

    eps_dtype, ebar_dtype = eligibility_dtypes(p, profile)
    shape = (batch, p.size, n_pre)
    second = shape if p.kind != "lif" else (batch, p.size, 0)  # LIF has no second component
    return dict(eps_v=np.zeros(shape, eps_dtype), eps_2=np.zeros(second, eps_dtype), ebar=np.zeros(shape, ebar_dtype),
                acc=np.zeros((p.size, n_pre), np.int64))


def run_fixed_readout_synapses(syn: dict, pre: np.ndarray, err: np.ndarray, d_kappa: int, profile: Any) -> None:
    """A block of steps of the readout synapses (:func:`~eprop_lava.neurons.fixed.k_presynaptic_trace`,
    acc += sum_b (err zbar) >> product_shift); pre (S, B, I) = z^{t-1}, err (S, B, K)."""
    from eprop_lava.fixed import DECAY_UNITY, ROUND_CODES

    from eprop_lava.neurons.fixed import readout_synapse_fits_int32

    acc_lo, acc_hi = profile.accumulator_range
    serial = pre.size < PARALLEL_MIN_ELEMENTS
    chunks = 1 if serial else max(1, min(thread_count(), pre.shape[2]))
    narrow = readout_synapse_fits_int32(profile, pre.shape[1])
    loop = _fixed("_fixed_readout_synapses", PRODUCT_SHIFT=int(profile.product_shift),
                  RND=ROUND_CODES[profile.product_rounding], SERIAL=serial, NARROW=32 if narrow else 0,
                  K_OUT=err.shape[2] if err.shape[2] <= 4 else 0)
    vtype = np.int32 if narrow else np.int64
    # the state in the loop's lanes (copied in and out: B x I and K x I values against S B I steps)
    zbar, acc = syn["zbar"].astype(vtype), syn["acc"].astype(vtype)
    loop(np.ascontiguousarray(pre), np.ascontiguousarray(err, vtype), zbar, acc, DECAY_UNITY - int(d_kappa),
         int(profile.trace_impulse), int(profile.trace_max), acc_lo, acc_hi, chunks)
    syn["zbar"][...] = zbar
    syn["acc"][...] = acc


def run_fixed_learning_signal(err: np.ndarray, feedback: np.ndarray, shift: int, mode: int,
                              draws: np.ndarray | None, lo: int, hi: int,
                              dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """L = k_requantize(sum_k err_k B_jk) over rows of errors in one compiled
    pass (the loop of :func:`eprop_lava.engine.fixed_engine.learning_signal`):
    err (R, K) integer errors, feedback B (N, K), draws (R, N) for
    ROUND_STOCHASTIC. Returns (L (R, N) of ``dtype`` (it must hold [lo, hi]),
    counts (3, N): per neuron how many values were non-zero, underflowed,
    saturated)."""
    from eprop_lava.fixed import ROUND_STOCHASTIC

    R, K = err.shape
    N = feedback.shape[0]
    info = np.iinfo(dtype)
    if not info.min <= lo <= hi <= info.max:
        raise ValueError(f"dtype: {np.dtype(dtype)} does not hold the signal range [{lo}, {hi}]")
    out = np.empty((R, N), dtype)
    chunks = max(1, min(thread_count(), R))
    serial = R * N < PARALLEL_MIN_ELEMENTS
    chunks = 1 if serial else chunks
    counts = np.zeros((chunks, 3, N), np.int64)
    if mode == ROUND_STOCHASTIC:
        draws = np.ascontiguousarray(draws, np.int64)
    else:
        draws = np.zeros((1, 1), np.int64)
    feedback = np.asarray(feedback, np.int64)
    # every sum |sum_k err_k B_jk| (+ a draw or rounding offset below 2^shift) below 2^31: 32-bit lanes
    top = K * (int(np.abs(err).max()) if err.size else 0) * (int(np.abs(feedback).max()) if feedback.size else 0)
    narrow = 32 if top + (1 << int(shift)) < (1 << 31) - 1 else 0
    _fixed("_fixed_learning_signal", SHIFT=int(shift), MODE=int(mode), SERIAL=serial, NARROW=narrow)(
        np.ascontiguousarray(err), np.ascontiguousarray(feedback.T, np.int32 if narrow else np.int64), draws, int(lo),
        int(hi), chunks, out, counts)
    return out, counts.sum(0)


def run_fixed_readout(a_out: np.ndarray, y: np.ndarray, d_kappa: int, bias: np.ndarray) -> np.ndarray:
    """A block of readout steps (:func:`~eprop_lava.neurons.fixed.k_readout`); y (B, K) updated in place."""
    from eprop_lava.fixed import DECAY_UNITY

    out = np.empty(a_out.shape, np.int64)
    _fixed("_fixed_readout")(np.ascontiguousarray(a_out), y, DECAY_UNITY - int(d_kappa),
                             np.ascontiguousarray(np.broadcast_to(np.asarray(bias, np.int64), (a_out.shape[2],))), out)
    return out
