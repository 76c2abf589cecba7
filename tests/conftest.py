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
