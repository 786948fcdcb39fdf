"""Input encodings for spiking / temporal models: how a sample and its target enter each time step.

A batch ``x`` has shape ``(B, *spec.input_shape)``; step t feeds block 0 a tensor ``(B, *spec.block_input_shape())``.

- ``direct``: x[t] = x (the same analogue current every step); T = ``temporal.time_steps``.
- ``rate``: x[t] ~ Bernoulli(p), p = clip((x − min_b) / (max_b − min_b), 0, 1) with min_b/max_b the
  per-sample minimum/maximum (so the code does not depend on the rest of the batch); drawn from a
  ``torch.Generator`` seeded with ``temporal.seed``, one draw of the whole batch per step, in step order.
  T = ``temporal.time_steps``. Spikes are 0/1 floats.
- ``sequence``: the input's last axis is time: x[t] = x[..., t] (one value per channel per step);
  T = the sequence length ``input_shape[-1]`` (``temporal.time_steps`` is not used for the length).

Target (signal) stream: the generator output z = signal_forward(y) enters as a constant *direct current* at
every step, whatever the sample encoding: with the default hidden placement as block 0's input current
(a^t_0[t] = z, z shaped like block 0's output), with input placement as block 0's input t_0 (shape of one step
of block-0 input). It is deterministic (no sampling noise on the target), identical for all samples of a class
(so it can be de-duplicated to one row per class), and available at every step, so online SP can learn from
step 1. Input placement needs at least as many per-step input features as classes (a 1-channel sequence's t_0
would be identically zero after the generator's LayerNorm); the SP rules refuse it otherwise (see
``edgesp.rules.spiking_rules``).

Input expansion of a sequence before the model (:func:`delay_taps`, the datasets ``NAME+tapsKxS``): a tapped
delay line, so that block 0's weights see a window of the recent input at every step.

Encoders produce one step at a time (no (T, B, …) tensor is ever built), so memory stays flat in T.
"""

from __future__ import annotations

import numpy as np
import torch

from edgesp.errors import DataError, SpecError
from edgesp.spec import ModelSpec


def num_steps(spec: ModelSpec) -> int:
    """T for this model: the sequence length for ``sequence`` encoding, else ``time_steps``."""
    if spec.temporal is None:
        raise SpecError("this model has no temporal settings: build it with --model snn")
    if spec.temporal.encoding == "sequence":
        return spec.input_shape[-1]
    return spec.temporal.time_steps


class Encoder:
    """Turns a batch into per-step block-0 inputs. ``step(t)`` must be called for t = 0, 1, … in order
    (the rate code draws from the generator in step order)."""

    def __init__(self, spec: ModelSpec, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        if spec.temporal is None:
            raise SpecError("this model has no temporal settings: build it with --model snn")
        if tuple(x.shape[1:]) != tuple(spec.input_shape):
            raise SpecError(f"inputs have shape {tuple(x.shape[1:])} but the model expects {spec.input_shape}")
        self.encoding = spec.temporal.encoding
        self.steps = num_steps(spec)
        self.step_shape = (x.shape[0], *spec.block_input_shape())
        self.x = x
        if self.encoding == "rate":
            flat = x.reshape(x.shape[0], -1)
            lo = flat.min(dim=1, keepdim=True).values
            hi = flat.max(dim=1, keepdim=True).values
            p = ((flat - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
            self.p = p.reshape(x.shape)
            if generator is None:
                generator = torch.Generator().manual_seed(spec.temporal.seed)
            self.generator = generator

    def step(self, t: int) -> torch.Tensor:
        if not 0 <= t < self.steps:
            raise IndexError(f"step {t} outside 0..{self.steps - 1}")
        if self.encoding == "direct":
            return self.x.reshape(self.step_shape)
        if self.encoding == "rate":
            u = torch.rand(self.p.shape, generator=self.generator, dtype=self.p.dtype)
            return (u < self.p).to(self.p.dtype).reshape(self.step_shape)
        return self.x[..., t].reshape(self.step_shape)


def target_current(t0: torch.Tensor, t: int) -> torch.Tensor:
    """The target's input at step t: the generator output itself (direct current, every step; block 0's
    input t_0 for input placement, block 0's input current for hidden placement)."""
    return t0


def delay_taps(x: np.ndarray, taps: int, stride: int) -> np.ndarray:
    """Tapped delay line on sequences x (N, C, T) (last axis time): out (N, C·K, T) with
    out[n, c·K + j, t] = x[n, c, t − j·S] (0 for t < j·S), K = ``taps`` ≥ 1, S = ``stride`` ≥ 1. Causal: step t
    needs only the last (K−1)·S + 1 values of each channel (a ring buffer on a device), nothing of the future."""
    if taps < 1 or stride < 1:
        raise DataError(f"delay taps need taps >= 1 and stride >= 1, got taps={taps}, stride={stride}")
    x = np.asarray(x)
    if x.ndim != 3:
        raise DataError(f"delay taps need sequences shaped (N, channels, T), got {x.shape}")
    n, c, t = x.shape
    out = np.zeros((n, c, taps, t), dtype=x.dtype)
    for j in range(taps):
        sh = j * stride
        if sh < t:
            out[:, :, j, sh:] = x[:, :, : t - sh]
    return out.reshape(n, c * taps, t)
