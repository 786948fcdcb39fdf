"""More backprop alternatives, written from their formulas: ``ifa``, ``bdfa``, ``kp``, ``wm``, ``tp``, ``dtp``, ``dfc``.

Non-spiking models of the ``mlp`` and ``cnn1d`` presets (the formulas are written for any block of a parametric
layer followed by parameter-free layers, so cnn2d/vgg8 run too, but only mlp/cnn1d are tested and
benchmarked). Notation as in :mod:`edgesp.rules.baselines`: block l (0-based, l = 0..N-1) is

    a_l = W_l ⋆ h_{l-1} + b_l      (⋆: matrix product for Linear, convolution for Conv1d/Conv2d; h_{-1} = x)
    h_l = g_l(a_l)                 (LayerNorm, ReLU, pool, flatten: no weights)
    out = W_head h_{N-1} + b_head,  e = (softmax(out) − onehot(y)) / n   (n = batch size; ∂CE_mean/∂out)

J_l = ∂h_l/∂a_l is the Jacobian of g_l alone. ``J_lᵀ v`` (a vector-Jacobian product) and ``J_l v`` (a
Jacobian-vector product) are computed by autograd on g_l's graph only: g_l has no weights, so this is
the "⊙ f′(a_l)" of the formulas, generalised to LayerNorm and pooling. Every weight-gradient below is
written out: ΔW_l = δa_lᵀ h_{l-1} for Linear, ``conv*d_weight(h_{l-1}, δa_l)`` for conv (the same
correlation), Δb_l = Σ δa_l over batch (and positions). ΔW is what the optimizer gets
(``spec.rule.optimizer``; an update is W ← W − lr·ΔW for plain SGD). Conv blocks: every dense feedback
matrix (ifa's B_0, bdfa's B_l, tp/dtp's inverses, dfc's Q_l) acts on the *flattened* block tensor (h_l of
shape (C, L) is a vector of C·L numbers; dfc's Q_l: the flattened conv output a_l) and the result is
reshaped back. Where a rule sends an error through a kernel instead, it is a convolution: kp/wm's
B_l is a kernel of W_l's shape used as a transposed convolution, and ifa carries its error forward
with W_l's own convolution.

Rules (per block; the head gets its true gradient ΔW_head = eᵀ h_{N-1}, Δb_head = Σ e, except in dfc):

- ``ifa`` (indirect feedback alignment, Nøkland 2016): the error goes to block 0 only, then *forward*:
  δa_0 = J_0ᵀ (e B_0) (B_0: fixed random (C, |h_0|), drawn like DFA's), and for l ≥ 1
  δa_l = J_lᵀ J_l (W_l ⋆ (J_{l-1} δa_{l-1})): the perturbation δa_{l-1} carried forward through g_{l-1}
  and W_l (no bias), then gated by block l's Jacobian. With elementwise ReLU blocks (J = diag(f′), f′ ∈
  {0, 1}) this is exactly δa_l = (W_l δa_{l-1}) ⊙ f′(a_l).
- ``bdfa`` (bidirectional DFA, Luo et al. 2017): DFA's δh_l = e B_l, δa_l = J_lᵀ δh_l, but B_l (C, |h_l|)
  is learned: the feedback path is trained to produce the forward activity from the output,
  ĥ_l = p B_l with p = softmax(out), loss ½‖ĥ_l − h_l‖² / n, ΔB_l = pᵀ(ĥ_l − h_l) / n (given to an
  optimizer of the rule's kind). The paper puts an activation on the backward path; here it is linear.
- ``kp`` (Kolen–Pollack, Akrout et al. 2019 "without weight transport"): FA's backward pass
  (δh_{l-1} = δa_l B_l, the transposed convolution with B_l for conv, δh_{N-1} = e B_head) with learned
  B_l of W_l's shape: both receive the same increment, and both decay:
  W ← (1 − λ)(W + u), B ← (1 − λ)(B + u), where u is the optimizer's increment of W from ΔW (so for plain SGD
  u = −lr·δa_lᵀ h_{l-1}, the transposed ΔB_{l} ∝ h_{l-1} δa_lᵀ of the paper). Then W − B shrinks by
  (1 − λ) every step. λ = ``kp_decay`` (rule.params, default 1e-3 per step). Every layer that has a B
  (blocks 1..N-1 and the head; block 0 sends no error, so it has none) decays; biases and block 0 do not.
- ``wm`` (weight mirror, Akrout et al. 2019): FA's backward pass with learned B_l. Each training step
  also runs a mirror step: noise δ_{l-1} ~ N(0, σ²) of h_{l-1}'s shape (``wm_samples`` draws), the
  layer's response δ_l = W_l ⋆ δ_{l-1} (no bias), and ΔB_l = η_B (δ_l δ_{l-1}ᵀ / (σ² m) − B_l),
  B ← B + ΔB (for conv: the kernel correlation, m = draws × positions feeding each tap). Since
  E[δ_l δ_{l-1}ᵀ] = σ² W_l, B tracks W_l as a moving average of noisy mirror estimates.
  η_B = ``wm_lr`` (default 0.1), σ = ``wm_noise`` (1.0), ``wm_samples`` (128). B is stored in W's
  orientation, so this is the paper's ΔB_{l+1} = η_B δ_l δ_{l+1}ᵀ transposed, with its decay set to η_B
  and the estimate normalised by σ² m. The mirror step runs after the weights' step, at the new W.
- ``tp`` / ``dtp`` (target propagation / difference TP, Lee et al. 2015): the last block's target is a
  gradient step, ĥ_{N-1} = h_{N-1} − η̂ ε W_head with ε = softmax(out) − onehot(y) per sample; lower
  targets go through learned inverses g_l(h) = V_l h + c_l (flattened h_{l+1} → flattened h_l, linear):
  tp: ĥ_l = g_l(ĥ_{l+1});  dtp: ĥ_l = h_l + g_l(ĥ_{l+1}) − g_l(h_{l+1}).
  Block l minimises ½‖h_l − ĥ_l‖² / n with h_{l-1} and ĥ_l fixed: δh_l = (h_l − ĥ_l) / n, δa_l = J_lᵀ δh_l.
  Inverse g_l is trained on the noisy reconstruction loss ½‖g_l(f_{l+1}(h_l + ξ)) − (h_l + ξ)‖² / n,
  ξ ~ N(0, σ²): with r = g_l(f_{l+1}(h_l + ξ)) − (h_l + ξ), ΔV_l = rᵀ f_{l+1}(h_l + ξ) / n,
  Δc_l = Σ r / n (an optimizer of the rule's kind). η̂ = ``tp_target_lr`` (default 0.5),
  σ = ``tp_noise`` (default 0.3). The paper's inverses are tanh layers; here they are linear.
- ``dfc`` (deep feedback control, Meulemans et al. 2021): a leaky integral controller
  u_{t+1} = u_t + dt (e_t − α u_t), u_0 = 0, e_t = r* − out_t, target r* = out_ff − λ_t ε (ε per sample as
  in tp, out_ff the uncontrolled output), drives every layer through fixed feedback:
  a_l = W_l ⋆ h_{l-1} + b_l + Q_l u, h_l = g_l(a_l) (Q_l: fixed random (C, |a_l|) acting on the flattened
  pre-activation; for conv that is the conv output before LayerNorm), out = W_head h_{N-1} + b_head + u
  (the controller drives the output units directly: Q_head = I). The steady state is taken after a
  fixed K = ``dfc_steps`` (default 10) Euler iterations, dt = ``dfc_dt`` (0.5), α = ``dfc_alpha`` (0.1),
  λ_t = ``dfc_target`` (1.0). Update, with v_l = φ_l(a_l) the rate and φ_l the shape-keeping start of g_l
  (LayerNorm and activation; pooling and flatten come after it):
  ΔW_l = −(φ_l(a_l,ss) − φ_l(a_l,ss^ff)) ⋆ h_{l-1,ss} / n, a_l,ss^ff = W_l ⋆ h_{l-1,ss} + b_l (the same
  steady-state input without the controller's Q_l u), i.e. the paper's η (v_ss − v_ss^ff) r_{i-1,ss}ᵀ with the
  sign turned into a descent direction for the optimizer; for conv the rate difference is taken before
  pooling, where it has the kernel's output shape. The head (φ = identity): ΔW_head = −u_Kᵀ h_{N-1,ss} / n.
  Q is fixed random, Q_l = s·U(±1/√|a_l|) with s = ``dfc_q_scale`` (default 0.1): the paper's separate
  noisy feedback-learning phase for Q is not implemented. With random Q the loop gain J Q grows with the
  weights (the head's above all) and at s = 1 the integral controller lost stability on MNIST-1D/mlp
  after ~4 epochs (control error and CE blew up); the optimizer is Adam, so s does not change the
  update's direction in the linear regime, only how far the controller is from instability.

``alignment(x, y)`` on every trainer: per layer (``blocks.l.weight`` and ``head.weight``), the angle in degrees
between the rule's ΔW and backpropagation's ΔW (autograd of the mean CE) for the same batch and weights,
without changing any state. :func:`alignment_report` trains rules briefly and formats those angles.

Extra matrices (B, Q, V/c) are training-only state held in the trainer: they are not in ``params()``
(the spec has no names for them), so a checkpoint does not carry them and a resumed run redraws or
relearns them. The signal generator is unused; its parameters pass through ``params()`` unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgesp.errors import SpecError
from edgesp.functional import block_forward, head_forward, layer_forward
from edgesp.rules.baselines import _Base, _Cache
from edgesp.rules.optim import make_optimizer
from edgesp.spec import Conv1d, Conv2d, LayerNorm, LeakyReLU, Linear, ModelSpec, ReLU, Tanh

RULE_NAMES = ("ifa", "bdfa", "kp", "wm", "tp", "dtp", "dfc")

_DEFAULTS: dict[str, dict[str, float]] = {
    "ifa": {},
    "bdfa": {},
    "kp": {"kp_decay": 1e-3},
    "wm": {"wm_lr": 0.1, "wm_noise": 1.0, "wm_samples": 128},
    "tp": {"tp_target_lr": 0.5, "tp_noise": 0.3},
    "dtp": {"tp_target_lr": 0.5, "tp_noise": 0.3},
    "dfc": {"dfc_steps": 10, "dfc_dt": 0.5, "dfc_alpha": 0.1, "dfc_target": 1.0, "dfc_q_scale": 0.1},
}


# ----------------------------------------------------------------------------- explicit layer algebra
def _linear_part(layer: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """W ⋆ x without bias (Linear: x Wᵀ; conv: the layer's convolution)."""
    if isinstance(layer, Linear):
        return x @ w.T
    if isinstance(layer, Conv1d):
        return F.conv1d(x, w, None, layer.stride, layer.padding)
    if isinstance(layer, Conv2d):
        return F.conv2d(x, w, None, layer.stride, layer.padding)
    raise SpecError(f"no feedback rule for a block starting with {type(layer).__name__}")


def _weight_grad(layer: Any, h_in: torch.Tensor, da: torch.Tensor, wshape: tuple[int, ...]) -> torch.Tensor:
    """δaᵀ h_in for Linear; the same correlation over positions for conv (conv*d_weight)."""
    if isinstance(layer, Linear):
        return da.T @ h_in
    if isinstance(layer, Conv1d):
        return torch.nn.grad.conv1d_weight(h_in, wshape, da, layer.stride, layer.padding)
    if isinstance(layer, Conv2d):
        return torch.nn.grad.conv2d_weight(h_in, wshape, da, layer.stride, layer.padding)
    raise SpecError(f"no feedback rule for a block starting with {type(layer).__name__}")


def _input_grad(layer: Any, in_shape: tuple[int, ...], fb: torch.Tensor, da: torch.Tensor) -> torch.Tensor:
    """δa B for Linear; the transposed convolution with kernel B for conv."""
    if isinstance(layer, Linear):
        return da @ fb
    if isinstance(layer, Conv1d):
        return torch.nn.grad.conv1d_input(in_shape, fb, da, layer.stride, layer.padding)
    return torch.nn.grad.conv2d_input(in_shape, fb, da, layer.stride, layer.padding)


def _bias_dims(layer: Any) -> tuple[int, ...]:
    return (0,) if isinstance(layer, Linear) else (0, 2) if isinstance(layer, Conv1d) else (0, 2, 3)


def _vjp(out: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_gᵀ v on g's recorded graph (graph kept)."""
    (g,) = torch.autograd.grad(out, a, v, retain_graph=True)
    return g


def _jvp(out: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_g v on g's recorded graph, by differentiating the (linear in w) vjp wᵀJ_g with respect to w."""
    w = torch.zeros_like(out, requires_grad=True)
    (g,) = torch.autograd.grad(out, a, w, create_graph=True, retain_graph=True)
    (jv,) = torch.autograd.grad(g, w, v, retain_graph=True)
    return jv


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors as flat vectors, in degrees (90 if either is zero)."""
    a64, b64 = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = float(a64.norm()), float(b64.norm())
    if na == 0 or nb == 0:
        return 90.0
    c = float(a64 @ b64) / (na * nb)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


# ----------------------------------------------------------------------------- shared trainer
class _Rule(_Base):
    """Forward with per-block graphs of g_l, explicit weight gradients, alignment, extra optimizers."""

    name = ""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        self.name = spec.rule.name
        defaults = _DEFAULTS[self.name]
        unknown = set(spec.rule.params) - set(defaults)
        if unknown:
            known = ", ".join(sorted(defaults)) or "none"
            raise SpecError(f"rule {self.name!r} has no parameter(s) {sorted(unknown)}; it takes: {known}")
        self.rp: dict[str, float] = {k: float(spec.rule.params.get(k, v)) for k, v in defaults.items()}
        for k, v in self.rp.items():
            if not (math.isfinite(v) and v >= 0):
                raise SpecError(f"rule.params.{k} must be a finite number >= 0, got {v}")
        self.rng = np.random.default_rng([seed, 0xFB, RULE_NAMES.index(self.name)])
        self.noise = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        self.extra_optimizers: list[torch.optim.Optimizer] = []  # scaled by the lr schedule

    # -- shapes and draws
    def _in_shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.spec.input_shape) if i == 0 else tuple(self.spec.block_output_shape(i - 1))

    def _pre_shape(self, i: int) -> tuple[int, ...]:
        with torch.no_grad():
            z = torch.zeros((1, *self._in_shape(i)))
            return tuple(layer_forward(self.spec.blocks[i][0], z, self.p, f"blocks.{i}.").shape[1:])

    def _uniform(self, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        b = 1.0 / math.sqrt(fan_in)
        return torch.tensor(self.rng.uniform(-b, b, shape).astype(np.float32))

    def _layer_grads(self, i: int, h_in: torch.Tensor, da: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
        layer, prefix = self.spec.blocks[i][0], f"blocks.{i}."
        grads[prefix + "weight"] = _weight_grad(layer, h_in, da, tuple(self.p[prefix + "weight"].shape))
        if layer.bias:
            grads[prefix + "bias"] = da.sum(_bias_dims(layer))

    def _head_grads(self, h_last: torch.Tensor, e: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
        grads["head.weight"] = e.T @ h_last.reshape(e.shape[0], -1)
        if self.spec.head.bias:
            grads["head.bias"] = e.sum(0)

    @staticmethod
    def per_sample_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ε = softmax(out) − onehot(y) (not divided by the batch size)."""
        return torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).float()

    # -- the rule
    def compute(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, float], Any]:
        """(ΔW for every trainable tensor, losses, context for the rule's own extra updates)."""
        raise NotImplementedError

    def update_extra(self, ctx: Any) -> dict[str, float]:
        """The rule's updates of its own matrices (after the weights' step); returns extra losses."""
        return {}

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, torch.Tensor], float]:
        grads, losses, _ = self.compute(self._inputs(x), torch.as_tensor(np.asarray(y)).long())
        return grads, losses["ce"]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        grads, losses, ctx = self.compute(self._inputs(x), torch.as_tensor(np.asarray(y)).long())
        self._step(grads)
        losses.update(self.update_extra(ctx))
        return losses

    def set_lr_scale(self, scale: float) -> None:
        """Scale the weights' and the rule's own learned matrices' learning rates (base: first call)."""
        for opt in [*self.optimizers, *self.extra_optimizers]:
            for g in opt.param_groups:
                g.setdefault("edgesp_base_lr", g["lr"])
                g["lr"] = g["edgesp_base_lr"] * scale

    # -- diagnostic
    def bp_gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
        """Backpropagation's ΔW (autograd of the mean CE) at the current weights."""
        names = [n for names in self.layer_names for n in names]
        p = {k: v.detach().clone().requires_grad_(k in names) for k, v in self.p.items()}
        h = self._inputs(x)
        for i in range(len(self.spec.blocks)):
            h = block_forward(self.spec, i, h, p, train=True, generator=self.generator)
        loss = F.cross_entropy(head_forward(self.spec, h, p), torch.as_tensor(np.asarray(y)).long())
        return dict(zip(names, torch.autograd.grad(loss, [p[n] for n in names]), strict=True))

    def alignment(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Angle (degrees) between this rule's ΔW and BP's ΔW per layer weight; no state changes."""
        gen, noise = self.generator.get_state(), self.noise.get_state()
        grads, _ = self.gradients(x, y)
        self.generator.set_state(gen)
        bp = self.bp_gradients(x, y)
        self.generator.set_state(gen)
        self.noise.set_state(noise)
        names = [f"blocks.{i}.weight" for i in range(len(self.spec.blocks))] + ["head.weight"]
        return {n: angle_deg(grads[n], bp[n]) for n in names}


# ----------------------------------------------------------------------------- IFA
class IFATrainer(_Rule):
    """Indirect FA: DFA to block 0, then the error is carried forward (module docstring)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        d = math.prod(spec.block_output_shape(0))
        self.feedback = {"blocks.0": self._uniform((spec.num_classes, d), d)}

    def compute(self, x, y):  # noqa: ANN001, ANN201
        c = self.forward(x)
        e = (torch.softmax(c.logits, 1) - F.one_hot(y, c.logits.shape[1]).float()) / len(y)
        grads: dict[str, torch.Tensor] = {}
        self._head_grads(c.outs[-1].detach(), e, grads)
        da = _vjp(c.outs[0], c.pre[0], (e @ self.feedback["blocks.0"]).reshape(c.outs[0].shape))
        self._layer_grads(0, c.inputs[0], da, grads)
        for i in range(1, len(self.spec.blocks)):
            dh_prev = _jvp(c.outs[i - 1], c.pre[i - 1], da)  # J_{l-1} δa_{l-1}
            moved = _linear_part(self.spec.blocks[i][0], dh_prev, self.p[f"blocks.{i}.weight"].detach())
            da = _vjp(c.outs[i], c.pre[i], _jvp(c.outs[i], c.pre[i], moved))  # J_lᵀ J_l (W_l ⋆ ·)
            self._layer_grads(i, c.inputs[i], da, grads)
        return grads, {"ce": float(F.cross_entropy(c.logits, y))}, None


# ----------------------------------------------------------------------------- BDFA
class BDFATrainer(_Rule):
    """DFA with feedback B_l learned to reconstruct h_l from the output probabilities."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        self.learned_feedback: dict[str, torch.Tensor] = {}
        for i in range(len(spec.blocks)):
            d = math.prod(spec.block_output_shape(i))
            self.learned_feedback[f"blocks.{i}"] = self._uniform((spec.num_classes, d), d).requires_grad_(True)
        self.extra_optimizers = [make_optimizer(spec.rule.optimizer, self.learned_feedback.values())]

    def compute(self, x, y):  # noqa: ANN001, ANN201
        c = self.forward(x)
        e = (torch.softmax(c.logits, 1) - F.one_hot(y, c.logits.shape[1]).float()) / len(y)
        grads: dict[str, torch.Tensor] = {}
        self._head_grads(c.outs[-1].detach(), e, grads)
        for i in range(len(self.spec.blocks)):
            fb = self.learned_feedback[f"blocks.{i}"].detach()
            da = _vjp(c.outs[i], c.pre[i], (e @ fb).reshape(c.outs[i].shape))
            self._layer_grads(i, c.inputs[i], da, grads)
        ctx = (torch.softmax(c.logits, 1), [o.detach().reshape(len(y), -1) for o in c.outs])
        return grads, {"ce": float(F.cross_entropy(c.logits, y))}, ctx

    def update_extra(self, ctx: Any) -> dict[str, float]:
        prob, hs = ctx
        n, rec = prob.shape[0], 0.0
        for i, h in enumerate(hs):
            b = self.learned_feedback[f"blocks.{i}"]
            r = prob @ b.detach() - h  # ĥ_l − h_l
            b.grad = prob.T @ r / n
            rec += float(0.5 * (r**2).sum() / n)
        self.extra_optimizers[0].step()
        return {"feedback_rec": rec}


# ----------------------------------------------------------------------------- KP / WM
class MirrorTrainer(_Rule):
    """FA's backward pass with learned feedback B_l (W_l's shape): ``kp`` or ``wm`` (module docstring)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        self.learned_feedback: dict[str, torch.Tensor] = {}
        for prefix in [f"blocks.{i}" for i in range(1, len(spec.blocks))] + ["head"]:
            shape = tuple(self.p[prefix + ".weight"].shape)
            self.learned_feedback[prefix] = self._uniform(shape, math.prod(shape[1:])).requires_grad_(True)
        # B ← B + ΔB applied as one plain SGD step of lr 1 on −ΔB (not rescaled by the lr schedule: for kp
        # ΔB already carries the weights' scheduled lr)
        self.apply_feedback = torch.optim.SGD(list(self.learned_feedback.values()), lr=1.0)
        if self.name == "wm":
            self.ones_norm = {p: self._tap_counts(p) for p in self.learned_feedback}

    def _layer(self, prefix: str) -> Any:
        return self.spec.head if prefix == "head" else self.spec.blocks[int(prefix.split(".")[1])][0]

    def _layer_in_shape(self, prefix: str) -> tuple[int, ...]:
        if prefix == "head":
            return (self.spec.head.in_features,)
        return self._in_shape(int(prefix.split(".")[1]))

    def _tap_counts(self, prefix: str) -> torch.Tensor:
        """Per weight entry: how many (input, output) position pairs one sample contributes (1 for Linear)."""
        layer, shape = self._layer(prefix), tuple(self.p[prefix + ".weight"].shape)
        ones_in = torch.ones((1, *self._layer_in_shape(prefix)))
        ones_out = torch.ones_like(_linear_part(layer, ones_in, self.p[prefix + ".weight"].detach()))
        return _weight_grad(layer, ones_in, ones_out, shape)

    def compute(self, x, y):  # noqa: ANN001, ANN201
        c = self.forward(x)
        e = (torch.softmax(c.logits, 1) - F.one_hot(y, c.logits.shape[1]).float()) / len(y)
        grads: dict[str, torch.Tensor] = {}
        self._head_grads(c.outs[-1].detach(), e, grads)
        dh = (e @ self.learned_feedback["head"].detach()).reshape(c.outs[-1].shape)
        for i in reversed(range(len(self.spec.blocks))):
            da = _vjp(c.outs[i], c.pre[i], dh)
            self._layer_grads(i, c.inputs[i], da, grads)
            if i > 0:
                fb = self.learned_feedback[f"blocks.{i}"].detach()
                dh = _input_grad(self.spec.blocks[i][0], tuple(c.inputs[i].shape), fb, da)
        return grads, {"ce": float(F.cross_entropy(c.logits, y))}, None

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if self.name == "wm":
            return super().train_step(x, y)
        before = {p: self.p[p + ".weight"].detach().clone() for p in self.learned_feedback}
        out = super().train_step(x, y)
        lam = self.rp["kp_decay"]
        with torch.no_grad():
            for prefix, b in self.learned_feedback.items():
                w = self.p[prefix + ".weight"]
                u = w - before[prefix]  # the optimizer's increment of W
                b.grad = -((1.0 - lam) * u - lam * b)  # B ← (1 − λ)(B + u)
                w.mul_(1.0 - lam)  # W ← (1 − λ)(W + u)
        self.apply_feedback.step()
        return out

    def update_extra(self, ctx: Any) -> dict[str, float]:
        if self.name != "wm":
            return {}
        eta, sigma, m = self.rp["wm_lr"], self.rp["wm_noise"], max(1, int(self.rp["wm_samples"]))
        dist = 0.0
        for prefix, b in self.learned_feedback.items():
            layer, w = self._layer(prefix), self.p[prefix + ".weight"].detach()
            xi = sigma * torch.randn((m, *self._layer_in_shape(prefix)), generator=self.noise)
            resp = _linear_part(layer, xi, w)  # δ_l = W ⋆ δ_{l-1}
            est = _weight_grad(layer, xi, resp, tuple(w.shape)) / (sigma**2 * m * self.ones_norm[prefix])
            b.grad = -eta * (est - b.detach())
            dist += float(((b.detach() - w) ** 2).sum())
        self.apply_feedback.step()
        return {"mirror_dist": dist}


# ----------------------------------------------------------------------------- TP / DTP
class TPTrainer(_Rule):
    """Target propagation (``tp``) and difference target propagation (``dtp``) with learned linear inverses."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        self.inverses: list[dict[str, torch.Tensor]] = []
        for i in range(len(spec.blocks) - 1):
            d_lo, d_hi = math.prod(spec.block_output_shape(i)), math.prod(spec.block_output_shape(i + 1))
            self.inverses.append(
                {
                    "weight": self._uniform((d_lo, d_hi), d_hi).requires_grad_(True),
                    "bias": torch.zeros(d_lo, requires_grad=True),
                }
            )
        self.extra_optimizers = [make_optimizer(spec.rule.optimizer, list(g.values())) for g in self.inverses]

    def inverse(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """g_i: flattened h_{i+1} → flattened h_i."""
        g = self.inverses[i]
        return h.reshape(h.shape[0], -1) @ g["weight"].detach().T + g["bias"].detach()

    def targets(self, c: _Cache, y: torch.Tensor) -> list[torch.Tensor]:
        """ĥ_l for every block (flattened)."""
        n = len(self.spec.blocks)
        hs = [o.detach().reshape(len(y), -1) for o in c.outs]
        eps = self.per_sample_error(c.logits, y)
        t = [torch.empty(0)] * n
        t[-1] = hs[-1] - self.rp["tp_target_lr"] * (eps @ self.p["head.weight"].detach())
        for i in reversed(range(n - 1)):
            if self.name == "dtp":
                t[i] = hs[i] + self.inverse(i, t[i + 1]) - self.inverse(i, hs[i + 1])
            else:
                t[i] = self.inverse(i, t[i + 1])
        return t

    def compute(self, x, y):  # noqa: ANN001, ANN201
        c = self.forward(x)
        e = (torch.softmax(c.logits, 1) - F.one_hot(y, c.logits.shape[1]).float()) / len(y)
        grads: dict[str, torch.Tensor] = {}
        self._head_grads(c.outs[-1].detach(), e, grads)
        losses = {"ce": float(F.cross_entropy(c.logits, y))}
        for i, t in enumerate(self.targets(c, y)):
            diff = c.outs[i].detach().reshape(len(y), -1) - t
            losses[f"block{i}"] = float(0.5 * (diff**2).sum() / len(y))
            da = _vjp(c.outs[i], c.pre[i], (diff / len(y)).reshape(c.outs[i].shape))
            self._layer_grads(i, c.inputs[i], da, grads)
        return grads, losses, [o.detach() for o in c.outs]

    def update_extra(self, ctx: Any) -> dict[str, float]:
        hs: list[torch.Tensor] = ctx
        out: dict[str, float] = {}
        for i, g in enumerate(self.inverses):
            n = hs[i].shape[0]
            noisy = hs[i] + self.rp["tp_noise"] * torch.randn(hs[i].shape, generator=self.noise)
            with torch.no_grad():
                up = block_forward(self.spec, i + 1, noisy, self.p).reshape(n, -1)
                r = self.inverse(i, up) - noisy.reshape(n, -1)
            g["weight"].grad = r.T @ up / n
            g["bias"].grad = r.sum(0) / n
            self.extra_optimizers[i].step()
            out[f"inverse{i}"] = float(0.5 * (r**2).sum() / n)
        return out


# ----------------------------------------------------------------------------- DFC
class DFCTrainer(_Rule):
    """Deep feedback control with a leaky integral controller and fixed random Q_l (module docstring)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        if int(self.rp["dfc_steps"]) < 1:
            raise SpecError("rule.params.dfc_steps must be >= 1")
        self.pre_shapes = [self._pre_shape(i) for i in range(len(spec.blocks))]
        self.feedback = {
            f"blocks.{i}": self.rp["dfc_q_scale"] * self._uniform((spec.num_classes, math.prod(s)), math.prod(s))
            for i, s in enumerate(self.pre_shapes)
        }

    def controlled(self, x: torch.Tensor, u: torch.Tensor) -> _Cache:
        inject = [(u @ self.feedback[f"blocks.{i}"]).reshape(len(u), *s) for i, s in enumerate(self.pre_shapes)]
        c = self.forward(x, inject, graphs=False)
        c.logits = c.logits + u  # Q_head = I
        return c

    def steady_state(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, _Cache, torch.Tensor]:
        """(u_K, the controlled forward pass at u_K, the uncontrolled logits)."""
        dt, alpha = self.rp["dfc_dt"], self.rp["dfc_alpha"]
        with torch.no_grad():
            u = torch.zeros((len(y), self.spec.num_classes))
            c = self.controlled(x, u)
            ff = c.logits
            target = ff - self.rp["dfc_target"] * self.per_sample_error(ff, y)
            for _ in range(int(self.rp["dfc_steps"])):
                u = u + dt * ((target - c.logits) - alpha * u)
                c = self.controlled(x, u)
        return u, c, ff

    def rate(self, i: int, a: torch.Tensor) -> torch.Tensor:
        """φ_l: the layers of g_l up to the first one that changes the shape (pool, flatten) or is random."""
        out = a
        for layer in self.spec.blocks[i][1:]:
            if not isinstance(layer, (LayerNorm, ReLU, LeakyReLU, Tanh)):
                break
            out = layer_forward(layer, out, self.p, f"blocks.{i}.")
        return out

    def compute(self, x, y):  # noqa: ANN001, ANN201
        u, c, ff = self.steady_state(x, y)
        n = len(y)
        grads: dict[str, torch.Tensor] = {}
        self._head_grads(c.outs[-1], -u / n, grads)
        for i, s in enumerate(self.pre_shapes):
            a_ss = c.pre[i]
            a_ff = a_ss - (u @ self.feedback[f"blocks.{i}"]).reshape(n, *s)
            da = -(self.rate(i, a_ss) - self.rate(i, a_ff)) / n  # −(v_ss − v_ss^ff) / n
            self._layer_grads(i, c.inputs[i], da, grads)
        target = ff - self.rp["dfc_target"] * self.per_sample_error(ff, y)
        losses = {
            "ce": float(F.cross_entropy(ff, y)),
            "control_err": float((target - c.logits).norm(dim=1).mean()),
        }
        return grads, losses, None


# ----------------------------------------------------------------------------- factory and report
def make(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> _Rule:
    """Trainer for ``spec.rule.name`` in ifa, bdfa, kp, wm, tp, dtp, dfc."""
    name = spec.rule.name
    cls = {
        "ifa": IFATrainer,
        "bdfa": BDFATrainer,
        "kp": MirrorTrainer,
        "wm": MirrorTrainer,
        "tp": TPTrainer,
        "dtp": TPTrainer,
        "dfc": DFCTrainer,
    }.get(name)
    if cls is None:
        raise SpecError(f"edgesp.rules.feedback_rules has no rule {name!r}; choose one of {', '.join(RULE_NAMES)}")
    return cls(spec, params, seed)


def alignment_report(
    rules: tuple[str, ...] = RULE_NAMES,
    dataset: str = "digits",
    model: str = "mlp",
    epochs: int = 3,
    batch: int = 32,
    seed: int = 0,
    eval_batches: int = 4,
) -> str:
    """Train each rule for ``epochs`` (Adam 1e-3, default preset sizes) and return a table of the angle in
    degrees between its ΔW and BP's per layer, at initialisation and after training (mean over
    ``eval_batches`` test batches of size ``batch``), plus the final test accuracy. No CLI needed:
    ``print(alignment_report())``."""
    from edgesp.data import load_dataset
    from edgesp.functional import init_params
    from edgesp.presets import build_spec
    from edgesp.rules import make_trainer
    from edgesp.spec import RuleSpec

    ds = load_dataset(dataset)
    shape = ds.input_shape
    if model == "cnn1d" and len(shape) == 3:
        shape = (1, math.prod(shape))
    rows = []
    for rule in rules:
        spec = build_spec(model, shape, ds.num_classes, rule=RuleSpec(name=rule))
        tr = make_trainer(spec, init_params(spec, seed), seed)
        xtr = ds.x_train.reshape(len(ds.x_train), *spec.input_shape)
        xte = ds.x_test.reshape(len(ds.x_test), *spec.input_shape)

        def angles(tr: Any = tr, xte: np.ndarray = xte) -> dict[str, float]:
            per = [
                tr.alignment(xte[k * batch : (k + 1) * batch], ds.y_test[k * batch : (k + 1) * batch])
                for k in range(eval_batches)
            ]
            return {n: float(np.mean([d[n] for d in per])) for n in per[0]}

        start = angles()
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            idx = rng.permutation(len(xtr))
            for s in range(0, len(idx), batch):
                tr.train_step(xtr[idx[s : s + batch]], ds.y_train[idx[s : s + batch]])
        end = angles()
        acc = float((tr.predict(xte).argmax(1) == ds.y_test).mean())
        rows.append((rule, start, end, acc))
    layers = list(rows[0][1])
    head = ["rule", *(f"{n} init→trained" for n in layers), "test acc"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule, start, end, acc in rows:
        cells = [f"{start[n]:.0f}° → {end[n]:.0f}°" for n in layers]
        out.append("| " + " | ".join([rule, *cells, f"{acc:.3f}"]) + " |")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover - convenience
    print(alignment_report())
