"""E-prop building blocks: eligibility traces, learning signals, losses and
regularizers, optimizers. The batched gradients live in :mod:`eprop_lava.engine`."""
