"""Lava's ATRLIF against the engine's fixed-point ALIF: the closest parameter
mapping, and a measurement of where the two part. It is why native inference
(:mod:`eprop_lava.compile.native`) refuses ALIF layers.

The engine's ALIF (:func:`eprop_lava.neurons.fixed.k_lif_family`, adaptive;
seed 002 Eqs. 2.3-2.6 with Loihi's reset to zero)::

    u = decay(u, du, offset 1) + (a_in << 6);  v = clip24(decay(v, dv) + u + bias)
    theta = decay(theta, d_theta) + z_prev theta_step
    z = v > (vth << 6) + theta;  v[z] = 0

Lava's ATRLIF (``lava/proc/atrlif/models.py``, ``PyATRLIFModelFixed``)::

    i = decay(i, delta_i 4096 + 1) + (a_in << 6);  v = clip24(decay(v, delta_v 4096) + i + bias)
    theta = decay(theta - theta_0, delta_theta 4096) + theta_0;  r = decay(r, delta_r 4096)
    s = v - r >= theta;  then where s: r += 2 theta, theta += theta_step   (theta_0, theta_step << 6)

The mapping :func:`atrlif_params` makes i, v and the resting threshold
equal (delta_i = du / 4096, delta_v = dv / 4096, theta_0 = vth,
theta_step = engine theta_step / 64, delta_theta = d_theta / 4096) and lets r
decay as v does (delta_r = delta_v), so v - r is a leaky voltage that drops by
2 theta at a spike. No choice of parameters makes the two equal after a
spike, for three reasons that :func:`compare_atrlif` shows on a run:

1. reset: the engine discards v at a spike (v = 0); ATRLIF keeps v and
   subtracts r = 2 theta, so the overshoot v - 2 theta (positive or negative)
   stays in v - r. Under a constant drive of a per step (a > theta, no leak)
   the engine fires every step, ATRLIF at the rate a / (2 theta);
2. adaptation timing: ATRLIF adds theta_step at the spike and decays it once
   before the next comparison (theta_0 + decay(theta - theta_0 + step)); the
   engine adds it undecayed (decay(theta) + step), so the thresholds differ by
   step - decay(step) from the step after every spike unless d_theta = 0;
3. comparison: ATRLIF fires at v - r >= theta, the engine at v > threshold
   (with theta_0 and theta_step multiples of 2^6, a strict comparison cannot
   be expressed by shifting theta_0 by one).

ATRLIF also holds delta_*, theta_0 and theta_step as one value per process,
where the engine's adaptation strength beta_j and rho_j are per neuron.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.fixed import DECAY_UNITY, VTH_SHIFT, decay

#: what native inference says when it refuses an ALIF layer (measured by
#: :func:`compare_atrlif`; tests/test_native_alif.py reproduces the numbers)
ATRLIF_MISMATCH = ("Lava's ATRLIF, with the closest mapping (eprop_lava/compile/native_alif.py), differs from it "
                   "from the step after a neuron's spike (6 ALIF neurons, 60 steps: 45 spike mismatches against 195 "
                   "engine spikes, none before the first spike): ATRLIF keeps v after a spike and subtracts "
                   "r = 2 theta, where the engine resets v to 0, and it decays a threshold increment once before "
                   "it acts")


class AtrlifMappingError(ValueError):
    """The layer's constants have no ATRLIF counterpart at all (the message says which)."""


def _scalar(name: str, value: Any) -> int:
    arr = np.unique(np.asarray(value, dtype=np.int64))
    if arr.size != 1:
        raise AtrlifMappingError(f"{name}: ATRLIF holds one value per process, the layer has {arr.size}")
    return int(arr[0])


def atrlif_params(p: Any) -> dict:
    """ATRLIF constructor arguments closest to the engine's ALIF constants
    ``p`` (:class:`eprop_lava.neurons.fixed.FixedNeuronParams`, module
    docstring); raises :class:`AtrlifMappingError` where none exist (constants
    that differ between neurons, a theta_step that is not a multiple of 2^6).
    The bias is the caller's (bias_mant, bias_exp per neuron, as for LIF)."""
    if p.kind != "alif" or int(p.n_ref) != 0:
        raise AtrlifMappingError(f"expected an ALIF layer without refractory period, got {p.kind}, n_ref {p.n_ref}")
    step = _scalar("theta_step", p.theta_step)
    if step % (1 << VTH_SHIFT):
        raise AtrlifMappingError(f"theta_step: ATRLIF's is a multiple of 2^6 (theta_step << 6), the layer's is {step}")
    dv = _scalar("dv", p.dv)
    return dict(delta_i=_scalar("du", p.du) / DECAY_UNITY, delta_v=dv / DECAY_UNITY,
                delta_theta=_scalar("d_theta", p.d_theta) / DECAY_UNITY, delta_r=dv / DECAY_UNITY,
                theta_0=_scalar("vth", p.vth), theta=_scalar("vth", p.vth), theta_step=step >> VTH_SHIFT)


def _lava_atrlif_run(L: fe.FixedLayer, x: np.ndarray, kwargs: dict) -> tuple[np.ndarray, dict]:
    """x (T, n_in) through RingBuffer -> Dense(w_in) -> ATRLIF (+ Dense(w_rec)
    from itself) in Loihi2SimCfg(fixed_pt): spikes (T, N) and v, r, theta, i
    (T, N) as ATRLIF holds them at the end of each step (after post_spike)."""
    from eprop_lava.compile.native import bias_mant_exp, weight_bits
    from eprop_lava.lava_import import import_lava

    import_lava("lava.magma.core.process.process")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.atrlif.process import ATRLIF
    from lava.proc.dense.process import Dense
    from lava.proc.monitor.process import Monitor

    T, N = x.shape[0], L.neuron.size
    mant, exp = bias_mant_exp(L.neuron.bias, N, "ALIF layer")
    atr = ATRLIF(shape=(N,), bias_mant=mant, bias_exp=exp, **kwargs)
    d_in = Dense(weights=L.w_in.copy(), weight_exp=int(L.weight_exp), num_weight_bits=weight_bits(L.w_in))
    src = io.source.RingBuffer(data=np.asarray(x, dtype=np.float64).T.copy())
    src.s_out.connect(d_in.s_in)
    d_in.a_out.connect(atr.a_in)
    if L.w_rec is not None:
        d_rec = Dense(weights=L.w_rec.copy(), weight_exp=int(L.rec_exp), num_weight_bits=weight_bits(L.w_rec))
        atr.s_out.connect(d_rec.s_in)
        d_rec.a_out.connect(atr.a_in)
    sink = io.sink.RingBuffer(shape=(N,), buffer=T)
    atr.s_out.connect(sink.a_in)
    monitors = {}
    for name in ("v", "r", "theta", "i"):
        monitors[name] = Monitor()
        monitors[name].probe(getattr(atr, name), T)
    try:
        src.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        z = np.rint(sink.data.get()).astype(np.int64).T
        rec = {k: np.rint(m.get_data()[atr.name][k]).astype(np.int64).reshape(T, N) for k, m in monitors.items()}
    finally:
        try:
            src.stop()
        except Exception:  # noqa: BLE001 - the runtime may not have started
            pass
    return z, rec


def compare_atrlif(net: fe.FixedNetwork, x: np.ndarray, delta_r: float | None = None) -> dict:
    """Run x (T, n_in) through the first layer of ``net`` (ALIF) in the engine
    and through its ATRLIF counterpart (:func:`atrlif_params`; ``delta_r``
    overrides the refractory decay) and say where they part: spike counts,
    mismatches, the first mismatching (step, neuron), that neuron's last spike
    before it, both voltages (the engine's before its reset, ATRLIF's v - r)
    and thresholds at that step, and the reason."""
    L = net.layers[0]
    p = L.neuron
    kwargs = atrlif_params(p)
    if delta_r is not None:
        kwargs["delta_r"] = float(delta_r)
    x = np.asarray(x, dtype=np.float64)
    run = fe.simulate(net, x[:, None, :], record_state=True)
    ze, st = run.z[0][:, 0, :], {k: v[:, 0, :] for k, v in run.states[0].items()}
    za, rec = _lava_atrlif_run(L, x, kwargs)
    T, N = ze.shape
    out: dict = {"steps": T, "neurons": N, "atrlif": kwargs, "spikes_engine": int(ze.sum()),
                 "spikes_atrlif": int(za.sum()), "spike_mismatches": int(np.sum(ze != za)),
                 "first_mismatch": None}
    # the mapping of i, v and the resting threshold: every spike up to and including
    # the layer's first, and every v before it, agree
    first = int(np.argmax(ze.any(1))) if ze.any() else T
    exact = np.array_equal(ze[:first + 1], za[:first + 1]) and np.array_equal(st["v"][:first], rec["v"][:first])
    out["exact_before_first_spike"] = bool(exact)
    bad = np.argwhere(ze != za)
    if not len(bad):
        return out
    t, j = (int(v) for v in bad[0])
    # the engine records v after its reset: rebuild v before the comparison from u
    dv, bias, vth6 = (np.broadcast_to(np.asarray(a, dtype=np.int64), (N,)) for a in (p.dv, p.bias, p.vth_scaled))
    v_engine = int(decay(st["v"][t - 1, j] if t else 0, dv[j]) + st["u"][t, j] + bias[j])
    th_engine = int(st["theta"][t, j] + vth6[j])
    # ATRLIF's monitors hold post_spike values: undo this step's increments
    step6 = kwargs["theta_step"] << VTH_SHIFT
    th_atr = int(rec["theta"][t, j] - (step6 if za[t, j] else 0))
    r_atr = int(rec["r"][t, j] - (2 * th_atr if za[t, j] else 0))
    v_atr = int(rec["v"][t, j]) - r_atr
    earlier = np.flatnonzero(ze[:t, j])
    last = int(earlier[-1]) if earlier.size else None
    reasons = []
    if v_engine != v_atr:
        reasons.append(f"voltage: engine {v_engine}, ATRLIF v - r = {v_atr}"
                       + (f" (after the spike at step {last} the engine reset v to 0; ATRLIF kept v and "
                          f"subtracts r = {r_atr})" if last is not None
                          else " (its input differs: other neurons spiked differently before)"))
    if th_engine != th_atr:
        reasons.append(f"threshold: engine {th_engine}, ATRLIF {th_atr} (ATRLIF decays the increment once "
                       "before it acts)")
    if v_engine == v_atr and th_engine == th_atr:
        reasons.append(f"comparison: v = threshold = {v_engine}; the engine fires on v > threshold, "
                       "ATRLIF on v - r >= theta")
    out["first_mismatch"] = {"step": t, "neuron": j, "engine_spike": int(ze[t, j]), "atrlif_spike": int(za[t, j]),
                             "previous_spike": last, "v_engine": v_engine, "v_minus_r_atrlif": v_atr,
                             "threshold_engine": th_engine, "threshold_atrlif": th_atr, "reason": "; ".join(reasons)}
    return out
