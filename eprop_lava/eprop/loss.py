"""Task losses, their error signals dE/dy, and the firing-rate regularizers.

Cross-entropy (seed 002 Eqs. 2.31-2.32) over the masked steps:

    E = - sum_{t,b} m_tb sum_k pi*_k log softmax(y)_k ,  dE/dy = m (pi - pi*)

MSE (seed 001 Eq. 4.24):  E = 1/2 sum_{t,b} m_tb sum_k (y_k - y*_k)^2 ,  dE/dy = m (y - y*).

Gradients are sums over the batch (the mask carries any normalization), or
means with ``conventions.batch_reduction = "mean"`` (:func:`batch_scale`, as
TF's reduce_mean and NEST's division by batch_size).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def task_loss(kind: str, y: Any, target: Any, mask: Any, ops: Any) -> Any:
    """Scalar loss on any backend (differentiable under torch)."""
    if kind == "cross_entropy":
        log_p = y - ops.logsumexp(y, axis=-1)[..., None]
        return -(mask * (target * log_p).sum(-1)).sum()
    if kind == "mse":
        return 0.5 * (mask * ((y - target) ** 2).sum(-1)).sum()
    raise ValueError(f"unknown loss {kind!r}")


def output_error(kind: str, y: Any, target: Any, mask: Any, ops: Any) -> Any:
    """dE/dy^t (T, B, K): the error each readout sends back."""
    if kind == "cross_entropy":
        return mask[..., None] * (ops.softmax(y, axis=-1) - target)
    if kind == "mse":
        return mask[..., None] * (y - target)
    raise ValueError(f"unknown loss {kind!r}")


def task_loss_and_error(kind: str, y: Any, target: Any, mask: Any, ops: Any) -> tuple[Any, Any]:
    """(:func:`task_loss`, :func:`output_error`) from one log-softmax: the
    e-prop path needs both and no autograd."""
    if kind != "cross_entropy":
        return task_loss(kind, y, target, mask, ops), output_error(kind, y, target, mask, ops)
    log_p = y - ops.logsumexp(y, axis=-1)[..., None]
    loss = -(mask * (target * log_p).sum(-1)).sum()
    return loss, mask[..., None] * (ops.exp(log_p) - target)


def batch_scale(reduction: str, batch_size: int) -> float:
    """The factor on the batch-summed loss and its gradients: 1 ("sum") or
    1 / B ("mean"). The firing-rate regularizer gets the same factor, so its
    coefficient means the same under both."""
    return 1.0 / batch_size if reduction == "mean" else 1.0


def firing_rate(z: Any, dt: float, per_sample: bool = False, counts: Any = None) -> Any:
    """Mean rate of each neuron over batch and time (N,), or of each sample
    over time (B, N) with per_sample, in spikes per ms. ``counts``: z.sum(0)
    (B, N) when the caller has it (e.g. from spike event lists)."""
    T, B = z.shape[:2]
    counts = z.sum(0) if counts is None else counts
    if per_sample:
        return counts / (T * dt)
    return counts.sum(0) / (T * B * dt)


def bellec_rate_loss(z: Any, target_hz: float, coefficient: float, dt: float, per_sample: bool = False,
                     rate: Any = None) -> Any:
    """E_reg = B c sum_j (f_j - f0)^2, f_j the rate over batch and time in
    spikes/ms; per_sample (NEST, one rate per sequence):
    E_reg = c sum_b sum_j (f_bj - f0)^2.

    Bellec et al. 2020 (official code, tutorial_evidence_accumulation_with_alif.py)
    add c sum_j (f_j - f0)^2 to a loss that is a mean over the batch; the task
    loss here is a sum over the batch (batch_reduction = "sum"), so the
    regularizer is multiplied by the batch size B to keep the same balance;
    under batch_reduction = "mean" both are divided by B again
    (:func:`batch_scale`). So c is the official code's coefficient for any
    batch size, against the official code's task loss: that loss's gradient
    carries the readout's (1 - kappa) (conventions.readout_input_scaling =
    "one_minus_kappa"); without that factor the task gradients are 1 / (1 - kappa)
    times larger and c acts as c (1 - kappa) would in the official code.
    NEST's c_reg is 2 x (learning window when average_gradient is set, else 1) x c.
    ``rate``: :func:`firing_rate` of z (same per_sample) when the caller has it already."""
    f0 = target_hz / 1000.0
    f = firing_rate(z, dt, per_sample) if rate is None else rate
    if per_sample:
        return coefficient * ((f - f0) ** 2).sum()
    B = z.shape[1]
    return B * coefficient * ((f - f0) ** 2).sum()


def bellec_rate_signal(z: Any, target_hz: float, coefficient: float, dt: float, per_sample: bool = False,
                       rate: Any = None) -> Any:
    """dE_reg/dz_j^{t,b} = 2 c (f_j - f0) / (T dt), the same for every step and
    sample (N,); per_sample: 2 c (f_bj - f0) / (T dt), (B, N). (NEST:
    firing_rate_reg = c_reg (f_av - f_target) / T, eprop_archiving_node_recurrent_impl.h.)
    ``rate`` as in :func:`bellec_rate_loss`."""
    T = z.shape[0]
    f0 = target_hz / 1000.0
    f = firing_rate(z, dt, per_sample) if rate is None else rate
    return 2.0 * coefficient * (f - f0) / (T * dt)


def online_rate_signal(z: Any, target_hz: float, coefficient: float, dt: float, ops: Any) -> Any:
    """Seed 002 Eqs. 3.40-3.42: sum_{t,b} c (f^{av,t}_bj - f0) per neuron (N,), where
    f^{av,t} = (1/t) sum_{s<=t} z^s is each sample's running rate (reset per sample).
    It is applied to every afferent weight of neuron j without an eligibility trace
    (Eq. 3.43), with the sign of gradient descent on Eq. 3.39."""
    T = z.shape[0]
    f0 = target_hz / 1000.0
    steps = ops.asarray(np.arange(1, T + 1, dtype=np.float64))[:, None, None]
    running = _cumsum0(z, ops) / (steps * dt)
    return coefficient * (running - f0).sum(0).sum(0)


def _cumsum0(z: Any, ops: Any) -> Any:
    if ops.name == "torch":
        return ops.torch.cumsum(z, dim=0)
    return np.cumsum(z, axis=0)
