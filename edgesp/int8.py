"""int8 Signal Propagation: the integer-only learning rule the microcontroller firmware runs. This numpy code is
the rule's *specification*: the C firmware (compilers/mcu) computes exactly the same integers, bit for bit.

Network. Every block is one parametric layer (Linear / Conv1d / Conv2d, all run as a 2-D convolution on
(C, H, W) tensors: Linear is a 1×1 conv on (F, 1, 1), Conv1d a (1, k) conv on (C, 1, L)) followed by a fused
ReLU requantisation and an optional non-overlapping max-pool; the head is a Linear without requantisation.
LayerNorm and Dropout layers of the spec are not computed (the fixed power-of-two requantisation takes the
place of LayerNorm's scaling); Tanh/LeakyReLU/AvgPool/LIF are refused.

Arithmetic (every number an integer; shifts are arithmetic, i.e. floor division by 2^k):

- input       x_q = clamp(floor(x · 2^5 + ½), −127, 127)           (int8; x standardised, 1.0 ↦ 32)
- weights     W int8 in [−127, 127]; biases b int32 in [−2^24, 2^24] (accumulator units)
- forward     acc = Σ W·x + b   (int32 accumulator; |acc| < 2^31 is checked at plan time)
              h = clamp((acc + 2^(s−1)) >> s, 0, 127)   (ReLU + requantisation, round half up; s = layer shift)
              head: z = acc (int32 logits, no requantisation); prediction argmax z (lowest index on ties)
- signal      hidden placement: a table Z (D, C) of int8 in [0, 127] is block 0's (pooled) target t_1 for each
              class; before pooling it is upsampled (nearest) over each pool window, so pooling gives Z back
              (shape 'channel': Z (C_out, C), broadcast over positions); g_Z sums over what a row covers
- negative    one class n ≠ y per step: n = (y + 1 + r mod (C−1)) mod C, r = hash(seed, step, 254, 0)
- SP loss     per block i (pre-pool outputs h = f_i(h_{i−1}), t = f_i(t_{i−1}) for class y, u = f_i(u_{i−1}) for
              class n; at block 0 t, u are Z's columns y, n):  Y_t = Σ h·t,  Y_u = Σ h·u  (int32)
              hinge L = max(0, m_i − (Y_t − Y_u)),  m_i = margin · numel(h)
              (an integer, contrastive stand-in for SP's softmax 'v1' loss; it needs two target rows, not C)
- gradients   if L > 0:  δ_h = (u − t)·[h > 0],  δ_t = −h·[t > 0],  δ_u = h·[u > 0]   (int16 range)
              G = Σ_positions δ_h ⊗ patch(h_{i−1}) + δ_t ⊗ patch(t_{i−1}) + δ_u ⊗ patch(u_{i−1})   (int32)
              g_b = clamp(Σ_positions δ_h + δ_t + δ_u, ±2^20) · 2^10   (bias gradient, accumulator units: 2^(2·5))
              block 0 with a hidden signal: only the δ_h term; g_Z[:, y] = −h, g_Z[:, n] = +h (summed over
              positions for shape 'channel')
- head        integer softmax cross-entropy: p = softmax_q8(z) (base 2^(1/4), exponent d = (max z − z_c) >> T,
              a 4-entry table, Q8 probabilities by one integer division), δ = p − 256·e_y (Q8),
              G = δ ⊗ x, g_b = δ · 2^10
- update      W ← clamp(W − sround(G, k), −127, 127);  b ← clamp(b − sround(g_b, k), −2^24, 2^24);
              Z ← clamp(Z − sround(g_Z, k_Z), 0, 127)
              sround(g, k) = (g + (r mod 2^k)) >> k: stochastic rounding, unbiased, r = hash(seed, step, layer, j)
              for the j-th element (weights j = 0…, biases j = numel(W)…); k = lr_shift + ceil(log2(positions))
- hash        lowbias32(j · 0xC2B2AE35 ⊕ seed ⊕ (layer+1) · 0x9E3779B9 ⊕ step · 0x85EBCA6B), all mod 2^32
              (stateless, so the C firmware and numpy draw identical numbers in any loop order)

The BP baseline (same network, same head loss and rounding): δ_N = (W_headᵀ δ_head + 2^7) >> 8; per block, last to
first:
δ = unpool(g)·[h > 0] clamped to ±4095 (int16), G = δ ⊗ patch(x), g_x = (col2im(Wᵀ δ) + 2^(s−1)) >> s with the
old W (clamped to ±4095), then the same stochastic-rounded update.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgesp.errors import SpecError
from edgesp.spec import (
    Conv1d,
    Dropout,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ModelSpec,
    ReLU,
)

ACT_MAX = 127
W_MAX = 127
B_MAX = 1 << 24
INPUT_FRAC = 5  # x_q = x · 2^5
BIAS_GRAD_SHIFT = 2 * INPUT_FRAC
GB_MAX = 1 << 20  # bias gradient sums are clamped to ±2^20 before the 2^10 scale (keeps them in int32)
DELTA_MAX = 4095  # BP's int16 deltas are clamped to ±4095 (keeps G in int32)
NEG_SALT = 254
SIGNAL_SALT = 255
MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Int8Config:
    """Hyper-parameters of the int8 rule (all integers; see the module docstring)."""

    lr_shift: int = 11  # k of the hidden layers before adding ceil(log2(positions))
    head_lr_shift: int = 11
    signal_lr_shift: int = 10
    margin: int = 128  # per output element, in activation² units (32² = one float unit²)
    head_temp_shift: int = 11  # softmax exponent unit: d = (z_max − z) >> this (logits: 2^(5+e) per float unit)
    seed: int = 0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 32:
                raise SpecError(f"int8 rule setting {k} must be an integer in [0, 2^32), got {v!r}")
        for k in ("lr_shift", "head_lr_shift", "signal_lr_shift"):
            if getattr(self, k) > 24:
                raise SpecError(f"int8 rule setting {k} must be <= 24, got {getattr(self, k)}")


@dataclass(frozen=True)
class QLayer:
    """One parametric layer as a 2-D convolution on (C, H, W) int8 tensors."""

    name: str  # 'blocks.{i}' or 'head'
    index: int  # hash salt: block i → i, head → number of blocks
    cin: int
    cout: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    ih: int
    iw: int
    oh: int
    ow: int
    pool_h: int = 1
    pool_w: int = 1
    relu: bool = True
    shift: int = 0  # requantisation shift s (blocks)
    lr_shift: int = 0  # k (positions included)

    @property
    def k(self) -> int:
        return self.cin * self.kh * self.kw

    @property
    def positions(self) -> int:
        return self.oh * self.ow

    @property
    def in_size(self) -> int:
        return self.cin * self.ih * self.iw

    @property
    def out_size(self) -> int:
        return self.cout * self.oh * self.ow

    @property
    def pooled_size(self) -> int:
        return self.cout * (self.oh // self.pool_h) * (self.ow // self.pool_w)

    @property
    def n_weights(self) -> int:
        return self.cout * self.k


@dataclass(frozen=True)
class Plan:
    layers: tuple[QLayer, ...]  # blocks then head
    num_classes: int
    signal_channel: bool  # Z broadcast over positions
    signal_learned: bool
    config: Int8Config = field(default_factory=Int8Config)

    @property
    def blocks(self) -> tuple[QLayer, ...]:
        return self.layers[:-1]

    @property
    def head(self) -> QLayer:
        return self.layers[-1]

    @property
    def signal_shape(self) -> tuple[int, int]:
        b0 = self.layers[0]
        return (b0.cout if self.signal_channel else b0.pooled_size, self.num_classes)

    def z_target(self, z: np.ndarray, c: int) -> np.ndarray:
        """Block 0's pre-pool target (cout, positions) for class c: column c of Z broadcast over positions
        (shape 'channel') or upsampled (nearest) over each pool window, so that pooling it gives Z back."""
        b0 = self.layers[0]
        col = z[:, c]
        if self.signal_channel:
            return np.broadcast_to(col[:, None], (b0.cout, b0.positions))
        a = col.reshape(b0.cout, b0.oh // b0.pool_h, b0.ow // b0.pool_w)
        return np.repeat(np.repeat(a, b0.pool_h, axis=1), b0.pool_w, axis=2).reshape(b0.cout, b0.positions)

    def z_grad(self, h: np.ndarray) -> np.ndarray:
        """Σ of block 0's pre-pool output h over what each row of Z covers (all positions / its pool window)."""
        b0 = self.layers[0]
        if self.signal_channel:
            return h.sum(axis=1)
        hh, ww = b0.oh // b0.pool_h, b0.ow // b0.pool_w
        a = h.reshape(b0.cout, b0.oh, b0.ow)[:, : hh * b0.pool_h, : ww * b0.pool_w]
        return a.reshape(b0.cout, hh, b0.pool_h, ww, b0.pool_w).sum(axis=(2, 4)).reshape(-1)

    def slower(self, d: int) -> Plan:
        """The same plan learning 2^−d times slower (every lr shift + d): a step schedule, or fine-tuning."""
        from dataclasses import replace

        cfg = replace(
            self.config,
            lr_shift=self.config.lr_shift + d,
            head_lr_shift=self.config.head_lr_shift + d,
            signal_lr_shift=self.config.signal_lr_shift + d,
        )
        return replace(self, layers=tuple(replace(q, lr_shift=q.lr_shift + d) for q in self.layers), config=cfg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(la) for la in self.layers],
            "num_classes": self.num_classes,
            "signal_channel": self.signal_channel,
            "signal_learned": self.signal_learned,
            "config": asdict(self.config),
        }


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    return (shape[0], shape[1], shape[2])


def _qlayer(name: str, index: int, layer: Any, in_shape: tuple[int, ...]) -> QLayer:
    c, h, w = _chw(in_shape)
    if not layer.bias:
        raise SpecError(f"{name}: the int8 rule needs a bias in every parametric layer")
    if isinstance(layer, Linear):
        return QLayer(name, index, math.prod(in_shape), layer.out_features, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1)
    if isinstance(layer, Conv1d):
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        ow = (w + 2 * p - k) // s + 1
        return QLayer(name, index, c, layer.out_channels, 1, k, 1, s, 0, p, 1, w, 1, ow)
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return QLayer(name, index, c, layer.out_channels, k, k, s, s, p, p, h, w, oh, ow)


def plan(spec: ModelSpec, shifts: list[int], config: Int8Config | None = None) -> Plan:
    """The int8 network of ``spec`` with per-layer requantisation ``shifts`` (blocks then head; the head's is its
    weight exponent, used only when quantising). Refuses what the int8 rule does not compute (one line)."""
    config = config or Int8Config()
    if spec.is_spiking:
        raise SpecError("the int8 rule runs non-spiking models (Linear/Conv → ReLU → MaxPool blocks)")
    if not spec.signal.hidden:
        raise SpecError(
            "the int8 rule needs the signal placement 'hidden' (the default): re-train without --signal-placement input"
        )
    if not spec.rule.variant.is_plain:
        raise SpecError(f"the int8 rule runs plain SP, not the variant {spec.rule.variant.describe()}")
    if len(shifts) != len(spec.blocks) + 1:
        raise SpecError(f"int8 shifts: {len(shifts)} given, the model has {len(spec.blocks) + 1} layers")
    layers: list[QLayer] = []
    shape = spec.block_input_shape()
    shapes = spec.shapes()
    for i, block in enumerate(spec.blocks):
        q = _qlayer(f"blocks.{i}", i, block[0], shape)
        pool, relu = (1, 1), False
        for la in block[1:]:
            if isinstance(la, ReLU):
                relu = True
            elif isinstance(la, MaxPool1d):
                pool = (1, la.kernel_size)
            elif isinstance(la, MaxPool2d):
                pool = (la.kernel_size, la.kernel_size)
            elif not isinstance(la, (LayerNorm, Dropout, Flatten)):
                raise SpecError(
                    f"block {i}: the int8 rule has no {type(la).__name__} (it runs Linear/Conv → ReLU → MaxPool blocks)"
                )
        if not relu:
            raise SpecError(f"block {i}: the int8 rule needs a ReLU in every block")
        lr = config.lr_shift + math.ceil(math.log2(q.positions)) if q.positions > 1 else config.lr_shift
        q = QLayer(**{**asdict(q), "pool_h": pool[0], "pool_w": pool[1], "shift": int(shifts[i]), "lr_shift": lr})
        if not 1 <= q.shift <= 30:
            raise SpecError(f"block {i}: requantisation shift {q.shift} is outside 1…30")
        if q.k * 127 * 127 + B_MAX >= 1 << 31 or q.out_size * max(127 * 127, config.margin) >= 1 << 31:
            raise SpecError(f"block {i} is too large for int32 accumulators (fan-in {q.k}, outputs {q.out_size})")
        layers.append(q)
        shape = shapes[i][-1]
    head = _qlayer("head", len(spec.blocks), spec.head, shape)
    layers.append(QLayer(**{**asdict(head), "relu": False, "shift": int(shifts[-1]), "lr_shift": config.head_lr_shift}))
    return Plan(tuple(layers), spec.num_classes, spec.signal.shape == "channel", spec.signal.kind == "learned", config)


# --------------------------------------------------------------------------- integer helpers
SOFTMAX_Q = 8  # probabilities in Q8 (256 = 1)
EXP_LUT = (32768, 27554, 23170, 19484)  # round(2^15 · 2^(−j/4)), j = 0…3


def softmax_q8(z: np.ndarray, temp_shift: int) -> np.ndarray:
    """Integer softmax: d_c = (max z − z_c) >> temp_shift, e_c = EXP_LUT[d_c mod 4] >> (d_c / 4) (0 once
    d_c / 4 ≥ 16), p_c = floor(e_c · 2^8 / Σ e) — a base-2^(1/4) softmax in Q8."""
    d = (int(z.max()) - z.astype(np.int64)) >> temp_shift
    e = np.where(d >> 2 < 16, np.array(EXP_LUT, np.int64)[d & 3] >> np.minimum(d >> 2, 15), 0)
    return (e << SOFTMAX_Q) // int(e.sum())


def lowbias32(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def rand32(seed: int, step: int, layer: int, start: int, n: int) -> np.ndarray:
    """hash(seed, step, layer, j) for j = start … start+n−1 (uint32)."""
    salt = (seed ^ (((layer + 1) * 0x9E3779B9) & MASK32) ^ ((step * 0x85EBCA6B) & MASK32)) & MASK32
    j = np.arange(start, start + n, dtype=np.uint64).astype(np.uint32)
    return lowbias32((j * np.uint32(0xC2B2AE35)) ^ np.uint32(salt))


def sround(g: np.ndarray, k: int, r: np.ndarray) -> np.ndarray:
    """floor((g + (r mod 2^k)) / 2^k): unbiased stochastic rounding of g / 2^k."""
    g = g.astype(np.int64)
    if k == 0:
        return g
    return (g + (r.astype(np.int64) & ((1 << k) - 1))) >> k


def requant(acc: np.ndarray, s: int) -> np.ndarray:
    return np.clip((acc + (1 << (s - 1))) >> s, 0, ACT_MAX)


def quantise_input(x: np.ndarray) -> np.ndarray:
    """Standardised float samples → int8: clamp(floor(x · 2^5 + ½), −127, 127)."""
    return np.clip(np.floor(np.asarray(x, np.float64) * (1 << INPUT_FRAC) + 0.5), -127, 127).astype(np.int8)


def negative_class(y: int, num_classes: int, seed: int, step: int) -> int:
    r = int(rand32(seed, step, NEG_SALT, 0, 1)[0])
    return (y + 1 + r % (num_classes - 1)) % num_classes


@functools.lru_cache(maxsize=64)
def _im2col_index(q: QLayer) -> np.ndarray:
    """Flat indices into the zero-padded input (C, H+2ph, W+2pw) for every (row = (c, ky, kx), col = (oy, ox))."""
    hp, wp = q.ih + 2 * q.ph, q.iw + 2 * q.pw
    c = np.arange(q.cin)[:, None, None, None, None]
    ky = np.arange(q.kh)[None, :, None, None, None]
    kx = np.arange(q.kw)[None, None, :, None, None]
    oy = np.arange(q.oh)[None, None, None, :, None]
    ox = np.arange(q.ow)[None, None, None, None, :]
    idx = (c * hp + oy * q.sh + ky) * wp + ox * q.sw + kx
    return idx.reshape(q.k, q.positions)


def im2col(q: QLayer, x: np.ndarray) -> np.ndarray:
    xp = np.pad(x.reshape(q.cin, q.ih, q.iw).astype(np.int64), ((0, 0), (q.ph, q.ph), (q.pw, q.pw)))
    return xp.reshape(-1)[_im2col_index(q)]


def col2im(q: QLayer, cols: np.ndarray) -> np.ndarray:
    hp, wp = q.ih + 2 * q.ph, q.iw + 2 * q.pw
    out = np.zeros(q.cin * hp * wp, np.int64)
    np.add.at(out, _im2col_index(q).reshape(-1), cols.reshape(-1))
    return out.reshape(q.cin, hp, wp)[:, q.ph : q.ph + q.ih, q.pw : q.pw + q.iw].reshape(-1)


def maxpool(q: QLayer, out: np.ndarray) -> np.ndarray:
    if q.pool_h == 1 and q.pool_w == 1:
        return out.reshape(-1)
    h, w = q.oh // q.pool_h, q.ow // q.pool_w
    a = out.reshape(q.cout, q.oh, q.ow)[:, : h * q.pool_h, : w * q.pool_w]
    return a.reshape(q.cout, h, q.pool_h, w, q.pool_w).max(axis=(2, 4)).reshape(-1)


def unpool(q: QLayer, out: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Route each pooled gradient to the first maximum (row-major) of its window; zero elsewhere."""
    if q.pool_h == 1 and q.pool_w == 1:
        return g.reshape(q.cout, q.positions)
    h, w, ph, pw = q.oh // q.pool_h, q.ow // q.pool_w, q.pool_h, q.pool_w
    a = out.reshape(q.cout, q.oh, q.ow)
    full = np.zeros((q.cout, q.oh, q.ow), np.int64)
    win = a[:, : h * ph, : w * pw].reshape(q.cout, h, ph, w, pw).transpose(0, 1, 3, 2, 4).reshape(q.cout, h, w, ph * pw)
    arg = win.argmax(axis=-1)
    cc, yy, xx = np.meshgrid(np.arange(q.cout), np.arange(h), np.arange(w), indexing="ij")
    full[cc, yy * ph + arg // pw, xx * pw + arg % pw] = g.reshape(q.cout, h, w)
    return full.reshape(q.cout, q.positions)


# --------------------------------------------------------------------------- the network state
class Int8Net:
    """The int8 model and its learning state: ``w[i]`` int8 (cout, k), ``b[i]`` int32 (cout,), ``z`` int8 (D, C),
    ``step`` (the step counter that seeds the rounding). ``sp_step``/``bp_step`` learn from one sample."""

    def __init__(self, plan_: Plan, state: dict[str, np.ndarray], step: int = 0) -> None:
        self.plan = plan_
        self.w = [np.asarray(state[f"{q.name}.weight"]).reshape(q.cout, q.k).astype(np.int64) for q in plan_.layers]
        self.b = [np.asarray(state[f"{q.name}.bias"]).reshape(q.cout).astype(np.int64) for q in plan_.layers]
        self.z = np.asarray(state["signal.weight"]).reshape(plan_.signal_shape).astype(np.int64)
        self.step = int(step)
        self.check()

    def check(self) -> None:
        for q, w, b in zip(self.plan.layers, self.w, self.b, strict=True):
            if np.abs(w).max(initial=0) > W_MAX or np.abs(b).max(initial=0) > B_MAX:
                raise SpecError(f"{q.name}: int8 weights must be in ±{W_MAX} and biases in ±2^24")
        if self.z.min(initial=0) < 0 or self.z.max(initial=0) > ACT_MAX:
            raise SpecError(f"signal.weight (the int8 target table) must be in [0, {ACT_MAX}]")

    def state(self, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
        """Integer arrays by parameter name (int8 weights/table, int32 biases; ``signal.bias`` is all zero)."""
        out: dict[str, np.ndarray] = {}
        for q, w, b in zip(self.plan.layers, self.w, self.b, strict=True):
            out[f"{q.name}.weight"] = w.astype(np.int8)
            out[f"{q.name}.bias"] = b.astype(np.int32)
        out["signal.weight"] = self.z.astype(np.int8)
        out["signal.bias"] = np.zeros(self.z.shape[0], np.int32)
        if shapes:
            out = {k: v.reshape(shapes[k]) for k, v in out.items()}
        return out

    # -- forward
    def layer_fwd(self, i: int, cols: np.ndarray) -> np.ndarray:
        q = self.plan.layers[i]
        acc = self.w[i] @ cols + self.b[i][:, None]
        return requant(acc, q.shift) if q.relu else acc.reshape(-1)

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, np.int64).reshape(-1)
        for i, q in enumerate(self.plan.blocks):
            h = maxpool(q, self.layer_fwd(i, im2col(q, h)))
        return self.layer_fwd(len(self.plan.blocks), h.reshape(-1, 1))

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return np.array([int(np.argmax(self.logits(x))) for x in xs], np.int64)

    def accuracy(self, xs: np.ndarray, ys: np.ndarray) -> float:
        return float(np.mean(self.predict(xs) == np.asarray(ys))) if len(ys) else float("nan")

    # -- updates
    def _apply(self, i: int, g_w: np.ndarray, g_b: np.ndarray) -> None:
        q, seed = self.plan.layers[i], self.plan.config.seed
        r = rand32(seed, self.step, q.index, 0, q.n_weights + q.cout)
        self.w[i] = np.clip(
            self.w[i] - sround(g_w.reshape(-1), q.lr_shift, r[: q.n_weights]).reshape(self.w[i].shape), -W_MAX, W_MAX
        )
        g_b = np.clip(g_b, -GB_MAX, GB_MAX) << BIAS_GRAD_SHIFT
        self.b[i] = np.clip(self.b[i] - sround(g_b, q.lr_shift, r[q.n_weights :]), -B_MAX, B_MAX)

    def _head(self, x: np.ndarray, y: int) -> np.ndarray | None:
        """Head update with the integer softmax cross-entropy; returns δ (C,) in Q8, or None if it is all zero."""
        i = len(self.plan.blocks)
        z = self.layer_fwd(i, x.reshape(-1, 1))
        delta = softmax_q8(z, self.plan.config.head_temp_shift)
        delta[y] -= 1 << SOFTMAX_Q
        if not delta.any():
            return None
        self._apply(i, np.outer(delta, x.reshape(-1)), delta)
        return delta

    def sp_step(self, x: np.ndarray, y: int) -> dict[str, int]:
        """One SP update from sample x (int8, flat) with label y. Returns per-block hinge-violation flags."""
        p, cfg = self.plan, self.plan.config
        y = int(y)
        n = negative_class(y, p.num_classes, cfg.seed, self.step)
        h = np.asarray(x, np.int64).reshape(-1)
        t = u = None
        flags = {}
        for i, q in enumerate(p.blocks):
            cols_h = im2col(q, h)
            oh = self.layer_fwd(i, cols_h)
            if i == 0:
                ot, ou = p.z_target(self.z, y), p.z_target(self.z, n)
                cols_t = cols_u = None
            else:
                cols_t, cols_u = im2col(q, t), im2col(q, u)
                ot, ou = self.layer_fwd(i, cols_t), self.layer_fwd(i, cols_u)
            viol = int((oh * ot).sum() - (oh * ou).sum() < cfg.margin * q.out_size)
            flags[f"block{i}"] = viol
            if viol:
                d_h = (ou - ot) * (oh > 0)
                g_w = d_h @ cols_h.T
                g_b = d_h.sum(axis=1)
                if i > 0:
                    d_t, d_u = -oh * (ot > 0), oh * (ou > 0)
                    g_w = g_w + d_t @ cols_t.T + d_u @ cols_u.T
                    g_b = g_b + d_t.sum(axis=1) + d_u.sum(axis=1)
                elif p.signal_learned:
                    g_z = np.zeros_like(self.z)
                    hz = p.z_grad(oh)
                    g_z[:, y] -= hz
                    g_z[:, n] += hz
                    r = rand32(cfg.seed, self.step, SIGNAL_SALT, 0, self.z.size).reshape(self.z.shape)
                    self.z = np.clip(self.z - sround(g_z, cfg.signal_lr_shift, r), 0, ACT_MAX)
                self._apply(i, g_w, g_b)
            h, t, u = maxpool(q, oh), maxpool(q, ot), maxpool(q, ou)
        flags["head"] = int(self._head(h, y) is not None)
        self.step += 1
        return flags

    def bp_step(self, x: np.ndarray, y: int) -> dict[str, int]:
        """One int8 backprop update (the baseline): head hinge δ back through every block (module docstring)."""
        p = self.plan
        h = np.asarray(x, np.int64).reshape(-1)
        saved = []
        for i, q in enumerate(p.blocks):
            cols = im2col(q, h)
            out = self.layer_fwd(i, cols)
            saved.append((cols, out))
            h = maxpool(q, out)
        nb = len(p.blocks)
        w_head = self.w[nb].copy()
        delta = self._head(h, int(y))
        if delta is not None:
            g = (w_head.T @ delta + (1 << (SOFTMAX_Q - 1))) >> SOFTMAX_Q
            for i in range(nb - 1, -1, -1):
                q, (cols, out) = p.blocks[i], saved[i]
                d = np.clip(unpool(q, out, g) * (out > 0), -DELTA_MAX, DELTA_MAX)
                if i > 0:
                    gx = col2im(q, self.w[i].T @ d)
                    g = np.clip((gx + (1 << (q.shift - 1))) >> q.shift, -DELTA_MAX, DELTA_MAX)
                self._apply(i, d @ cols.T, d.sum(axis=1))
        self.step += 1
        return {"head": int(delta is not None)}


# --------------------------------------------------------------------------- quantisation and init
def _layer_norm(v: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return (v - v.mean()) / np.sqrt(v.var() + eps)


def config_from_rule(spec: ModelSpec) -> Int8Config:
    """:class:`Int8Config` with the spec's rule parameters ``int8_<setting>`` (``--rule-param int8_margin=16``)."""
    over = {k[5:]: v for k, v in spec.rule.params.items() if k.startswith("int8_")}
    known = set(Int8Config.__dataclass_fields__)
    bad = sorted(set(over) - known)
    if bad:
        raise SpecError(f"unknown int8 setting int8_{bad[0]}; known: {', '.join('int8_' + k for k in sorted(known))}")
    return Int8Config(**over)


def quantise(
    spec: ModelSpec, params: dict[str, np.ndarray], config: Int8Config | None = None
) -> tuple[Plan, dict[str, np.ndarray]]:
    """A float model → int8 (the network of :func:`plan`): per layer the power-of-two weight scale 2^e that
    gives the weights an RMS of ~16 (e = round(log2(16 / rms W))), W_q = clamp(round(W · 2^e), ±127),
    b_q = round(b · 2^(e+5)); the requantisation shift is s = e (so a unit float activation stays 32); the signal
    table Z[:, c] = clamp(round(act(LayerNorm(W_S e_c + b_S)) · 2^5), 0, 127). LayerNorm layers of the blocks
    are dropped (module docstring), so a float model trained with LayerNorm changes function; a fresh model is
    a valid start."""
    config = config or config_from_rule(spec)
    shifts, state = [], {}
    names = [f"blocks.{i}" for i in range(len(spec.blocks))] + ["head"]
    for name in names:
        w = np.asarray(params[f"{name}.weight"], np.float64)
        rms = float(np.sqrt(np.mean(w**2))) or 1.0
        e = int(np.clip(round(math.log2(16.0 / rms)), 1, 24))
        shifts.append(e)
        state[f"{name}.weight"] = np.clip(np.round(w * 2.0**e), -W_MAX, W_MAX).astype(np.int8)
        b = np.asarray(params.get(f"{name}.bias", np.zeros(w.shape[0])), np.float64)
        state[f"{name}.bias"] = np.clip(np.round(b * 2.0 ** (e + INPUT_FRAC)), -B_MAX, B_MAX).astype(np.int32)
    p = plan(spec, shifts, config)
    ws, bs = np.asarray(params["signal.weight"], np.float64), np.asarray(params["signal.bias"], np.float64)
    cols = []
    for c in range(spec.num_classes):
        v = _layer_norm(ws[:, c] + bs)
        if spec.signal.activation == "relu":
            v = np.maximum(v, 0)
        cols.append(v)
    z = np.clip(np.round(np.stack(cols, 1) * (1 << INPUT_FRAC)), 0, ACT_MAX).astype(np.int8)
    state["signal.weight"] = z
    state["signal.bias"] = np.zeros(z.shape[0], np.int32)
    shapes = spec.param_shapes()
    for k in list(state):
        if k in shapes:
            state[k] = state[k].reshape(shapes[k])
        else:  # a layer without bias in the spec
            del state[k]
    return p, state


INT8_KEY = "int8"


def int8_settings(spec: ModelSpec) -> dict[str, Any] | None:
    """The int8 settings an int8-trained checkpoint carries in ``spec.rule.params['int8']`` (shifts, config)."""
    v = spec.rule.params.get(INT8_KEY)
    return v if isinstance(v, dict) else None


def from_checkpoint(spec: ModelSpec, params: dict[str, np.ndarray]) -> tuple[Plan, dict[str, np.ndarray], bool]:
    """(plan, integer state, was_int8): an int8-trained checkpoint is used as is (its integer values checked);
    a float one is quantised (:func:`quantise`)."""
    s = int8_settings(spec)
    if s is None:
        p, state = quantise(spec, params)
        return p, state, False
    try:
        p = plan(spec, list(s["shifts"]), Int8Config(**s.get("config", {})))
    except (KeyError, TypeError) as e:
        raise SpecError(f"the checkpoint's int8 settings are invalid ({e}): re-train with --precision int8") from None
    state = {}
    for k, v in params.items():
        a = np.asarray(v, np.float64)
        if not np.all(a == np.round(a)):
            raise SpecError(
                f"{k}: an int8 checkpoint holds integers; this one does not: re-train with --precision int8"
            )
        state[k] = a.astype(np.int32 if k.endswith("bias") else np.int8)
    Int8Net(p, state)  # range check
    return p, state, True


def settings_dict(p: Plan) -> dict[str, Any]:
    return {"shifts": [q.shift for q in p.layers], "config": asdict(p.config)}
