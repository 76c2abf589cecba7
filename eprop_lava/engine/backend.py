"""Array backends: one implementation of the maths over numpy or torch.

The neuron step functions and the e-prop recursions call only the methods of
an :class:`Ops` object, so the same code runs on numpy (CPU), on torch (CPU or
CUDA), and under torch autograd for the BPTT baseline.

Two methods carry the gradient semantics and are identities in numpy:

* ``spike(x, value, psi)`` returns ``value`` (the spike, 0/1) whose derivative
  with respect to ``x`` is ``psi`` (the pseudo-derivative, seed 002 Eq. 2.18).
* ``eprop_cut(x)`` marks a dependency that e-prop's hidden-state Jacobian
  leaves out (the reset term, seed 002 Eq. 2.19; the (1 - z) factors of
  Eq. 3.29; spikes that travel to other neurons). Under BPTT with
  ``graph="eprop"`` it stops the gradient, under ``graph="full"`` it is the
  identity, so the two BPTT modes differ only in these places.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRAPHS = ("full", "eprop")



_BLAS_CONTROLLER: Any = None


def one_blas_thread():
    """A context with one BLAS thread.

    Waking BLAS threads for a (B x N) x (N x N) product per time step costs
    more than it saves, and on a loaded machine it is ruinous (measured:
    10x slower per step with 2 threads when other processes compete). The
    threadpoolctl controller is made once: making one per call reads the
    process's loaded libraries each time (measured: 3.4 ms of a 42 ms
    training step). It is made again when modules were imported since (an
    import may load another BLAS, e.g. torch's or scipy's, which a controller
    made before would not limit)."""
    global _BLAS_CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    import sys

    if _BLAS_CONTROLLER is None or _BLAS_CONTROLLER[0] != len(sys.modules):
        _BLAS_CONTROLLER = (len(sys.modules), ThreadpoolController())
    return _BLAS_CONTROLLER[1].limit(limits=1, user_api="blas")

class Ops:
    """Base class: numpy semantics. Subclasses override what differs."""

    name = "numpy"
    xp: Any = np
    # True when gradients flow through the step functions (BPTT); then the
    # pseudo-derivative is needed inside each step as the spike's surrogate.
    # Otherwise it is computed once over the whole trajectory afterwards.
    autograd = False
    # True when the compiled time loops of engine/fused.py may be used.
    fused = False

    def __init__(self, dtype: Any = np.float64):
        self.dtype = np.dtype(dtype)

    # ------------------------------------------------------------ creation
    def asarray(self, x: Any) -> Any:
        return np.asarray(x, dtype=self.dtype)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return np.zeros(shape, dtype=self.dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    # ------------------------------------------------------------ elementwise
    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def abs(self, a: Any) -> Any:
        return np.abs(a)

    def exp(self, a: Any) -> Any:
        return np.exp(a)

    def as_float(self, cond: Any) -> Any:
        return cond.astype(self.dtype)

    def stack(self, arrays: list[Any], axis: int = 0) -> Any:
        return np.stack(arrays, axis=axis)

    def concat(self, arrays: list[Any], axis: int = -1) -> Any:
        return np.concatenate(arrays, axis=axis)

    def einsum(self, eq: str, *operands: Any) -> Any:
        return np.einsum(eq, *operands, optimize=True)

    def project(self, x: Any, w_t: Any) -> Any:
        """x[..., i] w_t[i, j] over a time-major array as one 2-D GEMM (numpy's
        stacked matmul falls back to a slow loop for transposed operands)."""
        if self.fused:
            from eprop_lava.engine import fused

            out = fused.project_events(x, w_t)
            if out is not None:  # x is sparse (spikes): only its events are visited
                return out
        out = x.reshape(-1, x.shape[-1]) @ w_t
        return out.reshape(*x.shape[:-1], w_t.shape[-1])

    def sum_outer(self, a: Any, b: Any) -> Any:
        """sum over all leading axes of a[..., j] b[..., i] -> (J, I), as one GEMM.
        (A sparse product over the spikes measured slower: building the sparse
        matrix costs more than the dense GEMM it saves.)"""
        if self.fused:
            from eprop_lava.engine import fused

            out = fused.sum_outer_events(a, b)
            if out is not None:  # b is sparse (spikes): only its events are visited
                return out
        return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])

    def logsumexp(self, x: Any, axis: int = -1) -> Any:
        m = _reduce_small(np.maximum, x, axis)
        return (m + np.log(_reduce_small(np.add, np.exp(x - m), axis))).squeeze(axis)

    def softmax(self, x: Any, axis: int = -1) -> Any:
        e = np.exp(x - _reduce_small(np.maximum, x, axis))
        return e / _reduce_small(np.add, e, axis)

    def detach(self, x: Any) -> Any:
        return x

    def zero_diagonal(self, m: Any) -> Any:
        """m with its diagonal set to 0 (a copy; no N x N mask is built)."""
        out = np.array(m, copy=True)
        np.fill_diagonal(out, 0.0)
        return out

    def single_threaded(self):
        """A context for loops of small matrix products: one BLAS thread
        (:func:`one_blas_thread`)."""
        return one_blas_thread()

    # ------------------------------------------------------------ gradient semantics
    def spike(self, x: Any, value: Any, psi: Any) -> Any:
        return value

    def eprop_cut(self, x: Any) -> Any:
        return x

    # ------------------------------------------------------------ filters over time (axis 0)
    def leaky_filter(self, u: Any, decay: float, reverse: bool = False) -> Any:
        """out^t = decay * out^{t-1} + u^t along axis 0 (reverse: out^t = u^t + decay out^{t+1})."""
        from scipy.signal import lfilter

        arr = u[::-1] if reverse else u
        out = lfilter([1.0], [1.0, -decay], arr, axis=0).astype(self.dtype, copy=False)
        return np.ascontiguousarray(out[::-1]) if reverse else out

    def flip_time(self, u: Any) -> Any:
        """u reversed along axis 0 (a contiguous copy)."""
        return np.ascontiguousarray(u[::-1])

    def shift_forward(self, u: Any) -> Any:
        """out^t = u^{t-1}, out^0 = 0 (one synaptic delay along axis 0)."""
        out = np.zeros_like(u)
        out[1:] = u[:-1]
        return out

    def shift_backward(self, u: Any) -> Any:
        """out^t = u^{t+1}, out^{T-1} = 0."""
        out = np.zeros_like(u)
        out[:-1] = u[1:]
        return out


def _reduce_small(ufunc: Any, x: Any, axis: int) -> Any:
    """ufunc.reduce over ``axis`` with keepdims. Over a short axis (a few
    readout classes) numpy's reduction is ~20x slower than combining the
    slices elementwise (measured 2.4 ms vs 0.1 ms for (2250, 32, 2)); the
    results are the same (max exactly; sums in the same left-to-right order)."""
    n = x.shape[axis]
    if n > 16:
        return ufunc.reduce(x, axis=axis, keepdims=True)
    parts = np.moveaxis(x, axis, 0)
    out = parts[0].copy()
    for k in range(1, n):
        ufunc(out, parts[k], out=out)
    return np.expand_dims(out, axis)


class NumpyOps(Ops):
    """numpy; with ``fused`` (the default when numba is importable) the time
    loops of LIF/ALIF populations and e-prop's adjoint run compiled
    (:mod:`eprop_lava.engine.fused`), with the same results."""

    def __init__(self, dtype: Any = np.float64, fused: bool | None = None):
        super().__init__(dtype)
        from eprop_lava.engine import fused as compiled

        self.fused = compiled.available() if fused is None else bool(fused)


class TorchOps(Ops):
    """torch tensors on any device; ``graph`` selects the BPTT graph."""

    name = "torch"

    def __init__(self, dtype: Any = "float64", device: str = "cpu", graph: str | None = None):
        import torch

        if graph is not None and graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
        self.autograd = graph is not None
        self.torch = torch
        self.xp = torch
        self.dtype = getattr(torch, str(np.dtype(dtype))) if not isinstance(dtype, torch.dtype) else dtype
        self.device = torch.device(device)
        self.graph = graph

    def asarray(self, x: Any) -> Any:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(device=self.device, dtype=self.dtype)
        return t.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        t = self.torch
        if not isinstance(a, t.Tensor):
            a = t.as_tensor(a, dtype=self.dtype, device=self.device)
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=self.dtype, device=self.device)
        return t.where(cond, a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        t = self.torch
        if not isinstance(b, t.Tensor):
            return t.clamp(a, min=b)
        if not isinstance(a, t.Tensor):
            return t.clamp(b, min=a)
        return t.maximum(a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        t = self.torch
        if not isinstance(b, t.Tensor):
            return t.clamp(a, max=b)
        if not isinstance(a, t.Tensor):
            return t.clamp(b, max=a)
        return t.minimum(a, b)

    def abs(self, a: Any) -> Any:
        return self.torch.abs(a)

    def exp(self, a: Any) -> Any:
        return self.torch.exp(a)

    def as_float(self, cond: Any) -> Any:
        return cond.to(self.dtype)

    def stack(self, arrays: list[Any], axis: int = 0) -> Any:
        return self.torch.stack(arrays, dim=axis)

    def concat(self, arrays: list[Any], axis: int = -1) -> Any:
        return self.torch.cat(arrays, dim=axis)

    def einsum(self, eq: str, *operands: Any) -> Any:
        return self.torch.einsum(eq, *operands)

    def sum_outer(self, a: Any, b: Any) -> Any:
        return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])

    def logsumexp(self, x: Any, axis: int = -1) -> Any:
        return self.torch.logsumexp(x, dim=axis)

    def softmax(self, x: Any, axis: int = -1) -> Any:
        return self.torch.softmax(x, dim=axis)

    def detach(self, x: Any) -> Any:
        return x.detach() if isinstance(x, self.torch.Tensor) else x

    def zero_diagonal(self, m: Any) -> Any:
        return m - self.torch.diag_embed(self.torch.diagonal(m))

    def single_threaded(self):
        import contextlib

        return contextlib.nullcontext()  # torch manages its own threads

    def spike(self, x: Any, value: Any, psi: Any) -> Any:
        # Straight-through form: the value is `value`, d/dx is `psi`.
        if not (isinstance(x, self.torch.Tensor) and x.requires_grad):
            return value
        return value.detach() + psi.detach() * (x - x.detach())

    def eprop_cut(self, x: Any) -> Any:
        if self.graph == "eprop" and isinstance(x, self.torch.Tensor):
            return x.detach()
        return x

    def leaky_filter(self, u: Any, decay: float, reverse: bool = False) -> Any:
        # A loop keeps autograd simple and is exact; T matrix products would
        # be faster on a GPU for short T (see docs/benchmarks.md).
        steps = range(u.shape[0] - 1, -1, -1) if reverse else range(u.shape[0])
        out = [None] * u.shape[0]
        acc = None
        for t in steps:
            acc = u[t] if acc is None else u[t] + decay * acc
            out[t] = acc
        return self.torch.stack(out, dim=0)

    def flip_time(self, u: Any) -> Any:
        return self.torch.flip(u, dims=(0,))

    def shift_forward(self, u: Any) -> Any:
        return self.torch.cat([self.torch.zeros_like(u[:1]), u[:-1]], dim=0)

    def shift_backward(self, u: Any) -> Any:
        return self.torch.cat([u[1:], self.torch.zeros_like(u[:1])], dim=0)


def cpu_threads() -> int:
    """Threads the engine may use: EPROP_LAVA_THREADS, else the CPUs this
    process may run on."""
    import os

    env = os.environ.get("EPROP_LAVA_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"EPROP_LAVA_THREADS: expected a positive integer, got {env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_ops(backend: str = "numpy", dtype: Any = "float64", device: str = "cpu", graph: str | None = None,
             fused: bool | None = None) -> Ops:
    """Build an Ops object: backend 'numpy' or 'torch'; graph ('full' or
    'eprop') turns on autograd through the step functions (BPTT); ``fused``
    (numpy only) selects the compiled time loops (default: when numba is
    importable), False the reference loops."""
    if backend == "numpy":
        return NumpyOps(dtype, fused=fused)
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:  # pragma: no cover
            raise RuntimeError("backend 'torch' needs PyTorch: pip install 'eprop-lava[torch]'") from None
        return TorchOps(dtype=dtype, device=device, graph=graph)
    raise ValueError(f"unknown backend {backend!r}; choose numpy or torch")
