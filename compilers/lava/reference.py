"""Numpy reference of the compiled on-chip network: the same per-step arithmetic as the Lava process models
(see :mod:`compilers.lava.rule`), written as one loop without pipeline delays. The Lava network equals this
reference layer by layer, with layer l lagging by l + 1 steps (one per Dense synapse). Used by the parity
tests and as a fast oracle; it is not used by the Lava simulation itself."""

from __future__ import annotations

import numpy as np

from compilers.lava import rule
from compilers.lava.network_desc import NetDesc


def encode(values: np.ndarray, encoding: str, seed: int, n: int, k: int, fixed: bool) -> np.ndarray:
    """Payload for sample n, phase k. values (R, D): real (float) or INPUT_FRAC-fixed ints (fixed).
    direct/sequence: graded payload = value; rate: Bernoulli(clip(value, 0, 1)) spikes from a
    generator seeded by (seed, n, k), so every simulator draws the same spikes."""
    if encoding != "rate":
        return values
    real = values / float(2 ** rule.INPUT_FRAC) if fixed else values
    rng = np.random.default_rng([seed, n, k])
    spikes = rng.random(values.shape) < np.clip(real, 0.0, 1.0)
    return spikes.astype(np.int64 if fixed else np.float64)


def input_frac(desc: NetDesc) -> int:
    """Fractional bits of the layer-0 input payload (fixed_pt)."""
    return 0 if desc.encoding == "rate" else rule.INPUT_FRAC


def stream_rows(desc: NetDesc, x_step: np.ndarray, label: int) -> np.ndarray:
    """(R, D) values for one step: row 0 the sample, then the target signal rows."""
    tgt = desc.table if desc.loss == "v1" else desc.table[[label]]
    return np.concatenate([x_step[None, :], tgt.astype(x_step.dtype)], 0)


def quantise_inputs(x: np.ndarray) -> np.ndarray:
    """Real inputs -> INPUT_FRAC fixed ints (saturating 16-bit)."""
    return np.clip(np.rint(x * 2 ** rule.INPUT_FRAC), -2 ** 15, 2 ** 15 - 1).astype(np.int64)


class ReferenceNet:
    """Runs samples (T steps each) through the network and applies the on-chip rule when learning."""

    def __init__(self, desc: NetDesc, seed: int = 0) -> None:
        self.d = desc.copy()
        self.fixed = desc.fixed
        dt = np.int64 if self.fixed else np.float64
        for la in self.d.layers:
            la.weight = la.weight.astype(dt)
            la.bias = la.bias.astype(dt)
        self.rngs = [np.random.default_rng([seed, i]) for i in range(len(self.d.layers))]
        self.trace: list[list[dict[str, np.ndarray]]] | None = None

    def run(self, inputs: np.ndarray, labels: np.ndarray, learn: np.ndarray, record: bool = False) -> np.ndarray:
        """inputs (N, D, Tx) (real, or fixed ints), labels (N,), learn (N,) bool. Returns logits (N, C)
        (sum over T of the head's per-step output in real units)."""
        d = self.d
        out = np.zeros((len(inputs), d.num_classes))
        self.trace = [] if record else None
        for n in range(len(inputs)):
            out[n] = self._sample(n, inputs[n], int(labels[n]), bool(learn[n]))
        return out

    def _sample(self, n: int, x: np.ndarray, y: int, learn: bool) -> np.ndarray:
        d = self.d
        R = d.rows
        state = [(np.zeros((R, la.n_out), np.int64 if self.fixed else np.float64),) * 2 for la in d.layers]
        z_sum = np.zeros(d.num_classes)
        tx = x.shape[-1]
        for k in range(d.time_steps):
            s = encode(stream_rows(d, x[:, k % tx], y), d.encoding, d.encoding_seed, n, k, self.fixed)
            g_in = input_frac(d)
            rec = []
            for li, la in enumerate(d.layers):
                if la.kind == "readout":
                    z_sum += self._readout(li, la, s, y, learn, g_in)
                    break
                u, v = state[li]
                s_next, u, v, v_pre = self._lif(li, la, s, u, v, y, learn, g_in)
                state[li] = (u, v)
                rec.append({"v": v_pre, "s": s_next})
                s, g_in = s_next, 0
            if self.trace is not None:
                self.trace.append(rec)
        return z_sum

    # -- hidden layer
    def _lif(self, li, la, s, u, v, y, learn, g_in):
        d = self.d
        if self.fixed:
            a = rule.shift(s @ la.weight.T, la.weight_exp - g_in) + rule.shift(la.bias, la.weight_exp)
            u = rule.wrap_u(rule.decay_fixed(u, la.du_int + 1) + np.left_shift(a, rule.ACT_SHIFT))
            v = rule.clip_v(rule.decay_fixed(v, la.dv_int) + u + la.lif_bias_int)
            v_pre = v.copy()
            spk = v > (la.vth_int << rule.ACT_SHIFT)
            v = np.where(spk, 0 if la.reset == "zero" else v - (la.vth_int << rule.ACT_SHIFT), v)
            if learn:
                v_real = v_pre / float(2 ** (rule.SIGMA + rule.ACT_SHIFT))
                dint = rule.quantise_delta(rule.hidden_delta(v_real, y, d.loss, d.temperature))
                dw, db = rule.fixed_weight_update(dint, s, rule.lr_shift(d.lr), g_in, la.weight_exp, self.rngs[li])
                la.weight = np.clip(la.weight + dw, rule.W_MIN, rule.W_MAX)
                la.bias = np.clip(la.bias + db, rule.W_MIN, rule.W_MAX)
            return spk.astype(np.int64), u, v, v_pre
        a = s @ la.weight.T + la.bias
        u = (1.0 - la.du) * u + a
        v = (1.0 - la.dv) * v + u + la.lif_bias
        v_pre = v.copy()
        spk = (v > la.threshold).astype(np.float64)
        v = v * (1.0 - spk) if la.reset == "zero" else v - la.threshold * spk
        if learn:
            delta = rule.hidden_delta(v_pre, y, d.loss, d.temperature)
            la.weight -= d.lr * delta.T @ s
            la.bias -= d.lr * delta.sum(0)
        return spk, u, v, v_pre

    # -- output head
    def _readout(self, li, la, s, y, learn, g_in):
        d = self.d
        if self.fixed:
            a = rule.shift(la.weight @ s[0], la.weight_exp - g_in) + rule.shift(la.bias, la.weight_exp)
            z = a / float(2 ** rule.SIGMA)
            if learn:
                dint = np.zeros((1, la.n_out), np.int64)
                dint[0] = rule.quantise_delta(rule.head_delta(z, y))
                dw, db = rule.fixed_weight_update(dint, s[:1], rule.lr_shift(d.lr_head), g_in, la.weight_exp,
                                                  self.rngs[li])
                la.weight = np.clip(la.weight + dw, rule.W_MIN, rule.W_MAX)
                la.bias = np.clip(la.bias + db, rule.W_MIN, rule.W_MAX)
            return z
        z = la.weight @ s[0] + la.bias
        if learn:
            g = rule.head_delta(z, y)
            la.weight -= d.lr_head * np.outer(g, s[0])
            la.bias -= d.lr_head * g
        return z
