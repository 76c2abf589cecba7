import importlib.util

import pytest


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAS_TORCH = _has("torch")
HAS_LAVA = _has("lava")

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch (pip install 'eprop-lava[torch]')")
