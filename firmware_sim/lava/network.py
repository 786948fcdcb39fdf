"""Build the Lava process network from a compiled description and run it, always stopping the runtime.

    with LavaSession(desc, inputs, labels, learn) as sess:   # processes built, nothing started yet
        sess.run(sess.total_steps)                            # first run compiles and starts the workers
        logits = sess.logits()

The session streams all N samples (T steps each) through one network in as many ``run`` calls as wanted
(time continues between calls). ``stop()`` runs on exit, on errors and on KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from compilers.lava.network_desc import NetDesc
from edgesp.errors import CompileError, RuntimeMissingError
from firmware_sim.lava.reference import input_frac, quantise_inputs


@contextlib.contextmanager
def _lava_may_set_start_method() -> Iterator[None]:
    """Lava's message infrastructure calls ``multiprocessing.set_start_method('fork')`` at import, which raises
    'context has already been set' when anything in this process fixed the start method before (e.g. the
    training loop run by ``edgesp demo``). Let that one call through with ``force=True``."""
    import multiprocessing as mp

    if mp.get_start_method(allow_none=True) is None or "lava.magma.runtime.runtime" in sys.modules:
        yield
        return
    orig = mp.set_start_method
    mp.set_start_method = functools.partial(orig, force=True)  # type: ignore[assignment]
    try:
        yield
    finally:
        mp.set_start_method = orig  # type: ignore[assignment]


def import_lava() -> dict[str, Any]:
    """The Lava pieces we need, or a one-line RuntimeMissingError."""
    try:
        with _lava_may_set_start_method():
            from lava.magma.core.run_conditions import RunSteps
            from lava.magma.core.run_configs import Loihi2SimCfg

            from firmware_sim.lava import processes
    except ImportError as e:
        raise RuntimeMissingError(
            f"lava-nc cannot be imported ({e}): run 'make setup' (lava-nc 0.10.0, numpy<2)"
        ) from None
    return {"RunSteps": RunSteps, "Loihi2SimCfg": Loihi2SimCfg, "processes": processes}


def prepare_inputs(desc: NetDesc, x: np.ndarray) -> np.ndarray:
    """Dataset batch (N, ...) -> (N, D, Tx) real or fixed ints. Sequence data keeps its last axis as time."""
    n = len(x)
    if desc.encoding == "sequence":
        arr = x.reshape(n, desc.input_dim, -1)
    else:
        arr = x.reshape(n, desc.input_dim, 1)
    return quantise_inputs(arr) if desc.fixed else arr.astype(np.float64)


@contextlib.contextmanager
def _workers_ignore_sigint(first: bool) -> Iterator[None]:
    """Ctrl-C reaches every process of the terminal's process group; a worker killed by it leaves the
    runtime waiting forever. The workers are forked during the first run call, so SIGINT is ignored around
    that call only: the workers inherit 'ignore', and the host gets KeyboardInterrupt afterwards and stops
    the runtime in its ``finally``."""
    if not first or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class LavaSession:
    """One process network for one stream of samples. ``learn[n]`` switches the on-chip rule per sample."""

    def __init__(
        self, desc: NetDesc, inputs: np.ndarray, labels: np.ndarray, learn: np.ndarray, seed: int = 0, trace: int = 0
    ) -> None:
        lv = import_lava()
        self._RunSteps = lv["RunSteps"]
        P = lv["processes"]
        self.desc = desc
        self.tag = desc.precision
        self.cfg = lv["Loihi2SimCfg"](select_tag=self.tag)
        labels = np.asarray(labels, np.int64)
        learn = np.asarray(learn, bool)
        self.n = len(labels)
        T, R = desc.time_steps, desc.rows
        self.source = P.SPSource(
            inputs=inputs,
            labels=labels,
            table=desc.table,
            rows=desc.in_rows,
            loss=desc.loss,
            time_steps=T,
            encoding=desc.encoding,
            seed=desc.encoding_seed,
            hidden=desc.hidden,
            name="source",
        )
        self.denses, self.lifs, self.readout = [], [], None
        self.recs: dict[int, Any] = {}  # layer index -> SPRecDense of a recurrent block
        prev = self.source.s_out
        g_in = input_frac(desc) if desc.fixed else 0
        for i, la in enumerate(desc.layers):
            head = la.kind == "readout"
            inject: dict[str, Any] = {}
            if i == 0:
                inject["in_rows"] = desc.in_rows
            if i == 0 and desc.hidden:  # block 0 injects the target current (and learns W_S if learned)
                inject.update(
                    table=desc.table, labels=labels, loss=desc.loss, signal_act=desc.signal_act, fixed=desc.fixed
                )
                if desc.signal_learn:
                    inject.update(
                        signal_weight=np.asarray(desc.signal_weight, np.float64),
                        signal_bias=np.asarray(desc.signal_bias, np.float64),
                    )
            dense = P.SPDense(
                weights=la.weight,
                bias=la.bias,
                rows=R,
                learn=learn,
                delay=i + 1,
                time_steps=T,
                lr=desc.lr_head if head else desc.lr,
                weight_exp=la.weight_exp,
                g_in=g_in,
                head=head,
                seed=seed,
                layer=i,
                readout=la.readout,
                dv=la.dv,
                dv_int=la.dv_int,
                name=f"dense{i}",
                **inject,
            )
            prev.connect(dense.s_in)
            if head:
                post = P.SPReadout(
                    rows=R,
                    num_classes=la.n_out,
                    labels=labels,
                    learn=learn,
                    delay=i + 1,
                    time_steps=T,
                    readout=la.readout,
                    dv=la.dv,
                    dv_int=la.dv_int,
                    name="readout",
                )
                self.readout = post
            else:
                post = P.SPLIF(
                    rows=R,
                    n=la.n_out,
                    du=la.du,
                    dv=la.dv,
                    threshold=la.threshold,
                    reset=la.reset,
                    lif_bias=la.lif_bias,
                    labels=labels,
                    learn=learn,
                    delay=i + 1,
                    time_steps=T,
                    loss=desc.loss,
                    temperature=desc.temperature,
                    du_int=la.du_int,
                    dv_int=la.dv_int,
                    vth_int=la.vth_int,
                    lif_bias_int=la.lif_bias_int,
                    trace=trace,
                    name=f"lif{i}",
                )
                self.lifs.append(post)
                if la.recurrent:  # the block's spikes back to its own compartments, one step later
                    rec = P.SPRecDense(
                        weights=la.rec_weight,
                        rows=R,
                        learn=learn,
                        delay=i + 1,
                        time_steps=T,
                        lr=desc.lr,
                        rec_exp=la.rec_exp,
                        seed=seed,
                        layer=i,
                        name=f"rec{i}",
                    )
                    post.s_out.connect(rec.s_in)
                    post.err_out.connect(rec.err_in)
                    rec.a_out.connect(post.a_in)
                    self.recs[i] = rec
            dense.a_out.connect(post.a_in)
            post.err_out.connect(dense.err_in)
            self.denses.append(dense)
            if not head:
                prev = post.s_out
            g_in = 0
        self.total_steps = self.n * T + len(desc.layers)
        self.steps_done = 0
        self.started = False
        self.run_seconds = 0.0
        self.first_run_seconds = 0.0

    # -- running
    def run(self, steps: int) -> None:
        """Advance the network by ``steps`` time steps (the first call compiles and starts the workers)."""
        steps = min(steps, self.total_steps - self.steps_done)
        if steps <= 0:
            return
        t0 = time.perf_counter()
        self.started = True
        with warnings.catch_warnings(), _workers_ignore_sigint(first=self.steps_done == 0):
            # Lava's model search imports every sibling module and warns about ones it cannot import
            warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
            self.source.run(condition=self._RunSteps(num_steps=steps), run_cfg=self.cfg)
        dt = time.perf_counter() - t0
        if self.steps_done == 0:
            self.first_run_seconds = dt
        self.run_seconds += dt
        self.steps_done += steps
        self.check_errors()

    def processes(self) -> list[Any]:
        return [self.source, *self.denses, *self.lifs, *self.recs.values(), self.readout]

    def check_errors(self) -> None:
        """Raise if a process model failed during the last run (its traceback went to stderr)."""
        for proc in self.processes():
            step = int(np.asarray(proc.error.get()).ravel()[0])
            if step:
                raise CompileError(
                    f"Lava process {proc.name} failed at time step {step} (traceback above): "
                    "the runtime was stopped; check the build and the data"
                )

    def run_all(self, chunk: int | None = None, callback: Any = None) -> None:
        """Run to the end in calls of ``chunk`` steps; the first call is one step, so ``first_run_seconds``
        is the compile + start-up cost alone (and Ctrl-C is ignored only during it)."""
        chunk = chunk or self.total_steps
        if self.steps_done == 0:
            self.run(1)
        while self.steps_done < self.total_steps:
            self.run(chunk)
            if callback is not None:
                callback(self)

    def stop(self) -> None:
        """Stop the runtime (Lava also stops its message infrastructure and so its workers, even when it raises).
        Called while another exception propagates (a ``finally`` after SIGTERM or Ctrl-C), an error of Lava's own
        stop — a worker interrupted mid-step answers STOP with its step's status, which Lava reports as
        ``RuntimeError: Runtime Received …`` — is dropped, so the exception that says what happened (and the
        CLI's exit code 143) is the one that surfaces."""
        if self.started:
            self.started = False
            in_flight = sys.exc_info()[0] is not None
            try:
                self.source.stop()
            except RuntimeError:
                if not in_flight:
                    raise

    def __enter__(self) -> LavaSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- reading state
    def logits(self) -> np.ndarray:
        return np.asarray(self.readout.logits.get(), np.float64)

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.asarray(d.weights.get()), np.asarray(d.bias.get())) for d in self.denses]

    def rec_weights(self) -> dict[int, np.ndarray]:
        """Recurrent weights W_rec of every recurrent block, by layer index."""
        return {i: np.asarray(r.weights.get()) for i, r in self.recs.items()}

    def signal(self) -> dict[str, np.ndarray]:
        """Block 0's target-signal table (hidden placement: as injected now) and, if learned, W_S and b_S."""
        d0 = self.denses[0]
        if not self.desc.hidden:
            return {"table": np.asarray(self.desc.table)}
        out = {"table": np.asarray(d0.table.get())}
        if self.desc.signal_learn:
            out.update(signal_weight=np.asarray(d0.signal_weight.get()), signal_bias=np.asarray(d0.signal_bias.get()))
        return out

    def traces(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.asarray(lif.trace_v.get()), np.asarray(lif.trace_s.get())) for lif in self.lifs]

    def worker_pids(self) -> list[int]:
        """OS process ids of the runtime's workers (children of this process)."""
        import os

        pids: list[int] = []
        me = os.getpid()
        try:
            for task in os.listdir(f"/proc/{me}/task"):
                with open(f"/proc/{me}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return sorted(set(pids))
