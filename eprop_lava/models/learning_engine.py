"""The learning-engine variant of the e-prop synapse, run in Lava's
bit-approximate model, and its comparison with the exact fixed-point
reference (EpropDense, "loihi2" profile).

* :class:`PyEpropLearningLIFModel`: the ProcessModel of
  :class:`~eprop_lava.processes.learning_engine.EpropLearningLIF` (Lava's
  LIF bit-accurate dynamics; sends bAP, psi and the split learning signal
  every step).
* :class:`PyClosedLoopLearningSignalModel`: the learning signal from the
  readout's v (RefPort, management phase) and the target stream, sent on
  the next step; :class:`PyTargetSourceModel`: a float RingBuffer.
* :func:`run_learning_engine`: one LIF layer fed by a spike stream, its
  LearningDense learning with the e-prop rule from a precomputed
  learning-signal stream; ``PyLearningDenseModelBitApproximate`` selected
  explicitly, timeout and ``stop()`` on every path.
* :func:`reference_eprop`: the same layer with the exact reference
  (:func:`eprop_lava.engine.fixed_engine.hidden_synapse_step`, the code of
  ``PyEpropDenseModelFixed``), and the float e-prop gradient of the same run.
* :func:`compare_learning_engine`: both on the same inputs; a
  JSON-serializable report of the difference and of the causes measured
  separately (informational: a learning engine is not expected to match).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.magma.core.model.py.neuron import LearningNeuronModelFixed
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort, PyRefPort
from lava.proc.io.source import AbstractPyRingBuffer
from lava.proc.lif.models import AbstractPyLifModelFixed

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.fixed import LearningRate, dense_weights, loihi2_profile, update_rng
from eprop_lava.neurons import fixed as fx
from eprop_lava.processes.learning_engine import (
    SIGNAL_OFFSET, ClosedLoopLearningSignal, EpropLearningLIF, EpropRule, TargetSource, eprop_learning_rule,
    split_signal,
)

I64 = np.int64


@implements(proc=EpropLearningLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEpropLearningLIFModel(LearningNeuronModelFixed, AbstractPyLifModelFixed):
    """LearningLIF that sends its traces (pattern of the three-factor
    tutorial's RSTDPLIFBitAcc): per step u, v as PyLifModelBitAcc, then
    s_out, s_out_bap (spike), s_out_y1 (psi of v before the reset),
    s_out_y2 / s_out_y3 (learning signal from a_third_factor_in, split by sign).
    With ``cut`` (the rule of ``post_factor="psi_cut"``): y1 = psi 2^-y_shift,
    y3 = psi a_j 2^-y_shift with a_j = alpha^(t - t_j) since the neuron's last
    spike t_j (a float here; a neuron program would decay it like v), and
    y2 = L + 64 (L clipped to [-64, 63])."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    psi_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=7)
    z_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)
    signal_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._p = None
        self._since = None
        self.effective_vth = 0

    def scale_threshold(self) -> None:
        """vth << 6, as PyLifModelBitAcc."""
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self) -> np.ndarray:
        return self.v > self.effective_vth

    def _psi_params(self) -> fx.FixedNeuronParams:
        if self._p is None and self.proc_params.get("psi_params") is not None:
            self._p = self.proc_params["psi_params"]
        if self._p is None:
            n = self.v.shape[0]
            self._p = fx.FixedNeuronParams("lif", n, vth=int(np.asarray(self.vth).ravel()[0]),
                                           psi_bits=int(self.proc_params["psi_bits"]))
        return self._p

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        signal = self.a_third_factor_in.recv().astype(I64)
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()
        self.subthr_dynamics(activation_in=a_in)
        spikes = self.spiking_activation()
        p = self._psi_params()
        psi = fx.psi_lif(self.v.astype(I64), p.vth_scaled, p)
        self.reset_voltage(spike_vector=spikes)
        cut = self.proc_params.get("cut")
        if cut:  # eligibility reset at post spikes: y3 = psi a_j, a_j = alpha^(steps since j's last spike)
            if self._since is None:
                self._since = np.ones(psi.shape)
            self._since = self._since * cut["alpha"]
            scale = 2.0 ** -cut["y_shift"]
            self.y1[:] = np.rint(psi * scale)
            self.y3[:] = np.rint(psi * self._since * scale)
            self.y2[:] = np.clip(signal + SIGNAL_OFFSET, 0, 2 * SIGNAL_OFFSET - 1)  # L offset-binary in one trace
            self._since[spikes] = 1.0
        else:
            y2, y3 = split_signal(signal)
            self.y1[:] = psi
            self.y2[:] = y2
            self.y3[:] = y3
        self.s_out.send(spikes)
        self.s_out_bap.send(spikes)
        self.s_out_y1.send(self.y1)
        self.s_out_y2.send(self.y2)
        self.s_out_y3.send(self.y3)
        row = self.time_step - 1
        if row < self.proc_params["record_steps"]:
            self.psi_rec[row] = psi
            self.z_rec[row] = spikes
            self.signal_rec[row] = signal


@implements(proc=ClosedLoopLearningSignal, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyClosedLoopLearningSignalModel(PyLoihiProcessModel):
    """Spike phase of step t: send L^{t-1} (and its sign split, and err^{t-1}),
    receive target^t. Management phase of step t (after every neuron's
    update): read the readout's v^t = y^t through the RefPort, then
    err^t = fixed_engine.output_error(y^t, target^t) and
    L^t = fixed_engine.learning_signal(err^t, B)."""

    target_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    y_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32, precision=24)
    signal_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=8)
    signal_pos_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    signal_neg_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    err_pos_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    err_neg_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=7)
    feedback: np.ndarray = LavaPyType(np.ndarray, I64, precision=9)
    signal_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)
    err_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)
    y_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        N, K = proc_params["n_neurons"], proc_params["n_out"]
        self._signal = np.zeros(N, dtype=I64)
        self._err = np.zeros(K, dtype=I64)
        self._target = np.zeros(K + 1)

    def run_spk(self) -> None:
        pos, neg = split_signal(self._signal)
        epos, eneg = split_signal(self._err)
        self.signal_out.send(self._signal)
        self.signal_pos_out.send(pos)
        self.signal_neg_out.send(neg)
        self.err_pos_out.send(epos)
        self.err_neg_out.send(eneg)
        self._target = self.target_in.recv().astype(np.float64)

    def post_guard(self) -> bool:
        return True

    def run_post_mgmt(self) -> None:
        pp = self.proc_params
        K = pp["n_out"]
        y = np.rint(np.asarray(self.y_ref.read(), dtype=np.float64)).astype(I64)[None]
        tm = self._target
        err = fe.output_error(y, tm[None, :K], tm[None, K], pp["loss"], pp["y_scale"], pp["profile"],
                              pp["error_exp"])
        signal = fe.learning_signal(err, self.feedback.astype(I64), pp["signal_shift"], pp["profile"])
        self._err, self._signal = err[0], signal[0]
        row = self.time_step - 1
        if row < pp["record_steps"]:
            self.signal_rec[row] = self._signal
            self.err_rec[row] = self._err
            self.y_rec[row] = y[0]


@implements(proc=TargetSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyTargetSourceModel(AbstractPyRingBuffer):
    """Float ring buffer (the target and loss mask are host-side floats)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    data: np.ndarray = LavaPyType(np.ndarray, float)


def model_map() -> dict:
    """Explicit {Process: ProcessModel} for the learning-engine graph."""
    from lava.proc.dense.models import PyDenseModelBitAcc, PyLearningDenseModelBitApproximate
    from lava.proc.dense.process import Dense, LearningDense
    from lava.proc.io.source import PySendModelFixed, RingBuffer

    from lava.proc.lif.models import PyLearningLIFModelFixed, PyLifModelBitAcc
    from lava.proc.lif.process import LIF, LearningLIF
    from lava.proc.io.sink import PyReceiveModelFixed, RingBuffer as SinkRingBuffer

    return {RingBuffer: PySendModelFixed, Dense: PyDenseModelBitAcc, LearningDense: PyLearningDenseModelBitApproximate,
            EpropLearningLIF: PyEpropLearningLIFModel, LIF: PyLifModelBitAcc, LearningLIF: PyLearningLIFModelFixed,
            SinkRingBuffer: PyReceiveModelFixed, ClosedLoopLearningSignal: PyClosedLoopLearningSignalModel,
            TargetSource: PyTargetSourceModel}


def run_learning_engine(x: np.ndarray, signal: np.ndarray, weights: np.ndarray, rule: EpropRule, *, du: int = 4095,
                        dv: int = 0, vth: int = 100, bias_mant: Any = 0, bias_exp: Any = 0, psi_bits: int = 7,
                        mode: str = "shadow", monitor_tag: bool = False, timeout: float = 120.0) -> dict:
    """Run the e-prop learning rule on Lava's LearningDense (bit-approximate).

    x (T, n_in) 0/1 input spikes; signal (T, n) integer learning signal
    L^t (sent on a_third_factor_in at step t); weights (n, n_in) integers
    (mixed sign: use even values, Lava truncates the LSB once). mode
    "shadow": a plain bit-accurate Dense with the initial weights drives the
    LIF and the LearningDense only learns (the post dynamics equal the
    reference's, which changes weights at the end of the sample); "closed":
    the LearningDense drives the LIF, its per-step weight changes act from
    the next step. ``monitor_tag``: also return the tag after every step
    (``tag_history`` (T, n, n_in), through a Lava Monitor). Returns weights,
    tag (t), d, psi, z, the received signal and the wall time.

    The LearningDense's sign mode comes from the initial weights: give
    mixed-sign weights, or learning is clamped to one sign (Lava's
    EXCITATORY / INHIBITORY modes)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense, LearningDense
    from lava.proc.io.source import RingBuffer

    from eprop_lava.models.network import ClassKeyedModelMap, run_guarded

    if mode not in ("shadow", "closed"):
        raise ValueError(f"mode: expected 'shadow' or 'closed', got {mode!r}")
    x = np.asarray(x)
    signal = np.asarray(signal)
    w = np.asarray(weights)
    T, n_in = x.shape
    n = w.shape[0]
    if w.shape != (n, n_in) or signal.shape != (T, n):
        raise ValueError(f"shapes: x {x.shape}, signal {signal.shape}, weights {w.shape} do not fit (T, n_in), "
                         "(T, n), (n, n_in)")
    lava_rule = rule.learning_rule()
    src = RingBuffer(data=x.T.astype(np.int32).copy())
    sig = RingBuffer(data=signal.T.astype(np.int32).copy())
    lif = EpropLearningLIF(shape=(n,), du=du, dv=dv, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp,
                           learning_rule=lava_rule, psi_bits=psi_bits, record_steps=T, name="eprop_lif")
    ldense = LearningDense(weights=w.astype(np.int32), learning_rule=lava_rule, name="eprop_learning_dense")
    src.s_out.connect(ldense.s_in)
    if mode == "shadow":
        drive = Dense(weights=w.astype(np.int32), name="drive")
        src.s_out.connect(drive.s_in)
        drive.a_out.connect(lif.a_in)
    else:
        ldense.a_out.connect(lif.a_in)
    lif.s_out_bap.connect(ldense.s_in_bap)
    lif.s_out_y1.connect(ldense.s_in_y1)
    lif.s_out_y2.connect(ldense.s_in_y2)
    lif.s_out_y3.connect(ldense.s_in_y3)
    sig.s_out.connect(lif.a_third_factor_in)
    mapping = model_map()
    monitor = None
    if monitor_tag:
        from lava.proc.monitor.models import PyMonitorModel
        from lava.proc.monitor.process import Monitor

        monitor = Monitor()
        monitor.probe(ldense.tag_1, T)
        mapping[Monitor] = PyMonitorModel
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=ClassKeyedModelMap(mapping))

    def read() -> dict:
        as_int = lambda v: np.rint(np.asarray(v.get(), dtype=np.float64)).astype(I64)  # noqa: E731
        out = dict(weights=as_int(ldense.weights), tag=as_int(ldense.tag_1), d=as_int(ldense.tag_2),
                   psi=as_int(lif.psi_rec), z=as_int(lif.z_rec), signal=as_int(lif.signal_rec))
        if monitor is not None:
            hist = np.asarray(monitor.get_data()[ldense.name]["tag_1"], dtype=np.float64)
            out["tag_history"] = np.rint(hist).astype(I64).reshape(T, n, n_in)
        return out

    t0 = time.perf_counter()
    out = run_guarded(lif, T, cfg, read, timeout)
    out["wall_s"] = time.perf_counter() - t0
    return out


def reference_eprop(x: np.ndarray, signal: np.ndarray, weights: np.ndarray, p: fx.FixedNeuronParams, d_kappa: int,
                    lr: LearningRate, profile: Any = None, rng_key: tuple = (0, 0, 0),
                    cut_at_spikes: bool = True) -> dict:
    """The exact fixed-point e-prop synapse (EpropDense's step functions) on the
    same stream, update at the end of the sample; also the float e-prop
    gradient of the same spikes and psi (exact traces, no rounding).

    cut_at_spikes=False drops the eligibility reset at post spikes
    (eps' = decay(eps) (1 - z) + ...), which the learning engine cannot do:
    used to measure that cause alone."""
    profile = profile or loihi2_profile()
    x = np.asarray(x, dtype=I64)
    signal = np.asarray(signal, dtype=I64)
    w = np.asarray(weights, dtype=I64)
    T, n_in = x.shape
    n = p.size
    state = fx.initial_state(p, 1)
    syn = fe.new_hidden_synapse(p, 1, n_in)
    a_buff = np.zeros((1, n), dtype=I64)
    pre_prev = np.zeros((1, n_in), dtype=I64)
    alpha = (4096 - int(np.asarray(p.dv).ravel()[0])) / 4096.0
    kappa = (4096 - int(d_kappa)) / 4096.0
    eps_f = np.zeros((n, n_in))
    ebar_f = np.zeros((n, n_in))
    grad_f = np.zeros((n, n_in))
    z_prev = np.zeros(n)
    psi_all, z_all = [], []
    for t in range(T):
        z, post, state = fx.lif_step(a_buff, state, p)
        s = x[t][None]
        a_buff = fe.dense_output(w, s, 0)
        record = fx.post_record(p, z, post, syn["rec"])
        if not cut_at_spikes and syn["rec"] is not None:
            syn = dict(syn, rec=dict(syn["rec"], z=np.zeros_like(syn["rec"]["z"])))
        syn = fe.hidden_synapse_step(syn, p, record, pre_prev, signal[t][None], d_kappa, profile)
        # float e-prop of the same run (units: trace impulse, psi_max, signal LSB)
        cut = (1.0 - z_prev[:, None]) if cut_at_spikes else 1.0
        eps_f = alpha * eps_f * cut + profile.trace_impulse * pre_prev[0][None, :]
        grad_f += signal[t][:, None] * ebar_f / 2.0 ** profile.product_shift
        ebar_f = kappa * ebar_f + post["psi"][0][:, None] * eps_f / 2.0 ** p.psi_bits
        z_prev = z[0].astype(float)
        psi_all.append(post["psi"][0])
        z_all.append(z[0])
        pre_prev = s
    acc = syn["acc"].copy()
    new, delta = fe.apply_interval_update(w.copy(), syn, lr, profile, update_rng(*rng_key))
    return dict(weights=new, delta=delta, acc=acc, tag=syn["ebar"][0], psi=np.array(psi_all), z=np.array(z_all),
                delta_float=-lr.value * grad_f, tag_float=ebar_f)


def reference_in_lava(x: np.ndarray, signal: np.ndarray, weights: np.ndarray, p: fx.FixedNeuronParams,
                      d_kappa: int, lr: LearningRate, profile: Any = None, rng_key: tuple = (0, 0, 0),
                      timeout: float = 120.0) -> np.ndarray:
    """The reference as Lava processes: EpropLIF + EpropDense (learn=True,
    one sample of T steps, update at its end) with the same streams; returns
    the weights after the sample (to check :func:`reference_eprop`)."""
    from lava.proc.io.source import RingBuffer

    from eprop_lava.models.network import run_config, run_guarded
    from eprop_lava.processes.process import EpropDense, EpropLIF

    profile = profile or loihi2_profile()
    T, _ = np.asarray(x).shape
    n = p.size
    src = RingBuffer(data=np.asarray(x, dtype=np.float64).T.copy())
    sig = RingBuffer(data=np.asarray(signal, dtype=np.float64).T.copy())
    lif = EpropLIF(n=n, fixed=p, sample_steps=T, name="ref_lif")
    dense = EpropDense(weights=np.asarray(weights), learn=True, post=p, profile=profile, d_kappa=int(d_kappa), lr=lr,
                       rng_key=rng_key, signal_slice=(0, n), n_signal=n, sample_steps=T, name="ref_dense")
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(dense.zpost_in)
    lif.post_out.connect(dense.post_in)
    sig.s_out.connect(dense.signal_in)
    return run_guarded(lif, T, run_config("fixed_pt"),
                       lambda: np.rint(np.asarray(dense.weights.get(), dtype=np.float64)).astype(I64), timeout)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """How well ``a`` reproduces ``b`` (the reference): cosine similarity,
    relative error ||a - b|| / ||b||, sign agreement where b != 0, count of
    differing entries, mean |a| / mean |b| (gain)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    nz = b != 0
    return dict(cosine=float(a @ b / (na * nb)) if na > 0 and nb > 0 else None,
                rel_error=float(np.linalg.norm(a - b) / nb) if nb > 0 else None,
                sign_agreement=float(np.mean(np.sign(a[nz]) == np.sign(b[nz]))) if nz.any() else None,
                differing=int(np.sum(a != b)), total=int(a.size),
                gain=float(np.abs(a).mean() / np.abs(b).mean()) if nb > 0 else None,
                max_abs_diff=float(np.abs(a - b).max()) if a.size else 0.0)


def default_case(seed: int = 0, T: int = 200, n_in: int = 10, n: int = 8) -> dict:
    """The comparison's small network: 10 Poisson inputs (rate 0.15) -> 8 LIF
    (du=4095: Bellec's memoryless current; dv=205: tau_m ~ 20 steps;
    vth=100, i.e. 6400 in v units; about 0.1 spikes per neuron and step),
    even mixed-sign 8-bit weights in [-60, 80], and a smooth learning-signal
    stream in [-127, 127] (low-pass filtered noise, mean |L| ~ 32)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((T, n_in)) < 0.15).astype(I64)
    w = dense_weights(rng.integers(-60, 81, size=(n, n_in)), 8)
    noise = rng.standard_normal((T, n))
    sig = np.zeros((T, n))
    acc = np.zeros(n)
    for t in range(T):
        acc = 0.9 * acc + noise[t]
        sig[t] = acc
    sig = np.clip(np.round(40.0 * sig / max(sig.std(), 1e-9)), -127, 127).astype(I64)
    return dict(x=x, weights=w, signal=sig, du=4095, dv=205, vth=100)


def _rule(case: dict, d_kappa: int, lr: LearningRate, pairing: str, seed: int) -> EpropRule:
    prof = loihi2_profile()
    return eprop_learning_rule(dv=case["dv"], d_kappa=d_kappa, lr=lr, trace_impulse=prof.trace_impulse,
                               psi_bits=prof.psi_bits, product_shift_ref=prof.product_shift, pairing=pairing,
                               rng_seed=seed)


def _summary(values: list) -> dict:
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    if not arr.size:
        return {}
    return dict(mean=float(arr.mean()), min=float(arr.min()), max=float(arr.max()))


def compare_learning_engine(T: int = 200, seeds: tuple = (0, 1, 2), d_kappa: int = 512, lr: tuple = (1, -8),
                            extra_runs: bool = True, timeout: float = 120.0) -> dict:
    """Weight changes of the learning-engine e-prop (Lava bit-approximate)
    against the exact fixed-point reference (EpropDense, "loihi2") on the same
    inputs, spikes, psi and learning signal: one sample of T steps per seed,
    reference update at its end. JSON-serializable; information, not a
    pass/fail check (a learning engine is not expected to match bit for bit).

    ``main``: per seed, Lava's LearningDense (pairing "delay", LIF driven by a
    frozen Dense: "shadow") vs the reference: cosine similarity, relative
    error, sign agreement, differing weights, gain (mean |dw| ratio); also vs
    the reference without the eligibility reset at post spikes, and the
    emulator's bit-exactness (mismatches of weights and tags, expected 0).

    ``causes`` (seed 0; each isolated): the eligibility reset at post spikes
    (reference with vs without it); the engine's arithmetic, removed one
    piece at a time in the bit-exact emulator (shared random number,
    product shifts, per-step weight rounding) and all together; the
    one-step pairing offset (pairing "raw"); closed loop (the LearningDense
    drives the LIF, weights change every step); a kappa that m 2^e cannot
    represent (d_kappa = 410); a learning rate 4x larger (relative rounding
    noise); and the reference's own distance to float e-prop."""
    lr_ = LearningRate(*lr)
    prof = loihi2_profile()
    out: dict[str, Any] = dict(steps=int(T), seeds=[int(s) for s in seeds], d_kappa=int(d_kappa),
                               lr=[int(lr[0]), int(lr[1])], reference="EpropDense step functions, profile loihi2, "
                               "update at the end of the sample", main={}, causes={})
    per_seed = out["main"]
    keep: dict = {}
    for seed in seeds:
        case = default_case(seed=seed, T=T)
        x, w, sig = case["x"], case["weights"], case["signal"]
        p = fx.FixedNeuronParams("lif", w.shape[0], du=case["du"], dv=case["dv"], vth=case["vth"],
                                 psi_bits=prof.psi_bits)
        ref = reference_eprop(x, sig, w, p, d_kappa, lr_, prof, rng_key=(seed, 0, 0))
        nocut = reference_eprop(x, sig, w, p, d_kappa, lr_, prof, rng_key=(seed, 0, 0), cut_at_spikes=False)
        rule = _rule(case, d_kappa, lr_, "delay", seed)
        run = run_learning_engine(x, sig, w, rule, du=case["du"], dv=case["dv"], vth=case["vth"],
                                  psi_bits=prof.psi_bits, mode="shadow", timeout=timeout)
        em = emulate_learning_engine(x, run["psi"], sig, w, rule)
        dw = run["weights"] - w
        per_seed[str(seed)] = dict(
            post_rate=float(ref["z"].mean()), mean_psi=float(ref["psi"].mean()),
            mean_abs_dw_reference=float(np.abs(ref["delta"]).mean()), mean_abs_dw_engine=float(np.abs(dw).mean()),
            dw_vs_reference=agreement(dw, ref["delta"]),
            dw_vs_reference_without_reset_cut=agreement(dw, nocut["delta"]),
            tag_vs_reference=agreement(run["tag"], ref["tag"]),
            tag_vs_reference_without_reset_cut=agreement(run["tag"], nocut["tag"]),
            psi_mismatches=int((run["psi"] != ref["psi"]).sum()), z_mismatches=int((run["z"] != ref["z"]).sum()),
            emulator_mismatches=int((em["weights"] != run["weights"]).sum() + (em["tag"] != run["tag"]).sum()
                                    + (em["d"] != run["d"]).sum()),
            lava_wall_s=round(run["wall_s"], 2))
        if not keep:
            ref_lava = reference_in_lava(x, sig, w, p, d_kappa, lr_, prof, rng_key=(seed, 0, 0), timeout=timeout)
            per_seed[str(seed)]["reference_lava_epropdense_mismatches"] = int((ref_lava != ref["weights"]).sum())
            keep = dict(case=case, p=p, ref=ref, nocut=nocut, run=run, rule=rule, dw=dw)
    out["rule"] = keep["rule"].to_dict()
    out["summary"] = {key: _summary([per_seed[s][key][metric] for s in per_seed]) for key, metric in (
        ("dw_vs_reference", "cosine"), ("dw_vs_reference_without_reset_cut", "cosine"))}
    out["summary"]["rel_error_vs_reference_without_reset_cut"] = _summary(
        [per_seed[s]["dw_vs_reference_without_reset_cut"]["rel_error"] for s in per_seed])
    out["summary"]["sign_agreement_vs_reference_without_reset_cut"] = _summary(
        [per_seed[s]["dw_vs_reference_without_reset_cut"]["sign_agreement"] for s in per_seed])

    # ---- causes, seed 0
    c = out["causes"]
    case, p, ref, nocut, run, rule = (keep[k] for k in ("case", "p", "ref", "nocut", "run", "rule"))
    x, w, sig = case["x"], case["weights"], case["signal"]
    c["reset_cut"] = dict(note="reference without the eligibility reset at post spikes vs reference; the engine's "
                               "x1 is per presynaptic neuron and cannot be reset by a post spike",
                          agreement=agreement(nocut["delta"], ref["delta"]))
    variants = {"engine": {}, "independent_random": dict(shared_random=False),
                "exact_products": dict(exact_products=True), "float_weights": dict(float_weights=True),
                "all_three_removed": dict(shared_random=False, exact_products=True, float_weights=True),
                "reference_rounding": dict(truncate=True)}
    c["engine_arithmetic"] = {}
    for name, flags in variants.items():
        em = emulate_learning_engine(x, run["psi"], sig, w, rule, **flags)
        c["engine_arithmetic"][name] = dict(flags=flags, vs_reference_without_reset_cut=agreement(
            em["weights"] - w, nocut["delta"]), vs_float_without_reset_cut=agreement(em["weights"] - w,
                                                                                     nocut["delta_float"]))
    c["reference_vs_float"] = dict(with_reset_cut=agreement(ref["delta"], ref["delta_float"]),
                                   without_reset_cut=agreement(nocut["delta"], nocut["delta_float"]))
    # kappa that m 2^e cannot represent (0.1 -> nearest)
    dk = 410
    ref_k = reference_eprop(x, sig, w, p, dk, lr_, prof, rng_key=(0, 0, 0), cut_at_spikes=False)
    rule_k = _rule(case, dk, lr_, "delay", 0)
    em_k = emulate_learning_engine(x, run["psi"], sig, w, rule_k)
    em_k_exact = emulate_learning_engine(x, run["psi"], sig, w, rule_k, shared_random=False, exact_products=True,
                                         float_weights=True)
    used = rule_k.kappa_decay[0] * 2.0 ** rule_k.kappa_decay[1]
    c["kappa_constant"] = dict(d_kappa=dk, target=dk / 4096.0, used=used,
                               rule_dt=rule_k.dt, vs_reference_without_reset_cut=agreement(em_k["weights"] - w,
                                                                                          ref_k["delta"]),
                               arithmetic_removed=agreement(em_k_exact["weights"] - w, ref_k["delta"]))
    lr4 = LearningRate(lr_.mantissa, lr_.exponent + 2)
    ref_l = reference_eprop(x, sig, w, p, d_kappa, lr4, prof, rng_key=(0, 0, 0), cut_at_spikes=False)
    em_l = emulate_learning_engine(x, run["psi"], sig, w, _rule(case, d_kappa, lr4, "delay", 0))
    c["learning_rate_x4"] = dict(lr=[lr4.mantissa, lr4.exponent], vs_reference_without_reset_cut=agreement(
        em_l["weights"] - w, ref_l["delta"]), weights_at_limit_engine=int(np.isin(em_l["weights"], (-256, 255)).sum()),
        weights_at_limit_reference=int(np.isin(ref_l["weights"], (-256, 255)).sum()),
        note=f"the smallest reference learning rate the dw constant can express is 2^{-7 - 5 + prof.product_shift}"
             " (the dw constant is m 2^e with e >= -7, applied after the /32 shift of t*y; the reference "
             "shifts L*e-bar by product_shift)")
    if extra_runs:
        for name, pairing, mode in (("pairing_raw", "raw", "shadow"), ("closed_loop", "delay", "closed")):
            r = _rule(case, d_kappa, lr_, pairing, 0)
            run2 = run_learning_engine(x, sig, w, r, du=case["du"], dv=case["dv"], vth=case["vth"],
                                       psi_bits=prof.psi_bits, mode=mode, timeout=timeout)
            c[name] = dict(rule_dt=r.dt, mode=mode,
                           vs_reference_without_reset_cut=agreement(run2["weights"] - w, nocut["delta"]),
                           vs_delay_shadow=agreement(run2["weights"] - w, keep["dw"]),
                           psi_mismatches=int((run2["psi"] != ref["psi"]).sum()))
    return out


# ------------------------------------------------------------------ software model of the engine
def _sr(values: np.ndarray, r: Any) -> np.ndarray:
    """Lava's stochastic_round of a float: floor + (r < fraction)."""
    fl = np.floor(values)
    return (fl + (r < (values - fl))).astype(I64)


def emulate_learning_engine(x: np.ndarray, psi: np.ndarray, signal: np.ndarray, weights: np.ndarray,
                            rule: EpropRule, *, shared_random: bool = True, exact_products: bool = False,
                            float_weights: bool = False, truncate: bool = False, seed: int = 0) -> dict:
    """A numpy model of PyLearningDenseModelBitApproximate running ``rule``
    (t_epoch = 1) on the post neuron's psi and the learning signal; with the
    default flags it reproduces Lava bit for bit (same random streams: trace
    generators seeded rng_seed .. rng_seed + 3, the synaptic-variable
    generator seeded 2, advanced as connection.py does).

    Ablations (each removes one cause of difference to the exact reference):
    ``shared_random=False``: independent random numbers per synapse (trace
    decay per presynaptic neuron, stochastic rounding per synapse) instead of
    one per step shared by all; ``exact_products=True``: no right shift of the
    products (the ÷8 / ÷32 of the 15-bit multiplier); ``float_weights=True``:
    weights accumulate their per-step changes without rounding;
    ``truncate=True``: the reference's rounding instead of Lava's stochastic
    one for the traces and tags (x1 decay floored, t and d rounded toward
    zero; w keeps its rounding) - not an ablation but a check of how much of
    the remaining difference is the rounding mode."""
    x = np.asarray(x, dtype=I64)
    T, n_in = x.shape
    psi = np.asarray(psi, dtype=I64)  # a rule on the post spike (y0): pass the spikes z here
    y2s, y3s = split_signal(signal)
    n = psi.shape[1]
    w = np.asarray(weights, dtype=np.float64 if float_weights else I64).copy()
    tag = np.zeros((n, n_in), dtype=I64)
    d = np.zeros((n, n_in), dtype=I64)
    x1 = np.zeros(n_in, dtype=I64)
    rs = rule.rng_seed
    rng_xd, rng_xi = np.random.default_rng(rs), np.random.default_rng(rs + 1)
    rng_yd = np.random.default_rng(rs + 2)
    rng_w = np.random.default_rng(2)
    rng_local = np.random.default_rng(seed + 12345)
    # initial draws (TraceRandom/ConnVarRandom constructors)
    rng_xd.random(1), rng_xi.integers(0, 128, size=1, dtype=int), rng_yd.random(1)
    np.random.default_rng(rs + 3).random(1)
    rng_w.random(1)
    ax = np.exp(-1.0 / rule.x1_tau)
    ay = np.exp(-1.0 / np.iinfo(np.uint16).max)
    imp_int = int(np.floor(rule.x1_impulse))
    imp_frac = int(round((rule.x1_impulse - imp_int) * 256))
    # post factor: the graded y1 (psi) or, for a rule on the post spike (y0, a dependency, no trace), z
    spike_post = "y0" in rule.dt
    if spike_post:
        s_pre = 0
    else:
        s_pre = 5 if rule.pairing == "delay" else 3
    me, ee = rule.tag_increment
    mk, ek = rule.kappa_decay
    mw, ew = rule.lr
    lim = (1 << 15) - 1

    def prod(value: np.ndarray, shift: int, e: int) -> np.ndarray:
        if exact_products:
            out = value.astype(np.float64) / 2.0 ** shift * 2.0 ** (e + 7)
        else:
            out = np.left_shift(np.right_shift(value, shift), e + 7).astype(np.float64)
        return np.clip(out, -lim - 2, lim)

    def rnd(shape: tuple, draw: float) -> Any:
        return draw if shared_random else rng_local.random(shape)

    def sr(values: np.ndarray, shape: tuple, draw: float) -> np.ndarray:
        return np.trunc(values).astype(I64) if truncate else _sr(values, rnd(shape, draw))

    for k in range(T):
        for _ in range(2):  # recv_traces advances the trace generators twice per step
            r_xd = rng_xd.random(1)[0]
            r_xi = rng_xi.integers(0, 128, size=1, dtype=int)[0]
            r_yd = rng_yd.random(1)[0]
        r_w = rng_w.random(1)[0]
        x1 = np.floor(ax * x1).astype(I64) if truncate else _sr(ax * x1, rnd(x1.shape, r_xd))
        spk = x[k] > 0
        x1[spk] = np.clip(x1[spk] + imp_int + (r_xi < imp_frac), 0, 127)
        y1 = (np.asarray(psi[k], dtype=I64) > 0).astype(I64)[:, None] if spike_post else \
            _sr(ay * np.clip(psi[k], 0, 127), r_yd)[:, None]
        y2 = _sr(ay * y2s[k], r_yd)[:, None]
        y3 = _sr(ay * y3s[k], r_yd)[:, None]
        pre = d if rule.pairing != "raw" else x1[None, :]
        acc_w = w * 128.0
        for y, sign in ((y2, -1), (y3, 1)):
            acc_w = np.clip(acc_w + prod(sign * mw * tag * y, 5, ew), -lim - 2, lim)
        acc_t = tag * 128.0
        if rule.pairing == "delay2":  # the readout rule's delay line t <- d <- x1 (dt = d - t)
            acc_t = np.clip(acc_t + prod(d, 0, 0), -lim - 2, lim)
            acc_t = np.clip(acc_t + prod(-tag, 0, 0), -lim - 2, lim)
        else:
            acc_t = np.clip(acc_t + prod(me * y1 * pre, s_pre, ee), -lim - 2, lim)
            acc_t = np.clip(acc_t + prod(-mk * tag, 0, ek), -lim - 2, lim)
        if rule.pairing in ("delay", "delay2"):
            acc_d = d * 128.0 + prod(np.broadcast_to(x1[None, :], d.shape), 0, 0)
            acc_d = np.clip(acc_d, -lim - 2, lim) + prod(-d, 0, 0)
            d = np.clip(sr(np.maximum(np.clip(acc_d, -lim - 2, lim), 0) / 128.0, d.shape, r_w), 0, 255)
        tag = np.clip(sr(acc_t / 128.0, tag.shape, r_w), -257, 255)
        w = np.clip(acc_w / 128.0, -256, 255) if float_weights else np.clip(_sr(acc_w / 128.0, rnd(w.shape, r_w)),
                                                                             -256, 255)
    return dict(weights=w, tag=tag, d=d)
