"""Numpy reference of the compiled on-chip network: the same per-step arithmetic as the Lava process models
(see :mod:`compilers.lava.rule`), written as one loop without pipeline delays. The Lava network equals this
reference layer by layer, with layer l lagging by l + 1 steps (one per Dense synapse). A recurrent block adds
W_rec s[t−1] (its own spikes of the previous step, zero at each sample start) to every row's current and, when
learning, W_rec −= lr Σ_r δ[r]ᵀ s[r][t−1] (fixed_pt: :func:`compilers.lava.rule.fixed_rec_update`). Used by the
parity tests and as a fast oracle; it is not used by the Lava simulation itself."""

from __future__ import annotations

import numpy as np

from compilers.lava import rule
from compilers.lava.network_desc import NetDesc


def encode(values: np.ndarray, encoding: str, seed: int, n: int, k: int, fixed: bool) -> np.ndarray:
    """Payload for sample n, phase k. values (R, D): row 0 the sample, rows 1.. the target signal; real
    (floating_pt) or INPUT_FRAC fixed ints (fixed_pt). As :mod:`edgesp.encoding`: the target always enters as a
    direct (graded) current; the sample is direct/sequence (graded value) or rate: Bernoulli(p) spikes with
    p = (x − min x)/(max x − min x) per sample. The rate spikes come from a generator seeded by (seed, n, k),
    so every simulator of this network draws the same spikes (not the same stream as edgesp.encoding's torch
    generator). In fixed_pt a spike is the graded payload 2^INPUT_FRAC (1.0), so layer 0 has one input format."""
    if encoding != "rate":
        return values
    x = values[0].astype(np.float64)
    lo, hi = x.min(), x.max()
    p = np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rng = np.random.default_rng([seed, n, k])
    spikes = rng.random(x.shape) < p
    out = values.copy()
    out[0] = spikes * (2**rule.INPUT_FRAC if fixed else 1.0)
    return out


def input_frac(desc: NetDesc) -> int:
    """Fractional bits of the layer-0 input payload (fixed_pt)."""
    return rule.INPUT_FRAC


def target_rows(desc: NetDesc, label: int) -> np.ndarray:
    """The K target rows of the table: every class (v1) or the sample's class (l2)."""
    return desc.table if desc.loss == "v1" else desc.table[[label]]


def stream_rows(desc: NetDesc, x_step: np.ndarray, label: int) -> np.ndarray:
    """(in_rows, D_in) values for one step: row 0 the sample, then (input placement only) the target rows.
    With hidden placement the target does not enter at the input: block 0 injects it as current."""
    if desc.hidden:
        return x_step[None, :]
    return np.concatenate([x_step[None, :], target_rows(desc, label).astype(x_step.dtype)], 0)


def quantise_inputs(x: np.ndarray) -> np.ndarray:
    """Real inputs -> INPUT_FRAC fixed ints (saturating 16-bit)."""
    return np.clip(np.rint(x * 2**rule.INPUT_FRAC), -(2**15), 2**15 - 1).astype(np.int64)


class ReferenceNet:
    """Runs samples (T steps each) through the network and applies the on-chip rule when learning."""

    def __init__(self, desc: NetDesc, seed: int = 0) -> None:
        self.d = desc.copy()
        self.fixed = desc.fixed
        dt = np.int64 if self.fixed else np.float64
        for la in self.d.layers:
            la.weight = la.weight.astype(dt)
            la.bias = la.bias.astype(dt)
            if la.rec_weight is not None:
                la.rec_weight = la.rec_weight.astype(dt)
        self.rngs = [np.random.default_rng([seed, i]) for i in range(len(self.d.layers))]
        self.rec_rngs = [rule.rec_rng(seed, i) for i in range(len(self.d.layers))]
        if self.d.signal_learn:
            self.d.signal_weight = np.asarray(self.d.signal_weight, np.float64).copy()
            self.d.signal_bias = np.asarray(self.d.signal_bias, np.float64).copy()
        self.trace: list[list[dict[str, np.ndarray]]] | None = None

    def run(self, inputs: np.ndarray, labels: np.ndarray, learn: np.ndarray, record: bool = False) -> np.ndarray:
        """inputs (N, D, Tx) (real, or fixed ints), labels (N,), learn (N,) bool. Returns the logits (N, C)
        in real units (the head's readout o at the last step of each sample)."""
        out = np.zeros((len(inputs), self.d.num_classes))
        self.trace = [] if record else None
        for n in range(len(inputs)):
            out[n] = self._sample(n, inputs[n], int(labels[n]), bool(learn[n]))
        return out

    def _sample(self, n: int, x: np.ndarray, y: int, learn: bool) -> np.ndarray:
        d = self.d
        R = d.rows
        zeros = (lambda m: np.zeros(m, np.int64)) if self.fixed else (lambda m: np.zeros(m))
        # per layer: u, v and the previous step's spikes (the recurrent synapses' input; s[−1] = 0)
        state = [(zeros((R, la.n_out)), zeros((R, la.n_out)), zeros((R, la.n_out))) for la in d.layers]
        head = d.layers[-1]
        ro = {"o": zeros(head.n_out), "e": zeros(head.n_in), "beta": 0}
        logits = np.zeros(d.num_classes)
        tx = x.shape[-1]
        for k in range(d.time_steps):
            s = encode(stream_rows(d, x[:, k % tx], y), d.encoding, d.encoding_seed, n, k, self.fixed)
            g_in = input_frac(d)
            rec = []
            for li, la in enumerate(d.layers):
                if la.kind == "readout":
                    logits = self._readout(li, la, s[0], k, ro, y, learn)
                    break
                u, v, s_rec = state[li]
                inject = target_rows(d, y) if li == 0 and d.hidden else None
                s_next, u, v, v_pre = self._lif(li, la, s, u, v, y, learn, g_in, inject, s_rec)
                state[li] = (u, v, s_next)
                rec.append({"v": v_pre, "s": s_next})
                s, g_in = s_next, 0
            if self.trace is not None:
                self.trace.append(rec)
        return logits

    # -- hidden layer
    def _lif(self, li, la, s, u, v, y, learn, g_in, inject=None, s_rec=None):
        """One step of a hidden layer. ``inject`` (hidden placement, block 0): the target rows' current
        a^t_0 = z (the table rows), in place of W s + b; then only the sample row passes (and trains) W.
        ``s_rec`` (R, n): the layer's own spikes of the previous step, input of its recurrent synapses."""
        d = self.d
        rec = la.rec_weight is not None
        if self.fixed:
            a = rule.shift(s @ la.weight.T, la.weight_exp - g_in) + rule.shift(la.bias, la.weight_exp)
            if inject is not None:
                a = np.concatenate([a, inject.astype(np.int64)], 0)
            if rec:
                a = a + rule.shift(s_rec @ la.rec_weight.T, la.rec_exp)
            u = rule.wrap_u(rule.decay_fixed(u, la.du_int + 1) + np.left_shift(a, rule.ACT_SHIFT))
            v = rule.clip_v(rule.decay_fixed(v, la.dv_int) + u + la.lif_bias_int)
            v_pre = v.copy()
            spk = v > (la.vth_int << rule.ACT_SHIFT)
            v = np.where(spk, 0 if la.reset == "zero" else v - (la.vth_int << rule.ACT_SHIFT), v)
            if learn:
                v_real = v_pre / float(2 ** (rule.SIGMA + rule.ACT_SHIFT))
                dint = rule.quantise_delta(rule.hidden_delta(v_real, y, d.loss, d.temperature))
                ones = np.full(s.shape[0], 1 << g_in, np.int64)
                dw, db = rule.fixed_weight_update(
                    dint[: s.shape[0]], s, g_in, ones, rule.lr_shift(d.lr), la.weight_exp, self.rngs[li]
                )
                la.weight = np.clip(la.weight + dw, rule.W_MIN, rule.W_MAX)
                la.bias = np.clip(la.bias + db, rule.W_MIN, rule.W_MAX)
                if rec:
                    dwr = rule.fixed_rec_update(dint, s_rec, rule.lr_shift(d.lr), la.rec_exp, self.rec_rngs[li])
                    la.rec_weight = np.clip(la.rec_weight + dwr, rule.W_MIN, rule.W_MAX)
                if inject is not None and d.signal_learn:
                    self._learn_signal(dint[s.shape[0] :], y)
            return spk.astype(np.int64), u, v, v_pre
        a = s @ la.weight.T + la.bias
        if inject is not None:
            a = np.concatenate([a, inject.astype(np.float64)], 0)
        if rec:
            a = a + s_rec @ la.rec_weight.T
        u = (1.0 - la.du) * u + a
        v = (1.0 - la.dv) * v + u + la.lif_bias
        v_pre = v.copy()
        spk = (v > la.threshold).astype(np.float64)
        v = v * (1.0 - spk) if la.reset == "zero" else v - la.threshold * spk
        if learn:
            delta = rule.hidden_delta(v_pre, y, d.loss, d.temperature)
            la.weight -= d.lr * delta[: s.shape[0]].T @ s
            la.bias -= d.lr * delta[: s.shape[0]].sum(0)
            if rec:
                la.rec_weight -= d.lr * delta.T @ s_rec
            if inject is not None and d.signal_learn:
                self._learn_signal(delta[s.shape[0] :], y)
        return spk, u, v, v_pre

    def _learn_signal(self, delta_t: np.ndarray, y: int) -> None:
        d = self.d
        _, _, d.table = rule.signal_step(
            d.signal_weight,
            d.signal_bias,
            delta_t,
            y,
            d.loss,
            d.signal_act,
            rule.signal_lr(d.lr, self.fixed),
            self.fixed,
        )

    # -- output head: readout compartment o, pre-synaptic trace e and bias factor beta
    def _readout(self, li, la, s, k, ro, y, learn):
        d = self.d
        membrane = la.readout == "membrane"
        if self.fixed:
            a = rule.shift(la.weight @ s, la.weight_exp) + rule.shift(la.bias, la.weight_exp)
            if membrane:
                ro["o"] = rule.decay_fixed(ro["o"], la.dv_int) + a
                ro["e"] = rule.decay_fixed(ro["e"], la.dv_int) + (s.astype(np.int64) << rule.TRACE_FRAC)
                ro["beta"] = int(rule.decay_fixed(np.int64(ro["beta"]), la.dv_int)) + (1 << rule.TRACE_FRAC)
                logit = ro["o"] / float(2**rule.SIGMA)
                feat, bf = ro["e"], ro["beta"]
            else:
                ro["o"] = ro["o"] + a
                ro["e"] = ro["e"] + (s.astype(np.int64) << rule.TRACE_FRAC)
                logit = ro["o"] / float(2**rule.SIGMA) / (k + 1)
                feat, bf = ro["e"] // (k + 1), 1 << rule.TRACE_FRAC
            if learn:
                dint = rule.quantise_delta(rule.head_delta(logit, y))[None, :]
                dw, db = rule.fixed_weight_update(
                    dint,
                    feat[None, :],
                    rule.TRACE_FRAC,
                    np.array([bf]),
                    rule.lr_shift(d.lr_head),
                    la.weight_exp,
                    self.rngs[li],
                )
                la.weight = np.clip(la.weight + dw, rule.W_MIN, rule.W_MAX)
                la.bias = np.clip(la.bias + db, rule.W_MIN, rule.W_MAX)
            return logit
        z = la.weight @ s + la.bias
        decay = 1.0 - la.dv if membrane else 1.0
        ro["o"] = decay * ro["o"] + z
        ro["e"] = decay * ro["e"] + s
        ro["beta"] = decay * ro["beta"] + 1.0
        if membrane:
            logit, feat, bf = ro["o"], ro["e"], ro["beta"]
        else:
            logit, feat, bf = ro["o"] / (k + 1), ro["e"] / (k + 1), 1.0
        if learn:
            g = rule.head_delta(logit, y)
            la.weight -= d.lr_head * np.outer(g, feat)
            la.bias -= d.lr_head * g * bf
        return logit
