"""Lava processes of the on-chip SP network and their ProcessModels (tags ``floating_pt`` and ``fixed_pt``).

Network (one row per stream: row 0 the sample, rows 1..K the SP target signal, all through the same W):

    SPSource ─s→ SPDense_0 ─a→ SPLIF_0 ─s→ SPDense_1 ─a→ SPLIF_1 … ─s→ SPDense_head ─a→ SPReadout
                    ↑──────── δ ────┘          ↑──────── δ ────┘            ↑────────── δ ──────┘

A recurrent block adds SPRecDense, a second synapse group from the block's own spikes back to its compartments
(SPLIF's a_in sums both synapse groups, as Lava's InPort does for several connections):

    SPLIF_i ─s→ SPRecDense_i ─a_rec→ SPLIF_i         (and SPLIF_i ─δ→ SPRecDense_i)

It sends, as Lava's own Dense does to make cycles deadlock-free, the current it computed in the previous step,
so the spikes s[t−1] reach the compartments at step t: the one-step recurrent delay of the spec.

SPDense is the synapse block (weights, bias synapse, and the learning engine: ΔW = −lr δᵀ s_in, the
pre-synaptic input times the third factor δ); SPLIF holds the LIF compartments of every stream and computes
the third factor δ = ∂L/∂v from its pre-reset voltages; SPReadout integrates the head's output (membrane
readout) and sends the head's cross-entropy error. Learning happens in ``run_spk`` of every step, so weights
change during the run. Dense adds one step of latency (as Lava's Dense), so layer l works on sample n during
steps n·T + l + 1 … n·T + l + T (1-based); every process derives sample index and phase from its delay.
The arithmetic is in :mod:`compilers.lava.rule`; :mod:`firmware_sim.lava.reference` is the numpy oracle.
"""

from __future__ import annotations

import traceback

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from compilers.lava import rule
from firmware_sim.lava.reference import encode

FLOAT_PORT = LavaPyType(PyOutPort.VEC_DENSE, float)
FLOAT_IN = LavaPyType(PyInPort.VEC_DENSE, float)
INT_PORT = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
INT_IN = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)


class _Guarded(PyLoihiProcessModel):
    """Computation errors must not hang the run: Lava 0.10 waits forever for the other workers, which block on
    their ports. A failing model prints its traceback, sets ``error`` to the time step, and from then on keeps
    exchanging zero messages so the run completes; the host checks ``error`` after every run call."""

    def _fail(self) -> None:
        traceback.print_exc()
        if self.error[0] == 0:
            self.error[0] = self.time_step


def _window(time_step: int, delay: int, T: int, n: int) -> tuple[int, int]:
    """(sample index, phase) a process with this delay works on at 1-based ``time_step``; index −1 if idle."""
    step = time_step - 1 - delay
    if step < 0 or step // T >= n:
        return -1, 0
    return step // T, step % T


# --------------------------------------------------------------------------- processes
class SPSource(AbstractProcess):
    """Streams N samples, T steps each (a ring-buffer-like source that computes each step's payload):
    s_out (rows, D) = encode([x_n[:, k mod Tx]; target rows]), inputs (N, D, Tx), table (C, D) (input
    placement); with ``hidden=True`` (hidden placement) only the sample row (rows = 1): the target is injected
    by block 0's SPDense."""

    def __init__(
        self,
        *,
        inputs: np.ndarray,
        labels: np.ndarray,
        table: np.ndarray,
        rows: int,
        loss: str,
        time_steps: int,
        encoding: str,
        seed: int,
        hidden: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(
            inputs=inputs,
            labels=labels,
            table=table,
            rows=rows,
            loss=loss,
            time_steps=time_steps,
            encoding=encoding,
            seed=seed,
            hidden=hidden,
            **kwargs,
        )
        self.inputs = Var(shape=inputs.shape, init=inputs)
        self.labels = Var(shape=labels.shape, init=labels)
        self.table = Var(shape=table.shape, init=table)
        self.s_out = OutPort(shape=(rows, inputs.shape[1]))
        self.error = Var(shape=(1,), init=0)


class SPDense(AbstractProcess):
    """Learning synapses: a[r] = W s_in[r] + b (sent one step later); on learning steps
    W −= lr δᵀ s_prev, b −= lr Σ_r δ[r] with δ from the post-synaptic neurons (third factor).
    As the head (``head=True``, row 0 only) it keeps the pre-synaptic trace e, β of the readout and learns
    W −= lr g f, b −= lr g β_f (see :mod:`compilers.lava.rule`).

    Block 0 with hidden signal placement (``table`` given): s_in holds the sample row only (``in_rows`` = 1);
    the target rows' current is injected from the target-signal table, a[1+j] = z_j (every class for v1, the
    sample's class for l2; ``labels`` give the class), and W learns from the sample row alone. With
    ``signal_weight``/``signal_bias`` given, W_S and b_S learn too, from the target rows' δ (∂L/∂z = δ), back
    through act and LayerNorm (:func:`compilers.lava.rule.signal_step`), and the table is recomputed: this
    is embedded-CPU work (float64, also in fixed_pt, where the new table is re-quantised), not the synaptic
    learning engine."""

    def __init__(
        self,
        *,
        weights: np.ndarray,
        bias: np.ndarray,
        rows: int,
        learn: np.ndarray,
        delay: int,
        time_steps: int,
        lr: float,
        weight_exp: int = 0,
        g_in: int = 0,
        head: bool = False,
        seed: int = 0,
        layer: int = 0,
        readout: str = "membrane",
        dv: float = 0.0,
        dv_int: int = 0,
        in_rows: int | None = None,
        table: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        loss: str = "v1",
        signal_weight: np.ndarray | None = None,
        signal_bias: np.ndarray | None = None,
        signal_act: str = "relu",
        fixed: bool = False,
        **kwargs,
    ) -> None:
        in_rows = rows if in_rows is None else in_rows
        inject = table is not None
        signal_learn = signal_weight is not None
        super().__init__(
            weights=weights,
            bias=bias,
            rows=rows,
            learn=learn,
            delay=delay,
            time_steps=time_steps,
            lr=lr,
            weight_exp=weight_exp,
            g_in=g_in,
            head=head,
            seed=seed,
            layer=layer,
            readout=readout,
            dv=dv,
            dv_int=dv_int,
            in_rows=in_rows,
            inject=inject,
            loss=loss,
            signal_learn=signal_learn,
            signal_act=signal_act,
            fixed=fixed,
            **kwargs,
        )
        n_out, n_in = weights.shape
        self.s_in = InPort(shape=(in_rows, n_in))
        self.a_out = OutPort(shape=(rows, n_out))
        self.err_in = InPort(shape=(rows, n_out))
        self.weights = Var(shape=weights.shape, init=weights)
        self.bias = Var(shape=bias.shape, init=bias)
        self.learn = Var(shape=learn.shape, init=learn)
        self.s_prev = Var(shape=(in_rows, n_in), init=0)
        self.a_buff = Var(shape=(rows, n_out), init=0)
        self.error = Var(shape=(1,), init=0)
        # hidden placement (block 0): target table, labels, and the learned signal generator (placeholders else)
        table = np.zeros((1, 1)) if table is None else table
        labels = np.zeros(1, np.int64) if labels is None else labels
        ws = np.zeros((1, 1)) if signal_weight is None else signal_weight
        bs = np.zeros(1) if signal_bias is None else signal_bias
        self.table = Var(shape=table.shape, init=table)
        self.labels = Var(shape=labels.shape, init=labels)
        self.signal_weight = Var(shape=ws.shape, init=ws)
        self.signal_bias = Var(shape=bs.shape, init=bs)


class SPRecDense(AbstractProcess):
    """Recurrent synapses of one block: s_in (rows, n) the block's own spikes, a_out (rows, n) = W_rec s[t−1]
    (computed when s[t−1] arrives, sent the next step; zero at each sample's first step), learning on chip
    from the block's third factor: W_rec −= lr Σ_r δ[r][t]ᵀ s[r][t−1] (fixed_pt: 8-bit even mantissas with
    exponent ``rec_exp``, :func:`compilers.lava.rule.fixed_rec_update`, stochastic rounding from
    :func:`compilers.lava.rule.rec_rng`). ``delay`` is the block's SPLIF delay (same sample/phase window)."""

    def __init__(
        self,
        *,
        weights: np.ndarray,
        rows: int,
        learn: np.ndarray,
        delay: int,
        time_steps: int,
        lr: float,
        rec_exp: int = 0,
        seed: int = 0,
        layer: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(
            weights=weights,
            rows=rows,
            learn=learn,
            delay=delay,
            time_steps=time_steps,
            lr=lr,
            rec_exp=rec_exp,
            seed=seed,
            layer=layer,
            **kwargs,
        )
        n = weights.shape[0]
        self.s_in = InPort(shape=(rows, n))
        self.err_in = InPort(shape=(rows, n))
        self.a_out = OutPort(shape=(rows, n))
        self.weights = Var(shape=weights.shape, init=weights)
        self.learn = Var(shape=learn.shape, init=learn)
        self.s_prev = Var(shape=(rows, n), init=0)
        self.a_buff = Var(shape=(rows, n), init=0)
        self.error = Var(shape=(1,), init=0)


class SPLIF(AbstractProcess):
    """LIF compartments for every stream, reset at each sample start; sends spikes and the third factor
    δ = ∂L/∂v (zero on non-learning steps). ``trace`` > 0 records pre-reset v and spikes of the first
    ``trace`` active steps (for parity tests)."""

    def __init__(
        self,
        *,
        rows: int,
        n: int,
        du: float,
        dv: float,
        threshold: float,
        reset: str,
        lif_bias: float,
        labels: np.ndarray,
        learn: np.ndarray,
        delay: int,
        time_steps: int,
        loss: str,
        temperature: float,
        du_int: int = 0,
        dv_int: int = 0,
        vth_int: int = 0,
        lif_bias_int: int = 0,
        trace: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(
            rows=rows,
            n=n,
            du=du,
            dv=dv,
            threshold=threshold,
            reset=reset,
            lif_bias=lif_bias,
            labels=labels,
            learn=learn,
            delay=delay,
            time_steps=time_steps,
            loss=loss,
            temperature=temperature,
            du_int=du_int,
            dv_int=dv_int,
            vth_int=vth_int,
            lif_bias_int=lif_bias_int,
            trace=trace,
            **kwargs,
        )
        self.a_in = InPort(shape=(rows, n))
        self.s_out = OutPort(shape=(rows, n))
        self.err_out = OutPort(shape=(rows, n))
        self.u = Var(shape=(rows, n), init=0)
        self.v = Var(shape=(rows, n), init=0)
        self.labels = Var(shape=labels.shape, init=labels)
        self.learn = Var(shape=learn.shape, init=learn)
        self.trace_v = Var(shape=(max(trace, 1), rows, n), init=0)
        self.trace_s = Var(shape=(max(trace, 1), rows, n), init=0)
        self.error = Var(shape=(1,), init=0)


class SPReadout(AbstractProcess):
    """Readout compartment of the head (as edgesp.snn): membrane o ← (1−dv) o + z_t, or spike count
    o ← o + z_t with logits o/(k+1); logits[n] = the readout at the sample's last step (real units).
    Sends the cross-entropy error softmax(o_t) − onehot(y) as third factor on learning steps."""

    def __init__(
        self,
        *,
        rows: int,
        num_classes: int,
        labels: np.ndarray,
        learn: np.ndarray,
        delay: int,
        time_steps: int,
        readout: str = "membrane",
        dv: float = 0.0,
        dv_int: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(
            rows=rows,
            num_classes=num_classes,
            labels=labels,
            learn=learn,
            delay=delay,
            time_steps=time_steps,
            readout=readout,
            dv=dv,
            dv_int=dv_int,
            **kwargs,
        )
        self.a_in = InPort(shape=(rows, num_classes))
        self.err_out = OutPort(shape=(rows, num_classes))
        self.labels = Var(shape=labels.shape, init=labels)
        self.learn = Var(shape=learn.shape, init=learn)
        self.logits = Var(shape=(labels.shape[0], num_classes), init=0)
        self.error = Var(shape=(1,), init=0)


# --------------------------------------------------------------------------- source models
class _SourceModel(_Guarded):
    fixed = False

    def run_spk(self) -> None:
        out = np.zeros(self.s_out.shape)
        if self.error[0] == 0:
            try:
                out = self._payload()
            except Exception:
                self._fail()
        self.s_out.send(out)

    def _payload(self) -> np.ndarray:
        p = self.proc_params
        n_idx, k = _window(self.time_step, 0, p["time_steps"], self.inputs.shape[0])
        if n_idx < 0:
            return np.zeros(self.s_out.shape)
        y = int(self.labels[n_idx])
        x = self.inputs[n_idx][:, k % self.inputs.shape[2]]
        if p["hidden"]:
            rows = x[None, :]
        else:
            tgt = self.table if p["loss"] == "v1" else self.table[[y]]
            rows = np.concatenate([x[None, :], tgt], 0)
        return encode(rows, p["encoding"], p["seed"], n_idx, k, self.fixed)


@implements(proc=SPSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySPSourceFloat(_SourceModel):
    s_out: PyOutPort = FLOAT_PORT
    inputs: np.ndarray = LavaPyType(np.ndarray, float)
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    table: np.ndarray = LavaPyType(np.ndarray, float)
    error: np.ndarray = LavaPyType(np.ndarray, int)


@implements(proc=SPSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySPSourceFixed(_SourceModel):
    fixed = True
    s_out: PyOutPort = INT_PORT
    inputs: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=16)
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    table: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=16)
    error: np.ndarray = LavaPyType(np.ndarray, int)


# --------------------------------------------------------------------------- dense models
class _InjectMixin:
    """Hidden placement, block 0: the target rows' current and the signal generator's update."""

    def _target_current(self, dtype) -> np.ndarray:
        p = self.proc_params
        n_in, _ = _window(self.time_step, p["delay"] - 1, p["time_steps"], self.learn.shape[0])
        k_rows = self.a_buff.shape[0] - p["in_rows"]
        if n_in < 0:
            return np.zeros((k_rows, self.a_buff.shape[1]), dtype)
        rows = self.table if p["loss"] == "v1" else self.table[[int(self.labels[n_in])]]
        return np.asarray(rows, dtype)

    def _learn_signal(self, delta_t: np.ndarray, y: int) -> None:
        p = self.proc_params
        _, _, table = rule.signal_step(
            self.signal_weight,
            self.signal_bias,
            delta_t,
            y,
            p["loss"],
            p["signal_act"],
            rule.signal_lr(p["lr"], p["fixed"]),
            p["fixed"],
        )
        self.table[:] = table


@implements(proc=SPDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySPDenseFloat(_InjectMixin, _Guarded):
    s_in: PyInPort = FLOAT_IN
    a_out: PyOutPort = FLOAT_PORT
    err_in: PyInPort = FLOAT_IN
    weights: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    s_prev: np.ndarray = LavaPyType(np.ndarray, float)
    a_buff: np.ndarray = LavaPyType(np.ndarray, float)
    error: np.ndarray = LavaPyType(np.ndarray, int)
    table: np.ndarray = LavaPyType(np.ndarray, float)
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    signal_weight: np.ndarray = LavaPyType(np.ndarray, float)
    signal_bias: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.e = np.zeros(0)  # head's pre-synaptic trace and bias factor (model state, not Vars)
        self.beta = 0.0

    def run_spk(self) -> None:
        self.a_out.send(self.a_buff)
        s = self.s_in.recv()
        err = self.err_in.recv()
        if self.error[0] == 0:
            try:
                self._step(s, err)
            except Exception:
                self._fail()
                self.a_buff[:] = 0

    def _step(self, s: np.ndarray, err: np.ndarray) -> None:
        p = self.proc_params
        n_idx, k = _window(self.time_step, p["delay"], p["time_steps"], self.learn.shape[0])
        if n_idx >= 0 and self.learn[n_idx]:
            lr = p["lr"]
            if p["head"]:
                membrane = p["readout"] == "membrane"
                feat = self.e if membrane else self.e / (k + 1)
                self.weights -= lr * np.outer(err[0], feat)
                self.bias -= lr * err[0] * (self.beta if membrane else 1.0)
            else:
                m = p["in_rows"]
                self.weights -= lr * (err[:m].T @ self.s_prev)
                self.bias -= lr * err[:m].sum(0)
                if p["signal_learn"]:
                    self._learn_signal(err[m:], int(self.labels[n_idx]))
        if p["head"]:
            self.a_buff[0] = self.weights @ s[0] + self.bias
            _, k_next = _window(self.time_step + 1, p["delay"], p["time_steps"], self.learn.shape[0])
            decay = 1.0 - p["dv"] if p["readout"] == "membrane" else 1.0
            if k_next == 0:
                self.e, self.beta = s[0].astype(float), 1.0
            else:
                self.e, self.beta = decay * self.e + s[0], decay * self.beta + 1.0
        else:
            a = s @ self.weights.T + self.bias
            self.a_buff[:] = np.concatenate([a, self._target_current(a.dtype)], 0) if p["inject"] else a
        self.s_prev[:] = s


@implements(proc=SPDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySPDenseFixed(_InjectMixin, _Guarded):
    """Bit-level: a = shift(Σ W_int s_int, e − g_in) + shift(b_int, e); integer update with stochastic rounding."""

    s_in: PyInPort = INT_IN
    a_out: PyOutPort = INT_PORT
    err_in: PyInPort = INT_IN
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=8)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=8)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    s_prev: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    a_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    error: np.ndarray = LavaPyType(np.ndarray, int)
    table: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=16)
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    signal_weight: np.ndarray = LavaPyType(np.ndarray, float)  # embedded-CPU state (float64)
    signal_bias: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.rng = np.random.default_rng([proc_params["seed"], proc_params["layer"]])
        self.e = np.zeros(0, np.int64)  # head's pre-synaptic trace (TRACE_FRAC bits) and bias factor
        self.beta = 0

    def run_spk(self) -> None:
        self.a_out.send(self.a_buff)
        s = self.s_in.recv().astype(np.int64)
        err = self.err_in.recv().astype(np.int64)
        if self.error[0] == 0:
            try:
                self._step(s, err)
            except Exception:
                self._fail()
                self.a_buff[:] = 0

    def _step(self, s: np.ndarray, err: np.ndarray) -> None:
        p = self.proc_params
        e, g_in = p["weight_exp"], p["g_in"]
        n_idx, k = _window(self.time_step, p["delay"], p["time_steps"], self.learn.shape[0])
        membrane = p["readout"] == "membrane"
        tf = rule.TRACE_FRAC
        if n_idx >= 0 and self.learn[n_idx]:
            if p["head"]:
                feat = self.e if membrane else self.e // (k + 1)
                bf = self.beta if membrane else 1 << tf
                dw, db = rule.fixed_weight_update(
                    err[:1], feat[None, :], tf, np.array([bf]), rule.lr_shift(p["lr"]), e, self.rng
                )
            else:
                m = p["in_rows"]
                ones = np.full(m, 1 << g_in, np.int64)
                dw, db = rule.fixed_weight_update(err[:m], self.s_prev, g_in, ones, rule.lr_shift(p["lr"]), e, self.rng)
            self.weights[:] = np.clip(self.weights + dw, rule.W_MIN, rule.W_MAX)
            self.bias[:] = np.clip(self.bias + db, rule.W_MIN, rule.W_MAX)
            if not p["head"] and p["signal_learn"]:
                self._learn_signal(err[p["in_rows"] :], int(self.labels[n_idx]))
        b = rule.shift(self.bias, e)
        if p["head"]:
            self.a_buff[0] = rule.shift(self.weights @ s[0], e - g_in) + b
            _, k_next = _window(self.time_step + 1, p["delay"], p["time_steps"], self.learn.shape[0])
            spk = s[0].astype(np.int64) << tf
            if k_next == 0:
                self.e, self.beta = spk, 1 << tf
            elif membrane:
                self.e = rule.decay_fixed(self.e, p["dv_int"]) + spk
                self.beta = int(rule.decay_fixed(np.int64(self.beta), p["dv_int"])) + (1 << tf)
            else:
                self.e = self.e + spk
        else:
            a = rule.shift(s @ self.weights.T, e - g_in) + b
            self.a_buff[:] = np.concatenate([a, self._target_current(np.int64)], 0) if p["inject"] else a
        self.s_prev[:] = s


# --------------------------------------------------------------------------- recurrent synapse models
class _RecBase(_Guarded):
    """s_prev holds s[t−1] of the step the LIF is on; the update uses it with that step's δ, then the current of
    the next step is computed from the spikes just received (zeroed when the next step starts a sample)."""

    def run_spk(self) -> None:
        self.a_out.send(self.a_buff)
        s = self.s_in.recv()
        err = self.err_in.recv()
        if self.error[0] == 0:
            try:
                self._step(s, err)
            except Exception:
                self._fail()
                self.a_buff[:] = 0

    def _step(self, s: np.ndarray, err: np.ndarray) -> None:
        p = self.proc_params
        n = self.learn.shape[0]
        n_idx, _ = _window(self.time_step, p["delay"], p["time_steps"], n)
        if n_idx >= 0 and self.learn[n_idx]:
            self.update(err)
        n_next, k_next = _window(self.time_step + 1, p["delay"], p["time_steps"], n)
        self.s_prev[:] = s if n_next >= 0 and k_next > 0 else 0
        self.a_buff[:] = self.current(self.s_prev)


@implements(proc=SPRecDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySPRecDenseFloat(_RecBase):
    s_in: PyInPort = FLOAT_IN
    err_in: PyInPort = FLOAT_IN
    a_out: PyOutPort = FLOAT_PORT
    weights: np.ndarray = LavaPyType(np.ndarray, float)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    s_prev: np.ndarray = LavaPyType(np.ndarray, float)
    a_buff: np.ndarray = LavaPyType(np.ndarray, float)
    error: np.ndarray = LavaPyType(np.ndarray, int)

    def update(self, err: np.ndarray) -> None:
        self.weights -= self.proc_params["lr"] * (err.T @ self.s_prev)

    def current(self, s: np.ndarray) -> np.ndarray:
        return s @ self.weights.T


@implements(proc=SPRecDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySPRecDenseFixed(_RecBase):
    """a_rec = shift(Σ W_rec_int s, rec_exp) (as Lava's PyDenseModelBitAcc with binary spikes); integer update."""

    s_in: PyInPort = INT_IN
    err_in: PyInPort = INT_IN
    a_out: PyOutPort = INT_PORT
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=8)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    s_prev: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=1)
    a_buff: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    error: np.ndarray = LavaPyType(np.ndarray, int)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.rng = rule.rec_rng(proc_params["seed"], proc_params["layer"])

    def update(self, err: np.ndarray) -> None:
        p = self.proc_params
        dw = rule.fixed_rec_update(
            np.asarray(err, np.int64), self.s_prev, rule.lr_shift(p["lr"]), p["rec_exp"], self.rng
        )
        self.weights[:] = np.clip(self.weights + dw, rule.W_MIN, rule.W_MAX)

    def current(self, s: np.ndarray) -> np.ndarray:
        return rule.shift(np.asarray(s, np.int64) @ self.weights.T, self.proc_params["rec_exp"])


# --------------------------------------------------------------------------- LIF models
class _LIFBase(_Guarded):
    def _record(self, step: int, v: np.ndarray, s: np.ndarray) -> None:
        if step < self.proc_params["trace"]:
            self.trace_v[step] = v
            self.trace_s[step] = s

    def run_spk(self) -> None:
        a = self.a_in.recv()
        spikes, err = np.zeros(self.s_out.shape), np.zeros(self.err_out.shape)
        if self.error[0] == 0:
            try:
                spikes, err = self._step(a, spikes, err)
            except Exception:
                self._fail()
                spikes, err = np.zeros(self.s_out.shape), np.zeros(self.err_out.shape)
        self.s_out.send(spikes)
        self.err_out.send(err)

    def _step(self, a: np.ndarray, spikes: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.proc_params
        n_idx, k = _window(self.time_step, p["delay"], p["time_steps"], self.learn.shape[0])
        if n_idx < 0:
            return spikes, err
        if k == 0:
            self.u[:] = 0
            self.v[:] = 0
        v_pre, spikes = self.dynamics(a)
        self._record(n_idx * p["time_steps"] + k, v_pre, spikes)
        if self.learn[n_idx]:
            err = self.delta(v_pre, int(self.labels[n_idx]))
        return spikes, err


@implements(proc=SPLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySPLIFFloat(_LIFBase):
    a_in: PyInPort = FLOAT_IN
    s_out: PyOutPort = FLOAT_PORT
    err_out: PyOutPort = FLOAT_PORT
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    trace_v: np.ndarray = LavaPyType(np.ndarray, float)
    trace_s: np.ndarray = LavaPyType(np.ndarray, float)
    error: np.ndarray = LavaPyType(np.ndarray, int)

    def dynamics(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.proc_params
        self.u[:] = (1.0 - p["du"]) * self.u + a
        self.v[:] = (1.0 - p["dv"]) * self.v + self.u + p["lif_bias"]
        v_pre = self.v.copy()
        s = (v_pre > p["threshold"]).astype(float)
        if p["reset"] == "zero":
            self.v[:] = v_pre * (1.0 - s)
        else:
            self.v[:] = v_pre - p["threshold"] * s
        return v_pre, s

    def delta(self, v_pre: np.ndarray, y: int) -> np.ndarray:
        return rule.hidden_delta(v_pre, y, self.proc_params["loss"], self.proc_params["temperature"])


@implements(proc=SPLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySPLIFFixed(_LIFBase):
    """Loihi bit-accurate CUBA LIF on every stream (the arithmetic of lava.proc.lif's PyLifModelBitAcc:
    12-bit decays, 24-bit wrapped u, clipped v, activation and threshold MSB-aligned by 6 bits)."""

    a_in: PyInPort = INT_IN
    s_out: PyOutPort = INT_PORT
    err_out: PyOutPort = INT_PORT
    u: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    trace_v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    trace_s: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=1)
    error: np.ndarray = LavaPyType(np.ndarray, int)

    def dynamics(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.proc_params
        vth = p["vth_int"] << rule.ACT_SHIFT
        a = np.asarray(a, np.int64)
        self.u[:] = rule.wrap_u(rule.decay_fixed(self.u, p["du_int"] + 1) + np.left_shift(a, rule.ACT_SHIFT))
        self.v[:] = rule.clip_v(rule.decay_fixed(self.v, p["dv_int"]) + self.u + p["lif_bias_int"])
        v_pre = self.v.copy()
        s = v_pre > vth
        if p["reset"] == "zero":
            self.v[s] = 0
        else:
            self.v[s] -= vth
        return v_pre, s.astype(np.int64)

    def delta(self, v_pre: np.ndarray, y: int) -> np.ndarray:
        p = self.proc_params
        v_real = v_pre / float(2 ** (rule.SIGMA + rule.ACT_SHIFT))
        return rule.quantise_delta(rule.hidden_delta(v_real, y, p["loss"], p["temperature"]))


# --------------------------------------------------------------------------- readout models
class _ReadoutBase(_Guarded):
    def run_spk(self) -> None:
        a = self.a_in.recv()
        err = np.zeros(self.err_out.shape)
        if self.error[0] == 0:
            try:
                self._step(a, err)
            except Exception:
                self._fail()
                err = np.zeros(self.err_out.shape)
        self.err_out.send(err)

    def _step(self, a: np.ndarray, err: np.ndarray) -> None:
        p = self.proc_params
        n_idx, k = _window(self.time_step, p["delay"], p["time_steps"], self.learn.shape[0])
        if n_idx < 0:
            return
        logit = self.integrate(a[0], k)
        if k == p["time_steps"] - 1:
            self.logits[n_idx] = logit
        if self.learn[n_idx]:
            err[0] = self.third_factor(rule.head_delta(logit, int(self.labels[n_idx])))


@implements(proc=SPReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySPReadoutFloat(_ReadoutBase):
    a_in: PyInPort = FLOAT_IN
    err_out: PyOutPort = FLOAT_PORT
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    logits: np.ndarray = LavaPyType(np.ndarray, float)
    error: np.ndarray = LavaPyType(np.ndarray, int)

    def integrate(self, z: np.ndarray, k: int) -> np.ndarray:
        p = self.proc_params
        if k == 0:
            self.o = np.zeros(z.shape)
        if p["readout"] == "membrane":
            self.o = (1.0 - p["dv"]) * self.o + z
            return self.o.copy()
        self.o = self.o + z
        return self.o / (k + 1)

    def third_factor(self, g: np.ndarray) -> np.ndarray:
        return g


@implements(proc=SPReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySPReadoutFixed(_ReadoutBase):
    a_in: PyInPort = INT_IN
    err_out: PyOutPort = INT_PORT
    labels: np.ndarray = LavaPyType(np.ndarray, int)
    learn: np.ndarray = LavaPyType(np.ndarray, bool)
    logits: np.ndarray = LavaPyType(np.ndarray, float)
    error: np.ndarray = LavaPyType(np.ndarray, int)

    def integrate(self, a: np.ndarray, k: int) -> np.ndarray:
        p = self.proc_params
        a = np.asarray(a, np.int64)
        if k == 0:
            self.o = np.zeros(a.shape, np.int64)
        if p["readout"] == "membrane":
            self.o = rule.decay_fixed(self.o, p["dv_int"]) + a
            return self.o / float(2**rule.SIGMA)
        self.o = self.o + a
        return self.o / float(2**rule.SIGMA) / (k + 1)

    def third_factor(self, g: np.ndarray) -> np.ndarray:
        return rule.quantise_delta(g)
