"""Torch reference semantics of the spec (stateless functions over a parameter dict).

This is the oracle the compilers are tested against: ``block_forward`` applies one block, ``signal_forward``
the target generator, ``head_forward`` the output layer. Parameters are ``dict[str, Tensor]`` named as in
:meth:`ModelSpec.param_shapes`. Spiking (LIF) layers are stepped by :mod:`edgesp.spiking`; here a LIF
layer raises.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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

Params = dict[str, torch.Tensor]

# std of a recurrent weight is REC_INIT_GAIN / sqrt(H) (docs/benchmarks/temporal.md)
REC_INIT_GAIN = 0.5


def init_params(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Kaiming-uniform init like torch's default (U(±1/sqrt(fan_in)) for weights and biases);
    the signal generator gets N(0, init_std²) weights (a random projection of the one-hot label; small so
    that Adam's ~lr-sized steps move it: LayerNorm makes the target's scale independent of init_std); a
    recurrent weight ``blocks.{i}.rec_weight`` (H, H) gets N(0, (REC_INIT_GAIN/sqrt(H))²)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in spec.param_shapes().items():
        if name == "signal.weight":
            out[name] = (spec.signal.init_std * rng.standard_normal(shape)).astype(np.float32)
        elif name == "signal.bias":
            out[name] = np.zeros(shape, np.float32)
        elif name.endswith(".rec_weight"):  # recurrent LIF: N(0, (REC_INIT_GAIN/sqrt(H))²)
            out[name] = (REC_INIT_GAIN / math.sqrt(shape[0]) * rng.standard_normal(shape)).astype(np.float32)
        else:
            wshape = spec.param_shapes()[name.rsplit(".", 1)[0] + ".weight"]
            fan_in = math.prod(wshape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            out[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return out


def to_torch(params: dict[str, np.ndarray], requires_grad: bool = False) -> Params:
    return {k: torch.tensor(np.asarray(v, np.float32), requires_grad=requires_grad) for k, v in params.items()}


def layer_forward(
    layer: Layer,
    x: torch.Tensor,
    params: Params,
    prefix: str,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply one parameter-free or parametric (non-spiking) layer to a batch."""
    if isinstance(layer, Linear):
        return F.linear(x, params[prefix + "weight"], params.get(prefix + "bias"))
    if isinstance(layer, Conv1d):
        return F.conv1d(x, params[prefix + "weight"], params.get(prefix + "bias"), layer.stride, layer.padding)
    if isinstance(layer, Conv2d):
        return F.conv2d(x, params[prefix + "weight"], params.get(prefix + "bias"), layer.stride, layer.padding)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, MaxPool1d):
        return F.max_pool1d(x, layer.kernel_size)
    if isinstance(layer, AvgPool1d):
        return F.avg_pool1d(x, layer.kernel_size)
    if isinstance(layer, MaxPool2d):
        return F.max_pool2d(x, layer.kernel_size)
    if isinstance(layer, AvgPool2d):
        return F.avg_pool2d(x, layer.kernel_size)
    if isinstance(layer, ReLU):
        return F.relu(x)
    if isinstance(layer, LeakyReLU):
        return F.leaky_relu(x, layer.negative_slope)
    if isinstance(layer, Tanh):
        return torch.tanh(x)
    if isinstance(layer, LayerNorm):
        return layer_norm(x, layer.eps)
    if isinstance(layer, Dropout):
        if not train or layer.p == 0:
            return x
        keep = torch.rand(x.shape, generator=generator) >= layer.p
        return x * keep / (1 - layer.p)
    if isinstance(layer, LIF):
        raise TypeError("LIF layers are stepped through time by edgesp.spiking, not by layer_forward")
    raise TypeError(f"no torch semantics for {type(layer).__name__}")


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-sample normalisation over all non-batch dims (biased variance)."""
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def block_forward(
    spec: ModelSpec,
    i: int,
    x: torch.Tensor,
    params: Params,
    train: bool = False,
    sample_stream: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Block i on a batch. Dropout acts only on the sample stream during training."""
    for layer in spec.blocks[i]:
        x = layer_forward(layer, x, params, f"blocks.{i}.", train=train and sample_stream, generator=generator)
    return x


def signal_forward(spec: ModelSpec, labels: torch.Tensor, params: Params) -> torch.Tensor:
    """z = act(LayerNorm(onehot(y) W_Sᵀ + b_S)), shaped ``(len(labels), *spec.signal_shape())``: the target
    stream's t_1 (hidden placement) or t_0 (input placement). ``shape='channel'``: one value per channel,
    broadcast over block 0's positions (LayerNorm over the channel vector equals LayerNorm over the
    broadcast tensor)."""
    onehot = F.one_hot(labels.long(), spec.num_classes).float()
    t = layer_norm(F.linear(onehot, params["signal.weight"], params["signal.bias"]), 1e-5)
    if spec.signal.activation == "relu":
        t = F.relu(t)
    shape = spec.signal_shape()
    if spec.signal.shape == "channel":
        t = t.reshape(labels.shape[0], shape[0], *([1] * (len(shape) - 1))).expand(labels.shape[0], *shape)
    return t.reshape(labels.shape[0], *shape)


def head_forward(spec: ModelSpec, h: torch.Tensor, params: Params) -> torch.Tensor:
    return F.linear(h.reshape(h.shape[0], -1), params["head.weight"], params.get("head.bias"))


def predict_logits(spec: ModelSpec, x: torch.Tensor, params: Params) -> torch.Tensor:
    """Inference of a non-spiking model: blocks then head; needs no target."""
    h = x
    for i in range(len(spec.blocks)):
        h = block_forward(spec, i, h, params)
    return head_forward(spec, h, params)
