"""Signal Propagation local losses (torch reference).

For a block with sample activations h (B×…) and target activations t, logits are
``Y = h_flat · t_flatᵀ / (τ · d)`` (d = activation size, τ = temperature; for conv activations this is
the mean over positions of per-position dot products, rescaled). Positives come from the *class*, not
from raw dot products of the previous targets (the reference code's norm-dependent choice):
``P_ij = 1[y_i = y_j]`` — exactly the maximisers of the cosine similarity of t_{i-1} whenever class
targets are distinct, which the signal generator guarantees at layer 0.

- ``v9``  (max_all): L = mean_i −Σ_j P_ij log softmax(Y_i)_j
- ``v14`` (max_rand): L = CE(Y, j_i), j_i a uniformly random positive of row i (seeded; truly random)
- ``v15`` (top-k): as v9 with M = the first min(k, #positives) positives of row i ranked by cosine
  similarity of the previous targets (never a negative, even with fewer than k same-class samples)
- ``v1``  (direct label): one target row per class: Y_ic = ⟨h_i, t_c⟩/(τ d), L = CE(Y, y)
- ``l2``: L = mean_i ‖h_i − t_{y_i}‖² / d

``codes`` = K > 1 (:class:`edgesp.spec.SPVariant`, loss v1 only): ``t_cls`` holds K rows per class (row
c·K + k), the class logit is the nearest code's, Y_ic = max_k ⟨h_i, t_{c,k}⟩/(τ d), and L = CE(Y, y): a
sample's positive is its class's nearest code, the negatives every other class's nearest code.

Target rows are supplied de-duplicated: ``t_cls`` holds one row per distinct class of the batch and
``inv`` maps each sample to its row (t = t_cls[inv]); this is exactly equal to the full-batch target
stream because a sample's target depends only on its class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positives(labels: torch.Tensor) -> torch.Tensor:
    """P_ij = 1[y_i = y_j] as float (B×B)."""
    return (labels[:, None] == labels[None, :]).float()


def sp_logits(h: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    hf, tf = h.reshape(h.shape[0], -1), t.reshape(t.shape[0], -1)
    return hf @ tf.T / (temperature * hf.shape[1])


def code_logits(h: torch.Tensor, t_codes: torch.Tensor, temperature: float, codes: int) -> torch.Tensor:
    """Class logits against K codes per class (rows c·K + k of ``t_codes``): max over each class's codes."""
    y = sp_logits(h, t_codes, temperature)
    return y.reshape(y.shape[0], -1, codes).amax(dim=2)


def sp_loss(
    kind: str,
    h: torch.Tensor,
    t_cls: torch.Tensor,
    inv: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor,
    *,
    temperature: float = 0.1,
    topk: int = 6,
    t_prev_cls: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    codes: int = 1,
) -> torch.Tensor:
    """Local loss of one block. ``classes`` are the class ids of the rows of ``t_cls``."""
    if codes > 1:
        if kind != "v1":
            raise ValueError(f"several target codes per class need loss v1, got {kind!r}")
        return F.cross_entropy(code_logits(h, t_cls, temperature, codes), labels)
    if kind == "l2":
        hf, tf = h.reshape(h.shape[0], -1), t_cls.reshape(t_cls.shape[0], -1)[inv]
        return ((hf - tf) ** 2).sum(1).mean() / hf.shape[1]
    if kind == "v1":
        y_cls = sp_logits(h, t_cls, temperature)  # B × U, columns = classes present
        return F.cross_entropy(y_cls, inv)
    y = sp_logits(h, t_cls, temperature)[:, inv]  # B × B, identical to h · t_fullᵀ
    pos = positives(labels)
    if kind == "v9":
        return -(pos * F.log_softmax(y, dim=1)).sum(1).mean()
    if kind == "v14":
        noise = torch.rand(pos.shape, generator=generator)
        pick = torch.argmax(pos * (noise + 1.0), dim=1)  # uniform over positives
        return F.cross_entropy(y, pick)
    if kind == "v15":
        if t_prev_cls is None:
            sim = pos
        else:
            tp = F.normalize(t_prev_cls.reshape(t_prev_cls.shape[0], -1), dim=1)
            sim = (tp @ tp.T)[inv][:, inv]
        score = torch.where(pos > 0, sim, torch.full_like(sim, -float("inf")))
        k = min(topk, pos.shape[1])
        idx = torch.topk(score, k, dim=1).indices
        mask = torch.zeros_like(pos).scatter_(1, idx, 1.0) * pos  # never a negative
        return -(mask * F.log_softmax(y, dim=1)).sum(1).mean()
    raise ValueError(f"unknown sigprop loss {kind!r}")
