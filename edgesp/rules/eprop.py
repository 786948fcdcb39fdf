"""e-prop (Bellec et al. 2020, "A solution to the learning dilemma for recurrent networks of spiking neurons"):
the standard online learning rule for recurrent SNNs, here the online baseline SP is measured against.

Model: the spec's (Linear → LIF) blocks, recurrent or not, and its readout (:mod:`edgesp.snn`). Per block,
with presynaptic vector x̃[t] = [x[t], 1, s[t−1]] (input, bias, own previous spikes if recurrent; I' entries) and
the CUBA neuron's two low-pass stages (reset ignored, as in the paper's LIF):

    ε_u[t] = (1−du) ε_u[t−1] + x̃[t];   ε_v[t] = (1−dv) ε_v[t−1] + ε_u[t]      (presynaptic traces, B·I')
    e_ji[t] = ψ_j[t] · ε_v,i[t],   ψ_j = k σ'(k (v_j[t] − θ))                     (eligibility trace; the
                                                                                   same surrogate slope k as bptt)
    ē_ji[t] = κ ē_ji[t−1] + e_ji[t]      (κ = the readout decay 1 − dv_o: the filter the readout applies;
                                          per synapse and sample, B·H·I')
    L_j[t]  = Σ_k B_jk (softmax(logits[t]) − onehot(y))_k                         (learning signal)
    ΔW̃_ji  ∝ − Σ_t L_j[t] ē_ji[t]       (W̃ = [W, b, W_rec]; Adam, per layer)

``eprop_feedback`` (rule parameter): 'symmetric' (default; B = W_headᵀ, the current readout weights, for the
last block; earlier blocks, which have no readout of their own, get a fixed random B ~ N(0, 1/H)) or 'random'
(fixed random B for every block, the paper's "random e-prop"). ``eprop_loss``: 'every' (default: the CE of the
readout at every step, E = (1/T) Σ_t CE[t]) or 'final' (the CE at step T only, as bptt). The head learns from
the same CE with its input (the readout trace) detached. The update is applied every ``update_every`` = k steps
(default T: once per sequence). Memory: the neuron state, ε_u, ε_v (B·I' each) and ē (B·H·I') per block — flat
in T, nothing of past steps is stored; no gradient ever passes through the spike (ψ is a pseudo-derivative
used as a factor, not autograd through S).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgesp.encoding import Encoder
from edgesp.errors import SpecError
from edgesp.rules.spiking_rules import _SpikingTrainer
from edgesp.snn import Readout, empty_readout
from edgesp.spec import LIF, Linear, ModelSpec

FEEDBACK = ("symmetric", "random")
LOSSES = ("every", "final")


class EpropTrainer(_SpikingTrainer):
    """e-prop on a (Linear → LIF) × depth spiking model; see the module docstring."""

    known_params = frozenset({"surrogate_slope", "update_every", "eprop_feedback", "eprop_loss"})

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        for i, block in enumerate(spec.blocks):
            if len(block) != 2 or not isinstance(block[0], Linear) or not isinstance(block[1], LIF):
                raise SpecError(f"e-prop needs (Linear → LIF) blocks (--model snn); block {i} is not")
            if not block[1].spiking:
                raise SpecError(f"e-prop needs spiking LIF neurons; block {i} is non-spiking")
        self.slope = float(self.rp.get("surrogate_slope", 5.0))
        self.feedback = str(self.rp.get("eprop_feedback", "symmetric"))
        if self.feedback not in FEEDBACK:
            raise SpecError(f"eprop_feedback must be one of {', '.join(FEEDBACK)}, got {self.feedback!r}")
        self.loss_kind = str(self.rp.get("eprop_loss", "every"))
        if self.loss_kind not in LOSSES:
            raise SpecError(f"eprop_loss must be one of {', '.join(LOSSES)}, got {self.loss_kind!r}")
        self.every = int(self.rp.get("update_every", self.T))
        if self.every < 1:
            raise SpecError(f"update_every must be >= 1, got {self.every}")
        g = torch.Generator().manual_seed(seed + 4099)
        self.B: list[torch.Tensor] = []
        for i in range(len(spec.blocks)):
            h = spec.block_output_shape(i)[0]
            self.B.append(torch.randn((spec.num_classes, h), generator=g) / np.sqrt(h))

    def _feedback(self, i: int) -> torch.Tensor:
        if self.feedback == "symmetric" and i == len(self.spec.blocks) - 1:
            return self.p["head.weight"].detach()
        return self.B[i]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        spec = self.spec
        xt, yt = self._inputs(x, y)
        batch = xt.shape[0]
        enc = Encoder(spec, xt, self.gen)
        onehot = F.one_hot(yt, spec.num_classes).to(xt.dtype)
        n = len(spec.blocks)
        st: list[dict[str, Any]] = [{} for _ in range(n)]
        grads = {k: torch.zeros_like(v) for k, v in self.p.items() if k.startswith("blocks.")}
        ro: Readout = empty_readout(spec, batch, xt)
        ce_sum, n_loss, pending = 0.0, 0, 0
        self._zero()
        with torch.no_grad():
            for t in range(self.T):
                h = enc.step(t).reshape(batch, -1)
                for i in range(n):
                    h = self._block(i, h, st[i], batch)
                ro = ro.step(h, self.decay)
                if self.loss_kind == "every" or t == self.T - 1:
                    feats = ro.features(spec)
                    if t == self.T - 1:
                        self._observe_readout(feats)
                    with torch.enable_grad():
                        logits = ro.logits(spec, self.p, feats)
                        ce = F.cross_entropy(logits, yt)
                        ce.backward()  # head only: feats is a constant
                    err = torch.softmax(logits.detach(), dim=1) - onehot
                    for i in range(n):
                        lsig = err @ self._feedback(i)  # B × H
                        gw = torch.einsum("bh,bhi->hi", lsig, st[i]["ebar"]) / batch
                        self._accumulate(i, gw, grads)
                    ce_sum += float(ce)
                    n_loss += 1
                    pending += 1
                if (t + 1) % self.every == 0 or t == self.T - 1:
                    self._apply(grads, pending)
                    pending = 0
        return {"ce": ce_sum / max(n_loss, 1)}

    def _block(self, i: int, x: torch.Tensor, s: dict[str, Any], batch: int) -> torch.Tensor:
        """One step of block i (Linear → LIF) with its traces; returns the spikes."""
        lif = self.spec.blocks[i][1]
        assert isinstance(lif, LIF)
        pre = f"blocks.{i}."
        w, b, r = self.p[pre + "weight"], self.p.get(pre + "bias"), self.p.get(pre + "rec_weight")
        hdim = w.shape[0]
        if not s:
            s["u"], s["v"], s["s"] = (x.new_zeros((batch, hdim)) for _ in range(3))
        parts = [x]
        if b is not None:
            parts.append(x.new_ones((batch, 1)))
        if r is not None:
            parts.append(s["s"])
        xt = torch.cat(parts, dim=1)
        a = F.linear(x, w, b)
        if r is not None:
            a = a + F.linear(s["s"], r)
        u = (1 - lif.du) * s["u"] + a
        v = (1 - lif.dv) * s["v"] + u + lif.bias
        spikes = (v > lif.threshold).to(v.dtype)
        sg = torch.sigmoid(self.slope * (v - lif.threshold))
        psi = self.slope * sg * (1 - sg)
        eu = xt if "eu" not in s else (1 - lif.du) * s["eu"] + xt
        ev = eu if "ev" not in s else (1 - lif.dv) * s["ev"] + eu
        e = psi[:, :, None] * ev[:, None, :]
        s["ebar"] = e if "ebar" not in s else self.decay * s["ebar"] + e
        s["u"], s["eu"], s["ev"], s["s"] = u, eu, ev, spikes
        s["v"] = v * (1 - spikes) if lif.reset == "zero" else v - lif.threshold * spikes
        return spikes

    def _accumulate(self, i: int, gw: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
        pre = f"blocks.{i}."
        n_in = self.p[pre + "weight"].shape[1]
        grads[pre + "weight"] += gw[:, :n_in]
        col = n_in
        if pre + "bias" in grads:
            grads[pre + "bias"] += gw[:, col]
            col += 1
        if pre + "rec_weight" in grads:
            grads[pre + "rec_weight"] += gw[:, col:]

    def _apply(self, grads: dict[str, torch.Tensor], pending: int) -> None:
        """Set every block's .grad to the accumulated e-prop sum / the number of loss steps since the last
        update (the gradient estimate of their mean CE), scale the head's accumulated autograd sum the same
        way, step."""
        scale = 1.0 / max(pending, 1)
        for k, g in grads.items():
            self.p[k].grad = g * scale
            g.zero_()
        for k, v in self.p.items():
            if k.startswith("head.") and v.grad is not None:
                v.grad.mul_(scale)
        self._step()
        self._zero()


def make(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> EpropTrainer:
    return EpropTrainer(spec, params, seed)
