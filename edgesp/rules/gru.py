"""Non-spiking reference ceiling for sequence data: a GRU (``torch.nn.GRU``) trained with BPTT.

Not an edgesp model (it has no :class:`~edgesp.spec.ModelSpec` layers, does not compile and writes no
checkpoint): it reads its sizes from a spiking sequence spec so that benchmarks can put it beside the spiking
rules on the same data — input channels = the spec's per-step input size, hidden size H = block 0's width,
layers = the number of blocks, classes = the spec's. Per sample, h[t] = GRU(x[t], h[t−1]) (torch's gate
equations, h[−1] = 0), logits = W_o h[T−1] + b_o, loss CE(logits, y), gradients by autograd through all T steps
(memory O(B·T·H)), Adam with the spec's optimizer settings, global gradient-norm clip ``clip`` (default 1).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgesp.errors import SpecError
from edgesp.spec import ModelSpec


class GRUBaseline:
    """The Trainer contract (:mod:`edgesp.rules`) for a GRU sized from ``spec``; ``params()`` uses torch's names."""

    def __init__(self, spec: ModelSpec, seed: int = 0, clip: float = 1.0) -> None:
        if spec.temporal is None or spec.temporal.encoding != "sequence":
            raise SpecError("the GRU baseline is for sequence data: build the spec with encoding 'sequence'")
        torch.manual_seed(seed)
        self.channels = int(np.prod(spec.block_input_shape()))
        self.hidden = int(np.prod(spec.block_output_shape(0)))
        self.gru = torch.nn.GRU(self.channels, self.hidden, num_layers=len(spec.blocks), batch_first=True)
        self.out = torch.nn.Linear(self.hidden, spec.num_classes)
        o = spec.rule.optimizer
        self.opt = torch.optim.Adam([*self.gru.parameters(), *self.out.parameters()], lr=o.lr, betas=o.betas, eps=o.eps)
        self.clip = clip

    def _logits(self, x: np.ndarray) -> torch.Tensor:
        xt = torch.as_tensor(np.asarray(x, np.float32))
        seq = xt.reshape(xt.shape[0], self.channels, -1).transpose(1, 2)  # B × T × channels
        h, _ = self.gru(seq)
        return self.out(h[:, -1])

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        self.opt.zero_grad()
        loss = F.cross_entropy(self._logits(x), torch.as_tensor(np.asarray(y)).long())
        loss.backward()
        params = [*self.gru.parameters(), *self.out.parameters()]
        torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.opt.step()
        return {"ce": float(loss.detach())}

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._logits(x).numpy()

    def params(self) -> dict[str, np.ndarray]:
        named = {f"gru.{k}": v for k, v in self.gru.state_dict().items()}
        named.update({f"out.{k}": v for k, v in self.out.state_dict().items()})
        return {k: v.detach().numpy().copy() for k, v in named.items()}
