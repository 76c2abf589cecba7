"""ProcessModels (floating_pt and fixed_pt side by side) of the e-prop Processes.

Each model calls the step functions of the engine: fixed_pt models call
:mod:`eprop_lava.neurons.fixed` and the synapse functions of
:mod:`eprop_lava.engine.fixed_engine`; floating_pt models call the float
neuron modules. One source of truth per equation: a Lava model is the engine
run with batch 1, wired through ports. Absolute imports only (Lava executes
the files of a Process's folder; docs/lava_loihi.md §1.3); select these models
explicitly with :func:`eprop_lava.models.network.model_map`.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from eprop_lava.engine import fixed_engine as fe
from eprop_lava.engine.backend import make_ops
from eprop_lava.fixed import update_rng
from eprop_lava.neurons import fixed as fx
from eprop_lava.neurons import get_model
from eprop_lava.processes.process import (
    EpropALIF, EpropDense, EpropIzhikevich, EpropLIF, EpropSTDPALIF, LearningSignal, Readout, ReadoutDense,
)

I64 = np.int64


class _SampleClock:
    """Per-sample management: post_mgmt runs after the last step of each
    sample and, for learning synapses, at every update interval."""

    def _local_step(self) -> int:
        T = self.proc_params["sample_steps"]
        return ((self.time_step - 1) % T) + 1 if T else self.time_step

    def _sample_end(self) -> bool:
        T = self.proc_params["sample_steps"]
        return bool(T) and self.time_step % T == 0

    def post_guard(self) -> bool:
        return self._sample_end()

    def _record(self, var: np.ndarray, value: np.ndarray) -> None:
        row = self.time_step - 1
        if row < self.proc_params["record_steps"]:
            var[row] = value


# ============================================================ neurons
class _NeuronFixed(_SampleClock, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    post_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=16)
    z_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)
    psi_rec: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.p: fx.FixedNeuronParams = proc_params["fixed"]
        self.names = tuple(fx.initial_state(self.p, 1))

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(I64)[None]
        state = {k: getattr(self, k).astype(I64)[None] for k in self.names}
        z, post, new = fx.step(a, state, self.p)
        for k in self.names:
            getattr(self, k)[:] = new[k][0]
        jac = post.get("jac", np.zeros_like(post["psi"]))
        self.s_out.send(z[0])
        self.post_out.send(np.stack([post["psi"][0], jac[0]]))
        self._record(self.z_rec, z[0])
        self._record(self.psi_rec, post["psi"][0])

    def run_post_mgmt(self) -> None:
        for k, v in fx.initial_state(self.p, 1).items():
            getattr(self, k)[:] = v[0]


class _NeuronFloat(_SampleClock, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    post_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    z_rec: np.ndarray = LavaPyType(np.ndarray, float)
    psi_rec: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        layer = proc_params["layer"]
        self.ops = make_ops("numpy")
        self.model = get_model(layer.neuron)
        self.const = self.model.constants(layer, proc_params["dt"], "zero", self.ops)
        self.names = tuple(self.model.initial_state(1, layer.size, self.const, self.ops))

    def run_spk(self) -> None:
        current = self.a_in.recv().astype(np.float64)[None]
        state = {k: getattr(self, k).astype(np.float64)[None] for k in self.names}
        z, new, rec = self.model.step(state, current, self.const, self.ops)
        for k in self.names:
            getattr(self, k)[:] = new[k][0]
        # psi is computed from the step's record (outside autograd) by the model's surrogate
        psi = rec["psi"] if "psi" in rec else self.model.surrogate(rec, self.const, self.ops)
        self.s_out.send(z[0])
        self.post_out.send(np.stack([psi[0], np.zeros_like(psi[0])]))
        self._record(self.z_rec, z[0])
        self._record(self.psi_rec, psi[0])

    def run_post_mgmt(self) -> None:
        init = self.model.initial_state(1, self.proc_params["layer"].size, self.const, self.ops)
        for k in self.names:
            getattr(self, k)[:] = init[k][0]


def _vars(names: tuple, dtype) -> dict:
    return {k: LavaPyType(np.ndarray, dtype, precision=24) for k in names}


def _neuron_models(proc, kind_name: str):
    """A fixed_pt and a floating_pt model class for one neuron Process."""
    fixed = type(f"Py{kind_name}ModelFixed", (_NeuronFixed,), {"__annotations__": {k: np.ndarray for k in proc.state_names},
                                                             **_vars(proc.state_names, I64),
                                                             "__module__": __name__})
    flt = type(f"Py{kind_name}ModelFloat", (_NeuronFloat,), {"__annotations__": {k: np.ndarray for k in proc.state_names},
                                                           **_vars(proc.state_names, float),
                                                           "__module__": __name__})
    fixed = implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag("fixed_pt")(fixed)))
    flt = implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag("floating_pt")(flt)))
    return fixed, flt


PyEpropLIFModelFixed, PyEpropLIFModelFloat = _neuron_models(EpropLIF, "EpropLIF")
PyEpropALIFModelFixed, PyEpropALIFModelFloat = _neuron_models(EpropALIF, "EpropALIF")
PyEpropSTDPALIFModelFixed, PyEpropSTDPALIFModelFloat = _neuron_models(EpropSTDPALIF, "EpropSTDPALIF")
PyEpropIzhikevichModelFixed, PyEpropIzhikevichModelFloat = _neuron_models(EpropIzhikevich, "EpropIzhikevich")


# ============================================================ synapses
@implements(proc=EpropDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEpropDenseModelFixed(_SampleClock, PyLoihiProcessModel):
    """Dense with per-synapse e-prop state (fixed_engine.hidden_synapse_step)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    zpost_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    post_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=16)
    signal_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=8)
    weights: np.ndarray = LavaPyType(np.ndarray, I64, precision=9)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        pp = proc_params
        self.learn = pp["learn"]
        self.exp = pp["weight_exp"]
        self.a_buff = None
        self.syn = None
        self.pre_prev = None
        if self.learn:
            self.rng = update_rng(*pp["rng_key"])
            self.sig = slice(*pp["signal_slice"])

    def _fresh(self) -> None:
        n_post, n_pre = self.weights.shape
        self.a_buff = np.zeros(n_post, dtype=np.int32)
        self.pre_prev = np.zeros((1, n_pre), dtype=I64)
        if self.learn:
            self.syn = fe.new_hidden_synapse(self.proc_params["post"], 1, n_pre)

    def run_spk(self) -> None:
        if self.a_buff is None:
            self._fresh()
        self.a_out.send(self.a_buff)
        s = self.s_in.recv().astype(I64)[None]
        self.a_buff = fe.dense_output(self.weights, s, self.exp)[0]
        if self.learn:
            pp = self.proc_params
            zpost = self.zpost_in.recv().astype(I64)[None]
            post = self.post_in.recv().astype(I64)
            signal = self.signal_in.recv().astype(I64)[self.sig][None]
            record = fx.post_record(pp["post"], zpost, {"psi": post[0][None], "jac": post[1][None]}, self.syn["rec"])
            self.syn = fe.hidden_synapse_step(self.syn, pp["post"], record, self.pre_prev, signal, pp["d_kappa"],
                                              pp["profile"])
        self.pre_prev = s

    def post_guard(self) -> bool:
        if not self.learn:
            return self._sample_end()
        return self._sample_end() or fe.is_update_step(self._local_step(), self.proc_params["sample_steps"] or 0,
                                                       self.proc_params["profile"].update_interval)

    def run_post_mgmt(self) -> None:
        pp = self.proc_params
        if self.learn and fe.is_update_step(self._local_step(), pp["sample_steps"], pp["profile"].update_interval):
            w, _ = fe.apply_interval_update(self.weights.astype(I64), self.syn, pp["lr"], pp["profile"], self.rng,
                                            zero_diagonal=pp["zero_diagonal"])
            self.weights[:] = w
        if self._sample_end():
            self._fresh()


class _DenseFloat(_SampleClock, PyLoihiProcessModel):
    """Float Dense (inference): a_out^{t+1} = W s^t (one-step delay, as Lava's Dense)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        if proc_params["learn"]:
            raise NotImplementedError(f"{type(self).__name__}: learning runs in the float engine; "
                                      "on Lava use the fixed_pt models (learn=True) or learn=False")
        self.a_buff = None

    def run_spk(self) -> None:
        if self.a_buff is None:
            self.a_buff = np.zeros(self.weights.shape[0])
        self.a_out.send(self.a_buff)
        self.a_buff = self.weights @ self.s_in.recv()

    def run_post_mgmt(self) -> None:
        self.a_buff = np.zeros(self.weights.shape[0])


@implements(proc=EpropDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEpropDenseModelFloat(_DenseFloat):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    zpost_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    post_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    signal_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    weights: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=ReadoutDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReadoutDenseModelFixed(_SampleClock, PyLoihiProcessModel):
    """Readout synapses with the presynaptic trace (fixed_engine.readout_synapse_step)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    err_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=8)
    dw_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=9)
    weights: np.ndarray = LavaPyType(np.ndarray, I64, precision=9)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.learn = proc_params["learn"]
        self.a_buff = None
        self.dw = None
        if self.learn:
            self.rng = update_rng(*proc_params["rng_key"])
            self.cols = slice(*proc_params["col_slice"])

    def _fresh(self) -> None:
        K, n_pre = self.weights.shape
        self.a_buff = np.zeros(K, dtype=np.int32)
        self.pre_prev = np.zeros((1, n_pre), dtype=I64)
        self.syn = fe.new_readout_synapse(1, K, n_pre)

    def run_spk(self) -> None:
        if self.a_buff is None:
            self._fresh()
            self.dw = np.zeros((self.weights.shape[0], self.proc_params["n_total"]), dtype=np.int32)
        self.a_out.send(self.a_buff)
        if self.learn:
            self.dw_out.send(self.dw)
            self.dw = np.zeros_like(self.dw)
        s = self.s_in.recv().astype(I64)[None]
        self.a_buff = fe.dense_output(self.weights, s, self.proc_params["weight_exp"])[0]
        if self.learn:
            err = self.err_in.recv().astype(I64)[None]
            self.syn = fe.readout_synapse_step(self.syn, self.pre_prev, err, self.proc_params["d_kappa"],
                                               self.proc_params["profile"])
        self.pre_prev = s

    def post_guard(self) -> bool:
        if not self.learn:
            return self._sample_end()
        return self._sample_end() or fe.is_update_step(self._local_step(), self.proc_params["sample_steps"] or 0,
                                                       self.proc_params["profile"].update_interval)

    def run_post_mgmt(self) -> None:
        pp = self.proc_params
        if self.learn and fe.is_update_step(self._local_step(), pp["sample_steps"], pp["profile"].update_interval):
            w, delta = fe.apply_interval_update(self.weights.astype(I64), self.syn, pp["lr"], pp["profile"], self.rng)
            self.weights[:] = w
            self.dw[:, self.cols] = delta
        if self._sample_end():
            dw = self.dw
            self._fresh()
            self.dw = dw


@implements(proc=ReadoutDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyReadoutDenseModelFloat(_DenseFloat):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    err_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    dw_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weights: np.ndarray = LavaPyType(np.ndarray, float)


# ============================================================ readout and learning signal
class _ReadoutBase(_SampleClock, PyLoihiProcessModel):
    def run_post_mgmt(self) -> None:
        self.y[:] = 0


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReadoutModelFixed(_ReadoutBase):
    """fixed_engine.readout_step: y = clip24(decay(y, d_kappa) + (a_in << 6) + b)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    y_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    y: np.ndarray = LavaPyType(np.ndarray, I64, precision=24)
    y_rec: np.ndarray = LavaPyType(np.ndarray, I64, precision=24)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(I64)[None]
        y = fe.readout_step(self.y.astype(I64)[None], a, self.proc_params["fixed"])[0]
        self.y[:] = y
        self.y_out.send(y)
        self._record(self.y_rec, y)


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyReadoutModelFloat(_ReadoutBase):
    """y = kappa y + a_in + b (the float engine's leaky filter of W z + b)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    y_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    y: np.ndarray = LavaPyType(np.ndarray, float)
    y_rec: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        y = self.proc_params["kappa"] * self.y + (self.a_in.recv() + self.proc_params["bias"])
        self.y[:] = y
        self.y_out.send(y)
        self._record(self.y_rec, y)


@implements(proc=LearningSignal, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLearningSignalModelFixed(PyLoihiProcessModel):
    """fixed_engine.output_error and learning_signal; B follows W_out's
    updates (dw_in) for symmetric and adaptive feedback. The stochastic
    rounding of both draws from fixed_engine.signal_rngs(seed), kept across
    samples, one step at a time: the engine's streams with batch 1."""

    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    target_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    dw_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=9)
    err_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=8)
    signal_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=8)
    feedback: np.ndarray = LavaPyType(np.ndarray, I64, precision=9)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.err_rng, self.signal_rng = fe.signal_generators(proc_params["seed"], None)

    def run_spk(self) -> None:
        pp = self.proc_params
        prof = pp["profile"]
        if pp["update_feedback"]:
            dw = self.dw_in.recv().astype(I64)
            self.feedback[:] = np.clip(self.feedback + dw.T, *prof.weight_range)
        y = self.y_in.recv().astype(I64)[None]
        tm = self.target_in.recv().astype(np.float64)
        K = pp["n_out"]
        err = fe.output_error(y, tm[None, :K], tm[None, K], pp["loss"], pp["y_scale"], prof, pp.get("error_exp"),
                              rng=self.err_rng)
        signal = fe.learning_signal(err, self.feedback.astype(I64), pp["signal_shift"], prof, rng=self.signal_rng)
        self.err_out.send(err[0])
        self.signal_out.send(signal[0])


@implements(proc=LearningSignal, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLearningSignalModelFloat(PyLoihiProcessModel):
    """Float error and learning signal (eprop_lava.eprop.loss.output_error)."""

    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    target_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    dw_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    err_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    signal_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    feedback: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        from eprop_lava.eprop.loss import output_error

        pp = self.proc_params
        K = pp["n_out"]
        y = self.y_in.recv()[None]
        tm = self.target_in.recv()
        err = output_error(pp["loss"], y, tm[None, :K], tm[None, K], make_ops("numpy"))
        self.err_out.send(err[0])
        self.signal_out.send((err @ self.feedback.T)[0])
