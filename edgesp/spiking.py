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

The spike nonlinearity S(v, θ) can be swapped for training (``spike=``); every choice below has the
same forward value 1[v > θ] except :func:`smooth_spike`:

- :func:`heaviside` (default): a comparison, no gradient path at all.
- :func:`strict_spike`: forward 1[v > θ], backward *raises* — used by the SP rules, so any learning
  signal that would pass through the spike function is an error, not a silent surrogate.
- :func:`surrogate_spike`: forward 1[v > θ], backward σ'(k(v − θ))·k (sigmoid surrogate, slope k), for
  BPTT / RTRL baselines.
- :func:`smooth_spike`: s = σ(k(v − θ)) forward and backward (a differentiable unit; exact gradients,
  used to check RTRL against BPTT and finite differences). Not a spiking neuron.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgesp.spec import LIF

SpikeFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class LIFState:
    u: torch.Tensor
    v: torch.Tensor

    @classmethod
    def zeros(cls, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> LIFState:
        return cls(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))

    def detached(self) -> LIFState:
        return LIFState(self.u.detach(), self.v.detach())


def heaviside(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """s = 1[v > θ] with no gradient path."""
    return (v > threshold).to(v.dtype)


class SpikeDerivativeUsed(RuntimeError):
    """Raised when a learning signal tries to pass through the spike function S."""


class _StrictSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor, threshold: float) -> torch.Tensor:
        return (v > threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        raise SpikeDerivativeUsed("a gradient reached the spike function S (its derivative must never be used)")


def strict_spike(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """s = 1[v > θ]; the spike stays in the autograd graph, but backpropagating through it raises."""
    return _StrictSpike.apply(v, threshold)


def surrogate_spike(slope: float = 5.0) -> SpikeFn:
    """Straight-through sigmoid surrogate: forward exactly 1[v > θ], dS/dv := k·σ(k(v−θ))·(1 − σ(k(v−θ)))."""

    def spike(v: torch.Tensor, threshold: float) -> torch.Tensor:
        soft = torch.sigmoid(slope * (v - threshold))
        return (v > threshold).to(v.dtype) + (soft - soft.detach())

    return spike


def smooth_spike(slope: float = 5.0) -> SpikeFn:
    """s = σ(k(v − θ)) forward and backward (a smooth, exactly differentiable unit)."""

    def spike(v: torch.Tensor, threshold: float) -> torch.Tensor:
        return torch.sigmoid(slope * (v - threshold))

    return spike


def lif_step(
    layer: LIF, a: torch.Tensor, state: LIFState, spike: SpikeFn | None = None
) -> tuple[torch.Tensor, torch.Tensor, LIFState]:
    u = (1.0 - layer.du) * state.u + a
    v = (1.0 - layer.dv) * state.v + u + layer.bias
    if not layer.spiking:
        return v, v, LIFState(u, v)
    s = heaviside(v, layer.threshold) if spike is None else spike(v, layer.threshold)
    if layer.reset == "zero":
        v_next = v * (1.0 - s)
    else:
        v_next = v - layer.threshold * s
    return s, v, LIFState(u, v_next)
