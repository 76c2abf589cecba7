"""Numerical verification of the e-prop engine (``eprop-lava verify``).

In the spirit of the official repository's verification scripts, these
checks, all in float64:

1. e-prop against BPTT where e-prop is exact: one layer with zero recurrent
   weights, symmetric feedback, BPTT on e-prop's graph (the reset and the
   spikes sent to other neurons carry no gradient; see
   :mod:`eprop_lava.engine.backend`). Relative error <= 1e-6, for LIF, ALIF,
   STDP-ALIF and Izhikevich, both timings.
2. The online formulation (per-synapse state) against the fast formulation
   (per-neuron adjoint): relative error <= 1e-9, multi-layer, recurrent,
   with both firing-rate regularizers.
   The same on e-prop's graph for recurrent and bidirectional multi-layer
   networks (a backward direction runs on the reversed sequence).
3. With numba present, the compiled loops (:mod:`eprop_lava.engine.fused`)
   against the reference step functions: relative error <= 1e-9 for LIF and
   ALIF, both timings and resets, with sparse input so the event-driven
   products run.
4. Reported, not asserted: the cosine similarity between e-prop and the full
   surrogate-gradient BPTT for a recurrent multi-layer network (how much
   e-prop's truncation changes the gradient), and e-prop against BPTT on
   e-prop's graph for the same recurrent network (exact by construction of
   the graph, checked anyway).

A check whose gradients are all zero (no spikes, no pseudo-derivative)
would pass vacuously, so each check also requires non-zero gradients.

``run_checks(conventions="tf")`` (``eprop-lava verify --conventions tf``) runs
the same checks under a convention preset (spec.ConventionSpec); neuron
types a preset's input scaling does not apply to are left out then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient, eprop_gradient_online
from eprop_lava.engine.network import Batch, init_params
from eprop_lava.spec import (
    CONVENTION_PRESETS, LayerSpec, LearningSpec, NetworkSpec, NeuronParams, ReadoutSpec, RegularizationSpec,
)


@dataclass
class CheckResult:
    name: str
    kind: str            # "exact" (asserted) or "reported"
    value: float         # relative error, or cosine similarity when reported
    tolerance: float | None
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "value": self.value,
                "tolerance": self.tolerance, "passed": self.passed, "detail": self.detail}


def relative_error(a: dict, b: dict) -> float:
    """max over parameters of ||a - b||_inf / ||b||_inf."""
    worst = 0.0
    for k in b:
        scale = float(np.max(np.abs(b[k])))
        diff = float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def cosine(a: dict, b: dict, keys: list[str]) -> float:
    va = np.concatenate([np.ravel(a[k]) for k in keys])
    vb = np.concatenate([np.ravel(b[k]) for k in keys])
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def _network(neuron: str, *, layers: int, recurrent: bool, timing: str, reset: str,
             regularization: str = "none", n_in: int = 6, n: int = 8, k: int = 3,
             bidirectional: bool = False, conventions: str = "eprop-lava") -> NetworkSpec:
    if neuron == "izhikevich":
        params, scale = NeuronParams(gamma=0.3), 80.0
    else:
        params, scale = NeuronParams(v_th=0.5, n_ref=2, tau_m=20.0, tau_a=200.0, gamma=0.3), 3.0
        if CONVENTION_PRESETS[conventions]["input_scaling"] == "one_minus_alpha":
            scale /= 1.0 - math.exp(-1.0 / params.tau_m)  # the same drive through the (1 - alpha) input
    layer = LayerSpec(size=n, neuron=neuron, adaptive_fraction=0.5, recurrent=recurrent,
                      weight_scale=scale, params=params, bidirectional=bidirectional)
    return NetworkSpec(
        n_inputs=n_in, layers=(layer,) * layers,
        readout=ReadoutSpec(n_outputs=k, kappa=math.exp(-1 / 10)),
        learning=LearningSpec(variant="symmetric"),
        regularization=RegularizationSpec(form=regularization,
                                          coefficient=0.5 if regularization != "none" else 0.0),
        timing=timing, reset=reset, seed=3, conventions=conventions,
    )


def _batch(spec: NetworkSpec, steps: int, size: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    x = (rng.random((steps, size, spec.n_inputs)) < 0.25).astype(float)
    k = spec.readout.n_outputs
    labels = rng.integers(0, k, size)
    target = np.zeros((steps, size, k))
    target[:, np.arange(size), labels] = 1.0
    mask = np.zeros((steps, size))
    mask[steps // 3:] = 1.0 / (steps - steps // 3)
    return Batch(x=x, target=target, mask=mask, labels=labels)


def _nonzero(grads: dict) -> bool:
    return all(float(np.max(np.abs(g))) > 0 for k, g in grads.items() if not k.endswith("w_rec"))


def run_checks(steps: int = 120, batch_size: int = 4, conventions: str = "eprop-lava") -> list[CheckResult]:
    if conventions not in CONVENTION_PRESETS:
        raise ValueError(f"unknown conventions preset {conventions!r}; choose one of {', '.join(CONVENTION_PRESETS)}")
    results: list[CheckResult] = []
    neurons = ("lif", "alif", "stdp_alif", "izhikevich")
    if CONVENTION_PRESETS[conventions]["input_scaling"] != "none":
        neurons = ("lif", "alif")  # the (1 - alpha) input is defined for these
    suffix = "" if conventions == "eprop-lava" else f"/{conventions}"
    conv_kw = dict(conventions=conventions)
    for neuron in neurons:
        for timing in ("bellec", "loihi"):
            spec = _network(neuron, layers=1, recurrent=True, timing=timing, reset="subtract", **conv_kw)
            params = init_params(spec)
            params["layers.0.w_rec"][:] = 0.0  # where e-prop is exact
            batch = _batch(spec, steps, batch_size, seed=11)
            _, g_eprop, traj = eprop_gradient(spec, params, batch)
            _, g_bptt, _ = bptt_gradient(spec, params, batch, graph="eprop")
            err = relative_error(g_eprop, g_bptt)
            rate = float(np.mean(traj.z[0]))
            ok = err <= 1e-6 and _nonzero(g_bptt)
            results.append(CheckResult(f"eprop_vs_bptt_exact/{neuron}/{timing}{suffix}", "exact", err, 1e-6, ok,
                                       f"spike probability per step {rate:.3f}"))
    for neuron in neurons:
        for timing, reset, reg in (("bellec", "subtract", "bellec"), ("loihi", "zero", "online")):
            spec = _network(neuron, layers=2, recurrent=True, timing=timing, reset=reset, regularization=reg,
                            **conv_kw)
            params = init_params(spec)
            batch = _batch(spec, steps // 2, 2, seed=12)
            _, g_fast, _ = eprop_gradient(spec, params, batch)
            _, g_online, _ = eprop_gradient_online(spec, params, batch)
            err = relative_error(g_fast, g_online)
            ok = err <= 1e-9 and _nonzero(g_online)
            results.append(CheckResult(f"online_vs_fast/{neuron}/{timing}/{reset}/{reg}{suffix}", "exact", err, 1e-9,
                                       ok))
    spec = _network("alif", layers=2, recurrent=True, timing="bellec", reset="subtract", n=16, **conv_kw)
    params = init_params(spec)
    batch = _batch(spec, steps, batch_size, seed=13)
    _, g_eprop, _ = eprop_gradient(spec, params, batch)
    _, g_graph, _ = bptt_gradient(spec, params, batch, graph="eprop")
    _, g_full, _ = bptt_gradient(spec, params, batch, graph="full")
    err = relative_error(g_eprop, g_graph)
    results.append(CheckResult(f"eprop_vs_bptt_eprop_graph/alif/2-layer-recurrent{suffix}", "exact", err, 1e-6,
                               err <= 1e-6 and _nonzero(g_graph)))
    for timing in ("bellec", "loihi"):
        bi = _network("alif", layers=2, recurrent=True, timing=timing, reset="subtract", bidirectional=True,
                      regularization="bellec", **conv_kw)
        bi_params = init_params(bi)
        bi_batch = _batch(bi, steps // 2, 2, seed=14)
        _, g_bi, _ = eprop_gradient(bi, bi_params, bi_batch)
        _, g_bi_graph, _ = bptt_gradient(bi, bi_params, bi_batch, graph="eprop")
        err_bi = relative_error(g_bi, g_bi_graph)
        results.append(CheckResult(f"eprop_vs_bptt_eprop_graph/alif/2-layer-bidirectional/{timing}{suffix}", "exact",
                                   err_bi, 1e-6, err_bi <= 1e-6 and _nonzero(g_bi_graph)))
    from eprop_lava.engine import fused
    from eprop_lava.engine.backend import make_ops

    if fused.available():
        # 4. the compiled loops (engine/fused.py) against the reference step functions
        for neuron in fused.FUSED_MODELS:
            for timing, reset in (("bellec", "subtract"), ("loihi", "zero")):
                net = _network(neuron, layers=2, recurrent=True, timing=timing, reset=reset,
                               regularization="bellec", n=12, **conv_kw)
                net_params = init_params(net)
                dense = _batch(net, steps, 2, seed=15)
                rng = np.random.default_rng(15)
                sparse = Batch((rng.random(dense.x.shape) < 0.04).astype(float), dense.target, dense.mask,
                               dense.labels)  # below the event-driven threshold: the event paths run
                _, g_ref, _ = eprop_gradient(net, net_params, sparse, make_ops("numpy", fused=False))
                _, g_fused, _ = eprop_gradient(net, net_params, sparse, make_ops("numpy", fused=True))
                err = relative_error(g_fused, g_ref)
                results.append(CheckResult(f"compiled_vs_reference/{neuron}/{timing}/{reset}{suffix}", "exact", err, 1e-9,
                                           err <= 1e-9 and _nonzero(g_ref)))
    hidden = [k for k in g_full if k.startswith("layers.")]
    results.append(CheckResult(f"cosine_eprop_vs_full_bptt/alif/2-layer-recurrent/hidden{suffix}", "reported",
                               cosine(g_eprop, g_full, hidden), None, True,
                               "cosine similarity of input+recurrent weight gradients"))
    for r in range(2):
        keys = [k for k in hidden if k.startswith(f"layers.{r}.")]
        results.append(CheckResult(f"cosine_eprop_vs_full_bptt/alif/2-layer-recurrent/layer{r}{suffix}", "reported",
                                   cosine(g_eprop, g_full, keys), None, True))
    return results
