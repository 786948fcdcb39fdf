"""Network-level stepping of a spiking :class:`ModelSpec` through time (torch reference).

Per time step t, block i maps its input x_i[t] (spikes of block i−1, or the encoded input for block 0):

    a_i[t] = W_i x_i[t] + b_i
    then the block's parameter-free layers in order; a LIF layer is stepped by :func:`edgesp.spiking.lif_step`
    and its pre-reset membrane v_i[t] is recorded (the last LIF of the block is the block's "membrane").
    A recurrent LIF (``LIF.recurrent``; block i owns ``blocks.{i}.rec_weight`` W_rec, H×H) adds its own spikes of
    the previous step to its input current, one-step delay and s_i[−1] = 0:
    a_i[t] = W_i x_i[t] + b_i + W_rec s_i[t−1].

Readout (``spec.temporal.readout``) of the last block's output s_N[t], into the Linear head (W_h, b_h):

- ``membrane``: a non-spiking integrator LIF(du=1, dv=dv_o, spiking=False) driven by W_h s_N[t] + b_h;
  logits = v_o[T] = Σ_t (1−dv_o)^{T−t} (W_h s_N[t] + b_h) = W_h e[T] + β[T] b_h, with the trace
  e[t] = (1−dv_o) e[t−1] + s_N[t] and β[t] = (1−dv_o) β[t−1] + 1. dv_o is the dv of the last LIF of the
  last block (0.2 if it has none). Being linear, the head needs only e and β (no stored steps).
- ``spike_count``: logits = W_h (Σ_t s_N[t] / T) + b_h (the spike count as a rate, so logits do not
  scale with T).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from edgesp.encoding import Encoder, num_steps
from edgesp.functional import Params, head_forward, layer_forward
from edgesp.spec import LIF, ModelSpec
from edgesp.spiking import LIFState, SpikeFn, lif_step


@dataclass
class BlockState:
    """Neuron state of one block for one stream: LIF states by layer index, and the previous spikes
    s[t−1] of the block's recurrent LIF (only kept when the block is recurrent)."""

    lif: dict[int, LIFState] = field(default_factory=dict)
    prev_out: torch.Tensor | None = None

    def detached(self) -> BlockState:
        return BlockState(
            {j: s.detached() for j, s in self.lif.items()}, None if self.prev_out is None else self.prev_out.detach()
        )


def block_step(
    spec: ModelSpec,
    i: int,
    x: torch.Tensor | None,
    params: Params,
    state: BlockState,
    spike: SpikeFn | None = None,
    current: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, BlockState]:
    """One time step of block i on a batch. Returns (output, membrane of the last LIF (or the output if
    the block has none), new state). The caller decides what to detach. ``current`` replaces the
    parametric layer's output a_i[t] (used when a target enters directly at the first hidden layer)."""
    block = spec.blocks[i]
    prefix = f"blocks.{i}."
    if current is not None:
        h = current
    else:
        assert x is not None
        h = layer_forward(block[0], x, params, prefix)
    v_last = None
    new = BlockState()
    for j, layer in enumerate(block[1:], 1):
        if isinstance(layer, LIF):
            if layer.recurrent and state.prev_out is not None:  # s[−1] = 0: nothing to add at the first step
                h = h + F.linear(state.prev_out, params[prefix + "rec_weight"])
            st = state.lif.get(j)
            if st is None:
                st = LIFState(h.new_zeros(h.shape), h.new_zeros(h.shape))
            h, v_last, new.lif[j] = lif_step(layer, h, st, spike)
            if layer.recurrent:
                new.prev_out = h
        else:
            h = layer_forward(layer, h, params, prefix)
    return h, (h if v_last is None else v_last), new


def readout_decay(spec: ModelSpec) -> float:
    """Per-step decay of the readout trace: 1 − dv_o (membrane) or 1 (spike count)."""
    assert spec.temporal is not None
    if spec.temporal.readout == "spike_count":
        return 1.0
    lifs = [la for la in spec.blocks[-1] if isinstance(la, LIF)]
    return 1.0 - (lifs[-1].dv if lifs else 0.2)


@dataclass
class Readout:
    """Trace e[t] of the last block's output and the bias factor β[t] (see module docstring)."""

    e: torch.Tensor
    beta: float = 0.0
    steps: int = 0

    def step(self, s: torch.Tensor, decay: float) -> Readout:
        return Readout(decay * self.e + s.reshape(s.shape[0], -1), decay * self.beta + 1.0, self.steps + 1)

    def features(self, spec: ModelSpec) -> torch.Tensor:
        """The head's input: e (membrane) or e / t (spike rate)."""
        assert spec.temporal is not None
        if spec.temporal.readout == "spike_count":
            return self.e / max(self.steps, 1)
        return self.e

    def logits(self, spec: ModelSpec, params: Params, features: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(spec) if features is None else features
        assert spec.temporal is not None
        if spec.temporal.readout == "spike_count" or "head.bias" not in params:
            return head_forward(spec, f, params)
        return F.linear(f, params["head.weight"]) + self.beta * params["head.bias"]


def empty_readout(spec: ModelSpec, batch: int, like: torch.Tensor) -> Readout:
    feat = spec.head.in_features
    return Readout(like.new_zeros((batch, feat)))


def run(
    spec: ModelSpec,
    x: torch.Tensor,
    params: Params,
    spike: SpikeFn | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inference: encode, step every block T times, return the readout logits (B, C). No target needed.
    With ``generator=None`` the rate code is seeded from ``spec.temporal.seed`` (deterministic)."""
    return run_readout(spec, x, params, spike, generator).logits(spec, params)


def run_readout(
    spec: ModelSpec,
    x: torch.Tensor,
    params: Params,
    spike: SpikeFn | None = None,
    generator: torch.Generator | None = None,
) -> Readout:
    """:func:`run` up to the readout trace at step T (its ``logits`` are run's result)."""
    enc = Encoder(spec, x, generator)
    states = [BlockState() for _ in spec.blocks]
    ro = empty_readout(spec, x.shape[0], x)
    decay = readout_decay(spec)
    for t in range(num_steps(spec)):
        h = enc.step(t)
        for i in range(len(spec.blocks)):
            h, _, states[i] = block_step(spec, i, h, params, states[i], spike)
        ro = ro.step(h, decay)
    return ro
