"""The model description every part of edgesp reads (the IR).

A :class:`ModelSpec` is plain data: the input shape, the class count, the signal (target)
generator, the learning *blocks* (each block is one locally trained unit: exactly one
parametric layer, Linear/Conv1d/Conv2d, followed by parameter-free layers such as a norm,
an activation, pooling or a spiking neuron), the output head, the learning rule, and for
spiking models the temporal settings. It round-trips through JSON (``to_dict``/``from_dict``)
and is validated on construction: every shape is inferred and checked, and a bad spec raises
:class:`SpecError` naming the layer and the fix.

Shapes exclude the batch dimension. Conv1d activations are ``(C, L)``, Conv2d ``(C, H, W)``.
Parameter names (used by checkpoints and compiled artifacts):
``signal.weight``/``signal.bias`` (shape ``(D, C)``/``(D,)``, D = :attr:`ModelSpec.signal_dim`: block 0's
output size for the default hidden placement, the input size for input placement),
``blocks.{i}.weight``/``blocks.{i}.bias`` for block i's parametric layer, ``blocks.{i}.rec_weight`` (H, H) for a
block whose LIF is ``recurrent`` (:class:`LIF`), ``head.weight``/``head.bias``;
opt-in :class:`SPVariant` parameters (``targets.{i}.*``, ``aux.{i}.*``) belong to block i (layer i+1).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from edgesp.errors import SpecError

SPEC_VERSION = 1

Shape = tuple[int, ...]


def _pos_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Layer:
    """Base class. ``kind`` is the JSON tag; ``parametric`` marks layers that own weights."""

    kind: ClassVar[str] = ""
    parametric: ClassVar[bool] = False

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def param_shapes(self) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Linear(Layer):
    """y = x Wᵀ + b, W: (out_features, in_features). Input must be flat (F,)."""

    in_features: int
    out_features: int
    bias: bool = True
    kind: ClassVar[str] = "linear"
    parametric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _pos_int("Linear.in_features", self.in_features)
        _pos_int("Linear.out_features", self.out_features)

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 1:
            raise SpecError(f"Linear expects a flat input, got shape {in_shape}: put a Flatten before it")
        if in_shape[0] != self.in_features:
            raise SpecError(
                f"Linear.in_features={self.in_features} but its input has {in_shape[0]} features: "
                f"set in_features={in_shape[0]}"
            )
        return (self.out_features,)

    def param_shapes(self) -> dict[str, Shape]:
        p: dict[str, Shape] = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            p["bias"] = (self.out_features,)
        return p


def _conv_out(n: int, k: int, s: int, p: int, what: str) -> int:
    out = (n + 2 * p - k) // s + 1
    if out <= 0:
        raise SpecError(f"{what}: kernel {k} does not fit an input of length {n} (padding {p})")
    return out


@dataclass(frozen=True)
class Conv1d(Layer):
    """y[b,o,l] = Σ_c Σ_k W[o,c,k] x[b,c,l·s+k−p] + b[o]; W: (out_channels, in_channels, kernel_size)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    kind: ClassVar[str] = "conv1d"
    parametric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for n in ("in_channels", "out_channels", "kernel_size", "stride"):
            _pos_int(f"Conv1d.{n}", getattr(self, n))
        if self.padding < 0:
            raise SpecError("Conv1d.padding must be >= 0")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 2:
            raise SpecError(f"Conv1d expects input (channels, length), got {in_shape}")
        if in_shape[0] != self.in_channels:
            raise SpecError(
                f"Conv1d.in_channels={self.in_channels} but its input has {in_shape[0]} channels: "
                f"set in_channels={in_shape[0]}"
            )
        return (self.out_channels, _conv_out(in_shape[1], self.kernel_size, self.stride, self.padding, "Conv1d"))

    def param_shapes(self) -> dict[str, Shape]:
        p: dict[str, Shape] = {"weight": (self.out_channels, self.in_channels, self.kernel_size)}
        if self.bias:
            p["bias"] = (self.out_channels,)
        return p


@dataclass(frozen=True)
class Conv2d(Layer):
    """2-D convolution, square kernel; W: (out_channels, in_channels, k, k)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    kind: ClassVar[str] = "conv2d"
    parametric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for n in ("in_channels", "out_channels", "kernel_size", "stride"):
            _pos_int(f"Conv2d.{n}", getattr(self, n))
        if self.padding < 0:
            raise SpecError("Conv2d.padding must be >= 0")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise SpecError(f"Conv2d expects input (channels, height, width), got {in_shape}")
        if in_shape[0] != self.in_channels:
            raise SpecError(
                f"Conv2d.in_channels={self.in_channels} but its input has {in_shape[0]} channels: "
                f"set in_channels={in_shape[0]}"
            )
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, _conv_out(in_shape[1], k, s, p, "Conv2d"), _conv_out(in_shape[2], k, s, p, "Conv2d"))

    def param_shapes(self) -> dict[str, Shape]:
        k = self.kernel_size
        p: dict[str, Shape] = {"weight": (self.out_channels, self.in_channels, k, k)}
        if self.bias:
            p["bias"] = (self.out_channels,)
        return p


@dataclass(frozen=True)
class Flatten(Layer):
    """(C, ...) -> (C·...,) in row-major order."""

    kind: ClassVar[str] = "flatten"

    def out_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)


@dataclass(frozen=True)
class _Pool(Layer):
    kernel_size: int = 2
    dims: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _pos_int(f"{type(self).__name__}.kernel_size", self.kernel_size)

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != self.dims + 1:
            raise SpecError(f"{type(self).__name__} expects a {self.dims + 1}-D input (channels first), got {in_shape}")
        k = self.kernel_size
        spatial = in_shape[1:]
        if any(n % k for n in spatial):
            raise SpecError(
                f"{type(self).__name__}(kernel_size={k}) needs spatial sizes divisible by {k}, got {spatial}"
            )
        return (in_shape[0], *(n // k for n in spatial))


@dataclass(frozen=True)
class MaxPool1d(_Pool):
    """Non-overlapping max over windows of kernel_size (stride = kernel_size)."""

    kind: ClassVar[str] = "maxpool1d"


@dataclass(frozen=True)
class AvgPool1d(_Pool):
    """Non-overlapping mean over windows of kernel_size."""

    kind: ClassVar[str] = "avgpool1d"


@dataclass(frozen=True)
class MaxPool2d(_Pool):
    kind: ClassVar[str] = "maxpool2d"
    dims: ClassVar[int] = 2


@dataclass(frozen=True)
class AvgPool2d(_Pool):
    kind: ClassVar[str] = "avgpool2d"
    dims: ClassVar[int] = 2


@dataclass(frozen=True)
class ReLU(Layer):
    kind: ClassVar[str] = "relu"


@dataclass(frozen=True)
class LeakyReLU(Layer):
    negative_slope: float = 0.01
    kind: ClassVar[str] = "leaky_relu"


@dataclass(frozen=True)
class Tanh(Layer):
    kind: ClassVar[str] = "tanh"


@dataclass(frozen=True)
class LayerNorm(Layer):
    """y = (x − mean(x)) / sqrt(var(x) + eps) over all non-batch dims of one sample; no affine
    parameters. Per-sample statistics, so it behaves the same at batch size 1 and in inference."""

    eps: float = 1e-5
    kind: ClassVar[str] = "layernorm"

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise SpecError("LayerNorm.eps must be > 0")


@dataclass(frozen=True)
class Dropout(Layer):
    """Training-time dropout on the *sample* stream only (never on the target stream, so all targets
    of a class stay identical); identity at inference and in compiled update steps."""

    p: float = 0.1
    kind: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0:
            raise SpecError(f"Dropout.p must be in [0, 1), got {self.p}")


@dataclass(frozen=True)
class LIF(Layer):
    """Current-based leaky integrate-and-fire neuron (Loihi-style CUBA), per time step t:

        u[t] = (1 − du) · u[t−1] + a[t]            (synaptic current; du = 1 gives plain LIF)
        v[t] = (1 − dv) · v[t−1] + u[t] + bias     (membrane voltage)
        s[t] = 1[v[t] > threshold]
        v[t] ← 0 where s[t] (reset='zero')  or  v[t] − threshold (reset='subtract')

    du, dv in [0, 1]. Fixed point (Loihi): du, dv as 12-bit fractions (×4096), u and v 24-bit signed,
    weights 8-bit mantissa with a shared exponent. ``spiking=False`` makes a non-spiking integrator
    (membrane readout).

    ``recurrent=True``: the block (a Linear block with a flat output (H,)) owns ``blocks.{i}.rec_weight``
    W_rec (H, H) and its own spikes of the previous step feed back into the synaptic current (one-step delay,
    s[−1] = 0):  a[t] = W x[t] + b + W_rec s[t−1]."""

    du: float = 1.0
    dv: float = 0.2
    threshold: float = 1.0
    reset: str = "zero"
    bias: float = 0.0
    spiking: bool = True
    recurrent: bool = False
    kind: ClassVar[str] = "lif"

    def __post_init__(self) -> None:
        for n in ("du", "dv"):
            v = getattr(self, n)
            if not 0.0 <= v <= 1.0:
                raise SpecError(f"LIF.{n} must be in [0, 1], got {v}")
        if not self.threshold > 0:
            raise SpecError(f"LIF.threshold must be > 0, got {self.threshold}")
        if self.reset not in ("zero", "subtract"):
            raise SpecError(f"LIF.reset must be 'zero' or 'subtract', got {self.reset!r}")
        if not isinstance(self.recurrent, bool):
            raise SpecError(f"LIF.recurrent must be true or false, got {self.recurrent!r}")
        if self.recurrent and not self.spiking:
            raise SpecError("LIF.recurrent needs spiking=True (the recurrent weights carry the layer's spikes)")


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (
        Linear,
        Conv1d,
        Conv2d,
        Flatten,
        MaxPool1d,
        AvgPool1d,
        MaxPool2d,
        AvgPool2d,
        ReLU,
        LeakyReLU,
        Tanh,
        LayerNorm,
        Dropout,
        LIF,
    )
}


def layer_to_dict(layer: Layer) -> dict[str, Any]:
    return {"type": layer.kind, **asdict(layer)}


def layer_from_dict(d: dict[str, Any]) -> Layer:
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in LAYER_TYPES:
        raise SpecError(f"unknown layer type {kind!r}; known: {', '.join(sorted(LAYER_TYPES))}")
    cls = LAYER_TYPES[kind]
    names = {f.name for f in fields(cls)}
    extra = set(d) - names
    if extra:
        raise SpecError(f"layer {kind!r} has unknown fields {sorted(extra)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise SpecError(f"layer {kind!r}: {e}") from None


# --------------------------------------------------------------------------- signal, rule
SIGNAL_KINDS = ("learned", "fixed")
SIGNAL_PLACEMENTS = ("hidden", "input")
SIGNAL_SHAPES = ("full", "channel")


@dataclass(frozen=True)
class SignalSpec:
    """The target (signal) generator z = act(LayerNorm(W_S · onehot(y) + b_S)), W_S ~ N(0, init_std²).

    ``placement`` says where the label enters:

    - ``'hidden'`` (default, as the reference's ``ProjectionContextInput``): z is shaped like block 0's
      *output* and is the target stream's t_1. Block 0 sees the sample only; its loss
      L_1 = loss(f_0(x), t_1) updates block 0 *and* the signal together (the signal's parameters belong to
      layer 1). Deeper blocks see t_{i+1} = f_i(t_i) as in plain SP.
    - ``'input'``: z is shaped like the model input (t_0); ``kind='learned'`` trains W_S with a layer-0
      loss between the raw sample x and t_0 (the signal's parameters are layer 0).

    ``shape`` (hidden placement, conv block 0 only): ``'full'`` one number per output element (W_S: (C·L, C)
    or (C·H·W, C)), ``'channel'`` one number per output channel, broadcast over positions (W_S: (C_out, C)).
    ``kind='fixed'`` keeps W_S at its random init. ``activation`` is 'relu' (reference) or 'none'.
    Checkpoints written before placement existed carry no ``placement`` key and load as ``'input'`` with
    ``init_std = 1`` (their layout)."""

    kind: str = "learned"
    activation: str = "relu"
    placement: str = "hidden"
    shape: str = "full"
    init_std: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in SIGNAL_KINDS:
            raise SpecError(f"signal kind must be one of {SIGNAL_KINDS}, got {self.kind!r}")
        if self.activation not in ("relu", "none"):
            raise SpecError(f"signal activation must be 'relu' or 'none', got {self.activation!r}")
        if self.placement not in SIGNAL_PLACEMENTS:
            raise SpecError(f"signal placement must be one of {SIGNAL_PLACEMENTS}, got {self.placement!r}")
        if self.shape not in SIGNAL_SHAPES:
            raise SpecError(f"signal shape must be one of {SIGNAL_SHAPES}, got {self.shape!r}")
        if self.shape == "channel" and self.placement != "hidden":
            raise SpecError("signal shape 'channel' needs placement 'hidden' (it broadcasts over block 0's positions)")
        if not (isinstance(self.init_std, (int, float)) and math.isfinite(self.init_std) and self.init_std > 0):
            raise SpecError(f"signal init_std must be a finite number > 0, got {self.init_std!r}")

    @property
    def hidden(self) -> bool:
        return self.placement == "hidden"


RULES = (
    "sigprop",
    "bp",
    "fa",
    "dfa",
    "local",
    "sp-voltage",
    "sp-surrogate",
    "sp-online",
    "bptt",
    "rtrl",
    "eprop",
    "ifa",
    "bdfa",
    "kp",
    "wm",
    "tp",
    "dtp",
    "dfc",
)
SP_LOSSES = ("v14", "v9", "v15", "v1", "l2")
# RuleSpec.temperature when not given: 0.01 (continuous SP, docs/benchmarks/rules.md), but the spiking SP rules
# learn at 0.1 and collapse at 0.01 (docs/benchmarks/spiking.md; Lava's on-chip rule loses 8 points)
SPIKING_SP_TEMPERATURE = {"sp-voltage": 0.1, "sp-surrogate": 0.1, "sp-online": 0.1}
DEFAULT_TEMPERATURE = 0.01
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class OptimizerSpec:
    """Per-layer optimizer. SGD with momentum: m ← μ·m + g + λ·W; W ← W − lr·m.
    Adam: standard (β1, β2, eps) with bias correction."""

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise SpecError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise SpecError(f"learning rate must be > 0, got {self.lr}")
        object.__setattr__(self, "betas", tuple(self.betas))


SP_PREDICT = ("head", "nearest")


@dataclass(frozen=True)
class SPVariant:
    """Opt-in additions to plain Signal Propagation (rule ``sigprop``, non-spiking models, host trainer only:
    the compilers refuse any non-default variant). The default (all off) is plain SP.

    - ``codes`` = K ≥ 1: K target codes per class *at the signal* (W_S: (D, C·K), column c·K + k). Every code
      is propagated through the blocks like a plain SP target (t_{i+1} = f_i(t_i)), so this stays **pure SP**.
      A sample's positive at each block is the nearest (highest-logit) code of its class: the class logit is
      Y_c = max_k ⟨h, t_{c,k}⟩/(τ d) (loss ``v1`` only). Extra parameters: D·C·(K−1).
    - ``free_targets``: every block i ≥ 1 gets its own learned class target
      z_i = act(LayerNorm(T_i · onehot(y) + b_i)), act = ``signal.activation`` ('none' measured best; see
      docs/benchmarks/sp_variants.md) (parameters ``targets.{i}.weight`` (D_i, C), ``.bias``, init as weights),
      trained with block i under its loss, instead of f_i(t_{i−1}). **Not pure SP** (a layer's target is no
      longer its weights applied to the previous target). Extra parameters: Σ_{i≥1} D_i·(C·K+1) (with
      ``codes`` = K, every block's free target has K codes per class).
    - ``aux`` = λ > 0: each block also minimises λ·CE(A_i(h_i), y) with its own linear classifier A_i
      (``aux.{i}.weight`` (C, F_i), F_i = flattened output, or its channels if ``aux_pool='channel'``: mean
      over positions), the 'pred' loss of local learning, added to the SP loss. The SP targets stay pure; the
      block's loss is a **hybrid** (SP + local learning), so the rule is not pure SP.
    - ``predict``: ``'head'`` (the output layer, default) or ``'nearest'``: argmax over classes of the last
      block's similarity to each class's target (max over its codes); needs the target stream at inference.
    """

    codes: int = 1
    free_targets: bool = False
    aux: float = 0.0
    aux_pool: str = "flatten"
    predict: str = "head"

    def __post_init__(self) -> None:
        _pos_int("variant.codes", self.codes)
        if not isinstance(self.free_targets, bool):
            raise SpecError(f"variant.free_targets must be true or false, got {self.free_targets!r}")
        if not (isinstance(self.aux, (int, float)) and math.isfinite(self.aux) and self.aux >= 0):
            raise SpecError(f"variant.aux must be a finite number >= 0, got {self.aux!r}")
        if self.aux_pool not in ("flatten", "channel"):
            raise SpecError(f"variant.aux_pool must be 'flatten' or 'channel', got {self.aux_pool!r}")
        if self.predict not in SP_PREDICT:
            raise SpecError(f"variant.predict must be one of {SP_PREDICT}, got {self.predict!r}")

    @property
    def is_plain(self) -> bool:
        """True for plain SP (the default)."""
        return self == SPVariant()

    @property
    def pure_sp(self) -> bool:
        """Every layer's target is its own weights applied to the previous target, and SP's loss alone."""
        return not self.free_targets and self.aux == 0

    def describe(self) -> str:
        if self.is_plain:
            return "plain"
        parts = []
        if self.codes > 1:
            parts.append(f"codes={self.codes}")
        if self.free_targets:
            parts.append("free_targets")
        if self.aux:
            parts.append(f"aux={self.aux:g}" + ("/channel" if self.aux_pool == "channel" else ""))
        if self.predict != "head":
            parts.append(f"predict={self.predict}")
        return ",".join(parts)


@dataclass(frozen=True)
class RuleSpec:
    """Learning rule. For sigprop ``loss`` is one of v14 (random same-class positive), v9 (all
    same-class positives), v15 (top-k positives, k=``topk``), v1 (direct label), l2; ``temperature``
    divides the local logits Y = h·tᵀ/(temperature·d) with d the activation size.

    Defaults measured by ``bench/sp_sweep.py`` (docs/benchmarks/rules.md): loss v1 (valid at batch 1, where
    v9/v14/v15 are constant) and temperature 0.01 (on the MNIST-1D CNN 0.003, 0.02, 0.03 and 0.1 were worse;
    the MLP gains ≈ 1 point at 0.02). ``temperature=None`` resolves per rule: 0.1 for the spiking SP rules
    (:data:`SPIKING_SP_TEMPERATURE`), 0.01 otherwise; the resolved number is what the spec stores."""

    name: str = "sigprop"
    loss: str = "v1"
    topk: int = 6
    temperature: float | None = None
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    params: dict[str, Any] = field(default_factory=dict)
    variant: SPVariant = field(default_factory=SPVariant)

    def __post_init__(self) -> None:
        if isinstance(self.variant, dict):  # from JSON
            try:
                object.__setattr__(self, "variant", SPVariant(**self.variant))
            except TypeError as e:
                raise SpecError(f"rule.variant has a bad field: {e}") from None
        if not isinstance(self.variant, SPVariant):
            raise SpecError(f"rule.variant must be an SPVariant, got {type(self.variant).__name__}")
        if self.name not in RULES:
            raise SpecError(f"unknown rule {self.name!r}; choose one of {', '.join(RULES)}")
        if self.loss not in SP_LOSSES:
            raise SpecError(f"unknown sigprop loss {self.loss!r}; choose one of {', '.join(SP_LOSSES)}")
        _pos_int("topk", self.topk)
        if self.temperature is None:
            object.__setattr__(self, "temperature", SPIKING_SP_TEMPERATURE.get(self.name, DEFAULT_TEMPERATURE))
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise SpecError("temperature must be > 0")


ENCODINGS = ("direct", "rate", "sequence")
READOUTS = ("spike_count", "membrane")


@dataclass(frozen=True)
class TemporalSpec:
    """Spiking/temporal settings: ``time_steps`` T, input ``encoding`` (direct current each step,
    Bernoulli rate code with ``seed``, or ``sequence``: the input's last axis is time, one value per
    step), and the ``readout`` of the output head (spike count or membrane potential)."""

    time_steps: int = 10
    encoding: str = "rate"
    readout: str = "membrane"
    seed: int = 0

    def __post_init__(self) -> None:
        _pos_int("time_steps", self.time_steps)
        if self.encoding not in ENCODINGS:
            raise SpecError(f"unknown encoding {self.encoding!r}; choose one of {', '.join(ENCODINGS)}")
        if self.readout not in READOUTS:
            raise SpecError(f"unknown readout {self.readout!r}; choose one of {', '.join(READOUTS)}")


def _signal_from_dict(d: dict[str, Any] | None) -> SignalSpec:
    """A spec written before signal placement existed has no ``placement``: it is the input layout."""
    d = dict(d or {})
    if "placement" not in d:
        d.setdefault("placement", "input")
        d.setdefault("init_std", 1.0)
    return SignalSpec(**d)


# --------------------------------------------------------------------------- model
Block = tuple[Layer, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A whole model. ``blocks[i]`` is trained by its own local loss; ``head`` is a Linear trained with
    cross-entropy on the (detached) output of the last block."""

    input_shape: Shape
    num_classes: int
    blocks: tuple[Block, ...]
    head: Linear
    signal: SignalSpec = field(default_factory=SignalSpec)
    rule: RuleSpec = field(default_factory=RuleSpec)
    temporal: TemporalSpec | None = None
    name: str = "model"
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(n) for n in self.input_shape))
        object.__setattr__(self, "blocks", tuple(tuple(b) for b in self.blocks))
        if self.version != SPEC_VERSION:
            raise SpecError(f"spec version {self.version} is not supported (this edgesp reads version {SPEC_VERSION})")
        if not self.input_shape or any(n <= 0 for n in self.input_shape):
            raise SpecError(f"input_shape must be non-empty positive sizes, got {self.input_shape}")
        _pos_int("num_classes", self.num_classes)
        if self.num_classes < 2:
            raise SpecError("num_classes must be >= 2")
        if not self.blocks:
            raise SpecError("a model needs at least one block")
        for i, block in enumerate(self.blocks):
            n_param = sum(layer.parametric for layer in block)
            if n_param != 1 or not block[0].parametric:
                raise SpecError(
                    f"block {i} must start with exactly one parametric layer (Linear/Conv1d/Conv2d) "
                    f"followed by parameter-free layers; got {[type(la).__name__ for la in block]}"
                )
        spiking = any(isinstance(la, LIF) for b in self.blocks for la in b)
        if spiking and self.temporal is None:
            raise SpecError("a model with LIF layers needs temporal settings (time_steps, encoding)")
        shapes = self.shapes()  # validates every shape
        for i, block in enumerate(self.blocks):
            rec = [j for j, la in enumerate(block) if isinstance(la, LIF) and la.recurrent]
            if len(rec) > 1:
                raise SpecError(f"block {i} has {len(rec)} recurrent LIF layers: a block may have at most one")
            if rec and (not isinstance(block[0], Linear) or len(shapes[i][rec[0]]) != 1):
                raise SpecError(
                    f"block {i}: a recurrent LIF needs a Linear block with a flat output (H,), got "
                    f"{type(block[0]).__name__} with LIF output {shapes[i][rec[0]]}: set recurrent=False"
                )
        if self.signal.shape == "channel" and len(self.block_output_shape(0)) < 2:
            raise SpecError("signal shape 'channel' needs a convolutional block 0 (channels × positions); use 'full'")
        if self.head.out_features != self.num_classes:
            raise SpecError(f"head.out_features={self.head.out_features} must equal num_classes={self.num_classes}")
        v = self.rule.variant
        if not v.is_plain:
            if self.is_spiking or self.rule.name != "sigprop":
                raise SpecError(f"SP variant {v.describe()} is for rule 'sigprop' on non-spiking models only")
            if v.codes > 1 and (self.rule.loss != "v1" or not self.signal.hidden):
                raise SpecError("variant.codes > 1 needs loss 'v1' and signal placement 'hidden'")
            if v.free_targets and not self.signal.hidden:
                raise SpecError("variant.free_targets needs signal placement 'hidden'")

    # -- shapes
    def shapes(self) -> list[list[Shape]]:
        """Activation shape after each layer of each block, then ``[[head_out]]``."""
        shape = self.block_input_shape()
        out: list[list[Shape]] = []
        for i, block in enumerate(self.blocks):
            per: list[Shape] = []
            for j, layer in enumerate(block):
                try:
                    shape = layer.out_shape(shape)
                except SpecError as e:
                    raise SpecError(f"block {i}, layer {j} ({type(layer).__name__}): {e}") from None
                per.append(shape)
            out.append(per)
        try:
            out.append([self.head.out_shape(shape)])
        except SpecError as e:
            raise SpecError(f"head: {e}") from None
        return out

    def block_input_shape(self) -> Shape:
        """Shape entering block 0 (per time step for sequence-encoded inputs)."""
        if self.temporal is not None and self.temporal.encoding == "sequence":
            return self.input_shape[:-1] or (1,)
        return self.input_shape

    def block_output_shape(self, i: int) -> Shape:
        return self.shapes()[i][-1]

    def signal_shape(self) -> Shape:
        """Shape of the signal's output z per class: block 0's output (hidden placement) or block 0's
        input (input placement). With ``shape='channel'`` W_S yields one value per channel, broadcast."""
        if self.signal.hidden:
            return self.block_output_shape(0)
        return self.block_input_shape()

    @property
    def signal_dim(self) -> int:
        """Rows of W_S: prod(signal_shape), or block 0's output channels for ``shape='channel'``."""
        shape = self.signal_shape()
        if self.signal.shape == "channel":
            return shape[0]
        return math.prod(shape)

    @property
    def signal_layer(self) -> int:
        """Forward-order layer that owns the signal's parameters: 1 (with block 0) if hidden, else 0."""
        return 1 if self.signal.hidden else 0

    @property
    def is_spiking(self) -> bool:
        return self.temporal is not None

    def recurrent_layer(self, i: int) -> int | None:
        """Index within block i of its recurrent LIF layer, or None if block i is not recurrent."""
        for j, la in enumerate(self.blocks[i]):
            if isinstance(la, LIF) and la.recurrent:
                return j
        return None

    @property
    def recurrent_blocks(self) -> tuple[int, ...]:
        """Indices of the blocks that own a ``blocks.{i}.rec_weight``."""
        return tuple(i for i in range(len(self.blocks)) if self.recurrent_layer(i) is not None)

    @property
    def is_recurrent(self) -> bool:
        return bool(self.recurrent_blocks)

    # -- parameters
    def param_shapes(self) -> dict[str, Shape]:
        """All parameters in forward order: signal, blocks, head."""
        v = self.rule.variant
        p: dict[str, Shape] = {
            "signal.weight": (self.signal_dim, self.num_classes * v.codes),
            "signal.bias": (self.signal_dim,),
        }
        for i, block in enumerate(self.blocks):
            for k, s in block[0].param_shapes().items():
                p[f"blocks.{i}.{k}"] = s
            j = self.recurrent_layer(i)
            if j is not None:
                h = self.shapes()[i][j][0]
                p[f"blocks.{i}.rec_weight"] = (h, h)
            p.update(self.variant_param_shapes(i))
        for k, s in self.head.param_shapes().items():
            p[f"head.{k}"] = s
        return p

    def variant_param_shapes(self, i: int) -> dict[str, Shape]:
        """Extra parameters of :class:`SPVariant` owned by block i (layer i+1); none for plain SP."""
        v, p = self.rule.variant, {}
        if v.free_targets and i >= 1:
            d = math.prod(self.block_output_shape(i))
            p[f"targets.{i}.weight"], p[f"targets.{i}.bias"] = (d, self.num_classes * v.codes), (d,)
        if v.aux:
            shape = self.block_output_shape(i)
            f = shape[0] if v.aux_pool == "channel" else math.prod(shape)
            p[f"aux.{i}.weight"], p[f"aux.{i}.bias"] = (self.num_classes, f), (self.num_classes,)
        return p

    def param_layer_index(self, name: str) -> int:
        """0 = signal generator (input placement), i+1 = block i (hidden placement: the signal too),
        len(blocks)+1 = head (forward order)."""
        if name.startswith("signal."):
            return self.signal_layer
        if name.startswith(("blocks.", "targets.", "aux.")):
            return int(name.split(".")[1]) + 1
        if name.startswith("head."):
            return len(self.blocks) + 1
        raise SpecError(f"unknown parameter {name!r}")

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "signal": asdict(self.signal),
            "blocks": [[layer_to_dict(la) for la in b] for b in self.blocks],
            "head": layer_to_dict(self.head),
            "rule": {
                **{k: v for k, v in asdict(self.rule).items() if k != "variant" or not self.rule.variant.is_plain},
                "optimizer": {**asdict(self.rule.optimizer), "betas": list(self.rule.optimizer.betas)},
            },
            "temporal": asdict(self.temporal) if self.temporal else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        if not isinstance(d, dict):
            raise SpecError("model spec must be a JSON object")
        try:
            version = d.get("version", SPEC_VERSION)
            if version != SPEC_VERSION:
                raise SpecError(f"spec version {version} is not supported (this edgesp reads {SPEC_VERSION})")
            head = layer_from_dict(d["head"])
            if not isinstance(head, Linear):
                raise SpecError("head must be a linear layer")
            rule = dict(d.get("rule") or {})
            opt = OptimizerSpec(**rule.pop("optimizer", {}))
            temporal = d.get("temporal")
            return cls(
                input_shape=tuple(d["input_shape"]),
                num_classes=int(d["num_classes"]),
                blocks=tuple(tuple(layer_from_dict(la) for la in b) for b in d["blocks"]),
                head=head,
                signal=_signal_from_dict(d.get("signal")),
                rule=RuleSpec(optimizer=opt, **rule),
                temporal=TemporalSpec(**temporal) if temporal else None,
                name=str(d.get("name", "model")),
                version=version,
            )
        except KeyError as e:
            raise SpecError(f"model spec is missing the field {e.args[0]!r}") from None
        except TypeError as e:
            raise SpecError(f"model spec has a bad field: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"model spec is not valid JSON ({e})") from None
        return cls.from_dict(d)

    def replace_rule(self, **changes: Any) -> ModelSpec:
        from dataclasses import replace

        return replace(self, rule=replace(self.rule, **changes))
