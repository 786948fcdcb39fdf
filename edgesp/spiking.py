"""Discrete-time LIF semantics (the reference every spiking backend matches).

State per LIF layer: current u and voltage v (same shape as the layer's input activation a[t]).
One step (see :class:`edgesp.spec.LIF`):

    u ← (1 − du)·u + a
    v ← (1 − dv)·v + u + bias
    s = 1[v > threshold]                          (spiking=False: s = v, no reset)
    v ← v·(1 − s) (reset 'zero')  |  v − threshold·s (reset 'subtract')

``lif_step`` returns (s, v_pre_reset, new_state); v_pre_reset is the membrane potential the sp-voltage
rule reads. Fixed point (Loihi 2): du, dv as 12-bit integers D (decay factor (4096 − D)/4096), u and v
signed 24-bit, weights 8-bit mantissas × 2^exponent; see compilers/lava for the bit-accurate version.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgesp.spec import LIF


@dataclass
class LIFState:
    u: torch.Tensor
    v: torch.Tensor

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> LIFState:
        return cls(torch.zeros(shape), torch.zeros(shape))

    def detached(self) -> LIFState:
        return LIFState(self.u.detach(), self.v.detach())


def lif_step(layer: LIF, a: torch.Tensor, state: LIFState) -> tuple[torch.Tensor, torch.Tensor, LIFState]:
    u = (1.0 - layer.du) * state.u + a
    v = (1.0 - layer.dv) * state.v + u + layer.bias
    if not layer.spiking:
        return v, v, LIFState(u, v)
    s = (v > layer.threshold).to(v.dtype)
    if layer.reset == "zero":
        v_next = v * (1.0 - s)
    else:
        v_next = v - layer.threshold * s
    return s, v, LIFState(u, v_next)
