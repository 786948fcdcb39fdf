"""The on-chip SP-voltage rule and its fixed-point arithmetic, as plain constants and small pure functions
shared by the compiler, the numpy reference and the Lava process models.

Per time step, per hidden layer (rows r: 0 = sample stream, 1..K = target streams, same synapses W, b):

    a[r] = W s_in[r] + b ;  u ← (1−du)u + a ;  v ← (1−dv)v + u + bias_lif ;  s = v > θ ;  reset
    δ = ∂L/∂v (on the pre-reset v; ∂v/∂W through the current step's input only)
    ΔW = −lr Σ_r δ[r]ᵀ s_in[r],   Δb = −lr Σ_r δ[r]            (pre-synaptic input × third factor δ)

Signal placement 'hidden' (default), block 0: the target rows do not pass W_0; their current is the table,
a[1+j] = z_j with z_c = act(LayerNorm(W_S e_c + b_S)) (C, H_0), and ΔW_0, Δb_0 use the sample row only.
A learned signal takes one SGD step per learning step from the target rows' δ: ∂L/∂z_c = δ[1+c] (v1; l2: the
one target row is class y), since ∂v[t]/∂a[t] = 1 with the previous state detached; then back through act and
LayerNorm (:func:`signal_grad`), W_S −= lr ∂L/∂W_S, b_S −= lr ∂L/∂b_S, and the table is recomputed. This runs
in float64 (host / Loihi 2 embedded CPU) in both precisions; fixed_pt feeds it the integer δ / 2^DELTA_FRAC,
uses lr = 2^−k and re-quantises the table (:func:`quantise_table`, SIGMA fractional bits, round half to even,
saturating 16-bit) — deterministic, so the Lava run and the numpy reference stay bit-exact.
Placement 'input' (legacy): the table (C, D_in) is the target rows' input and passes W_0 like the sample.

Recurrent block (spec ``LIF(recurrent=True)``, parameter ``blocks.{i}.rec_weight`` W_rec (n, n)): every row r
adds the current of its own spikes of the previous step through a second synapse group (one step of delay,
s[r][−1] = 0 at each sample start):

    a[r][t] = W s_in[r][t] + b (block 0, hidden placement, target rows: z_r) + W_rec s[r][t−1]
    ΔW_rec = −lr Σ_r δ[r][t]ᵀ s[r][t−1]          (all R rows: every row's current passes W_rec)

i.e. the same third factor δ[t] = ∂L/∂v[t] times the pre-synaptic trace of the block's own spikes at t−1
(∂v[t]/∂W_rec = s[t−1] with the previous state detached, as sp-online's autograd), the same lr, every step.
Memory: the previous spikes s[t−1] (R·n bits), nothing else. fixed_pt: W_rec is its own 8-bit even mantissa
with its own exponent e_rec (chosen as for W, without bias), a_rec = shift(Σ W_rec_int s, e_rec) (floor), and
ΔW_rec_int = 2·sround(−δ_intᵀ s[t−1] / 2^m), m = k + DELTA_FRAC + e_rec − SIGMA + 1 (spikes have 0 fractional
bits), saturating at [−256, 254]; its stochastic rounding draws from numpy.random.default_rng([seed, layer, 1])
(one draw per recurrent weight per learning step), a stream separate from the feed-forward synapses'.

Local losses on the membrane potential (``loss``):
- ``v1`` (default; SP's input_label_direct, = v9/v14 at batch 1 with one target row per class):
  K = C target rows, one per class (the target signal of class c through the layer's synapses),
  Y_c = ⟨v[0], v[1+c]⟩ / (τ·n), p = softmax(Y), g = p − onehot(y),
  δ[0] = Σ_c g_c v[1+c] / (τ·n),  δ[1+c] = g_c v[0] / (τ·n).
- ``l2`` (purely neuron-local; L = ‖v[0] − v[1]‖²/n as edgesp.losses): K = 1 row, the target signal of the
  sample's class, δ[0] = 2(v[0] − v[1])/n, δ[1] = −δ[0]. A Loihi-native third factor, but it admits the
  collapsed solution W = 0 (measured: no learning on digits); kept as the neuron-local form.

Output head (SP trains it with cross-entropy on its detached input), readout as :mod:`edgesp.snn`:
membrane: o[t] = (1−dv_o) o[t−1] + W s[t] + b = W e[t] + β[t] b with the pre-synaptic trace
e[t] = (1−dv_o) e[t−1] + s[t], β[t] = (1−dv_o) β[t−1] + 1; spike_count: o[t] = W e[t]/(k+1) + b with
e the spike count (k the phase). Per step g = softmax(o[t]) − onehot(y) and ΔW = −lr g f[t]ᵀ, Δb = −lr g β_f
with f = e (membrane) or e/(k+1) (spike count) and β_f = β or 1: the Loihi form "third factor × pre-synaptic
trace". Prediction = argmax o[T−1] (the logits of edgesp.snn.run).

Fixed point (Loihi 2, ``fixed_pt``): scale S = 2^sigma maps real voltage/threshold units to integers:
weights W_int (even integers in [−256, 254]: 8-bit signed mantissa, Lava convention) with a per-layer
exponent e, W ≈ W_int·2^e / S; a = shift(Σ W_int s_int, e − g_in) + shift(b_int, e) (floor shifts);
u, v signed 24-bit with activation and threshold MSB-aligned by 6 bits (u += a<<6, spike if v > θ_int<<6);
decays as 12-bit integers (Lava's bit-accurate LIF: u decays by (4096 − du_int − 1)/4096, v by
(4096 − dv_int)/4096). The per-layer exponent e is the smallest with max|W, b|·S/2^e ≤ 254, plus
``WEIGHT_HEADROOM`` bit(s) of room to grow. The third factor δ is a 16-bit signed integer with ``DELTA_FRAC``
(12) fractional bits (real units, round half to even, saturating at ±8); lr = 2^−k;
ΔW_int = 2·sround(−δ_int s_int / 2^(k + DELTA_FRAC + g_in + e − sigma + 1)) with stochastic rounding
sround(x / 2^m) = (x + r) >> m, r ~ U{0..2^m−1} from numpy.random.default_rng([seed, layer]) (one draw per
weight, then per bias, on every learning step; the numpy reference draws the same). Without it the updates
(~1/40 of a weight LSB at lr 2^−10) round to 0 or ±1 LSB deterministically: measured 0.535 instead of 0.875
after one epoch of digits (at DELTA_FRAC 8, no headroom).
"""

from __future__ import annotations

import math

import numpy as np

ACT_SHIFT = 6  # Loihi MSB alignment of activation and threshold (lava.proc.lif AbstractPyLifModelFixed)
DECAY_BITS = 12  # du, dv are 12-bit
UV_BITS = 24  # u, v are signed 24-bit
W_MIN, W_MAX = -256, 254  # 8-bit signed mantissa, Lava's representation (LSB of the int is always 0)
# fractional bits of the integer third factor (range ±8 in 16 bits). Was 8: then 65-71 % of the third factors
# (|δ| < 2^-9) rounded to 0 and fixed_pt lagged float by 11 points with rate inputs at lr 2^-7 (see docs)
DELTA_FRAC = 12
DELTA_BITS = 16  # width of the integer third factor (assumption; see docs)
INPUT_FRAC = 6  # fractional bits of graded input payloads (direct encoding) in fixed_pt
TRACE_FRAC = 8  # fractional bits of the head's pre-synaptic trace e (fixed_pt)
SIGMA = 8  # log2 of the voltage scale S (threshold 1.0 -> 256 -> MSB-aligned 16384)
# extra bits of the weight exponent above the initial max |W|: room for weights to grow past their initial
# range (float head weights grow ~6x in an epoch; with 0 bits 10-20 % of the head's weights saturated)
WEIGHT_HEADROOM = 1


def table_frac(hidden: bool) -> int:
    """Fractional bits of the fixed_pt target-signal table: SIGMA when it is block 0's target current (hidden
    placement, the units of a), INPUT_FRAC when it is the target stream's input (input placement)."""
    return SIGMA if hidden else INPUT_FRAC


def shift(x: np.ndarray | int, k: int) -> np.ndarray:
    """x·2^k for k >= 0, floor(x / 2^−k) otherwise (arithmetic shift, as Lava's bit-accurate Dense)."""
    x = np.asarray(x, np.int64)
    return np.left_shift(x, k) if k >= 0 else np.right_shift(x, -k)


def sround_shift(x: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Stochastically rounded x / 2^m (unbiased): (x + r) >> m with r uniform in [0, 2^m)."""
    x = np.asarray(x, np.int64)
    if m <= 0:
        return np.left_shift(x, -m)
    r = rng.integers(0, 1 << m, size=x.shape, dtype=np.int64)
    return np.right_shift(x + r, m)


def softmax(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run is reported once by the simulator
        e = np.exp(z - z.max())
        return e / e.sum()


def hidden_delta(v: np.ndarray, y: int, loss: str, temperature: float) -> np.ndarray:
    """δ = ∂L/∂v for one hidden layer; v: (R, n) pre-reset voltages in real units (row 0 sample)."""
    if loss == "l2":
        d = 2.0 * (v[0] - v[1]) / v.shape[1]
        return np.stack([d, -d])
    n = v.shape[1]
    scale = 1.0 / (temperature * n)
    with np.errstate(over="ignore", invalid="ignore"):
        logits = (v[1:] @ v[0]) * scale
    g = softmax(logits)
    g[y] -= 1.0
    delta = np.empty_like(v, dtype=np.float64)
    delta[0] = (g @ v[1:]) * scale
    delta[1:] = g[:, None] * v[0][None, :] * scale
    return delta


def signal_forward(ws: np.ndarray, bs: np.ndarray, act: str) -> np.ndarray:
    """z_c = act(LayerNorm(W_S e_c + b_S)) for every class: (C, D) float64 (LayerNorm eps 1e-5, biased var)."""
    p = np.asarray(ws, np.float64).T + np.asarray(bs, np.float64)
    xhat = (p - p.mean(1, keepdims=True)) / np.sqrt(p.var(1, keepdims=True) + 1e-5)
    return np.maximum(xhat, 0.0) if act == "relu" else xhat


def quantise_table(z: np.ndarray, hidden: bool) -> np.ndarray:
    """Real target table -> saturating 16-bit ints with ``table_frac(hidden)`` fractional bits (round half even)."""
    return np.clip(np.rint(np.asarray(z, np.float64) * 2 ** table_frac(hidden)), -(2**15), 2**15 - 1).astype(np.int64)


def signal_lr(lr: float, fixed: bool) -> float:
    """Learning rate of W_S: the layer's lr (fixed_pt: the same power of two 2^−k as the synapses)."""
    return 2.0 ** -lr_shift(lr) if fixed else lr


def signal_step(
    ws: np.ndarray, bs: np.ndarray, delta_t: np.ndarray, y: int, loss: str, act: str, lr: float, fixed: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One SGD step of the signal generator from block 0's third factor of the target rows, δ_t (K, H_0):
    real (floating_pt) or DELTA_FRAC ints (fixed_pt). ∂L/∂z_c = δ_t[c] (v1: K = C rows, one per class; l2: the
    one row is class y) because z_c is the current of that row and ∂v/∂a = 1 at the current step. Returns the
    new W_S, b_S (float64, in place) and the new table (float64, or quantised ints for fixed_pt)."""
    dt = np.asarray(delta_t, np.float64) / (2**DELTA_FRAC if fixed else 1.0)
    if loss == "v1":
        dz = dt
    else:
        dz = np.zeros((ws.shape[1], ws.shape[0]))
        dz[y] = dt[0]
    gw, gb = signal_grad(ws, bs, dz, act)
    ws -= lr * gw
    bs -= lr * gb
    z = signal_forward(ws, bs, act)
    return ws, bs, quantise_table(z, True) if fixed else z


def signal_grad(ws: np.ndarray, bs: np.ndarray, dz: np.ndarray, act: str) -> tuple[np.ndarray, np.ndarray]:
    """(∂L/∂W_S, ∂L/∂b_S) from dz = ∂L/∂z (C, D), back through act and LayerNorm (float64)."""
    p = np.asarray(ws, np.float64).T + np.asarray(bs, np.float64)
    inv_std = 1.0 / np.sqrt(p.var(1, keepdims=True) + 1e-5)
    xhat = (p - p.mean(1, keepdims=True)) * inv_std
    g = dz * (xhat > 0) if act == "relu" else dz
    dp = inv_std * (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True))
    return dp.T, dp.sum(0)


def head_delta(z: np.ndarray, y: int) -> np.ndarray:
    """δ = ∂CE/∂z for the per-step head logits z (C,)."""
    g = softmax(z.astype(np.float64))
    g[y] -= 1.0
    return g


def quantise_delta(delta: np.ndarray) -> np.ndarray:
    """Real third factor -> signed DELTA_BITS integer with DELTA_FRAC fractional bits (round, saturate)."""
    lim = 2 ** (DELTA_BITS - 1)
    return np.clip(np.rint(delta * 2**DELTA_FRAC), -lim, lim - 1).astype(np.int64)


def lr_shift(lr: float) -> int:
    """k with lr ≈ 2^−k (Loihi learning rates are powers of two)."""
    return max(0, int(round(-math.log2(lr))))


def fixed_weight_update(
    delta_int: np.ndarray,
    pre: np.ndarray,
    pre_frac: int,
    bias_pre: np.ndarray,
    k: int,
    e: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Integer ΔW (even ints) and Δb for δ_int (R, n_out), pre-synaptic values pre (R, n_in) and the bias
    synapse's pre-synaptic value bias_pre (R,), both ints with ``pre_frac`` fractional bits:
    ΔW_int = 2·sround(−δ_intᵀ pre / 2^m), m = k + DELTA_FRAC + pre_frac + e − SIGMA + 1 (drawn W first, then b)."""
    m = k + DELTA_FRAC + pre_frac + e - SIGMA + 1
    num = -(delta_int.T.astype(np.int64) @ pre.astype(np.int64))
    dw = 2 * sround_shift(num, m, rng)
    db = 2 * sround_shift(-(delta_int.T.astype(np.int64) @ bias_pre.astype(np.int64)), m, rng)
    return dw, db


def fixed_rec_update(
    delta_int: np.ndarray, s_prev: np.ndarray, k: int, e_rec: int, rng: np.random.Generator
) -> np.ndarray:
    """Integer ΔW_rec (even ints) for δ_int (R, n) and the block's own previous spikes s_prev (R, n) in {0, 1}:
    ΔW_rec_int = 2·sround(−δ_intᵀ s_prev / 2^m), m = k + DELTA_FRAC + e_rec − SIGMA + 1."""
    m = k + DELTA_FRAC + e_rec - SIGMA + 1
    return 2 * sround_shift(-(delta_int.T.astype(np.int64) @ s_prev.astype(np.int64)), m, rng)


def rec_rng(seed: int, layer: int) -> np.random.Generator:
    """Generator of the recurrent synapses' stochastic rounding (separate from the feed-forward one)."""
    return np.random.default_rng([seed, layer, 1])


def wrap_u(x: np.ndarray) -> np.ndarray:
    """Lava's bit-accurate current wrap-around at ±2^23."""
    lim = 2 ** (UV_BITS - 1)
    w = np.where(x > lim, x - 2 * lim, x)
    return np.where(w <= -lim, x + 2 * lim, w)


def clip_v(x: np.ndarray) -> np.ndarray:
    lim = 2 ** (UV_BITS - 1)
    return np.clip(x, -lim + 1, lim - 1)


def decay_fixed(x: np.ndarray, factor: int) -> np.ndarray:
    """x·(4096 − factor)/4096 with Loihi's sign-magnitude rounding toward zero."""
    p = np.asarray(x, np.int64) * ((1 << DECAY_BITS) - factor)
    return (np.sign(p) * np.right_shift(np.abs(p), DECAY_BITS)).astype(np.int64)
