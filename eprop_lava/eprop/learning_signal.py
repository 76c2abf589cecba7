"""Learning signals and the adaptive feedback update (seed 001 sec. 4.1.5).

    L_j^t = sum_k B_jk dE/dy_k^t    (seed 002 Eq. 2.33 with the readout filter
                                     moved onto the trace, Eq. 2.37)

B = W_out^T (symmetric), a fixed random matrix (random), or Kolen-Pollack
adaptive feedback: B receives the transpose of W_out's update and both decay
by lambda each iteration (seed 001 Eqs. 4.39-4.40).

On a chip the learning signal is computed off the neurocores (softmax, error,
feedback matrix) and arrives at each synapse as a graded third factor.
"""

from __future__ import annotations

from typing import Any


def learning_signal(output_error: Any, feedback: Any, ops: Any = None) -> Any:
    """(T, B, K) x (N, K) -> (T, B, N)."""
    if ops is None:
        return output_error @ feedback.T
    return ops.project(output_error, feedback.T)


def adaptive_feedback_update(params: dict, delta_readout: Any, decay: float) -> None:
    """Kolen-Pollack step, replacing the plain readout update (in place):
    W_out <- W_out + dW - lambda W_out ;  B <- B + dW^T - lambda B
    so B - W_out^T decays geometrically and B aligns with W_out^T."""
    w, b = params["readout.w"], params["feedback.b"]
    params["readout.w"] = w + delta_readout - decay * w
    params["feedback.b"] = b + delta_readout.T - decay * b
