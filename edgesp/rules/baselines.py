"""Baseline learning rules to compare Signal Propagation with: ``bp``, ``fa``, ``dfa``, ``local``.

Non-spiking models of any preset. Forward semantics come from :mod:`edgesp.functional`. Each block l is
split into its parametric layer and the parameter-free rest g_l::

    a_l = W_l h_{l-1} (+ b_l)      (Linear, or Conv1d/Conv2d)
    h_l = g_l(a_l)                 (norm / activation / pool / flatten / dropout)
    out = W_head h_N + b_head

With B the batch size, ``e = (softmax(out) − onehot(y)) / B`` = ∂CE_mean/∂out. The head always gets its
true gradient ΔW_head = eᵀ h_N, Δb_head = Σ_b e. Per rule, for the blocks:

- ``bp``:  autograd through the whole network on the mean cross-entropy.
- ``fa`` (feedback alignment, Lillicrap et al. 2016):
  δh_N = e B_head;  for l = N..1:  δa_l = (∂h_l/∂a_l)ᵀ δh_l  (a vector-Jacobian product of g_l alone,
  which has no weights);  ΔW_l = δa_lᵀ h_{l-1} (Linear) or ``conv*d_weight(h_{l-1}, δa_l)`` (conv),
  Δb_l = Σ δa_l over batch (and positions);  δh_{l-1} = δa_l B_l (Linear) or ``conv*d_input(B_l, δa_l)``
  (conv: the transposed convolution with B_l in place of W_l). B_l is fixed random with W_l's shape.
  With B_l = W_l this is exactly backpropagation.
- ``dfa`` (direct feedback alignment, Nøkland 2016): δh_l = e B_l reshaped to h_l's shape, with B_l a fixed
  random (C, |h_l|) matrix; then δa_l and ΔW_l as in FA. No error passes between blocks.
- ``local`` (Nøkland & Eidnes 2019, 'pred'): block l has an auxiliary classifier
  A_l: pool(h_l) → C logits; block l and A_l minimise CE(A_l(pool(h_l)), y) with h_{l-1} detached, so no
  gradient crosses a block boundary. pool = flatten if |h_l| ≤ ``aux_max_features`` (rule.params, default
  2048), otherwise adaptive average pooling of the spatial axes (or of the features for flat activations)
  down to at most that many features. The head minimises CE on the detached h_N. The auxiliary classifiers
  are training-only state held inside the trainer: they are NOT part of ``params()`` (the spec has no
  names for them, and inference never uses them).

Feedback matrices are seeded from the trainer seed and drawn like a forward init: FA's B_l ~ U(±1/√fan_in)
of W_l (fan_in = in_features or in_channels·kernel size); DFA's B_l as a head reading h_l,
U(±1/√|h_l|). ΔW above is the gradient handed to the optimizer (``spec.rule.optimizer``: one torch.optim
Adam or SGD-with-momentum per layer), so an update is W ← W − lr·ΔW for plain SGD.
The signal generator is unused; its parameters pass through ``params()`` unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from edgesp.data import adapt_inputs
from edgesp.errors import SpecError
from edgesp.functional import block_forward, head_forward, layer_forward, predict_logits
from edgesp.rules.optim import make_optimizer
from edgesp.spec import Conv1d, Conv2d, Linear, ModelSpec

RULE_NAMES = ("bp", "fa", "dfa", "local")


class _Base:
    """Shared state: trainable tensors for blocks and head, one optimizer per layer, passthrough signal."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        if spec.is_spiking:
            raise SpecError(
                f"rule {spec.rule.name!r} is for non-spiking models; "
                "for --model snn use sp-voltage, sp-surrogate, sp-online, bptt or rtrl"
            )
        missing = set(spec.param_shapes()) - set(params)
        if missing:
            raise SpecError(
                f"parameters missing for {sorted(missing)}: initialise them with edgesp.functional.init_params"
            )
        self.spec = spec
        self.seed = seed
        self.p: dict[str, torch.Tensor] = {}
        self._passthrough: dict[str, np.ndarray] = {}
        for name, shape in spec.param_shapes().items():
            arr = np.asarray(params[name], np.float32)
            if arr.shape != tuple(shape):
                raise SpecError(f"parameter {name} has shape {arr.shape}, the spec needs {tuple(shape)}")
            if name.startswith("signal."):
                self._passthrough[name] = arr.copy()
            else:
                self.p[name] = torch.tensor(arr.copy(), requires_grad=True)
        self.layer_names: list[list[str]] = [
            [f"blocks.{i}.{k}" for k in block[0].param_shapes()] for i, block in enumerate(spec.blocks)
        ]
        self.layer_names.append([f"head.{k}" for k in spec.head.param_shapes()])
        self.optimizers = [
            make_optimizer(spec.rule.optimizer, [self.p[n] for n in names]) for names in self.layer_names
        ]
        self.generator = torch.Generator().manual_seed(seed)  # dropout masks

    # -- contract
    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        x = adapt_inputs(np.asarray(x, np.float32), self.spec.input_shape)
        return torch.from_numpy(np.ascontiguousarray(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return predict_logits(self.spec, self._inputs(x), self.p).numpy()

    def params(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name in self.spec.param_shapes():
            out[name] = (
                self._passthrough[name].copy() if name in self._passthrough else self.p[name].detach().numpy().copy()
            )
        return out

    def forward(self, x: torch.Tensor, inject: list[torch.Tensor] | None = None, graphs: bool = True) -> _Cache:
        """Blocks then head, keeping per block h_{l-1}, a_l (a leaf) and, with ``graphs``, the graph of the
        block's weightless part g_l (weights in no graph: rules compute ΔW from the formulas).
        ``inject[l]`` (shaped like a_l) is added to block l's pre-activation (feedback control)."""
        c = _Cache()
        h = x
        for i, block in enumerate(self.spec.blocks):
            prefix = f"blocks.{i}."
            with torch.no_grad():
                a = layer_forward(block[0], h, self.p, prefix)
                if inject is not None:
                    a = a + inject[i]
            if graphs:
                a = a.requires_grad_(True)
            with torch.set_grad_enabled(graphs):
                out = a
                for layer in block[1:]:
                    out = layer_forward(layer, out, self.p, prefix, train=True, generator=self.generator)
            c.inputs.append(h)
            c.pre.append(a)
            c.outs.append(out)
            h = out.detach()
        with torch.no_grad():
            c.logits = head_forward(self.spec, h, self.p)
        return c

    def _step(self, grads: dict[str, torch.Tensor]) -> None:
        for names, opt in zip(self.layer_names, self.optimizers, strict=True):
            for n in names:
                self.p[n].grad = grads[n].detach().clone()
            opt.step()


class BPTrainer(_Base):
    """Backpropagation: ΔW = ∂CE/∂W by autograd through all blocks and the head."""

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        h = self._inputs(x)
        for i in range(len(self.spec.blocks)):
            h = block_forward(self.spec, i, h, self.p, train=True, generator=self.generator)
        loss = F.cross_entropy(head_forward(self.spec, h, self.p), torch.as_tensor(y).long())
        grads = torch.autograd.grad(loss, [self.p[n] for names in self.layer_names for n in names])
        self._step(dict(zip([n for names in self.layer_names for n in names], grads, strict=True)))
        return {"ce": float(loss.detach())}


class _Cache:
    """Per-block forward state (h_{l-1}, a_l, h_l with g_l's graph, logits) for the rules that compute their
    backward pass from formulas (FA, DFA and the feedback family)."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []  # h_{l-1}
        self.pre: list[torch.Tensor] = []  # a_l (leaf, requires grad)
        self.outs: list[torch.Tensor] = []  # h_l = g_l(a_l), graph of g_l only
        self.logits: torch.Tensor | None = None


class FeedbackTrainer(_Base):
    """FA (``direct=False``) and DFA (``direct=True``); formulas in the module docstring."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int, direct: bool) -> None:
        super().__init__(spec, params, seed)
        self.direct = direct
        rng = np.random.default_rng([seed, 0xDFA if direct else 0xFA])
        self.feedback: dict[str, torch.Tensor] = {}
        if direct:
            for i in range(len(spec.blocks)):
                d = math.prod(spec.block_output_shape(i))
                b = 1.0 / math.sqrt(d)
                self.feedback[f"blocks.{i}"] = torch.tensor(
                    rng.uniform(-b, b, (spec.num_classes, d)).astype(np.float32)
                )
        else:
            for prefix in [f"blocks.{i}" for i in range(len(spec.blocks))] + ["head"]:
                shape = tuple(self.p[prefix + ".weight"].shape)
                b = 1.0 / math.sqrt(math.prod(shape[1:]))
                self.feedback[prefix] = torch.tensor(rng.uniform(-b, b, shape).astype(np.float32))

    @staticmethod
    def error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """e = (softmax(out) − onehot(y)) / B: the gradient of the mean CE w.r.t. the logits."""
        return (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).float()) / logits.shape[0]

    def backward(self, c: _Cache, e: torch.Tensor) -> dict[str, torch.Tensor]:
        """Explicit FA/DFA gradients ΔW for every trainable parameter, given the output error e."""
        spec, grads = self.spec, {}
        n = len(spec.blocks)
        h_n = c.outs[-1].detach().reshape(e.shape[0], -1)
        grads["head.weight"] = e.T @ h_n
        if spec.head.bias:
            grads["head.bias"] = e.sum(0)
        dh = None if self.direct else (e @ self.feedback["head"]).reshape(c.outs[-1].shape)
        for i in reversed(range(n)):
            layer, prefix = spec.blocks[i][0], f"blocks.{i}."
            if self.direct:
                dh = (e @ self.feedback[f"blocks.{i}"]).reshape(c.outs[i].shape)
            # block-local vector-Jacobian product through g_l (parameter-free)
            (da,) = torch.autograd.grad(c.outs[i], c.pre[i], dh, retain_graph=False)
            h_in = c.inputs[i]
            if isinstance(layer, Linear):
                grads[prefix + "weight"] = da.T @ h_in
                bias_dims: tuple[int, ...] = (0,)
            elif isinstance(layer, Conv1d):
                grads[prefix + "weight"] = torch.nn.grad.conv1d_weight(
                    h_in, tuple(self.p[prefix + "weight"].shape), da, layer.stride, layer.padding
                )
                bias_dims = (0, 2)
            elif isinstance(layer, Conv2d):
                grads[prefix + "weight"] = torch.nn.grad.conv2d_weight(
                    h_in, tuple(self.p[prefix + "weight"].shape), da, layer.stride, layer.padding
                )
                bias_dims = (0, 2, 3)
            else:  # pragma: no cover - the spec guarantees a parametric first layer
                raise SpecError(f"block {i}: no feedback rule for {type(layer).__name__}")
            if layer.bias:
                grads[prefix + "bias"] = da.sum(bias_dims)
            if not self.direct and i > 0:
                fb = self.feedback[f"blocks.{i}"]
                if isinstance(layer, Linear):
                    dh = da @ fb
                elif isinstance(layer, Conv1d):
                    dh = torch.nn.grad.conv1d_input(tuple(h_in.shape), fb, da, layer.stride, layer.padding)
                else:
                    dh = torch.nn.grad.conv2d_input(tuple(h_in.shape), fb, da, layer.stride, layer.padding)
        return grads

    def gradients(
        self, x: np.ndarray, y: np.ndarray, error: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], float]:
        """ΔW for a batch (optionally with a given output error e instead of the CE error) and the CE."""
        yt = torch.as_tensor(np.asarray(y)).long()
        c = self.forward(self._inputs(x))
        assert c.logits is not None
        loss = float(F.cross_entropy(c.logits, yt))
        e = self.error(c.logits, yt) if error is None else error
        return self.backward(c, e), loss

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        grads, loss = self.gradients(x, y)
        self._step(grads)
        return {"ce": loss}


class LocalTrainer(_Base):
    """Local 'pred' learning: every block trained by its own auxiliary classifier (module docstring)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        self.max_features = int(spec.rule.params.get("aux_max_features", 2048))
        if self.max_features < 1:
            raise SpecError("rule.params.aux_max_features must be >= 1")
        rng = np.random.default_rng([seed, 0x10C])
        self.aux: list[dict[str, torch.Tensor]] = []
        self.pool_sizes: list[tuple[int, ...] | None] = []
        for i in range(len(spec.blocks)):
            shape = spec.block_output_shape(i)
            pool = self._pool_size(shape)
            self.pool_sizes.append(pool)
            d = math.prod(shape) if pool is None else (shape[0] if len(shape) > 1 else 1) * math.prod(pool)
            b = 1.0 / math.sqrt(d)
            w = rng.uniform(-b, b, (spec.num_classes, d)).astype(np.float32)
            bias = rng.uniform(-b, b, (spec.num_classes,)).astype(np.float32)
            self.aux.append(
                {"weight": torch.tensor(w, requires_grad=True), "bias": torch.tensor(bias, requires_grad=True)}
            )
        self.optimizers = [
            make_optimizer(spec.rule.optimizer, [self.p[n] for n in names] + list(self.aux[i].values()))
            for i, names in enumerate(self.layer_names[:-1])
        ] + [self.optimizers[-1]]

    def _pool_size(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """Spatial output size of the auxiliary average pool, or None to just flatten."""
        if math.prod(shape) <= self.max_features:
            return None
        if len(shape) == 1:
            return (self.max_features,)
        spatial = shape[1:]
        per = max(1, self.max_features // shape[0])  # spatial positions allowed per channel
        side = max(1, int(per ** (1.0 / len(spatial))))
        return tuple(min(s, side) for s in spatial)

    def _aux_features(self, i: int, h: torch.Tensor) -> torch.Tensor:
        pool = self.pool_sizes[i]
        if pool is not None:
            if h.dim() == 2:
                h = F.adaptive_avg_pool1d(h[:, None, :], pool[0])
            elif h.dim() == 3:
                h = F.adaptive_avg_pool1d(h, pool[0])
            else:
                h = F.adaptive_avg_pool2d(h, pool)
        return h.reshape(h.shape[0], -1)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        yt = torch.as_tensor(np.asarray(y)).long()
        h = self._inputs(x)
        losses: dict[str, float] = {}
        grads: dict[str, torch.Tensor] = {}
        for i in range(len(self.spec.blocks)):
            out = block_forward(self.spec, i, h.detach(), self.p, train=True, generator=self.generator)
            aux = self.aux[i]
            loss = F.cross_entropy(F.linear(self._aux_features(i, out), aux["weight"], aux["bias"]), yt)
            names = self.layer_names[i]
            g = torch.autograd.grad(loss, [self.p[n] for n in names] + [aux["weight"], aux["bias"]])
            grads.update(zip(names, g[: len(names)], strict=True))
            aux["weight"].grad, aux["bias"].grad = g[len(names)], g[len(names) + 1]
            losses[f"block{i}"] = float(loss.detach())
            h = out.detach()
        loss = F.cross_entropy(head_forward(self.spec, h, self.p), yt)
        names = self.layer_names[-1]
        grads.update(zip(names, torch.autograd.grad(loss, [self.p[n] for n in names]), strict=True))
        losses["ce"] = float(loss.detach())
        self._step(grads)
        return losses


def make(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> _Base:
    """Trainer for ``spec.rule.name`` in bp, fa, dfa, local."""
    name = spec.rule.name
    if name == "bp":
        return BPTrainer(spec, params, seed)
    if name in ("fa", "dfa"):
        return FeedbackTrainer(spec, params, seed, direct=name == "dfa")
    if name == "local":
        return LocalTrainer(spec, params, seed)
    raise SpecError(f"edgesp.rules.baselines has no rule {name!r}; choose one of {', '.join(RULE_NAMES)}")
