"""Learning rules for spiking / temporal models (``make(spec, params, seed)``; contract in
:mod:`edgesp.rules`). Network stepping is :mod:`edgesp.snn`, neuron semantics :mod:`edgesp.spiking`.

Notation per block i and step t: s_in[t] the block's input (encoded sample, or spikes of block i−1, detached),
a[t] = W s_in[t] + b, LIF: u[t] = (1−du) u[t−1] + a[t], v[t] = (1−dv) v[t−1] + u[t] + bias (pre-reset
membrane), s[t] = S(v[t]) = 1[v[t] > θ]. Sample stream h and target stream t pass the *same* W, each with its
own neuron state; the target stream has one row per class (C rows, by class id, so labels may change between
steps) and each loss uses the rows of the classes in the batch (de-duplicated targets, positives = same class;
loss v1 uses all C rows).

Signal z = act(LayerNorm(W_S·onehot(c) + b_S)) for the C classes (:func:`edgesp.functional.signal_forward`),
recomputed every step from the current W_S (so sp-online sees its own updates):

- **hidden placement** (``spec.signal.placement='hidden'``, the default): z is shaped like block 0's output
  and is the target stream's block-0 input *current*: a^t_0[t] = z in place of W_0·t_0 + b_0, every step,
  into block 0's LIF neurons. Block 0's loss L_0[t] = sp_loss(v^h_0[t], v^t_0[t]) then updates W_0, b_0
  through the sample path (∂v^h_0[t]/∂W_0 = s_in[t]) and W_S, b_S through the target path
  (∂v^t_0[t]/∂z = 1, then LayerNorm and W_S), with one optimizer (both are layer 1,
  ``spec.param_layer_index``); no other loss reaches W_S (deeper blocks see the target's spikes, detached).
  Block 0's parametric output must have block 0's output shape (Linear → LIF). Positives/similarity of the
  previous target (v15): onehot(c).
- **input placement**: z is shaped like one step of block-0 input (t_0) and enters as a direct current
  every step (:mod:`edgesp.encoding`), a^t_0[t] = W_0 t_0 + b_0; a learned W_S (layer 0, its own optimizer)
  is trained by block 0's loss through W_0 — without eligibility traces only: with ``trace='filter'`` t_0 enters
  the traces as a constant and no loss reaches W_S, so a learned signal is refused there (use a fixed one). An
  input with fewer features than classes (a 1-channel sequence: t_0 would be identically zero after LayerNorm) is
  refused: use placement 'hidden'.

``signal.kind='fixed'``: W_S, b_S are frozen (detached, in no optimizer). bptt and rtrl never read the signal.

- **sp-voltage**: L_t = Σ_i sp_loss(v^h_i[t], v^t_i[t]) (``spec.rule.loss``, classes as positives). The
  previous state is detached, so ∂v[t]/∂W = ∂u[t]/∂W = s_in[t] (∂v[t]/∂b = 1): ΔW ∝ −Σ_t (∂L_t/∂v[t]) s_in[t]ᵀ.
  S is never differentiated (the spike function's backward raises). Gradients of the T steps are
  accumulated (L = (1/T) Σ_t L_t) and applied once per batch.
- **sp-surrogate**: as sp-voltage with the loss on f(v) = σ(k(v − θ)) (k = ``surrogate_slope``, default 5):
  the learning signal is ∂L/∂f · f'(v) · s_in[t]; it never passes through S.
- **sp-online**: the target enters with the input at every step; every ``update_every`` = k steps (default 1)
  each layer applies the update from the loss of the last k steps (``online_loss`` 'voltage' (default) or
  'surrogate'), and the head its CE on the *current* readout. The step reads only the current input and
  target and the neuron state (u, v, the readout trace); nothing of past steps is stored.
- **SP through time** (recurrent blocks, rule parameters ``trace`` and ``step_weight``; the sequence defaults of
  the CLI turn both on, :func:`edgesp.presets.sequence_defaults`): a recurrent block (``LIF.recurrent``) adds
  W_rec s[t−1] to its current in *each* stream (the target stream has its own previous spikes), so W_rec is
  trained by the same local loss L_i[t] as W. ``trace='none'`` (default): ∂v[t]/∂θ is one step deep
  (∂v[t]/∂W = x[t], ∂v[t]/∂W_rec = s[t−1]). ``trace='filter'``: eligibility traces through the neuron's own
  dynamics (:class:`PresynTrace`), per stream and block
      ε_u ← (1−du) ε_u + p[t];  ε_v ← (1−dv) ε_v + ε_u     for p = x[t], 1 and s[t−1]
      ΔW ∝ −(∂L_i[t]/∂v[t])ᵀ ε_v,x,   Δb ∝ −Σ ∂L_i[t]/∂v[t] · ε_v,1,   ΔW_rec ∝ −(∂L_i[t]/∂v[t])ᵀ ε_v,s
  (the exact ∂v[t]/∂θ through all past steps with spikes held constant; exact for reset 'subtract', the (1 − s)
  factor of reset 'zero' is dropped). Memory: B·(I + H + 1) floats per block and stream — one trace per
  *presynaptic* input, not per synapse (the voltage loss needs no ψ_j factor), flat in T. The target enters at
  every step (z as block 0's target current); ``step_weight='ramp'`` weights step t's losses by 2(t+1)/(T+1)
  (later steps have seen more of the sequence). No loss reads a later block's output, and nothing of a past
  step is stored beyond the neuron state and these traces (tests/edgesp/rules/test_sp_through_time.py).
- ``v_floor`` (voltage loss, default none): the loss reads max(v[t], v_floor) instead of v[t]. A constant
  current drives the pre-reset membrane of a slow CUBA neuron to b/(du·dv) (−250 at b = −1, du 0.2, dv 0.02),
  so without a floor the similarity ⟨v^h, v^t⟩ is dominated by how far below threshold silent neurons sit; with
  a floor (e.g. −θ) only the range where spiking is decided counts, and a neuron below it gets no gradient.
- **Head** (all SP rules): CE on the readout logits (``edgesp.snn``) with the readout trace detached
  (local); sp-voltage/sp-surrogate use the final readout (step T). sp-online: ``head_steps='every'`` (default)
  the CE of the current readout at every step (ramp-weighted like the blocks), ``'last'`` only at step T — the
  readout the prediction uses (still online: the readout trace is the only state).
- **bptt**: CE on the final readout, autograd through all T steps and all layers, spike S with a sigmoid
  surrogate derivative (``spike`` = 'surrogate' (default) or 'smooth' (σ(k(v−θ)) forward too)).
- **rtrl**: the same gradient as bptt computed forward in time (:mod:`edgesp.rtrl`); memory B·S·P floats
  (S state size, P block parameters), refused above ``rtrl_max_mib`` (default 2048).

Memory of the SP rules, per training step: the neuron state of both streams (u, v of every LIF: B rows
for the sample, C rows for the target) and the readout trace, plus one step's autograd graph per block (freed
by the step's backward); nothing grows with T. The per-batch rules (sp-voltage, sp-surrogate) accumulate the
T steps' gradients in the parameters' .grad and apply them once; sp-online applies them every k steps.

- ``loss_every`` = n (default 1; the CLI's sequence defaults set 5 for sp-online, :mod:`edgesp.presets`): the SP
  losses are formed only at steps with (t+1) % n == 0 (the neuron state and the traces still advance every step),
  so the gradient products cost 1/n per step.
- **Fused step**: sp-online with ``trace='filter'`` and ``online_loss='voltage'`` (the CLI's sequence defaults),
  loss v9, v1, v14 or l2 — and sp-voltage with ``trace='filter'`` (one update per sequence) — runs
  :mod:`edgesp.rules.sp_fused` — the same arithmetic with both streams stacked,
  closed-form ∂L/∂v and no autograd — and the same optimizers (Adam on torch's fused kernel there, chosen from the
  spec so the oracle below gets it too); every other setting runs the autograd path below
  (the fused step's test oracle; ``trainer.fused = None`` forces it).

Rule parameters (``spec.rule.params``): surrogate_slope, update_every, online_loss, spike, rtrl_max_mib, trace,
step_weight, v_floor, head_steps, loss_every; for every spiking rule (e-prop too): ``head_lr`` (the head's own
learning rate) and ``head_norm`` ('none' | 'ema', with ``head_norm_momentum``): the head learns in standardised
coordinates of its step-T input, folded back to the plain head after every step (:mod:`edgesp.rules.head_norm`; the
model is unchanged). e-prop, the online baseline, is :mod:`edgesp.rules.eprop`.
Optimizers: one per layer from ``spec.rule.optimizer`` (``spec.param_layer_index``: with hidden placement
the signal shares block 0's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgesp.encoding import Encoder, num_steps, target_current
from edgesp.errors import SpecError
from edgesp.functional import Params, signal_forward
from edgesp.losses import sp_loss
from edgesp.rtrl import rtrl_bytes, rtrl_loss_and_grads
from edgesp.rules.head_norm import HEAD_NORMS, HeadNorm
from edgesp.rules.optim import make_optimizer
from edgesp.rules.sp_fused import FusedBlock, FusedSPOnline, fused_unsupported, make_labels
from edgesp.snn import BlockState, Readout, block_step, empty_readout, readout_decay, run, run_readout
from edgesp.spec import LIF, Linear, ModelSpec
from edgesp.spiking import SpikeFn, smooth_spike, strict_spike, surrogate_spike

_KNOWN_PARAMS = {
    "surrogate_slope",
    "update_every",
    "online_loss",
    "spike",
    "rtrl_max_mib",
    "trace",
    "step_weight",
    "v_floor",
    "head_steps",
    "loss_every",
}
TRACES = ("none", "filter")
STEP_WEIGHTS = ("uniform", "ramp")
HEAD_STEPS = ("every", "last")
# head settings every spiking rule accepts (:mod:`edgesp.rules.head_norm`): the head's own Adam/SGD learning rate
# (default: the rule's) and its standardised coordinates
HEAD_PARAMS = frozenset({"head_lr", "head_norm", "head_norm_momentum"})


@dataclass
class PresynTrace:
    """Eligibility trace of one block for one stream: the block's input x[t], a constant 1 (bias) and, for a
    recurrent block, its own previous spikes s[t−1], each filtered by the LIF's two low-pass stages exactly as
    the current a[t] is (``eu`` ← (1−du)·eu + x;  ``ev`` ← (1−dv)·ev + eu). Then, spikes held constant,
    ∂v_j[t]/∂W_jk = ev_x,k[t], ∂v_j[t]/∂b_j = ev_1[t], ∂v_j[t]/∂W_rec,jk = ev_s,k[t]: one value per *presynaptic*
    input (not per synapse), so the memory is B·(I + H + 1) floats per block and stream, flat in T. Exact for
    reset 'subtract' (the reset term −θ s depends on W only through S, which SP never differentiates); for reset
    'zero' it drops the factor (1 − s_j) the reset puts on v's history (an approximation)."""

    eu_x: torch.Tensor
    ev_x: torch.Tensor
    eu_1: float = 0.0
    ev_1: float = 0.0
    eu_s: torch.Tensor | None = None
    ev_s: torch.Tensor | None = None

    def step(self, lif: LIF, x: torch.Tensor, s_prev: torch.Tensor | None) -> PresynTrace:
        ku, kv = 1.0 - lif.du, 1.0 - lif.dv
        eu_x = ku * self.eu_x + x
        eu_1 = ku * self.eu_1 + 1.0
        out = PresynTrace(eu_x, kv * self.ev_x + eu_x, eu_1, kv * self.ev_1 + eu_1)
        if s_prev is not None:
            eu_s = s_prev if self.eu_s is None else ku * self.eu_s + s_prev
            out.eu_s, out.ev_s = eu_s, eu_s if self.ev_s is None else kv * self.ev_s + eu_s
        return out


def _sp_mode_and_trace(spec: ModelSpec) -> tuple[Any, str]:
    """An SP rule's loss mode ('voltage' | 'surrogate': sp-online's ``online_loss``, else the rule's suffix) and its
    ``trace`` setting, as written in the spec (validated by :class:`SPTrainer`)."""
    rp, name = spec.rule.params, spec.rule.name
    mode = rp.get("online_loss", "voltage") if name == "sp-online" else name.removeprefix("sp-")
    return mode, str(rp.get("trace", "none"))


def _count(rp: dict[str, Any], key: str) -> int:
    """A rule parameter that counts steps (default 1): an integer >= 1, else a SpecError naming it."""
    value = rp.get(key, 1)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value != int(value) or value < 1:
        raise SpecError(f"{key} must be an integer >= 1, got {value!r}")
    return int(value)


def _threshold(spec: ModelSpec, i: int) -> float:
    lifs = [la for la in spec.blocks[i] if isinstance(la, LIF)]
    return lifs[-1].threshold if lifs else 0.0


class _SpikingTrainer:
    """Shared parts: parameters as torch leaves, per-layer optimizers, seeded generators, inference."""

    known_params: frozenset[str] = frozenset(_KNOWN_PARAMS)

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        if spec.temporal is None:
            raise SpecError(f"rule {spec.rule.name!r} needs a spiking model (--model snn)")
        unknown = set(spec.rule.params) - self.known_params - HEAD_PARAMS
        if unknown:
            raise SpecError(
                f"unknown rule parameters {sorted(unknown)} for {spec.rule.name}; "
                f"known: {', '.join(sorted(self.known_params | HEAD_PARAMS))}"
            )
        self.spec = spec
        self.rp: dict[str, Any] = dict(spec.rule.params)
        self.p: Params = {k: torch.tensor(np.asarray(v, np.float32), requires_grad=True) for k, v in params.items()}
        self.T = num_steps(spec)
        self.decay = readout_decay(spec)
        self.gen = torch.Generator().manual_seed(spec.temporal.seed * 1_000_003 + seed)  # training rate code
        self.loss_gen = torch.Generator().manual_seed(seed + 17)  # v14's random positives
        groups: dict[int, list[torch.Tensor]] = {}
        for name, t in self.p.items():
            if name.startswith("signal.") and not self._trains_signal():
                t.requires_grad_(False)  # frozen (fixed signal) or unused (bptt/rtrl): in no optimizer
                continue
            groups.setdefault(spec.param_layer_index(name), []).append(t)
        self.head_index = spec.param_layer_index("head.weight")
        self.head_norm = self._make_head_norm()
        if self.head_norm is not None:
            plain = (self.p["head.weight"], self.p.get("head.bias"))
            groups[self.head_index] = [
                t for t in groups[self.head_index] if all(t is not q for q in plain)
            ] + self.head_norm.leaves()
        fast = self._fused_optimizer()
        self.opts = {i: make_optimizer(spec.rule.optimizer, ts, fused=fast) for i, ts in sorted(groups.items())}
        head_lr = self.rp.get("head_lr")
        if head_lr is not None:
            try:
                lr = float(head_lr)
            except ValueError:
                raise SpecError(f"head_lr must be a positive number, got {head_lr!r}") from None
            if not lr > 0:
                raise SpecError(f"head_lr must be a positive number, got {head_lr!r}")
            for g in self.opts[self.head_index].param_groups:
                g["lr"] = lr

    def _make_head_norm(self) -> HeadNorm | None:
        """The standardised head (rule parameter ``head_norm``, :mod:`edgesp.rules.head_norm`), or None."""
        kind = str(self.rp.get("head_norm", "none"))
        if kind not in HEAD_NORMS:
            raise SpecError(f"head_norm must be one of {', '.join(HEAD_NORMS)}, got {kind!r}")
        if kind == "none":
            return None
        if self.spec.rule.name == "rtrl":
            raise SpecError("head_norm is not supported by rtrl (an exact-gradient reference): use bptt")
        try:
            momentum = float(self.rp.get("head_norm_momentum", 0.05))
        except ValueError:
            got = self.rp["head_norm_momentum"]
            raise SpecError(f"head_norm_momentum must be a number in (0, 1], got {got!r}") from None
        assert self.spec.temporal is not None
        if self.spec.temporal.readout == "spike_count":
            beta_t = 1.0
        else:  # β[T] = Σ_{τ<T} (1 − dv_o)^τ, the bias factor of the membrane readout at the prediction step
            beta_t = sum(self.decay**k for k in range(self.T))
        return HeadNorm(self.p["head.weight"], self.p.get("head.bias"), beta_t, momentum)

    def _observe_readout(self, features: torch.Tensor) -> None:
        """Step-T readout features of a training batch: feed the standardised head's statistics."""
        if self.head_norm is not None:
            self.head_norm.observe(features)

    def _trains_signal(self) -> bool:
        return False

    def _fused_optimizer(self) -> bool:
        """Whether Adam runs torch's fused kernel (:func:`edgesp.rules.optim.make_optimizer`); the rules keep the
        default kernel."""
        return False

    # -- contract
    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = run(self.spec, torch.as_tensor(np.asarray(x, np.float32)), self.p)
        return logits.numpy()

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.p.items()}

    # -- helpers
    def _zero(self) -> None:
        for o in self.opts.values():  # = o.zero_grad(set_to_none=True), without its per-call profiling overhead
            for g in o.param_groups:
                for t in g["params"]:
                    t.grad = None
        if self.head_norm is not None:  # the plain head is in no optimizer: its gradient is mapped to (A, c)
            for k in ("head.weight", "head.bias"):
                if k in self.p:
                    self.p[k].grad = None

    def _step(self) -> None:
        for i, o in self.opts.items():
            if self.head_norm is not None and i == self.head_index:
                self.head_norm.step(o)
            else:
                o.step()

    def _inputs(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y)).long()


class SPTrainer(_SpikingTrainer):
    """sp-voltage, sp-surrogate (per-batch update) and sp-online (update every k steps); see module doc."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        self.online = spec.rule.name == "sp-online"
        mode, self.trace = _sp_mode_and_trace(spec)
        if mode not in ("voltage", "surrogate"):
            raise SpecError(f"online_loss must be 'voltage' or 'surrogate', got {mode!r}")
        self.mode = mode
        self.slope = float(self.rp.get("surrogate_slope", 5.0))
        self.every = _count(self.rp, "update_every")
        self.spike: SpikeFn = strict_spike
        if self.trace not in TRACES:
            raise SpecError(f"trace must be one of {', '.join(TRACES)}, got {self.trace!r}")
        if self.trace == "filter":
            for i, block in enumerate(spec.blocks):
                if len(block) != 2 or not isinstance(block[0], Linear) or not isinstance(block[1], LIF):
                    raise SpecError(f"trace 'filter' needs Linear → LIF blocks (--model snn); block {i} is not")
            if not spec.signal.hidden and spec.signal.kind == "learned":
                # the traces carry the target's input t_0 as a constant, so no loss would reach W_S: refuse rather
                # than keep a "learned" signal that silently never learns
                raise SpecError(
                    "trace 'filter' with input signal placement leaves the learned signal W_S untrained: use "
                    "--signal-placement hidden, a fixed signal, or --rule-param trace=none"
                )
        self.step_weight = str(self.rp.get("step_weight", "uniform"))
        if self.step_weight not in STEP_WEIGHTS:
            raise SpecError(f"step_weight must be one of {', '.join(STEP_WEIGHTS)}, got {self.step_weight!r}")
        floor = self.rp.get("v_floor")
        try:
            self.v_floor = None if floor is None or str(floor).lower() == "none" else float(floor)
        except ValueError:
            raise SpecError(f"v_floor must be a number or 'none', got {floor!r}") from None
        self.head_steps = str(self.rp.get("head_steps", "every"))
        if self.head_steps not in HEAD_STEPS:
            raise SpecError(f"head_steps must be one of {', '.join(HEAD_STEPS)}, got {self.head_steps!r}")
        self.loss_every = _count(self.rp, "loss_every")
        self.hidden = spec.signal.hidden
        if self.hidden:
            a_shape = spec.shapes()[0][0]  # block 0's parametric output, which z replaces
            if tuple(a_shape) != tuple(spec.signal_shape()):
                raise SpecError(
                    f"hidden signal placement feeds z {spec.signal_shape()} as block 0's input current, "
                    f"but block 0's {type(spec.blocks[0][0]).__name__} outputs {a_shape}: use a block 0 "
                    "without pooling/reshaping, or placement 'input'"
                )
        elif spec.signal_dim < spec.num_classes:
            raise SpecError(
                f"input signal placement: one step of block-0 input has {spec.signal_dim} features, fewer "
                f"than the {spec.num_classes} classes, so the target t_0 = LayerNorm(W_S onehot) cannot "
                "tell classes apart: use placement hidden (--signal-placement hidden)"
            )
        # the fused, autograd-free sp-online step when it applies (edgesp.rules.sp_fused); set to None to force
        # the autograd path (the general fallback and the fused step's test oracle)
        # sp-voltage is the same arithmetic with one update per sequence (every = T) and the head's CE at step T only
        self.fused: FusedSPOnline | None = None
        self.fused_every = self.every if self.online else self.T
        if fused_unsupported(spec, self.mode, self.trace) is None:
            self.fused = FusedSPOnline(
                spec,
                self.p,
                every=self.fused_every,
                loss_every=self.loss_every,
                v_floor=self.v_floor,
                weight=self.weight,
                decay=self.decay,
                head_every=self.online and self.head_steps == "every",
                train_signal=self._trains_signal(),
                loss_gen=self.loss_gen,
            )

    # -- the per-step pieces (public so tests can drive a step by itself)
    def begin(self, batch: int) -> None:
        """Fresh neuron state (and eligibility traces) for a batch of sequences (sample and target stream)."""
        self.h_state = [BlockState() for _ in self.spec.blocks]
        self.t_state = [BlockState() for _ in self.spec.blocks]
        self.h_trace: list[PresynTrace | None] = [None] * len(self.spec.blocks)
        self.t_trace: list[PresynTrace | None] = [None] * len(self.spec.blocks)
        self.readout: Readout = empty_readout(self.spec, batch, torch.zeros(()))
        self.f_state = [FusedBlock() for _ in self.spec.blocks]  # the fused step's state (both streams stacked)
        if self.fused is not None:
            self.fused.begin(batch)
        self.t = 0

    def _trains_signal(self) -> bool:
        return self.spec.signal.kind == "learned"

    def _fused_optimizer(self) -> bool:
        """Adam on torch's fused kernel wherever the fused step runs: its per-update cost (≈ 300 µs → 50 µs for
        block 0 and the head at width 128) is what an update interval of 10 steps amortises
        (docs/benchmarks/sp_online_fused.md). Decided from the spec, so ``trainer.fused = None`` (the autograd
        oracle) keeps the same optimizer."""
        return fused_unsupported(self.spec, *_sp_mode_and_trace(self.spec)) is None

    def _zero(self) -> None:
        super()._zero()
        if self.fused is not None:
            self.fused.zero()

    def signal(self) -> torch.Tensor:
        """z for all C classes (row c = class c), from the current W_S, b_S (detached if the signal is fixed)."""
        z = signal_forward(self.spec, torch.arange(self.spec.num_classes), self.p)
        return z if self._trains_signal() else z.detach()

    def _z(self, v: torch.Tensor, i: int) -> torch.Tensor:
        """What the loss reads of block i's membrane: v, or max(v, v_floor) (``v_floor``), or σ(k(v − θ))."""
        if self.mode == "voltage":
            return v if self.v_floor is None else v.clamp(min=self.v_floor)
        return torch.sigmoid(self.slope * (v - _threshold(self.spec, i)))

    def step_loss(self, x_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One time step of both streams through every block; returns Σ_i L_i[t] (graph per block, inputs
        and previous state detached) and advances the neuron state and the readout trace. The target
        stream holds one row per class (C rows, by class id), so labels may change from step to step; the
        loss uses the rows of the classes present (de-duplicated targets)."""
        spec, r = self.spec, self.spec.rule
        if r.loss == "v1":  # direct label: every class's target is a column
            classes, inv = torch.arange(spec.num_classes), y
        else:
            classes, inv = torch.unique(y, return_inverse=True)
        z = target_current(self.signal(), self.t)
        h_in = x_t.detach()
        # hidden: z is block 0's input current (a^t_0 = z); input: z = t_0 is block 0's input
        t_in, cur = (None, z) if self.hidden else (z, None)
        total = x_t.new_zeros(())
        with_loss = (self.t + 1) % self.loss_every == 0  # loss_every: the traces still advance at every step
        for i in range(len(spec.blocks)):
            s_h, v_h, st_h = block_step(spec, i, h_in, self.p, self.h_state[i].detached(), self.spike)
            s_t, v_t, st_t = block_step(
                spec, i, t_in, self.p, self.t_state[i].detached(), self.spike, current=cur if i == 0 else None
            )
            if self.trace == "filter":
                v_h = self._traced(i, v_h, h_in, self.h_state[i], self.h_trace, None)
                v_t = self._traced(i, v_t, t_in, self.t_state[i], self.t_trace, cur if i == 0 else None)
            if t_in is None:  # hidden placement, block 0: the previous target is the label itself
                t_prev = F.one_hot(classes, spec.num_classes).float()
            else:
                t_prev = t_in.detach()[classes]
            if with_loss:
                total = total + sp_loss(
                    r.loss,
                    self._z(v_h, i),
                    self._z(v_t, i)[classes],
                    inv,
                    y,
                    classes,
                    temperature=r.temperature,
                    topk=r.topk,
                    t_prev_cls=t_prev,
                    generator=self.loss_gen,
                )
            self.h_state[i], self.t_state[i] = st_h.detached(), st_t.detached()
            h_in, t_in = s_h.detach(), s_t.detach()
        self.readout = self.readout.step(h_in, self.decay)
        self.t += 1
        return total

    def _traced(
        self,
        i: int,
        v: torch.Tensor,
        x: torch.Tensor | None,
        state: BlockState,
        traces: list[PresynTrace | None],
        current: torch.Tensor | None,
    ) -> torch.Tensor:
        """v[t] with its value unchanged but its gradient replaced by the eligibility-trace one (trace 'filter'):
        ∂v[t]/∂W = ev_x[t], ∂v[t]/∂b = ev_1[t], ∂v[t]/∂W_rec = ev_s[t] (:class:`PresynTrace`); where a current
        replaces W x + b (the hidden signal z, constant over the sequence) ∂v[t]/∂z = ev_1[t]. Advances the
        stream's trace of block i."""
        lif = self.spec.blocks[i][1]
        assert isinstance(lif, LIF)
        rec = self.spec.recurrent_layer(i) is not None
        inp = x.detach() if x is not None else v.new_zeros((v.shape[0], 1))
        prev = state.prev_out.detach() if rec and state.prev_out is not None else None
        old = traces[i]
        if old is None:
            old = PresynTrace(torch.zeros_like(inp), torch.zeros_like(inp))
        tr = old.step(lif, inp, prev)
        traces[i] = tr
        prefix = f"blocks.{i}."
        if current is not None:
            lin = tr.ev_1 * current
        else:
            lin = F.linear(tr.ev_x, self.p[prefix + "weight"])
            if prefix + "bias" in self.p:
                lin = lin + tr.ev_1 * self.p[prefix + "bias"]
        if tr.ev_s is not None:
            lin = lin + F.linear(tr.ev_s, self.p[prefix + "rec_weight"])
        return v.detach() + (lin - lin.detach())

    def head_loss(self, y: torch.Tensor) -> torch.Tensor:
        """CE of the head on the current readout (its input detached: a local update)."""
        feats = self.readout.features(self.spec).detach()
        if self.t == self.T:
            self._observe_readout(feats)
        return F.cross_entropy(self.readout.logits(self.spec, self.p, feats), y)

    def weight(self, t: int) -> float:
        """Weight w_t of step t's losses: 1 ('uniform'), or 2(t+1)/(T+1) ('ramp': mean 1 over the sequence, later
        steps — which have seen more of the input — count more; a known function of t, so still online)."""
        if self.step_weight == "ramp":
            return 2.0 * (t + 1) / (self.T + 1)
        return 1.0

    def online_step(self, x_t: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """sp-online, one step: losses of this step, backward, and (every k steps) an update of every layer.
        Runs the fused step (:mod:`edgesp.rules.sp_fused`) when it applies, else autograd."""
        if self.fused is not None:
            lab = make_labels(self.spec.rule.loss, y, self.spec.num_classes)
            self.fused.take_loss(lab)
            with torch.no_grad():
                ce = self._fused_step(x_t, lab)
            return self.fused.take_loss(lab), (float("nan") if ce is None else float(ce))
        w = self.weight(self.t)
        sp = self.step_loss(x_t, y)
        if self.head_steps == "every":
            ce = self.head_loss(y)
            (w * (sp + ce) / self.every).backward()
        else:  # 'last': the head learns from the readout the prediction uses (step T) only
            if sp.requires_grad:  # (no SP loss at this step with loss_every > 1)
                (w * sp / self.every).backward()
            ce = self.head_loss(y) if self.t == self.T else None
            if ce is not None:
                ce.backward()
        if self.t % self.every == 0 or self.t == self.T:
            self._step()
            self._zero()
        return float(sp.detach()), (float("nan") if ce is None else float(ce.detach()))

    def _fused_step(self, x_t: torch.Tensor, lab: Any) -> torch.Tensor | None:
        """The fused online step (returns the head's CE if formed; the SP loss is summed in ``self.fused``); at an
        update the interval's gradient sums become .grad and the optimizers step."""
        assert self.fused is not None
        last = self.t + 1 == self.T
        self.f_state, self.readout, ce = self.fused.step(self.f_state, self.readout, x_t, lab, self.t, last)
        self.t += 1
        if last:
            self._observe_readout(self.readout.features(self.spec))
        if self.t % self.fused_every == 0 or self.t == self.T:
            self.fused.set_grads()
            self._step()
            self._zero()
        return ce

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        xt, yt = self._inputs(x, y)
        enc = Encoder(self.spec, xt, self.gen)
        self.begin(xt.shape[0])
        self._zero()
        sp_sum = ce_sum = 0.0
        n_ce = 0
        if self.fused is not None:
            lab = make_labels(self.spec.rule.loss, yt, self.spec.num_classes)
            ce_t = xt.new_zeros(())
            with torch.no_grad():
                for t in range(self.T):
                    ce = self._fused_step(enc.step(t), lab)
                    if ce is not None:
                        ce_t, n_ce = ce_t + ce, n_ce + 1
            return {"sp_loss": self.fused.take_loss(lab) / self.T, "head_ce": float(ce_t) / max(n_ce, 1)}
        for t in range(self.T):
            if self.online:
                sp, ce = self.online_step(enc.step(t), yt)
                sp_sum += sp
                if ce == ce:  # not nan: the head's CE was computed at this step
                    ce_sum, n_ce = ce_sum + ce, n_ce + 1
            else:
                loss = self.step_loss(enc.step(t), yt)
                if loss.requires_grad:  # (no SP loss at this step with loss_every > 1)
                    (self.weight(t) * loss / self.T).backward()
                sp_sum += float(loss.detach())
        if not self.online:
            ce = self.head_loss(yt)
            ce.backward()
            ce_sum, n_ce = float(ce.detach()), 1
            self._step()
        self._zero()
        return {"sp_loss": sp_sum / self.T, "head_ce": ce_sum / max(n_ce, 1)}


class BPTTTrainer(_SpikingTrainer):
    """Surrogate-gradient BPTT (autograd over all T steps) or RTRL (forward-mode, same gradient)."""

    # the SP rules' settings (traces, floors, update intervals …) mean nothing here: refused, not ignored
    known_params = frozenset({"surrogate_slope", "spike", "rtrl_max_mib"})

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int) -> None:
        super().__init__(spec, params, seed)
        kind = self.rp.get("spike", "surrogate")
        slope = float(self.rp.get("surrogate_slope", 5.0))
        if kind == "surrogate":
            self.spike = surrogate_spike(slope)
        elif kind == "smooth":
            self.spike = smooth_spike(slope)
        else:
            raise SpecError(f"spike must be 'surrogate' or 'smooth', got {kind!r}")
        self.smooth = kind == "smooth"
        self.rtrl = spec.rule.name == "rtrl"
        self.max_mib = float(self.rp.get("rtrl_max_mib", 2048))
        self.last_sensitivity_bytes = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            spike = self.spike if self.smooth else None  # surrogate forward == hard threshold
            logits = run(self.spec, torch.as_tensor(np.asarray(x, np.float32)), self.p, spike)
        return logits.numpy()

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        xt, yt = self._inputs(x, y)
        self._zero()
        if self.rtrl:
            need = 3 * rtrl_bytes(self.spec, self.p, xt.shape[0]) / 2**20
            if need > self.max_mib:
                raise SpecError(
                    f"RTRL needs about {need:.0f} MiB for its sensitivity tensors (limit "
                    f"{self.max_mib:.0f}): use a smaller --width/--depth or --batch-size"
                )
            loss, _, grads, nbytes = rtrl_loss_and_grads(self.spec, xt, yt, self.p, self.spike, self.gen)
            self.last_sensitivity_bytes = nbytes
            for k, g in grads.items():
                self.p[k].grad = g.detach().clone()
        else:
            # edgesp.rtrl.bptt_loss's forward (CE of run's logits), keeping the readout for the head's statistics
            ro = run_readout(self.spec, xt, self.p, self.spike, self.gen)
            self._observe_readout(ro.features(self.spec))
            loss = F.cross_entropy(ro.logits(self.spec, self.p), yt)
            loss.backward()
        self._step()
        self._zero()
        return {"ce": float(loss.detach())}


def make(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> SPTrainer | BPTTTrainer:
    if spec.rule.name in ("sp-voltage", "sp-surrogate", "sp-online"):
        return SPTrainer(spec, params, seed)
    if spec.rule.name in ("bptt", "rtrl"):
        return BPTTTrainer(spec, params, seed)
    raise SpecError(f"rule {spec.rule.name!r} is not a spiking rule")
