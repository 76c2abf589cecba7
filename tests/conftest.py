import importlib.util
import numpy as np

import pytest


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAS_TORCH = _has("torch")
HAS_LAVA = _has("lava")

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch (pip install 'eprop-lava[torch]')")


def assert_gradients_match(grads_compiled: dict, grads_reference: dict, rel: float = 1e-10) -> None:
    """Every reference gradient is non-zero and the compiled one equals it to
    ``rel`` of its largest entry."""
    for k in grads_reference:
        scale = np.abs(grads_reference[k]).max()
        assert scale > 0, k
        assert np.abs(grads_compiled[k] - grads_reference[k]).max() <= rel * scale, k


def learn_compiled_and_step(net, samples):
    """Online fixed-point learning over ``samples`` (x, target, mask) in the
    compiled loops and in the step engine, from copies of ``net`` with one
    generator set each: (compiled net, step net, [(compiled run, step run)])."""
    from eprop_lava.engine import fixed_engine as fe

    fast, ref = net.copy(), net.copy()
    rf, rr = fe.update_rngs(fast), fe.update_rngs(ref)
    runs = []
    for x, target, mask in samples:
        a = fe.simulate(fast, x, target, mask, learn=True, rngs=rf)
        b = fe._simulate(ref, x, target, mask, True, rr, False, None, fe.PER_SYNAPSE)
        runs.append((a, b))
    return fast, ref, runs
