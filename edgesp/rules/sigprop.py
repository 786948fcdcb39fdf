"""Signal Propagation for continuous networks (torch reference trainer).

One training step on a batch (x, y):

1. Signal: for the distinct classes U of the batch (``classes``, ``inv`` with y = classes[inv]),
   z = act(LayerNorm(W_S·onehot(c) + b_S)) (U rows, not B; :func:`edgesp.functional.signal_forward`).
   - hidden placement (default): z *is* the target stream after block 0, t_1 = z. Block 0 runs on the
     sample only, h_1 = f_0(x), and L_1 = sp_loss(h_1, t_1) updates block 0 and W_S, b_S with one
     optimizer (both are layer 1): the label is embedded where the sample already has features.
   - input placement: t_0 = z shaped like x; if ``learned``, L_0 = sp_loss(x, t_0) updates W_S, b_S
     (the sample stream x has no parameters at layer 0); block 0 then sees both streams.
2. For each remaining block i: h_i = f_i(h_{i−1}.detach()), t_i = f_i(t_{i−1}.detach()) with the same
   weights; L_i = sp_loss(h_i, t_i); θ_i ← opt_i(θ_i, ∂L_i/∂θ_i). The gradient crosses no block boundary.
3. Head: logits = W_o·h_N.detach() + b_o, L_out = CE(logits, y), its own optimizer.

Prediction uses blocks + head only (no target). Because a sample's target depends only on its class,
computing the target stream for the U distinct classes and indexing with ``inv`` gives exactly the same
losses and gradients as the full B-row target stream (``dedup=False`` computes the latter, for tests).
Dropout acts on the sample stream only.

Opt-in variants (``spec.rule.variant``, :class:`edgesp.spec.SPVariant`; the default is plain SP above):

- ``codes`` = K > 1 (**pure SP**): the signal makes K codes per class (W_S has C·K columns); all C·K codes
  run through the target stream (t_{i+1} = f_i(t_i), same weights), and each block's v1 loss uses the
  class logit max_k ⟨h, t_{c,k}⟩/(τd): a sample's positive is its class's nearest code.
- ``free_targets`` (**not pure SP**): block i ≥ 1 is trained against its own learned class target
  z_i = act(LayerNorm(T_i·onehot + b_i)) shaped like its output, updated with block i under L_i, instead of
  f_i(t_{i−1}). Block 0's target is the signal, as in plain SP.
- ``aux`` = λ > 0 (**hybrid, not pure SP**): L_i += λ·CE(A_i(pool(h_i)), y) with a per-block linear
  classifier A_i (local learning's 'pred'), updated with block i. Targets stay pure SP.
- ``predict='nearest'``: logits = each class's (nearest code's) similarity to the last block's output.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgesp.functional import (
    block_forward,
    head_forward,
    layer_norm,
    predict_logits,
    signal_forward,
    to_torch,
)
from edgesp.losses import code_logits, sp_logits, sp_loss
from edgesp.rules.optim import make_optimizer
from edgesp.spec import ModelSpec


class SigpropTrainer:
    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0, dedup: bool = True):
        self.spec = spec
        self.dedup = dedup
        self.variant = spec.rule.variant
        self.p = to_torch(params, requires_grad=True)
        self.generator = torch.Generator().manual_seed(seed)
        opt = spec.rule.optimizer
        self.optims: dict[int, torch.optim.Optimizer] = {}
        groups: dict[int, list[torch.Tensor]] = {}
        for name, t in self.p.items():
            layer = spec.param_layer_index(name)
            if name.startswith("signal.") and spec.signal.kind == "fixed":
                t.requires_grad_(False)
                continue
            groups.setdefault(layer, []).append(t)
        for layer, ts in groups.items():
            self.optims[layer] = make_optimizer(opt, ts)
        self.base_lr = {k: [g["lr"] for g in o.param_groups] for k, o in self.optims.items()}

    def set_lr_scale(self, scale: float) -> None:
        """Multiply every layer's base learning rate by ``scale`` (a host-side schedule)."""
        for k, o in self.optims.items():
            for g, lr in zip(o.param_groups, self.base_lr[k], strict=True):
                g["lr"] = lr * scale

    # ------------------------------------------------------------------ helpers
    def _targets(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the target stream and the index of each sample's row."""
        if self.spec.rule.loss == "v1":  # direct label needs every class's target
            return torch.arange(self.spec.num_classes), y
        if not self.dedup:
            return y, torch.arange(len(y))
        classes, inv = torch.unique(y, return_inverse=True)
        return classes, inv

    def _loss(
        self,
        h: torch.Tensor,
        t: torch.Tensor,
        inv: torch.Tensor,
        y: torch.Tensor,
        rows: torch.Tensor,
        t_prev: torch.Tensor | None,
    ) -> torch.Tensor:
        r = self.spec.rule
        return sp_loss(
            r.loss,
            h,
            t,
            inv,
            y,
            rows,
            temperature=r.temperature,
            topk=r.topk,
            t_prev_cls=t_prev,
            generator=self.generator,
            codes=self.variant.codes,
        )

    def _generate(self, prefix: str, idx: torch.Tensor, n_cols: int, shape: tuple[int, ...]) -> torch.Tensor:
        """act(LayerNorm(W·onehot(idx) + b)) for the generator ``prefix`` (signal with codes, free targets)."""
        onehot = F.one_hot(idx.long(), n_cols).float()
        t = layer_norm(F.linear(onehot, self.p[prefix + "weight"], self.p[prefix + "bias"]), 1e-5)
        if self.spec.signal.activation == "relu":
            t = F.relu(t)
        if prefix == "signal." and self.spec.signal.shape == "channel":
            t = t.reshape(len(idx), shape[0], *([1] * (len(shape) - 1))).expand(len(idx), *shape)
        return t.reshape(len(idx), *shape)

    def _signal(self, rows: torch.Tensor) -> torch.Tensor:
        """The signal's rows for ``rows`` (classes): one per class, or K codes per class (row c·K + k)."""
        k = self.variant.codes
        if k == 1:
            return signal_forward(self.spec, rows, self.p)
        return self._generate("signal.", self._code_cols(rows), self.spec.num_classes * k, self.spec.signal_shape())

    def _code_cols(self, rows: torch.Tensor) -> torch.Tensor:
        k = self.variant.codes
        return (rows[:, None] * k + torch.arange(k)[None, :]).reshape(-1)

    def _free_target(self, i: int, rows: torch.Tensor) -> torch.Tensor:
        """Block i's own learned target for ``rows`` (K codes per class: row c·K + k)."""
        n = self.spec.num_classes * self.variant.codes
        return self._generate(f"targets.{i}.", self._code_cols(rows), n, self.spec.block_output_shape(i))

    def _aux_loss(self, i: int, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = self.variant
        f = h.flatten(2).mean(2) if v.aux_pool == "channel" and h.dim() > 2 else h.reshape(h.shape[0], -1)
        logits = F.linear(f, self.p[f"aux.{i}.weight"], self.p[f"aux.{i}.bias"])
        return v.aux * F.cross_entropy(logits, y)

    def _block_loss(self, i, h, t, inv, y, rows, t_prev) -> torch.Tensor:  # noqa: ANN001
        loss = self._loss(h, t, inv, y, rows, t_prev)
        if self.variant.aux:
            loss = loss + self._aux_loss(i, h, y)
        return loss

    def _update(self, layer: int, loss: torch.Tensor) -> None:
        opt = self.optims.get(layer)
        if opt is None:
            return
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # ------------------------------------------------------------------ contract
    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        spec = self.spec
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        rows, inv = self._targets(yt)
        losses: dict[str, float] = {}

        t = self._signal(rows)
        t_prev = F.one_hot(rows, spec.num_classes).float()
        first = 0
        if spec.signal.hidden:  # t_1 = z; block 0 and the signal learn from one loss (layer 1)
            h1 = block_forward(spec, 0, xt, self.p, train=True, generator=self.generator)
            l1 = self._block_loss(0, h1, t, inv, yt, rows, t_prev)
            self._update(1, l1)
            losses["loss_1"] = float(l1.detach())
            h, t, first = h1.detach(), t.detach(), 1
        else:
            if spec.signal.kind == "learned":
                l0 = self._loss(xt, t, inv, yt, rows, t_prev)
                self._update(0, l0)
                losses["loss_0"] = float(l0.detach())
            h, t = xt, t.detach()
        for i in range(first, len(spec.blocks)):
            h_new = block_forward(spec, i, h, self.p, train=True, generator=self.generator)
            if self.variant.free_targets:
                t_new = self._free_target(i, rows)
            else:
                t_new = block_forward(spec, i, t, self.p, train=True, sample_stream=False)
            li = self._block_loss(i, h_new, t_new, inv, yt, rows, t)
            self._update(i + 1, li)
            losses[f"loss_{i + 1}"] = float(li.detach())
            h, t = h_new.detach(), t_new.detach()
        logits = head_forward(spec, h, self.p)
        lo = F.cross_entropy(logits, yt)
        self._update(len(spec.blocks) + 1, lo)
        losses[f"loss_{len(spec.blocks) + 1}"] = float(lo.detach())
        return losses

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(x, dtype=torch.float32)
        if self.variant.predict == "nearest":
            return self.nearest_logits(xt).numpy()
        return predict_logits(self.spec, xt, self.p).numpy()

    @torch.no_grad()
    def predict_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the output layer (blocks + head), whatever ``variant.predict`` says."""
        return predict_logits(self.spec, x, self.p)

    def last_targets(self) -> torch.Tensor:
        """The last block's target for every class (C·K rows with K codes), as seen in training."""
        spec, n = self.spec, len(self.spec.blocks)
        classes = torch.arange(spec.num_classes)
        if self.variant.free_targets and n > 1:
            return self._free_target(n - 1, classes)
        t = self._signal(classes)
        for i in range(spec.signal_layer, n):
            t = block_forward(spec, i, t, self.p)
        return t

    @torch.no_grad()
    def nearest_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Y_c = max_k ⟨h_N, t_{N,c,k}⟩/(τd): the class whose (nearest) target is most similar."""
        h = x
        for i in range(len(self.spec.blocks)):
            h = block_forward(self.spec, i, h, self.p)
        t = self.last_targets()
        tau = self.spec.rule.temperature
        k = self.variant.codes
        return code_logits(h, t, tau, k) if k > 1 else sp_logits(h, t, tau)

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.p.items()}


def make(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> SigpropTrainer:
    return SigpropTrainer(spec, params, seed)
