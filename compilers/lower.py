"""Lower a :class:`ModelSpec` (+ weights) to IR programs: inference and the on-device SP update step.

Update step, for a fixed batch B (inputs ``x`` (B,…), ``y`` int32 (B,), ``lr`` float32 ()):

* one-hot O = onehot(y) (B×C). The target stream is computed for all C classes (C rows, static shape) —
  a sample's target is its class's row, so this equals the B-row target stream (and is ≤ B rows
  whenever B ≥ C). Sample/target logits: Y_c = h·t_clsᵀ/(τd) (B×C), Y = Y_c·Oᵀ (B×B), positives
  P = O·Oᵀ.
* signal: z = act(LayerNorm(W_Sᵀ + b_S)) (= the generator applied to every class's one-hot).
  Hidden placement (default): t_1 = z, h_1 = f_0(x), L_1 = sp_loss(h_1, t_1) updates block 0 and W_S, b_S
  (both layer 1). Input placement: t_0 = z; if learned, L_0 = sp_loss(x, t_0) updates W_S, b_S (layer 0).
* block i: h_i = f_i(h_{i−1}), t_i = f_i(t_{i−1}); L_i = sp_loss(h_i, t_i); gradients by
  :func:`compilers.autodiff.grad` restricted to block i's parameters (block inputs are constants).
* head: L = CE(W_o h_N + b_o, y).
* each layer's optimizer (SGD+momentum or Adam with a per-layer step counter), its own state; written
  without weight-sized temporaries where a backend's GEMM can accumulate (:func:`emit_optimizer`).

Supported sigprop losses: v9, v1, l2 (v14/v15 draw random/top-k positives and stay in the trainer).
The on-device step always learns with SP, whatever rule trained the checkpoint (bp, fa, dfa, local or sigprop):
a BP-trained model keeps learning on device with the spec's SP settings.
Dropout is the identity in compiled programs.
"""

from __future__ import annotations

import math

import numpy as np

from compilers.autodiff import grad
from compilers.ir import I32, Program
from edgesp.errors import CompileError
from edgesp.spec import (
    LIF,
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ModelSpec,
    ReLU,
    Tanh,
)

COMPILED_LOSSES = ("v9", "v1", "l2")


def _check_supported(spec: ModelSpec) -> None:
    if spec.is_recurrent:
        raise CompileError(
            f"recurrent spiking blocks {list(spec.recurrent_blocks)} have no ONNX/TFLite lowering: compile for a "
            "Lava target (--target lava-cpu or loihi2), or train without --recurrent"
        )
    if spec.is_spiking:
        raise CompileError("spiking models compile to Lava only: use --target lava-cpu or loihi2")
    if not spec.rule.variant.is_plain:  # SPVariant: host trainer only (edgesp/rules/sigprop.py)
        v = spec.rule.variant.describe()
        raise CompileError(f"SP variant {v} has no on-device lowering yet: compile a plain-SP spec (drop rule.variant)")
    if spec.rule.loss not in COMPILED_LOSSES:
        raise CompileError(
            f"sigprop loss {spec.rule.loss!r} is not available on device; use one of "
            f"{', '.join(COMPILED_LOSSES)} (v14/v15 draw random/top-k positives)"
        )


# ------------------------------------------------------------------------------------------ layers
def _linear(p: Program, x: str, w: str, b: str | None) -> str:
    y = p.matmul(x, p.transpose(w))
    return p.add(y, b) if b else y


def _im2col_1d(p: Program, x: str, layer: Conv1d) -> tuple[str, int]:
    bsz, c, length = p.shape(x)
    if layer.padding:
        x = p.op("pad", x, pads=((0, 0), (0, 0), (layer.padding, layer.padding)))
        length += 2 * layer.padding
    k, s = layer.kernel_size, layer.stride
    lout = (length - k) // s + 1
    idx = (np.arange(lout)[:, None] * s + np.arange(k)[None, :]).astype(np.int32)
    cols = p.op("gather", x, p.const(idx, "im2col", I32), axis=2)  # B, C, Lout, K
    cols = p.transpose(cols, (0, 2, 1, 3))  # B, Lout, C, K
    return p.reshape(cols, (bsz * lout, c * k)), lout


def _conv1d(p: Program, x: str, layer: Conv1d, w: str, b: str | None) -> str:
    bsz = p.shape(x)[0]
    cols, lout = _im2col_1d(p, x, layer)
    wf = p.reshape(w, (layer.out_channels, layer.in_channels * layer.kernel_size))
    y = _linear(p, cols, wf, b)  # B·Lout, O
    y = p.reshape(y, (bsz, lout, layer.out_channels))
    return p.transpose(y, (0, 2, 1))


def _conv2d(p: Program, x: str, layer: Conv2d, w: str, b: str | None) -> str:
    bsz, c, hh, ww = p.shape(x)
    k, s, pad = layer.kernel_size, layer.stride, layer.padding
    if pad:
        x = p.op("pad", x, pads=((0, 0), (0, 0), (pad, pad), (pad, pad)))
        hh, ww = hh + 2 * pad, ww + 2 * pad
    ho, wo = (hh - k) // s + 1, (ww - k) // s + 1
    ih = (np.arange(ho)[:, None] * s + np.arange(k)[None, :]).astype(np.int32)
    iw = (np.arange(wo)[:, None] * s + np.arange(k)[None, :]).astype(np.int32)
    r = p.op("gather", x, p.const(ih, "im2col_h", I32), axis=2)  # B, C, Ho, K, W
    r = p.op("gather", r, p.const(iw, "im2col_w", I32), axis=4)  # B, C, Ho, K, Wo, K
    r = p.transpose(r, (0, 2, 4, 1, 3, 5))  # B, Ho, Wo, C, K, K
    cols = p.reshape(r, (bsz * ho * wo, c * k * k))
    wf = p.reshape(w, (layer.out_channels, c * k * k))
    y = p.reshape(_linear(p, cols, wf, b), (bsz, ho, wo, layer.out_channels))
    return p.transpose(y, (0, 3, 1, 2))


def _pool(p: Program, x: str, k: int, dims: int, kind: str) -> str:
    """Non-overlapping pooling as a reduction over the last axis of (N, window) rows; window elements in
    row-major order, so reduce_max's gradient goes to the first maximum like torch's."""
    s = p.shape(x)
    if dims == 1:
        r = p.reshape(x, (s[0] * s[1] * (s[2] // k), k))
        out = (s[0], s[1], s[2] // k)
    else:
        r = p.reshape(x, (s[0], s[1], s[2] // k, k, s[3] // k, k))
        r = p.transpose(r, (0, 1, 2, 4, 3, 5))
        r = p.reshape(r, (s[0] * s[1] * (s[2] // k) * (s[3] // k), k * k))
        out = (s[0], s[1], s[2] // k, s[3] // k)
    return p.reshape(p.reduce(kind, r, (1,), keepdims=True), out)


def layer_norm(p: Program, x: str, eps: float) -> str:
    """Per-row normalisation over all non-batch dims (biased variance)."""
    s = p.shape(x)
    f = p.reshape(x, (s[0], math.prod(s[1:])))
    mean = p.reduce("reduce_mean", f, (1,))
    c = p.sub(f, mean)
    var = p.reduce("reduce_mean", p.mul(c, c), (1,))
    y = p.div(c, p.op("sqrt", p.add(var, p.const(np.float32(eps)))))
    return p.reshape(y, s)


def emit_layer(p: Program, layer: Layer, x: str, w: str | None, b: str | None) -> str:
    if isinstance(layer, Linear):
        return _linear(p, x, w, b)
    if isinstance(layer, Conv1d):
        return _conv1d(p, x, layer, w, b)
    if isinstance(layer, Conv2d):
        return _conv2d(p, x, layer, w, b)
    if isinstance(layer, Flatten):
        s = p.shape(x)
        return p.reshape(x, (s[0], math.prod(s[1:])))
    if isinstance(layer, MaxPool1d):
        return _pool(p, x, layer.kernel_size, 1, "reduce_max")
    if isinstance(layer, AvgPool1d):
        return _pool(p, x, layer.kernel_size, 1, "reduce_mean")
    if isinstance(layer, MaxPool2d):
        return _pool(p, x, layer.kernel_size, 2, "reduce_max")
    if isinstance(layer, AvgPool2d):
        return _pool(p, x, layer.kernel_size, 2, "reduce_mean")
    if isinstance(layer, ReLU):
        return p.op("relu", x)
    if isinstance(layer, LeakyReLU):
        return p.op("leaky_relu", x, alpha=float(layer.negative_slope))
    if isinstance(layer, Tanh):
        return p.op("tanh", x)
    if isinstance(layer, LayerNorm):
        return layer_norm(p, x, layer.eps)
    if isinstance(layer, Dropout):
        return x
    if isinstance(layer, LIF):
        raise CompileError("LIF layers compile to Lava only")
    raise CompileError(f"no lowering for {type(layer).__name__}")


def emit_block(p: Program, spec: ModelSpec, i: int, x: str) -> str:
    w, b = f"blocks.{i}.weight", _bias(p, i)
    for j, layer in enumerate(spec.blocks[i]):
        x = emit_layer(p, layer, x, w if j == 0 else None, b if j == 0 else None)
    return x


def emit_head(p: Program, h: str) -> str:
    s = p.shape(h)
    hf = p.reshape(h, (s[0], math.prod(s[1:])))
    return _linear(p, hf, "head.weight", "head.bias" if "head.bias" in p.values else None)


# ------------------------------------------------------------------------------------------ losses
def _flat(p: Program, a: str) -> str:
    s = p.shape(a)
    return p.reshape(a, (s[0], math.prod(s[1:])))


def emit_sp_loss(p: Program, spec: ModelSpec, h: str, t: str, onehot: str) -> str:
    """Local loss between the sample stream h (B,…) and the target stream t: per-class targets (C,…), or,
    when t has B rows and C ≠ B, one target row per sample (row b = the target of y_b; v9 and l2 only)."""
    r = spec.rule
    hf, tf = _flat(p, h), _flat(p, t)
    bsz, d = p.shape(hf)
    c = spec.num_classes
    per_sample = p.shape(tf)[0] != c
    if r.loss == "l2":
        diff = p.sub(hf, tf if per_sample else p.matmul(onehot, tf))
        return p.scale(p.reduce("reduce_sum", p.mul(diff, diff), (0, 1), keepdims=False), 1.0 / (bsz * d))
    if per_sample and r.loss == "v1":
        raise CompileError("loss v1 needs every class's target (internal: per-sample target rows given)")
    yc = p.scale(p.matmul(hf, p.transpose(tf)), 1.0 / (r.temperature * d))  # B×C (or B×B per sample)
    if r.loss == "v1":
        ls = p.op("log_softmax", yc)
        return p.scale(p.reduce("reduce_sum", p.mul(onehot, ls), (0, 1), keepdims=False), -1.0 / bsz)
    y = yc if per_sample else p.matmul(yc, p.transpose(onehot))  # B×B
    pos = p.matmul(onehot, p.transpose(onehot))
    ls = p.op("log_softmax", y)
    return p.scale(p.reduce("reduce_sum", p.mul(pos, ls), (0, 1), keepdims=False), -1.0 / bsz)


def emit_ce(p: Program, logits: str, onehot: str) -> str:
    bsz = p.shape(logits)[0]
    ls = p.op("log_softmax", logits)
    return p.scale(p.reduce("reduce_sum", p.mul(onehot, ls), (0, 1), keepdims=False), -1.0 / bsz)


def emit_signal(p: Program, spec: ModelSpec, rows: str | None = None) -> str:
    """z = act(LayerNorm(W_S·o + b_S)) shaped (R, *spec.signal_shape()): for every class (o = e_c, R = C) or,
    given ``rows`` (R×C one-hot rows), for those rows only. ``shape='channel'`` broadcasts one value per
    channel over block 0's positions."""
    if rows is None:
        t = p.add(p.transpose("signal.weight"), "signal.bias")
    else:
        t = p.add(p.matmul(rows, p.transpose("signal.weight")), "signal.bias")
    n = p.shape(t)[0]
    t = layer_norm(p, t, 1e-5)
    if spec.signal.activation == "relu":
        t = p.op("relu", t)
    shape = spec.signal_shape()
    if spec.signal.shape == "channel":
        t = p.reshape(t, (n, shape[0], *([1] * (len(shape) - 1))))
        t = p.broadcast_to(t, (n, *shape))
    return p.reshape(t, (n, *shape))


# ------------------------------------------------------------------------------------------ optimizers
def optimizer_states(spec: ModelSpec, params: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, int]]:
    """(name, initial value, layer) of every optimizer state, in forward order."""
    o = spec.rule.optimizer
    out: list[tuple[str, np.ndarray, int]] = []
    layers_done: set[int] = set()
    for name, arr in params.items():
        layer = spec.param_layer_index(name)
        if name.startswith("signal.") and spec.signal.kind == "fixed":
            continue
        if o.name == "adam":
            if layer not in layers_done:
                out.append((f"opt.{layer}.step", np.zeros((), np.float32), layer))
                layers_done.add(layer)
            out.append((f"opt.{name}.m", np.zeros_like(arr), layer))
            out.append((f"opt.{name}.v", np.zeros_like(arr), layer))
        elif o.momentum:
            out.append((f"opt.{name}.m", np.zeros_like(arr), layer))
    return out


def _sum_terms(p: Program, g: str) -> list[str]:
    """The terms of a sum-of-adds tree producing ``g`` (all of g's shape), else [g]."""
    op = p.producer(g)
    if op is None or op.kind != "add" or any(p.shape(i) != p.shape(g) for i in op.inputs):
        return [g]
    return [t for i in op.inputs for t in _sum_terms(p, i)]


# largest pair count R(R+1)/2 for which v's g² is formed as one GEMM over row products (Khatri–Rao) instead of
# materialising the weight gradient: R ≤ 4 rows (a batch-1 SP step with its one cached target row has R = 2)
MAX_SQUARE_PAIRS = 10


def _matmul_rows(p: Program, term: str) -> tuple[str, str] | None:
    """If ``term`` = A·B is a weight gradient over R rows (A: out×R, B: R×in), return (a, b) with a = Aᵀ (R×out)."""
    op = p.producer(term)
    if op is None or op.kind != "matmul":
        return None
    a_t, b = op.inputs
    src = p.producer(a_t)
    a = src.inputs[0] if src is not None and src.kind == "transpose" and src.attr("perm") == (1, 0) else None
    return (a or p.transpose(a_t)), b


def _merge_matmul_terms(p: Program, g: str) -> str:
    """g with its weight-gradient terms Σ_k A_kᵀ·B_k (one per use of the weight, e.g. the stacked streams and a
    cached step's class rows) merged into one GEMM over the stacked rows [A_1; A_2; …]ᵀ·[B_1; B_2; …]: a chain of
    accumulating GEMMs would hold a weight-sized temporary between them (ONNX Gemm's C is not updated in place)."""
    terms = _sum_terms(p, g)
    rows = [(t, _matmul_rows(p, t)) for t in terms]
    mm = [r for _, r in rows if r is not None]
    if len(mm) < 2:
        return g
    a, b = p.op("concat_rows", *(a for a, _ in mm)), p.op("concat_rows", *(b for _, b in mm))
    out = p.matmul(p.transpose(a), b)
    for t, r in rows:
        if r is None:
            out = p.add(out, t)
    return out


def _scaled_terms(p: Program, g: str, s: str) -> list[str]:
    """The terms of s·g (s a scalar value), each matmul term rebuilt with s applied to its R-row operand, so no
    weight-sized product is formed and each term can still accumulate into a Gemm."""
    out = []
    for term in _sum_terms(p, g):
        rows = _matmul_rows(p, term)
        if rows is None:
            out.append(p.mul(term, s))
        else:
            a, b = rows
            out.append(p.matmul(p.transpose(a), p.mul(b, s)))
    return out


def _square_pairs(p: Program, g: str) -> list[tuple[int, int]] | None:
    """The row pairs (r ≤ s) of a single-term weight gradient over R rows if R(R+1)/2 ≤ MAX_SQUARE_PAIRS, else None."""
    terms = _sum_terms(p, g)
    op = p.producer(terms[0]) if len(terms) == 1 else None
    if op is None or op.kind != "matmul":
        return None
    r = p.shape(op.inputs[0])[1]
    pairs = [(i, j) for i in range(r) for j in range(i, r)]
    return pairs if len(pairs) <= MAX_SQUARE_PAIRS else None


def _row_products_squared(p: Program, g: str, pairs: list[tuple[int, int]]) -> str:
    """g ⊙ g for a single-term gradient g = Σ_r a_rᵀ b_r over R rows (``pairs`` from :func:`_square_pairs`):
    Σ_{r≤s} c_rs (a_r⊙a_s)ᵀ (b_r⊙b_s), c = 1 (r = s) or 2 — one GEMM over the row products, so neither g nor g² is
    materialised. Rounding can leave an entry a few ulp below zero where g ≈ 0."""
    a, b = _matmul_rows(p, _sum_terms(p, g)[0])
    ii = p.const(np.array([i for i, _ in pairs], np.int32), "pair_i", I32)
    jj = p.const(np.array([j for _, j in pairs], np.int32), "pair_j", I32)
    coef = p.const(np.array([[1.0 if i == j else 2.0] for i, j in pairs], np.float32), "pair_c")
    pa = p.mul(p.op("gather", a, ii, axis=0), p.op("gather", a, jj, axis=0))
    pb = p.mul(p.mul(p.op("gather", b, ii, axis=0), p.op("gather", b, jj, axis=0)), coef)
    return p.matmul(p.transpose(pa), pb)


def _copy_squared(p: Program, g: str, scale: float) -> str:
    """(s·g) ⊙ (s·g) from a fresh copy of s·g, s = ``scale``, so g's own terms stay single-use (each accumulates
    into m's GEMM)."""
    parts = _scaled_terms(p, g, p.const(np.float32(scale)))
    gs = parts[0]
    for t in parts[1:]:
        gs = p.add(gs, t)
    return p.mul(gs, gs)


# Adam's elementwise chain (√ṽ, +ε̂, m̃/·, ·α, W − ·) runs a block of rows at a time: ONNX Runtime runs no arithmetic
# op in place (measured, ORT 1.32: only Relu), so a whole-weight chain holds two weight-sized temporaries; by blocks
# it holds the finished blocks (one weight in all, joined by one Concat into the new value) plus two blocks. Blocks
# cost nodes (≈ 9 each, with ORT's per-node overhead: 23 → 38 M instructions per step at depth 8, batch 1 with 16
# blocks on every parameter ≥ 16,384 elements), so each parameter gets blocks of about 1/ADAM_CHUNKS of the model's
# largest parameter: 16 for the largest, fewer for smaller ones, none below 2 blocks or ADAM_CHUNK_MIN elements.
ADAM_CHUNK_MIN = 16384
ADAM_CHUNKS = 16


def _row_chunks(shape: tuple[int, ...], largest: int) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) splitting a parameter of ``shape`` into k = min(rows, ⌈ADAM_CHUNKS·size/largest⌉)
    blocks (``largest``: the model's largest parameter, in elements), or [] if k < 2 or the parameter has fewer
    than ADAM_CHUNK_MIN elements."""
    n = math.prod(shape)
    k = min(shape[0], math.ceil(ADAM_CHUNKS * n / largest))
    if n < ADAM_CHUNK_MIN or k < 2:
        return []
    edges = [round(i * shape[0] / k) for i in range(k + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _squared_rows(p: Program, at_b: tuple[str, str], v: str, r0: int, r1: int, b2: float) -> str:
    """Rows r0:r1 of β2·(ṽ + (g/√β2)²) for g = aᵀ·b (``at_b`` = (aᵀ, b), a: R×out): g's block of rows is
    aᵀ[r0:r1]·b, a GEMM over R rows into a block-sized buffer."""
    at, b = at_b
    g = p.matmul(p.op("slice_rows", at, start=r0, stop=r1), b)
    gs = p.scale(g, 1.0 / math.sqrt(b2))
    return p.scale(p.add(p.mul(gs, gs), p.op("slice_rows", v, start=r0, stop=r1)), b2)


def emit_optimizer(p: Program, spec: ModelSpec, layer: int, grads: dict[str, str], lr: str) -> None:
    """Each parameter's update, written so no backend has to hold several weight-sized temporaries and every
    accumulation of a weight gradient is a GEMM with an accumulator (ONNX ``Gemm`` with C):

    * SGD with momentum μ (Sutskever form, lr inside the buffer): v ← μ·v − lr·g;  W ← W + v. The state
      ``opt.<p>.m`` holds v = −lr·m of the textbook form m ← μ·m + g, W ← W − lr·m: identical updates while lr is
      constant. −lr scales the gradient's R-row operand, so v's update is one GEMM and W's one add. Without
      momentum: W ← W − lr·g, one GEMM with C = W.
    * Adam (β1, β2, ε, bias correction, as torch): the states hold scaled moments m̃ = m/(1−β1), ṽ = v/(1−β2):
      m̃ ← β1·m̃ + g (GEMM), ṽ ← β2·ṽ + g² (one GEMM over row products at small R, see :func:`_row_products_squared`),
      W ← W − α·m̃/(√ṽ + ε̂) with k = √(c2/(1−β2)), α = lr·(1−β1)·k/c1, ε̂ = ε·k, c_i = 1 − β_i^t — algebraically
      torch's m̂/(√v̂ + ε); only scalars carry the corrections.
    Weight decay λ adds λ·W to g (a weight-sized term)."""
    o = spec.rule.optimizer
    if o.name == "adam":
        b1, b2 = o.betas
        step = p.add(f"opt.{layer}.step", p.const(np.float32(1.0)))
        p.update_state(f"opt.{layer}.step", step)
        one = p.const(np.float32(1.0))
        c1 = p.sub(one, p.op("exp", p.scale(step, math.log(b1))))
        c2 = p.sub(one, p.op("exp", p.scale(step, math.log(b2))))
        k = p.op("sqrt", p.scale(c2, 1.0 / (1.0 - b2)))
        alpha = p.div(p.mul(lr, p.scale(k, 1.0 - b1)), c1)
        eps_hat = p.scale(k, o.eps)
    else:
        neg_lr = p.scale(lr, -1.0)  # once per layer: scales each gradient's R-row operand
    largest = max(math.prod(v) for v in spec.param_shapes().values())  # sizes Adam's row blocks (_row_chunks)
    for name, g in grads.items():
        g = _merge_matmul_terms(p, g)
        if o.weight_decay:
            g = p.add(g, p.scale(name, o.weight_decay))
        if o.name == "adam":
            m = p.scale(f"opt.{name}.m", b1)
            for term in _sum_terms(p, g):
                m = p.add(m, term)
            p.update_state(f"opt.{name}.m", m)
            chunks = _row_chunks(p.shape(name), largest)
            pairs = _square_pairs(p, g)
            single = len(_sum_terms(p, g)) == 1
            if pairs is not None:  # β2·ṽ + g²: one GEMM accumulating into C = ṽ (beta = β2); may dip below 0
                v = p.add(p.scale(f"opt.{name}.v", b2), _row_products_squared(p, g, pairs))
                clip = True
            elif chunks and single and (rows := _matmul_rows(p, g)) is not None:  # by blocks of rows (_row_chunks)
                at_b = (p.transpose(rows[0]), rows[1])
                v = p.op("concat_rows", *(_squared_rows(p, at_b, f"opt.{name}.v", r0, r1, b2) for r0, r1 in chunks))
                clip = False
            else:  # β2·(ṽ + (g/√β2)²): no node reads only ṽ, which a runtime could run (and keep) early
                v = p.scale(p.add(_copy_squared(p, g, 1.0 / math.sqrt(b2)), f"opt.{name}.v"), b2)
                clip = False
            p.update_state(f"opt.{name}.v", v)

            def adam_step(w: str, m: str, v: str, clip: bool = clip) -> str:
                root = p.op("sqrt", p.op("relu", v) if clip else v)
                return p.sub(w, p.mul(p.div(m, p.add(root, eps_hat)), alpha))

            if chunks:
                pieces = []
                for r0, r1 in chunks:
                    # a block's rows by gather (a 1-D index list), not slice_rows: ONNX Runtime fuses the sibling
                    # Slices of one tensor into one Split, which materialises every block at once (measured on
                    # this step: 2.55 MB transient instead of 0.39 MB at depth 2, batch 1)
                    idx = p.const(np.arange(r0, r1, dtype=np.int32), "rows", I32)
                    w_k, m_k, v_k = (p.op("gather", t, idx, axis=0) for t in (name, m, v))
                    pieces.append(adam_step(w_k, m_k, v_k))
                p.update_state(name, p.op("concat_rows", *pieces))
            else:
                p.update_state(name, adam_step(name, m, v))
            continue
        # SGD: acc = μ·v − lr·g (momentum) or W − lr·g, one GEMM accumulation per gradient term
        acc = p.scale(f"opt.{name}.m", o.momentum) if o.momentum else name
        for term in _scaled_terms(p, g, neg_lr):
            acc = p.add(acc, term)
        if o.momentum:
            p.update_state(f"opt.{name}.m", acc)
            acc = p.add(name, acc)
        p.update_state(name, acc)


# ------------------------------------------------------------------------------------------ programs
def _declare_params(p: Program, spec: ModelSpec, params: dict[str, np.ndarray], include_signal: bool) -> None:
    for name in spec.param_shapes():
        if name.startswith("signal.") and not include_signal:
            continue
        p.state(name, params[name], spec.param_layer_index(name))


def lower_inference(spec: ModelSpec, params: dict[str, np.ndarray], batch: int) -> Program:
    """x (B,…) → ``logits`` (B, C) with the current parameters (states, read-only)."""
    _check_supported(spec)
    p = Program("inference")
    x = p.input("x", (batch, *spec.input_shape))
    _declare_params(p, spec, params, include_signal=False)
    h = x
    for i in range(len(spec.blocks)):
        h = emit_block(p, spec, i, h)
    p.output("logits", emit_head(p, h))
    return p


BATCH_LOSSES = ("v9", "v14", "v15")


def _step_program(
    name: str, spec: ModelSpec, params: dict[str, np.ndarray], batch: int, signal_learns: bool
) -> tuple[Program, str, str, str]:
    """An update step's inputs (``x`` (B,…), ``y`` int32 (B,), ``lr``), every parameter and optimizer state as
    states (the signal's optimizer state only if ``signal_learns``), and onehot(y): (program, x, lr, onehot)."""
    p = Program(name)
    x = p.input("x", (batch, *spec.input_shape))
    y = p.input("y", (batch,), I32)
    lr = p.input("lr", ())
    _declare_params(p, spec, params, include_signal=True)
    for state, init, layer in optimizer_states(spec, params):
        if signal_learns or not state.startswith("opt.signal."):
            p.state(state, init, layer)
    return p, x, lr, p.op("onehot", y, depth=spec.num_classes)


TARGET_STREAMS = ("auto", "exact", "cached")


def target_stream(spec: ModelSpec, batch: int) -> str:
    """How the update step computes the target stream (``spec.rule.params['target_stream']``, default auto):

    * ``exact``: every class's targets (C rows per block) for loss v1, or one row per sample for v9/l2 when
      B < C (those losses only compare a sample with its own class's target, so this is exact and cheaper).
    * ``cached`` (batch 1, loss v1): only the sample's class row goes through the blocks' GEMMs (1 row, not C).
      Block i (layer k = i+1) keeps a device table ``tcache.k`` (C × its first layer's output: the
      pre-activation a_c = W_i·u_c + b_i of every class target u_c = t_{k−1,c}), whose row y is refreshed every
      step. The other classes' targets are the block's remaining layers applied to their cached a_c (no GEMM),
      and the gradient still flows through them: d(W_i) gets the terms δa_cᵀ u_c of every class, with u_c the
      previous layer's (cached) targets and δa_c the loss gradient back through the remaining layers at the cached
      point (the ``straight_through`` op: the GEMM W_i·u_c is never run forward, only its weight gradient is). The
      signal's targets (layer 1, or layer 0 at input placement) are computed exactly for every class (C rows, no
      GEMM). From a fresh table the step equals the exact step; rows go stale until their class is seen again.
      Cost per block: forward GEMM on B+1 rows, weight gradient on B+1+C rows (exact: B+C and B+C).
    * ``auto`` (the default): exact."""
    mode = spec.rule.params.get("target_stream", "auto")
    if mode not in TARGET_STREAMS:
        raise CompileError(f"target_stream {mode!r} is unknown; use one of {', '.join(TARGET_STREAMS)}")
    cacheable = batch == 1 and spec.rule.loss == "v1"
    if mode == "cached" and not cacheable:
        raise CompileError("target_stream 'cached' is for batch-1 steps with loss v1: use 'exact' or 'auto'")
    return "exact" if mode == "auto" else mode


def state_kind(name: str) -> str:
    """Manifest kind of an update-program state: optimizer_state (``opt.*``), target_cache (``tcache.*``) or
    parameter."""
    if name.startswith("opt."):
        return "optimizer_state"
    if name.startswith("tcache."):
        return "target_cache"
    return "parameter"


def _cached_blocks(spec: ModelSpec) -> range:
    """Blocks whose targets a cached step reads from ``tcache.{i+1}``: every block that runs the target stream
    (block 0 at hidden signal placement computes no target: its layer's target is the signal itself)."""
    return range(1 if spec.signal.hidden else 0, len(spec.blocks))


def class_preactivations(spec: ModelSpec, params: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """The initial ``tcache.k`` of a cached step: for each block i that runs the target stream (layer k = i+1),
    every class's pre-activation a_{k,c} = first layer of block i applied to t_{k−1,c}, shape (C, *a's shape),
    computed exactly with the reference interpreter."""
    from compilers import interp

    p = Program("class_preactivations")
    _declare_params(p, spec, params, include_signal=True)
    t = emit_signal(p, spec)
    for i in range(len(spec.blocks)):
        if i in _cached_blocks(spec):
            first = emit_layer(p, spec.blocks[i][0], t, f"blocks.{i}.weight", _bias(p, i))
            p.output(f"a{i + 1}", first)
        t = emit_block(p, spec, i, t) if i or not spec.signal.hidden else t
    res, _ = interp.run(p, {}, params)
    return {int(k[1:]): v for k, v in res.items()}


def _bias(p: Program, i: int) -> str | None:
    return f"blocks.{i}.bias" if f"blocks.{i}.bias" in p.values else None


def _row_selectors(p: Program, onehot: str) -> tuple[str, str]:
    """(oᵀ, 1 − oᵀ), both C×1, for the one-hot o (1×C) of a batch-1 step's label: computed once per step and
    shared by every :func:`_replace_row`."""
    ot = p.transpose(onehot)
    return ot, p.sub(p.const(np.float32(1.0)), ot)


def _replace_row(p: Program, table: str, row: str, selectors: tuple[str, str]) -> str:
    """table ⊙ (1 − oᵀ) + oᵀ·row for a (C, …) table and a (1, …) row: row y replaced (``selectors`` from
    :func:`_row_selectors`)."""
    ot, keep = selectors
    out = p.add(p.mul(_flat(p, table), keep), p.matmul(ot, _flat(p, row)))
    return p.reshape(out, p.shape(table))


def _cached_block(
    p: Program, spec: ModelSpec, i: int, stack: str, prev: str, selectors: tuple[str, str], batch: int
) -> tuple[str, str]:
    """Block i of a cached step (see :func:`target_stream`): ``stack`` = the B sample rows + the 1 target row
    of class y, ``prev`` = the previous layer's targets of every class (C rows), ``selectors`` from
    :func:`_row_selectors`. Returns (the block's output stack, its targets of every class: C rows, row y fresh
    and the others from ``tcache.{i+1}``)."""
    k, layers = i + 1, spec.blocks[i]
    if not isinstance(layers[0], (Linear, Conv1d, Conv2d)):
        raise CompileError(f"target_stream 'cached' needs blocks that start with a weight layer (block {i})")
    w, b = f"blocks.{i}.weight", _bias(p, i)
    a = emit_layer(p, layers[0], stack, w, b)
    # the cached rows wait for the block's input like the stack does (after): otherwise ONNX Runtime computes every
    # layer's cached-row tail up front and keeps it alive (transient 280 KB instead of 120 KB at depth 8)
    stale = p.op("after", f"tcache.{k}", stack)
    a_other = p.op("straight_through", stale, emit_layer(p, layers[0], prev, w, b))
    p.update_state(
        f"tcache.{k}", _replace_row(p, f"tcache.{k}", p.op("slice_rows", a, start=batch, stop=batch + 1), selectors)
    )
    for layer in layers[1:]:
        a = emit_layer(p, layer, a, None, None)
        a_other = emit_layer(p, layer, a_other, None, None)
    return a, _replace_row(p, a_other, p.op("slice_rows", a, start=batch, stop=batch + 1), selectors)


def lower_update(spec: ModelSpec, params: dict[str, np.ndarray], batch: int) -> Program:
    """The whole SP update step (see module docstring). Outputs ``loss_k`` per layer k.

    The sample rows h (B) and the target rows t (R) go through each block i ≥ 1 stacked as one (B+R)-row tensor,
    so a block runs one GEMM for both streams and its weight gradient is one GEMM over B+R rows; R = C (exact,
    loss v1 or B ≥ C), B (exact, v9/l2 with B < C: the samples' own classes) or 1 (cached, see
    :func:`target_stream`)."""
    _check_supported(spec)
    if batch == 1 and spec.rule.loss in BATCH_LOSSES:
        raise CompileError(
            f"sigprop loss {spec.rule.loss} compares the samples of a batch and is constant at batch 1 (no hidden "
            "layer would learn): compile with --loss v1 (direct label) for batch-1 on-device learning, or a batch >= 2"
        )
    mode = target_stream(spec, batch)
    p, x, lr, onehot = _step_program("sp_update", spec, params, batch, signal_learns=True)
    shapes = spec.param_shapes()
    cached = mode == "cached"
    if cached:
        for k, table in class_preactivations(spec, params).items():
            p.state(f"tcache.{k}", table, k)
        selectors = _row_selectors(p, onehot)
        prev = emit_signal(p, spec)  # every class's signal: C rows, no GEMM (exact)
        t = p.reshape(p.matmul(onehot, _flat(p, prev)), (1, *p.shape(prev)[1:]))  # row y
    else:
        per_sample = spec.rule.loss != "v1" and batch < spec.num_classes
        t = prev = emit_signal(p, spec, rows=onehot if per_sample else None)

    signal_names = [n for n in shapes if n.startswith("signal.")] if spec.signal.kind == "learned" else []
    first = 0
    if spec.signal.hidden:  # t_1 = z; one loss updates block 0 and the signal (layer 1)
        h = emit_block(p, spec, 0, x)
        l1 = emit_sp_loss(p, spec, h, prev, onehot)
        p.output("loss_1", l1)
        names = [n for n in shapes if n.startswith("blocks.0.")] + signal_names
        emit_optimizer(p, spec, 1, grad(p, l1, names), lr)
        first = 1
    else:
        if signal_names:
            l0 = emit_sp_loss(p, spec, x, prev, onehot)
            p.output("loss_0", l0)
            emit_optimizer(p, spec, 0, grad(p, l0, signal_names), lr)
        h = x
    rows = p.shape(t)[0]
    stack = p.op("concat_rows", h, t)
    for i in range(first, len(spec.blocks)):
        # block i starts once layer i (block i−1, and the signal if hidden) has all its new parameters: then only
        # one layer's intermediates are live at a time, whatever order a runtime picks among independent nodes
        for name in (n for n in shapes if spec.param_layer_index(n) == i and n in p.state_updates):
            stack = p.op("after", stack, p.state_updates[name])
        if cached:
            stack, prev = _cached_block(p, spec, i, stack, prev, selectors, batch)
        else:
            stack = emit_block(p, spec, i, stack)
        h = p.op("slice_rows", stack, start=0, stop=batch)
        t = p.op("slice_rows", stack, start=batch, stop=batch + rows)
        li = emit_sp_loss(p, spec, h, prev if cached else t, onehot)
        p.output(f"loss_{i + 1}", li)
        names = [n for n in shapes if n.startswith(f"blocks.{i}.")]
        emit_optimizer(p, spec, i + 1, grad(p, li, names), lr)
    head_layer = len(spec.blocks) + 1
    lo = emit_ce(p, emit_head(p, h), onehot)
    p.output(f"loss_{head_layer}", lo)
    emit_optimizer(p, spec, head_layer, grad(p, lo, [n for n in shapes if n.startswith("head.")]), lr)
    return p


def lower_bp_update(spec: ModelSpec, params: dict[str, np.ndarray], batch: int) -> Program:
    """A backpropagation update step from the same compiler, as the baseline SP is measured against in the same
    runtime and profiler: logits = head(f_N(…f_1(x))), L = CE(logits, y), every block's and the head's gradient
    by reverse-mode autodiff through the *whole* network (:func:`compilers.autodiff.grad` over all parameters:
    the gradient crosses block boundaries, so activations of every block stay live until the backward pass
    reaches them), then each layer's optimizer. Output ``loss_bp``. Not forward-only by construction (the
    compilers do not run that check on it). The signal's parameters are carried as unused states so the build
    holds the spec's every parameter. Conv models are refused: ``gather``/``pad`` (im2col) have no VJP w.r.t.
    their data input, which BP needs and SP never does."""
    _check_supported(spec)
    if any(not isinstance(b[0], Linear) for b in spec.blocks):
        raise CompileError(
            "the BP baseline step lowers MLPs only (conv im2col has no input gradient here): use --model mlp"
        )
    p, x, lr, onehot = _step_program("bp_update", spec, params, batch, signal_learns=False)
    h = x
    for i in range(len(spec.blocks)):
        h = emit_block(p, spec, i, h)
    loss = emit_ce(p, emit_head(p, h), onehot)
    p.output("loss_bp", loss)
    names = [n for n in spec.param_shapes() if not n.startswith("signal.")]
    grads = grad(p, loss, names)
    by_layer: dict[int, dict[str, str]] = {}
    for n in names:
        by_layer.setdefault(spec.param_layer_index(n), {})[n] = grads[n]
    for layer, g in sorted(by_layer.items()):
        emit_optimizer(p, spec, layer, g, lr)
    return p
