"""Standardised head coordinates for spiking models (rule parameter ``head_norm='ema'``).

A training-time reparametrisation of the head only: the model, its checkpoints, NIR and every compiler see the
plain head (W_h, b_h) with logits[t] = W_h f[t] + β[t] b_h (:class:`edgesp.snn.Readout`; f = e (membrane readout,
β[t] = Σ_{τ<t} (1−dv_o)^τ) or e/t (spike count, β = 1)).

Why: the readout features are non-negative spike traces with large, unequal means and scales (0 … 12 and
σ 0 … 5 for the sequence defaults); an Adam-trained head on them stays far from the linear optimum (a frozen
random recurrent layer: 48.9 % with the plain head, 58.8 % for a logistic regression on standardised features;
docs/benchmarks/temporal.md).

The head's optimizer works on (A, c) instead of (W_h, b_h), with

    W_h = A · diag(1/σ),    b_h = c − A (μ/σ) / β_T          (fold)
    A   = W_h · diag(σ),    c   = b_h + W_h μ / β_T          (inverse fold)

so that at the prediction step T, logits = A (f[T] − μ)/σ + β_T c: a linear model of the standardised features.
μ and σ are exponential moving averages (momentum m, default 0.05) of the batch mean and standard deviation of
f[T] over training batches (the first batch initialises them), plus ε = 0.3 (one spike adds ≈ 1 to a trace): a
neuron that rarely fires has σ ≪ 1, and dividing by it (ε = 0.01) let Adam grow such columns of W_h to 40 and
collapsed spike-recall from 99 % to 53 % in 3 epochs; ε = 0.3 gave 98 % there and no loss on MNIST-1D.
β_T = β[T] (membrane readout) or 1 (spike count). Without a head bias only the scale is used (μ = 0): the centring
could not be folded.

Per optimizer step of the head: (A, c) ← inverse fold of the current (W_h, b_h) (the function is unchanged),
the gradient of the plain head is mapped by the chain rule,

    ∂L/∂A = ∂L/∂W_h · diag(1/σ) − (∂L/∂b_h / β_T) ⊗ (μ/σ),     ∂L/∂c = ∂L/∂b_h,

the head's optimizer (its state lives in (A, c) coordinates) steps, and (W_h, b_h) ← fold(A, c). A step without a
head gradient (an sp-online update between head losses) is skipped, as torch skips a parameter whose .grad is None
(Adam would otherwise coast on its momentum). Before the first statistics are known μ = 0, σ = 1 (the plain head).
Memory: 2·F floats (μ, σ) and one copy of the head.
"""

from __future__ import annotations

import torch

from edgesp.errors import SpecError

HEAD_NORMS = ("none", "ema")
EPS = 0.3  # σ floor, in readout-feature units (a spike trace: one spike ≈ 1)


class HeadNorm:
    """The statistics and the (A, c) leaves of a standardised head; see the module docstring."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, beta_t: float, momentum: float) -> None:
        if not 0.0 < momentum <= 1.0:
            raise SpecError(f"head_norm_momentum must be in (0, 1], got {momentum}")
        self.weight, self.bias = weight, bias  # the plain head's leaves (edited in place)
        self.beta_t = float(beta_t)
        self.momentum = float(momentum)
        self.a = weight.detach().clone().requires_grad_(True)
        self.c = None if bias is None else bias.detach().clone().requires_grad_(True)
        n = weight.shape[1]
        self.mu = torch.zeros(n)
        self.sigma = torch.ones(n)
        self.seen = False

    def leaves(self) -> list[torch.Tensor]:
        """The tensors the head's optimizer steps (A, and c when the head has a bias)."""
        return [self.a] if self.c is None else [self.a, self.c]

    def observe(self, features: torch.Tensor) -> None:
        """EMA update of μ, σ from a batch of step-T readout features (B × F)."""
        f = features.detach().reshape(features.shape[0], -1)
        mu = f.mean(0) if self.bias is not None else torch.zeros(f.shape[1])
        sd = f.std(0, unbiased=False) if f.shape[0] > 1 else torch.zeros(f.shape[1])
        if not self.seen:
            self.mu, self.sigma, self.seen = mu, sd + EPS, True
            return
        m = self.momentum
        self.mu = (1 - m) * self.mu + m * mu
        self.sigma = (1 - m) * self.sigma + m * (sd + EPS)

    @torch.no_grad()
    def step(self, opt: torch.optim.Optimizer) -> None:
        """One optimizer step of the head in standardised coordinates (chain rule above), then fold back."""
        w, b = self.weight, self.bias
        if w.grad is None and (b is None or b.grad is None):
            return  # no loss reached the head since the last step: torch's optimizers skip a parameter without .grad
        shift = self.mu / self.sigma / self.beta_t  # μ/(σ β_T)
        self.a.copy_(w * self.sigma)
        if b is not None and self.c is not None:
            self.c.copy_(b + w @ (self.mu / self.beta_t))
        gw = torch.zeros_like(w) if w.grad is None else w.grad
        ga = gw / self.sigma
        if b is not None and self.c is not None:
            gb = torch.zeros_like(b) if b.grad is None else b.grad
            ga = ga - gb[:, None] * shift[None, :]
            self.c.grad = gb.clone()
        self.a.grad = ga
        opt.step()
        w.copy_(self.a / self.sigma)
        if b is not None and self.c is not None:
            b.copy_(self.c - self.a @ shift)
        self.a.grad = None
        if self.c is not None:
            self.c.grad = None
