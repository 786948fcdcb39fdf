"""Exact gradients of a spiking model's readout loss through time: BPTT (reverse mode, autograd over all T
steps) and RTRL (forward mode: a sensitivity tensor carried forward, nothing stored per step).

Per sample, the whole network state z (every LIF layer's u and post-reset v, the previous output of
recurrent blocks, and the readout trace e; size S) evolves as z[t] = f(z[t−1], θ, x[t]) with θ the P
block parameters. RTRL carries J[t] = dz[t]/dθ (S×P):

    J[t] = (∂f/∂z) J[t−1] + ∂f/∂θ,      J[0] = 0
    dL/dθ = (∂L/∂z[T]) J[T]              (L = CE(readout logits(z[T]), y); head gradients by autograd)

Memory O(B·S·P) and compute O(B·S²·P) per step, independent of T; BPTT needs O(B·S·T) memory.
Both use the same step function f and the same spike function, so with a surrogate spike (forward 1[v>θ],
backward σ') or a smooth unit they compute the same numbers up to float rounding (checked in the tests).
Recurrent blocks (``LIF.recurrent``) have a weight ``blocks.{i}.rec_weight`` (H×H) adding W_rec s_i[t−1] to the
LIF's current; their previous spikes are part of z.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap

from edgesp.encoding import Encoder, num_steps
from edgesp.functional import Params
from edgesp.snn import BlockState, Readout, block_step, readout_decay, run
from edgesp.spec import LIF, ModelSpec
from edgesp.spiking import LIFState, SpikeFn


def block_param_names(spec: ModelSpec, params: Params) -> list[str]:
    """θ of the recurrent-state dynamics: every block parameter (weights, biases, recurrent weights)."""
    return [k for k in params if k.startswith("blocks.")]


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def bptt_loss(
    spec: ModelSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    params: Params,
    spike: SpikeFn,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward over all T steps keeping the autograd graph (nothing detached; the same stepping as
    :func:`edgesp.snn.run`). Returns (loss, logits)."""
    logits = run(spec, x, params, spike, generator)
    return _ce(logits, y), logits


class StateLayout:
    """Flat per-sample layout of the network state z: [(block, layer, 'u'|'v'|'prev'), …, 'e']."""

    def __init__(self, spec: ModelSpec, params: Params) -> None:
        self.spec = spec
        self.segments: list[tuple[int, int | str, str, tuple[int, ...]]] = []
        shapes = spec.shapes()
        for i, block in enumerate(spec.blocks):
            for j, layer in enumerate(block):
                if isinstance(layer, LIF):
                    shape = shapes[i][j]
                    self.segments.append((i, j, "u", shape))
                    self.segments.append((i, j, "v", shape))
            j_rec = spec.recurrent_layer(i)
            if j_rec is not None:
                self.segments.append((i, "prev", "prev", shapes[i][j_rec]))
        self.segments.append((-1, "e", "e", (spec.head.in_features,)))
        self.sizes = [math.prod(s) for *_, s in self.segments]
        self.size = sum(self.sizes)

    def pack(self, states: list[BlockState], ro_e: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        parts = []
        for (i, j, what, _), n in zip(self.segments, self.sizes, strict=True):
            if what == "e":
                t = ro_e
            elif what == "prev":
                t = states[i].prev_out
            else:
                st = states[i].lif.get(j)  # type: ignore[arg-type]
                t = None if st is None else getattr(st, what)
            parts.append(like.new_zeros((batch, n)) if t is None else t.reshape(batch, n))
        return torch.cat(parts, dim=1)

    def unpack(self, z: torch.Tensor) -> tuple[list[BlockState], torch.Tensor]:
        batch = z.shape[0]
        states = [BlockState() for _ in self.spec.blocks]
        chunks = torch.split(z, self.sizes, dim=1)
        e = chunks[-1]
        pend: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        for (i, j, what, shape), c in zip(self.segments, chunks, strict=True):
            c = c.reshape(batch, *shape)
            if what == "prev":
                states[i].prev_out = c
            elif what in ("u", "v"):
                pend.setdefault((i, j), {})[what] = c  # type: ignore[index]
        for (i, j), d in pend.items():
            states[i].lif[j] = LIFState(d["u"], d["v"])
        return states, e


def rtrl_loss_and_grads(
    spec: ModelSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    params: Params,
    spike: SpikeFn,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int]:
    """RTRL. Returns (loss, logits, grads for block and head params, peak sensitivity bytes B·S·P·itemsize)."""
    names = block_param_names(spec, params)
    shapes = [params[k].shape for k in names]
    numels = [params[k].numel() for k in names]
    theta = torch.cat([params[k].detach().reshape(-1) for k in names])
    fixed = {k: v.detach() for k, v in params.items() if k not in names}
    layout = StateLayout(spec, params)
    decay = readout_decay(spec)
    batch = x.shape[0]

    def unflat(th: torch.Tensor) -> Params:
        p = dict(fixed)
        for k, s, c in zip(names, shapes, torch.split(th, numels), strict=True):
            p[k] = c.reshape(s)
        return p

    def step(z: torch.Tensor, th: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = unflat(th)
        states, e = layout.unpack(z[None])
        h = xt[None]
        new = []
        for i in range(len(spec.blocks)):
            h, _, st = block_step(spec, i, h, p, states[i], spike)
            new.append(st)
        e = decay * e + h.reshape(1, -1)
        z2 = layout.pack(new, e, 1, z)[0]
        return z2, z2

    jac = vmap(jacrev(step, argnums=(0, 1), has_aux=True), in_dims=(0, None, 0))
    enc = Encoder(spec, x, generator)
    z = x.new_zeros((batch, layout.size))
    J = x.new_zeros((batch, layout.size, theta.numel()))
    beta = 0.0
    steps = num_steps(spec)
    for t in range(steps):
        (dz, dth), z = jac(z, theta, enc.step(t))
        J = torch.baddbmm(dth, dz, J)
        beta = decay * beta + 1.0
    zT = z.detach().requires_grad_(True)
    _, e = layout.unpack(zT)
    head = {k: v.detach().requires_grad_(True) for k, v in params.items() if k.startswith("head.")}
    ro = Readout(e, beta, steps)
    logits = ro.logits(spec, head)
    loss = _ce(logits, y)
    loss.backward()
    assert zT.grad is not None
    g = torch.einsum("bs,bsp->p", zT.grad, J)
    grads = {k: c.reshape(s) for k, s, c in zip(names, shapes, torch.split(g, numels), strict=True)}
    for k, v in head.items():
        assert v.grad is not None
        grads[k] = v.grad
    return loss.detach(), logits.detach(), grads, J.numel() * J.element_size()


def rtrl_bytes(spec: ModelSpec, params: Params | dict[str, np.ndarray], batch: int, itemsize: int = 4) -> int:
    """Size of the sensitivity tensor J (B·S·P·itemsize); the step holds about three such tensors."""
    tp = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in params.items()}
    layout = StateLayout(spec, tp)
    n_theta = sum(v.numel() for k, v in tp.items() if k.startswith("blocks."))
    return batch * layout.size * n_theta * itemsize
