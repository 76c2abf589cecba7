"""Neuron models, one module each (float arithmetic).

Each module exposes ``hidden``, ``constants``, ``initial_state``, ``step``,
``transition_jacobian`` and ``spike_jacobian`` (see :mod:`eprop_lava.neurons.base`).
"""

from eprop_lava.neurons import alif, izhikevich, lif, stdp_alif

MODELS = {m.name: m for m in (lif, alif, stdp_alif, izhikevich)}


def get_model(name: str):
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown neuron type {name!r}; choose one of {', '.join(MODELS)}") from None


__all__ = ["MODELS", "get_model", "lif", "alif", "stdp_alif", "izhikevich"]
