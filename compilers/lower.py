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
* each layer's optimizer (SGD+momentum or Adam with a per-layer step counter), its own state.

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
    w = f"blocks.{i}.weight"
    b = f"blocks.{i}.bias" if f"blocks.{i}.bias" in p.values else None
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


def emit_sp_loss(p: Program, spec: ModelSpec, h: str, t_cls: str, onehot: str) -> str:
    """Local loss between the sample stream h (B,…) and the per-class target stream t_cls (C,…)."""
    r = spec.rule
    hf, tf = _flat(p, h), _flat(p, t_cls)
    bsz, d = p.shape(hf)
    if r.loss == "l2":
        diff = p.sub(hf, p.matmul(onehot, tf))
        return p.scale(p.reduce("reduce_sum", p.mul(diff, diff), (0, 1), keepdims=False), 1.0 / (bsz * d))
    yc = p.scale(p.matmul(hf, p.transpose(tf)), 1.0 / (r.temperature * d))  # B×C
    if r.loss == "v1":
        ls = p.op("log_softmax", yc)
        return p.scale(p.reduce("reduce_sum", p.mul(onehot, ls), (0, 1), keepdims=False), -1.0 / bsz)
    y = p.matmul(yc, p.transpose(onehot))  # B×B
    pos = p.matmul(onehot, p.transpose(onehot))
    ls = p.op("log_softmax", y)
    return p.scale(p.reduce("reduce_sum", p.mul(pos, ls), (0, 1), keepdims=False), -1.0 / bsz)


def emit_ce(p: Program, logits: str, onehot: str) -> str:
    bsz = p.shape(logits)[0]
    ls = p.op("log_softmax", logits)
    return p.scale(p.reduce("reduce_sum", p.mul(onehot, ls), (0, 1), keepdims=False), -1.0 / bsz)


def emit_signal(p: Program, spec: ModelSpec) -> str:
    """z for every class: act(LayerNorm(W_Sᵀ + b_S)) shaped (C, *spec.signal_shape()); ``shape='channel'``
    broadcasts one value per channel over block 0's positions."""
    t = p.add(p.transpose("signal.weight"), "signal.bias")
    t = layer_norm(p, t, 1e-5)
    if spec.signal.activation == "relu":
        t = p.op("relu", t)
    shape = spec.signal_shape()
    if spec.signal.shape == "channel":
        t = p.reshape(t, (spec.num_classes, shape[0], *([1] * (len(shape) - 1))))
        t = p.broadcast_to(t, (spec.num_classes, *shape))
    return p.reshape(t, (spec.num_classes, *shape))


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


def emit_optimizer(p: Program, spec: ModelSpec, layer: int, grads: dict[str, str], lr: str) -> None:
    o = spec.rule.optimizer
    if o.name == "adam":
        step = p.add(f"opt.{layer}.step", p.const(np.float32(1.0)))
        p.update_state(f"opt.{layer}.step", step)
        c1 = p.sub(p.const(np.float32(1.0)), p.op("exp", p.scale(step, math.log(o.betas[0]))))
        c2 = p.sub(p.const(np.float32(1.0)), p.op("exp", p.scale(step, math.log(o.betas[1]))))
    for name, g in grads.items():
        if o.weight_decay:
            g = p.add(g, p.scale(name, o.weight_decay))
        if o.name == "adam":
            m = p.add(p.scale(f"opt.{name}.m", o.betas[0]), p.scale(g, 1.0 - o.betas[0]))
            v = p.add(p.scale(f"opt.{name}.v", o.betas[1]), p.scale(p.mul(g, g), 1.0 - o.betas[1]))
            p.update_state(f"opt.{name}.m", m)
            p.update_state(f"opt.{name}.v", v)
            denom = p.add(p.op("sqrt", p.div(v, c2)), p.const(np.float32(o.eps)))
            delta = p.div(p.div(m, c1), denom)
        elif o.momentum:
            # β·m + (g_h + g_t) associated as ((β·m + g_h) + g_t): backends can accumulate each term in place
            m = p.scale(f"opt.{name}.m", o.momentum)
            for term in _sum_terms(p, g):
                m = p.add(m, term)
            p.update_state(f"opt.{name}.m", m)
            delta = m
        else:
            delta = g
        p.update_state(name, p.sub(name, p.mul(delta, lr)))


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


def lower_update(spec: ModelSpec, params: dict[str, np.ndarray], batch: int) -> Program:
    """The whole SP update step (see module docstring). Outputs ``loss_k`` per layer k."""
    _check_supported(spec)
    if batch == 1 and spec.rule.loss in BATCH_LOSSES:
        raise CompileError(
            f"sigprop loss {spec.rule.loss} compares the samples of a batch and is constant at batch 1 (no hidden "
            "layer would learn): compile with --loss v1 (direct label) for batch-1 on-device learning, or a batch >= 2"
        )
    p, x, lr, onehot = _step_program("sp_update", spec, params, batch, signal_learns=True)
    shapes = spec.param_shapes()

    t = emit_signal(p, spec)
    signal_names = [n for n in shapes if n.startswith("signal.")] if spec.signal.kind == "learned" else []
    first = 0
    if spec.signal.hidden:  # t_1 = z; one loss updates block 0 and the signal (layer 1)
        h = emit_block(p, spec, 0, x)
        l1 = emit_sp_loss(p, spec, h, t, onehot)
        p.output("loss_1", l1)
        names = [n for n in shapes if n.startswith("blocks.0.")] + signal_names
        emit_optimizer(p, spec, 1, grad(p, l1, names), lr)
        first = 1
    else:
        if signal_names:
            l0 = emit_sp_loss(p, spec, x, t, onehot)
            p.output("loss_0", l0)
            emit_optimizer(p, spec, 0, grad(p, l0, signal_names), lr)
        h = x
    for i in range(first, len(spec.blocks)):
        h_new = emit_block(p, spec, i, h)
        t_new = emit_block(p, spec, i, t)
        li = emit_sp_loss(p, spec, h_new, t_new, onehot)
        p.output(f"loss_{i + 1}", li)
        names = [n for n in shapes if n.startswith(f"blocks.{i}.")]
        emit_optimizer(p, spec, i + 1, grad(p, li, names), lr)
        h, t = h_new, t_new
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
