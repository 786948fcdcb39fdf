"""Per-layer optimizers built from :class:`edgesp.spec.OptimizerSpec`.

SGD: m ← μ·m + (g + λ·W); W ← W − lr·m (torch.optim.SGD, dampening 0).
Adam: m ← β1·m + (1−β1)·g', v ← β2·v + (1−β2)·g'², W ← W − lr·m̂/(√v̂ + ε), g' = g + λ·W,
m̂ = m/(1−β1^k), v̂ = v/(1−β2^k) (torch.optim.Adam).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from edgesp.spec import OptimizerSpec


def make_optimizer(
    spec: OptimizerSpec, params: Iterable[torch.Tensor], lr_scale: float = 1.0, fused: bool = False
) -> torch.optim.Optimizer:
    """``fused`` (Adam only): torch's fused CPU kernel, the same update in one pass over all tensors (float32
    results may differ from the default per-tensor kernel in the last bit)."""
    params = list(params)
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr * lr_scale, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(
        params,
        lr=spec.lr * lr_scale,
        betas=spec.betas,
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        fused=fused or None,
    )
