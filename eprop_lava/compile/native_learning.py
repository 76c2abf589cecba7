"""On-chip e-prop as a native graph: Lava's LearningDense with the e-prop
rule in the learning engine's sum-of-products form, the learning signal
computed in closed loop from the readout during the run.

Graph of one sample, per hidden LIF layer r (``neuron`` chooses the LIF):

* input ``RingBuffer`` (host; r = 0) or layer r - 1's spikes ->
  ``LearningDense(w_in_r)`` and, for a recurrent layer, the layer's own
  spikes -> ``LearningDense(w_rec_r)``, both with
  :func:`~eprop_lava.processes.learning_engine.eprop_learning_rule`
  (``Loihi3FLearningRule``, t_epoch = 1), into the layer's LIF;
* each layer -> ``LearningDense(w_out_r)`` (the readout rule,
  :func:`~eprop_lava.processes.learning_engine.readout_learning_rule`) or a
  plain ``Dense`` (``learn_readout=False``) -> the non-spiking readout ``LIF``
  of :mod:`eprop_lava.compile.native` (its v is the engine's y);
* one :class:`~eprop_lava.processes.learning_engine.ClosedLoopLearningSignal`
  per layer reads the readout's v through a RefPort after every step, takes
  target and mask from a float ``TargetSource`` and sends its rows of
  L^t = (B err^t) >> shift on the next step (the engine's output_error and
  learning_signal); the first one also sends err^t, split by sign, to every
  readout LearningDense;
* ``neuron="eprop"``: :class:`~eprop_lava.processes.learning_engine.EpropLearningLIF`
  (Lava's LIF dynamics, bit-exact, plus a model that sends the graded psi as
  y1 and forwards L from ``a_third_factor_in`` as y2 / y3: exact e-prop post
  factor, but a custom neuron model, on Loihi 2 neuron microcode);
  ``neuron="standard"``: Lava's own ``LearningLIF`` with its own model
  (``PyLearningLIFModelFixed``, which sends only s_out: its spikes go to the
  LearningDenses' ``s_in_bap`` and the rule uses the post spike, y0, in
  place of psi; L goes from the learning-signal process straight into the
  LearningDenses' y2 / y3 ports, because that model ignores
  ``a_third_factor_in``); ``learn_hidden=False``: Lava's plain Dense and LIF
  (only the readout learns).

Delays (docs/fixed_point.md, "Native on-chip e-prop"): Dense and
LearningDense send on step t what they received on t - 1 (the engine's Loihi
timing, so the neuron dynamics stay the engine's); the readout's v^t is read
in the management phase of step t, so L^t reaches the synapses at t + 1,
where the learning engine multiplies it with the tag after step t (the
engine: L^t with e-bar^{t-1}); weights change every step (the engine: at the
end of the sample); the eligibility is not cut at post spikes (x1 belongs to
the presynaptic neuron); the recurrent diagonal learns during a sample and is
zeroed after it (the engine keeps it 0). :data:`ENGINE_VARIANTS` add these
differences to the engine one at a time, to measure what each costs.

Every Lava run stops its runtime on every path
(:func:`eprop_lava.models.network.run_guarded`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from eprop_lava.compile.native import NativeError, bias_mant_exp, VTH_NEVER
from eprop_lava.engine import fixed_engine as fe

I64 = np.int64
NEURONS = ("eprop", "eprop_cut", "standard")
#: sign + 8 magnitude bits: a LearningDense keeps every learned integer weight
#: (8 would drop the LSB of a mixed-sign matrix once, at the first step)
LEARNING_WEIGHT_BITS = 9


def check_native_learning(net: fe.FixedNetwork) -> None:
    """Raise NativeError naming the first thing native on-chip e-prop cannot hold."""
    for r, L in enumerate(net.layers):
        if L.neuron.kind != "lif":
            raise NativeError(f"native on-chip e-prop: layer {r} is {L.neuron.kind}; the learning-engine rule is "
                              "built for LIF (ALIF e-prop needs per synapse the threshold eligibility eps_a next to "
                              "e-bar and the pairing delay, one more than a LearningDense's three synaptic "
                              "variables w, tag_2, tag_1; and no standard Lava neuron matches the engine's ALIF); "
                              "use --deploy eprop")
    if net.spec.learning.variant != "random":
        raise NativeError(f"native on-chip e-prop: {net.spec.learning.variant} feedback makes B follow W_out's "
                          "on-chip changes, which the learning-signal process does not read back; train with "
                          "random feedback or use --deploy eprop")


def matrix_names(net: fe.FixedNetwork) -> list[str]:
    """The learning matrices, named as FixedNetwork.weights() names them."""
    out = []
    for r, L in enumerate(net.layers):
        out.append(f"layers.{r}.w_in")
        if L.w_rec is not None:
            out.append(f"layers.{r}.w_rec")
    return out + ["readout.w"]


def rules(net: fe.FixedNetwork, neuron: str, seed: int = 0) -> dict:
    """The EpropRule of every learning matrix (keys: :func:`matrix_names`;
    the readout has one rule per layer's slice, "readout.w.R")."""
    from eprop_lava.processes.learning_engine import LearningEngineError

    if any(L.lr is None for L in net.layers) or net.readout.lr is None:
        raise NativeError("native on-chip e-prop: the network has no learning rate (compile with --lr)")
    try:
        return _rules(net, neuron, seed)
    except LearningEngineError as exc:
        raise NativeError(f"native on-chip e-prop: {exc} (the learning engine's constants are m 2^e with "
                          "m in [-8, 7], e in [-7, 8]; compile with another --lr)") from None


def lr_shifts(lr: Any, readout: bool = False, cut: bool = False) -> tuple:
    """(pre_shift, tag_shift) that bring ``lr`` (the engine's m 2^e per
    accumulator unit) into the dw constant's range (rule exponent e + 1 >= -7):
    first x1's impulse (16 -> 1 at most: 4 bits), then the tag's increment
    (hidden synapses only: the readout's t is a copy of x1)."""
    need = max(0, -7 - (int(lr.exponent) + 1))
    pre = min(need, 4)
    tag = need - pre
    if cut:  # the y1 x1 product is shifted by 3 bits only: tag_shift <= 3 + y_shift
        return pre, tag, max(0, tag - 3)
    if readout and tag:
        raise NativeError(f"native on-chip e-prop: the readout learning rate {lr.value:.3g} is {need} binary orders "
                          "below the learning engine's smallest weight constant; at most 4 can be taken from x1's "
                          "impulse (compile with a larger --lr)")
    return pre, tag


def _rules(net: fe.FixedNetwork, neuron: str, seed: int) -> dict:
    from eprop_lava.processes.learning_engine import eprop_learning_rule, readout_learning_rule

    ro, prof = net.readout, net.profile
    out = {}
    cut = neuron == "eprop_cut"
    for r, L in enumerate(net.layers):
        kw = dict(dv=int(np.max(L.neuron.dv)), d_kappa=int(ro.d_kappa), trace_impulse=prof.trace_impulse,
                  psi_bits=prof.psi_bits, product_shift_ref=prof.product_shift, pairing="delay",
                  post_factor={"eprop": "psi", "eprop_cut": "psi_cut", "standard": "spike"}[neuron])

        def shifts(lr: Any) -> dict:
            sh = lr_shifts(lr, cut=cut)
            return dict(pre_shift=sh[0], tag_shift=sh[1], **({"y_shift": sh[2]} if cut else {}))

        out[f"layers.{r}.w_in"] = eprop_learning_rule(lr=L.lr, rng_seed=seed + 3 * r, **shifts(L.lr), **kw)
        if L.w_rec is not None:
            out[f"layers.{r}.w_rec"] = eprop_learning_rule(lr=L.rec_lr, rng_seed=seed + 3 * r + 1,
                                                           **shifts(L.rec_lr), **kw)
        pre, _ = lr_shifts(ro.lr, readout=True)
        out[f"readout.w.{r}"] = readout_learning_rule(d_kappa=int(ro.d_kappa), lr=ro.lr,
                                                      trace_impulse=prof.trace_impulse,
                                                      product_shift_ref=prof.product_shift, rng_seed=seed + 3 * r + 2,
                                                      pre_shift=pre)
    return out


def run_sample(net: fe.FixedNetwork, x: np.ndarray, target: np.ndarray, mask: np.ndarray, neuron: str = "eprop",
               learn_readout: bool = True, seed: int = 0, record: bool = False, timeout: float = 300.0,
               learn_hidden: bool = True) -> dict:
    """One sample (x (T, n_in) spikes, target (T, K), mask (T,)) through the
    closed-loop native learning graph, starting from ``net``'s weights.
    Returns the weights after it (:func:`matrix_names`, integers) and, with
    ``record``, per layer r: "z.r" the spikes (T, N_r), "signal.r" the
    learning signal its process computed at each step, and for
    ``neuron="eprop"`` "psi.r" and "received.r" (what the neurons sent as y1
    and received as third factor); "err" and "y" (T, K): the output error and
    the readout v the first process read. ``learn_hidden=False``: the hidden
    layers are Lava's plain Dense and LIF (only the readout learns; every
    process but the learning-signal one is then standard)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense, LearningDense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF, LearningLIF

    from eprop_lava.compile.native import weight_bits
    from eprop_lava.models.learning_engine import model_map
    from eprop_lava.models.network import ClassKeyedModelMap, run_guarded
    from eprop_lava.processes.learning_engine import ClosedLoopLearningSignal, EpropLearningLIF, TargetSource

    if neuron not in NEURONS:
        raise NativeError(f"neuron: expected one of {', '.join(NEURONS)}, got {neuron!r}")
    check_native_learning(net)
    x = np.asarray(x)
    T = x.shape[0]
    ro, prof = net.readout, net.profile
    K = ro.w.shape[0]
    R = rules(net, neuron, seed)
    slices = fe.layer_slices(net.spec)
    rows = T if record else 0
    mant, exp = bias_mant_exp(ro.bias, K, "readout")
    readout = LIF(shape=(K,), du=4095, dv=int(ro.d_kappa), vth=VTH_NEVER, bias_mant=mant, bias_exp=exp,
                  name="readout")
    src = RingBuffer(data=x.T.astype(np.float64).copy())
    tm = np.concatenate([np.asarray(target, dtype=np.float64), np.asarray(mask, dtype=np.float64)[:, None]], axis=1)
    tgt = TargetSource(data=tm.T.copy())

    def learning(w: np.ndarray, rule: Any, weight_exp: int, name: str) -> Any:
        return LearningDense(weights=w.astype(np.int32).copy(), learning_rule=rule, weight_exp=int(weight_exp),
                             num_weight_bits=LEARNING_WEIGHT_BITS, name=name)

    dense, lifs, sigs, sinks = {}, [], [], []
    below = src.s_out
    for r, L in enumerate(net.layers):
        p, N = L.neuron, L.neuron.size
        bm, be = bias_mant_exp(p.bias, N, f"layer {r}")
        lif_kw = dict(shape=(N,), du=int(np.max(p.du)), dv=int(np.max(p.dv)), vth=int(np.max(p.vth)),
                      bias_mant=bm, bias_exp=be, name=f"layer{r}")
        rule_in = R[f"layers.{r}.w_in"].learning_rule()
        if not learn_hidden:
            lif = LIF(**lif_kw)
        elif neuron in ("eprop", "eprop_cut"):
            cut = None
            if neuron == "eprop_cut":  # every matrix of the layer shares the neuron's traces: one y_shift
                ys = {lr_shifts(lr, cut=True)[2] for lr in (L.lr, L.rec_lr)}
                if len(ys) != 1:
                    raise NativeError(f"layer {r}: the input and recurrent learning rates need different psi "
                                      "shifts; give both matrices one weight exponent")
                cut = {"alpha": (4096 - int(np.max(p.dv))) / 4096.0, "y_shift": ys.pop()}
            lif = EpropLearningLIF(learning_rule=rule_in, psi_bits=prof.psi_bits, psi_params=p, record_steps=rows,
                                   cut=cut, **lif_kw)
        else:
            lif = LearningLIF(learning_rule=rule_in, **lif_kw)
        # one learning-signal process per layer (its rows of B); each reads the readout's v itself
        ls = ClosedLoopLearningSignal(n_out=K, n_neurons=N, feedback=net.feedback[slices[r]], loss=net.spec.loss,
                                      y_scale=ro.y_scale, profile=prof, signal_shift=net.signal_shift,
                                      error_exp=net.error_exp, record_steps=rows, name=f"learning_signal{r}")
        ls.y_ref.connect_var(readout.v)
        tgt.s_out.connect(ls.target_in)

        def post_traces(ld: Any) -> None:
            if neuron != "standard":
                lif.s_out_bap.connect(ld.s_in_bap)
                lif.s_out_y1.connect(ld.s_in_y1)
                lif.s_out_y2.connect(ld.s_in_y2)
                lif.s_out_y3.connect(ld.s_in_y3)
            else:  # s_in_y1 stays unconnected: Lava's InPort then receives zeros
                lif.s_out.connect(ld.s_in_bap)
                ls.signal_pos_out.connect(ld.s_in_y2)
                ls.signal_neg_out.connect(ld.s_in_y3)

        def hidden(w: np.ndarray, key: str, weight_exp: int, name: str) -> Any:
            if not learn_hidden:
                return Dense(weights=w.copy(), weight_exp=int(weight_exp), num_weight_bits=weight_bits(w), name=name)
            ld = learning(w, R[key].learning_rule() if key != f"layers.{r}.w_in" else rule_in, weight_exp, name)
            post_traces(ld)
            return ld

        d_in = hidden(L.w_in, f"layers.{r}.w_in", L.weight_exp, f"w_in{r}")
        below.connect(d_in.s_in)
        d_in.a_out.connect(lif.a_in)
        dense[f"layers.{r}.w_in"] = d_in
        if L.w_rec is not None:
            d_rec = hidden(L.w_rec, f"layers.{r}.w_rec", L.rec_exp, f"w_rec{r}")
            lif.s_out.connect(d_rec.s_in)
            d_rec.a_out.connect(lif.a_in)
            dense[f"layers.{r}.w_rec"] = d_rec
        if neuron != "standard" and learn_hidden:
            ls.signal_out.connect(lif.a_third_factor_in)
        w_out = ro.w[:, slices[r]]
        if learn_readout:
            d_out = learning(w_out, R[f"readout.w.{r}"].learning_rule(), ro.weight_exp, f"w_out{r}")
            err_sender = sigs[0] if sigs else ls  # the first process sends the output error to every readout slice
            err_sender.err_pos_out.connect(d_out.s_in_y2)
            err_sender.err_neg_out.connect(d_out.s_in_y3)
        else:
            d_out = Dense(weights=w_out.copy(), weight_exp=int(ro.weight_exp), num_weight_bits=weight_bits(w_out),
                          name=f"w_out{r}")
        lif.s_out.connect(d_out.s_in)
        d_out.a_out.connect(readout.a_in)
        dense[f"readout.w.{r}"] = d_out
        if record:
            sink = Sink(shape=(N,), buffer=T)
            lif.s_out.connect(sink.a_in)
            sinks.append(sink)
        lifs.append(lif)
        sigs.append(ls)
        below = lif.s_out
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=ClassKeyedModelMap(model_map()))

    def as_int(v: Any) -> np.ndarray:
        return np.rint(np.asarray(v.get(), dtype=np.float64)).astype(I64)

    def read() -> dict:
        out = {k: as_int(d.weights) for k, d in dense.items()}
        if record:
            out["err"] = as_int(sigs[0].err_rec)
            out["y"] = as_int(sigs[0].y_rec)
            for r in range(len(lifs)):
                out[f"signal.{r}"] = as_int(sigs[r].signal_rec)
                out[f"z.{r}"] = as_int(sinks[r].data).T
                if neuron != "standard" and learn_hidden:
                    out[f"psi.{r}"] = as_int(lifs[r].psi_rec)
                    out[f"received.{r}"] = as_int(lifs[r].signal_rec)
        return out

    t0 = time.perf_counter()
    out = run_guarded(src, T, cfg, read, timeout)
    out["seconds"] = time.perf_counter() - t0
    lo, hi = prof.weight_range
    out["readout.w"] = np.concatenate([out.pop(f"readout.w.{r}") for r in range(len(net.layers))], axis=1)
    for k in matrix_names(net):
        out[k] = np.clip(out[k], lo, hi)
        if k.endswith("w_rec"):
            np.fill_diagonal(out[k], 0)
    return out


def with_weights(net: fe.FixedNetwork, w: dict) -> fe.FixedNetwork:
    """A copy of ``net`` holding the weights ``w`` (:func:`matrix_names` keys)."""
    out = net.copy()
    for r, L in enumerate(out.layers):
        L.w_in = np.asarray(w[f"layers.{r}.w_in"], dtype=I64).copy()
        if L.w_rec is not None:
            L.w_rec = np.asarray(w[f"layers.{r}.w_rec"], dtype=I64).copy()
    out.readout.w = np.asarray(w["readout.w"], dtype=I64).copy()
    return out


def _no_cut_record(p: Any, z: np.ndarray, post: dict, syn: dict) -> dict:
    """The post record without its spike: the eligibility is not reset at post spikes."""
    from eprop_lava.neurons import fixed as fx

    return fx.post_record(p, np.zeros_like(z), post, syn["rec"])


def _late_signal_step(syn: dict, p: Any, rec: dict, post: dict, pre: np.ndarray, sig: np.ndarray, d_kappa: int,
                      prof: Any) -> dict:
    """The exact synapse step fed with the previous step's learning signal."""
    prev = syn.get("signal_prev", np.zeros_like(np.asarray(sig)))
    out = fe.hidden_synapse_step(syn, p, rec, pre, prev, d_kappa, prof)
    out["signal_prev"] = np.asarray(sig).copy()
    return out


_NO_CUT = fe.SynapseRule(new=fe.new_hidden_synapse, record=_no_cut_record, step=fe.PER_SYNAPSE.step)
_NO_CUT_LATE = fe.SynapseRule(new=fe.new_hidden_synapse, record=_no_cut_record, step=_late_signal_step)
#: the exact rule with the native graph's structural differences added one
#: after another (for measuring causes; (synapses, per_step)): no
#: eligibility reset at post spikes; the hidden learning signal one step
#: late; weights updated every step (stochastic rounding every step)
ENGINE_VARIANTS = {
    "no_reset_cut": (_NO_CUT, False),
    "no_reset_cut_signal_late": (_NO_CUT_LATE, False),
    "no_reset_cut_signal_late_per_step": (_NO_CUT_LATE, True),
}


def engine_sample(net: fe.FixedNetwork, x: np.ndarray, target: np.ndarray, mask: np.ndarray,
                  rngs: dict | None = None, synapses: Any = None, per_step: bool = False) -> dict:
    """The exact rule on the same sample: fe.simulate(learn=True) ("loihi2":
    update at the end of the sample) from ``net``'s weights. Returns the
    weights after it and, under "expected", the update before its stochastic
    rounding, -m 2^e acc (float; what the rounded update equals on average).
    ``synapses``, ``per_step`` (weights updated every step, as the learning
    engine does): the cause measurements of :data:`ENGINE_VARIANTS`."""
    probe = net.copy()
    if per_step:
        probe.profile = probe.profile.with_(update_interval=1)
    expected: dict = {}

    def update(netx: Any, syn_in: Any, syn_rec: Any, syn_out: Any, rngs_: Any, slices: Any) -> None:
        ro = netx.readout
        parts = {"readout.w": -ro.lr.value * np.concatenate([s_["acc"] for s_ in syn_out], axis=1).astype(np.float64)}
        for r, L in enumerate(netx.layers):
            parts[f"layers.{r}.w_in"] = -L.lr.value * syn_in[r]["acc"].astype(np.float64)
            if syn_rec[r] is not None:
                parts[f"layers.{r}.w_rec"] = (-L.rec_lr.value * syn_rec[r]["acc"].astype(np.float64)
                                              * (1 - np.eye(L.neuron.size)))
        for k, v in parts.items():  # summed over the update intervals (one per sample in "loihi2")
            expected[k] = expected.get(k, 0.0) + v
        fe._update_all(netx, syn_in, syn_rec, syn_out, rngs_, slices)  # the engine's own update (deploy.learn_run)

    fe.simulate(probe, np.asarray(x)[:, None, :], np.asarray(target)[:, None, :], np.asarray(mask)[:, None],
                learn=True, rngs=rngs, on_update=update, synapses=synapses)
    out = {k: v for k, v in probe.weights().items() if k != "feedback.b"}
    out["expected"] = expected
    return out


def update_agreement(native_dw: dict, engine_dw: dict) -> dict:
    """Per matrix and over the hidden matrices together: cosine of the
    native update with the engine's, and the norm ratio ||native|| / ||engine||."""
    def one(a: np.ndarray, b: np.ndarray) -> dict:
        a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return {"cosine": float(a @ b / (na * nb)) if na > 0 and nb > 0 else None,
                "norm_ratio": na / nb if nb > 0 else None, "norm_native": na, "norm_engine": nb}

    out = {k: one(native_dw[k], engine_dw[k]) for k in engine_dw}
    hidden = [k for k in engine_dw if k.startswith("layers.")]
    if hidden:
        out["hidden"] = one(np.concatenate([np.ravel(native_dw[k]) for k in hidden]),
                            np.concatenate([np.ravel(engine_dw[k]) for k in hidden]))
    return out


def engine_readout_only(net: fe.FixedNetwork, train: Any, test: Any, task: Any, every: int) -> dict:
    """The engine's online learning with the hidden weights frozen (the
    reference of ``learn_native(learn_hidden=False)``): each sample's exact
    update, of which only W_out is kept (the engine updates at the end of a
    sample, so the readout's update does not depend on the hidden one)."""
    from eprop_lava.compile.deploy import held_out_error, online_curve

    cur = net.copy()
    rngs = fe.update_rngs(cur)

    def learn_one(s: int) -> None:
        eng = engine_sample(cur, train.x[:, s], train.target[:, s], train.mask[:, s], rngs)
        cur.readout.w = np.asarray(eng["readout.w"], dtype=I64).copy()

    curve = online_curve(train.x.shape[1], learn_one, lambda n: held_out_error(cur, test, task, n), every)
    return {"net": cur, "curve": curve, "error_before": curve[0]["error"], "error_after": curve[-1]["error"]}


def learn_native(net: fe.FixedNetwork, train: Any, neuron: str = "eprop", learn_readout: bool = True,
                 test: Any = None, task: Any = None, every: int | None = None, compare: bool = True,
                 timeout: float = 300.0, progress: Any = None, variants: tuple = (),
                 learn_hidden: bool = True) -> dict:
    """Online native learning over the samples of ``train`` (a deploy.TestSet,
    (T, S, ...)), one Lava run per sample, weights carried over. With
    ``compare``: each sample's update against the engine's exact update of the
    same sample from the same weights (:func:`update_agreement`). With
    ``test`` and ``task``: held-out error (the learned weights loaded into the
    engine, bit-exact to native inference) before, every ``every`` samples
    and after. ``variants``: names of :data:`ENGINE_VARIANTS` to compare
    against as well. ``learn_hidden=False``: only the readout learns (hidden
    weights frozen), compared with the engine's readout update. Returns the
    learned net, per-sample agreements, curve."""
    from eprop_lava.compile.deploy import held_out_error, online_curve

    cur = net.copy()
    rngs = fe.update_rngs(cur)
    S = train.x.shape[1]
    per_sample, seconds = [], 0.0

    def learn_one(s: int) -> None:
        nonlocal cur, seconds
        x, tg, mk = train.x[:, s], train.target[:, s], train.mask[:, s]
        before = {k: v for k, v in cur.weights().items() if k != "feedback.b"}
        res = run_sample(cur, x, tg, mk, neuron=neuron, learn_readout=learn_readout, seed=s, timeout=timeout,
                         learn_hidden=learn_hidden)
        seconds += res["seconds"]
        new = {k: res[k] for k in before}
        if compare:
            eng = engine_sample(cur, x, tg, mk, rngs)
            keys = [k for k in before if (learn_readout or k != "readout.w") and (learn_hidden or k == "readout.w")]
            dw = {k: new[k] - before[k] for k in keys}
            row = {"vs_applied": update_agreement(dw, {k: eng[k] - before[k] for k in keys}),
                   "vs_expected": update_agreement(dw, {k: eng["expected"][k] for k in keys})}
            for name in variants:
                syn, per_step = ENGINE_VARIANTS[name]
                ev = engine_sample(cur, x, tg, mk, fe.update_rngs(cur), syn, per_step)["expected"]
                row[f"vs_expected_{name}"] = update_agreement(dw, {k: ev[k] for k in keys})
            per_sample.append(row)
        cur = with_weights(cur, new)

    scoring = test is not None and task is not None
    curve = online_curve(S, learn_one, (lambda n: held_out_error(cur, test, task, n)) if scoring else None, every,
                         progress)
    out = {"net": cur, "per_sample": per_sample, "lava_seconds": seconds, "samples": S}
    if scoring:
        out.update(error_before=curve[0]["error"], error_after=curve[-1]["error"], curve=curve)
    return out


def summary(per_sample: list, key: str = "hidden", against: str = "vs_expected") -> dict:
    """Mean / min / max of the per-sample cosine and norm ratio of ``key``
    against the engine's update ("vs_applied": after its stochastic rounding;
    "vs_expected": before it)."""
    out = {}
    for metric in ("cosine", "norm_ratio"):
        vals = np.array([r[against][key][metric] for r in per_sample
                         if key in r[against] and r[against][key][metric] is not None])
        out[metric] = ({"mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max()),
                        "samples": int(vals.size)} if vals.size else None)
    return out


def learning_report(net: fe.FixedNetwork, train: Any, test: Any, task: Any, neuron: str = "eprop",
                    timeout: float = 300.0, progress: Any = None) -> dict:
    """``run --learn`` on a native artifact: online native learning on the
    samples of ``train`` against the engine's exact rule (per-sample update
    cosine and norm ratio from the same weights; held-out error of the
    native-learned weights, run in the engine, against the engine's own
    online learning on the same samples). JSON-serializable."""
    from eprop_lava.compile import deploy
    from eprop_lava.compile.native import learning_placement

    S = int(train.x.shape[1])
    nat = learn_native(net, train, neuron, test=test, task=task, every=S, timeout=timeout, progress=progress)
    eng = deploy.learn_run(net, train, test, task, S)
    return {"neuron": neuron, "samples": S, "test_samples": int(test.x.shape[1]),
            "graph": "closed loop: RingBuffer -> LearningDense(w_in, w_rec) -> "
                     + ("EpropLearningLIF" if neuron == "eprop" else "LearningLIF") +
                     " -> LearningDense(w_out) -> readout LIF; ClosedLoopLearningSignal reads v, sends L (one "
                     "step later)",
            "placement": learning_placement(net, neuron),
            "update_vs_engine": {against: {k: summary(nat["per_sample"], k, against)
                                           for k in nat["per_sample"][0][against]}
                                 for against in ("vs_expected", "vs_applied")},
            "error_before": nat["error_before"], "error_after_native": nat["error_after"],
            "error_after_engine": eng["error_after"], "lava_seconds": nat["lava_seconds"],
            "reference": "fixed-point engine fe.simulate(learn=True), profile " + net.profile.name +
                         ", update at the end of each sample; held-out error: weights run in the engine"}


def float_eprop_of_run(net: fe.FixedNetwork, x: np.ndarray, run: dict, cut: bool) -> dict:
    """The float e-prop update of every hidden matrix on a native run's own
    stream (``run_sample(record=True)``: its spikes, psi and the learning
    signal as the neurons received it), the reference that measures the
    learning-engine arithmetic alone (no rounding, no ranges): per
    synapse (seed 002 Eq. 2.37, Loihi timing) eps^t = alpha eps^{t-1}
    [(1 - z_j^{t-1}) with ``cut``] + impulse pre^{t-1}; dW -= lr L^t e-bar^{t-1}
    / 2^product_shift; e-bar^t = kappa e-bar^{t-1} + psi^t eps^t / 2^psi_bits."""
    prof, kappa = net.profile, (4096 - net.readout.d_kappa) / 4096.0
    out = {}
    for r, L in enumerate(net.layers):
        z, psi = run[f"z.{r}"].astype(float), run[f"psi.{r}"].astype(float)
        sig = run[f"received.{r}"].astype(float)
        alpha = (4096 - float(np.max(L.neuron.dv))) / 4096.0
        pres = {f"layers.{r}.w_in": (np.asarray(x if r == 0 else run[f"z.{r - 1}"], dtype=float), L.lr)}
        if L.w_rec is not None:
            pres[f"layers.{r}.w_rec"] = (z, L.rec_lr)
        for name, (pre, lr) in pres.items():
            T, n_pre = pre.shape
            eps, ebar, grad = np.zeros((z.shape[1], n_pre)), np.zeros((z.shape[1], n_pre)), 0.0
            for t in range(T):
                keep = (1.0 - z[t - 1][:, None]) if (cut and t > 0) else 1.0
                eps = alpha * eps * keep + prof.trace_impulse * (pre[t - 1][None, :] if t > 0 else 0.0)
                grad = grad + sig[t][:, None] * ebar / 2.0 ** prof.product_shift
                ebar = kappa * ebar + psi[t][:, None] * eps / 2.0 ** prof.psi_bits
            dw = -lr.value * grad
            if name.endswith("w_rec"):
                np.fill_diagonal(dw, 0.0)
            out[name] = dw
    return out
