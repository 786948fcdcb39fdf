"""Fused, autograd-free sp-online step: rule ``sp-online`` with ``trace='filter'`` and ``online_loss='voltage'``
(the CLI's sequence defaults), loss v9, v1, v14 or l2, Linear → LIF blocks. The same arithmetic as the autograd
path of :class:`edgesp.rules.spiking_rules.SPTrainer` (the general fallback and this module's test oracle),
written out so that a step is a few dense ops instead of a graph (tests/edgesp/rules/test_sp_online_fused.py).

Rows: the sample stream's B rows and the target stream's C rows (one per class, by class id) are stacked into one
(B+C)-row batch per block: a = [W x_h + b ; z] (block 0 with hidden placement: z is the target's input current) or
a = W [x_h ; x_t] + b, plus W_rec s[t−1] (each stream's own previous spikes) for a recurrent block; one LIF step
(:func:`edgesp.spiking.lif_step`) and one trace update for all rows (:class:`~edgesp.rules.spiking_rules.PresynTrace`:
ε_u ← (1−du) ε_u + p, ε_v ← (1−dv) ε_v + ε_u for p = x[t], 1 and s[t−1]).

Loss gradient in closed form, per block; q = max(v, v_floor) (or v), Y = q_h q_tᵀ/(τ H) (B×C, against all C
target rows), m_c the number of samples of class c in the batch, P = softmax of the row logits:

- v9:  logits Y + log m (absent classes get −∞ and drop out, so this equals the B×B form of
  :func:`edgesp.losses.sp_loss`), L = −Σ_i (n_i/B)(log P_{i,y_i} − log n_i), n_i = m_{y_i};
  ∂L/∂Y = (n_i/B)(P − onehot(y))
- v14: logits Y + log m, target class y_{j_i} (j_i a random same-class sample, drawn exactly as sp_loss draws it),
  L = −(1/B) Σ_i (log P_{i,y_{j_i}} − log m_{y_{j_i}}); ∂L/∂Y = (P − onehot(y_j))/B
- v1:  logits Y, L = CE(Y, y); ∂L/∂Y = (P − onehot(y))/B
- then ∂L/∂q_h = ∂L/∂Y q_t/(τH), ∂L/∂q_t = ∂L/∂Yᵀ q_h/(τH)
- l2:  L = Σ_i ‖q_h,i − q_t,y_i‖²/(B H); ∂L/∂q_h = 2(q_h − q_t[y])/(BH), ∂L/∂q_t,c = −Σ_{i: y_i = c} ∂L/∂q_h,i
- ∂L/∂v = ∂L/∂q · 1[v ≥ v_floor] (torch's clamp passes the gradient where v ≥ v_floor)

Parameter gradients, with g = (w_t/k) ∂L/∂v ((B+C)×H; w_t the step weight, k = update_every), summed over the steps
of an update interval: ∂W += gᵀ ε_v,x, ∂b += ε_v,1 Σ_rows g, ∂W_rec += gᵀ ε_v,s over the rows of both streams —
except block 0 with hidden placement, where W and b see only the B sample rows and the C target rows give
∂z += ε_v,1 g_t. z depends on W_S, b_S only, which change only at an update: z is computed once per interval and at
the update one autograd backward through :func:`edgesp.functional.signal_forward` turns the summed ∂z into ∂W_S,
∂b_S (input placement: the trace detaches the target's input, so — as on the autograd path — no loss reaches W_S).
Head: CE of the readout logits ℓ = W_h f + β b_h (f the readout features, β the bias factor; 1 for a spike-count
readout): ∂ℓ = (softmax(ℓ) − onehot(y))/B, ∂W_h += ∂ℓᵀ f, ∂b_h += β Σ_i ∂ℓ_i; weighted w_t/k with
``head_steps='every'``, 1 at step T with 'last'. At an update the sums become the ``.grad`` of exactly the parameters
a term reached (as autograd would leave the others at None) and the trainer's torch optimizers step.

``loss_every`` = n ≥ 1: the SP loss and its gradient products are formed only at steps with (t+1) % n == 0 (the
state and traces still advance every step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgesp.functional import Params, signal_forward
from edgesp.snn import Readout
from edgesp.spec import LIF, Linear, ModelSpec
from edgesp.spiking import LIFState

FUSED_LOSSES = ("v9", "v1", "v14", "l2")


def fused_unsupported(spec: ModelSpec, rule_params: dict, mode: str, trace: str) -> str | None:
    """Why the fused step cannot run this configuration (None: it can)."""
    if spec.rule.name != "sp-online":
        return f"rule {spec.rule.name}"
    if mode != "voltage" or trace != "filter":
        return "online_loss must be 'voltage' and trace 'filter'"
    if spec.rule.loss not in FUSED_LOSSES:
        return f"loss {spec.rule.loss}"
    v = spec.rule.variant
    if v.codes > 1 or v.free_targets or v.aux:
        return "an SP variant"
    if len(spec.block_input_shape()) != 1:
        return "block 0 needs a flat input"
    for block in spec.blocks:
        if len(block) != 2 or not isinstance(block[0], Linear) or not isinstance(block[1], LIF):
            return "blocks must be Linear → LIF"
    return None


@dataclass
class FusedBlock:
    """Carried state of one block, both streams stacked (rows 0..B−1 the sample, B..B+C−1 the target of class c):
    the LIF state, the previous spikes (recurrent blocks) and the eligibility traces (ε_x over the rows that pass
    W: B for block 0 with hidden placement, else B+C; ε_1 a scalar shared by all rows)."""

    lif: LIFState | None = None
    s_prev: torch.Tensor | None = None
    eu_x: torch.Tensor | None = None
    ev_x: torch.Tensor | None = None
    eu_1: float = 0.0
    ev_1: float = 0.0
    eu_s: torch.Tensor | None = None
    ev_s: torch.Tensor | None = None


@dataclass
class FusedLabels:
    """Constants of one label vector y (B,) for the closed-form losses (see module docstring)."""

    y: torch.Tensor
    onehot: torch.Tensor  # B×C
    w: torch.Tensor  # B×1: n_i/B (v9) or 1/B
    w_onehot: torch.Tensor  # B×C: w_i·onehot(y_i) (a term's loss value is const − ⟨w_onehot, log P⟩)
    neg_w_onehot: torch.Tensor  # −w_onehot
    logm: torch.Tensor | None  # 1×C: log m_c (−inf for absent classes), None for v1
    const: float  # v9: Σ_i (n_i/B) log n_i
    same: torch.Tensor | None  # B×B: 1[y_i = y_j] (v14's positives)


def make_labels(kind: str, y: torch.Tensor, num_classes: int) -> FusedLabels:
    b = y.shape[0]
    onehot = F.one_hot(y, num_classes).float()
    counts = onehot.sum(0)
    const, logm, same = 0.0, None, None
    if kind == "v9":
        n = counts[y]
        w = (n / b)[:, None]
        logm, const = counts.log()[None, :], float((n * n.log()).sum() / b)
    else:
        w = torch.full((b, 1), 1.0 / b)
        if kind == "v14":
            logm, same = counts.log()[None, :], (y[:, None] == y[None, :]).float()
    return FusedLabels(y, onehot, w, w * onehot, -w * onehot, logm, const, same)


class FusedSPOnline:
    """The fused step and its gradient sums for one :class:`SPTrainer` (sp-online); see module docstring."""

    def __init__(
        self,
        spec: ModelSpec,
        p: Params,
        *,
        every: int,
        loss_every: int,
        v_floor: float | None,
        weight: Callable[[int], float],
        decay: float,
        head_every: bool,
        train_signal: bool,
        loss_gen: torch.Generator,
    ) -> None:
        self.spec, self.p = spec, p
        self.kind = spec.rule.loss
        self.tau = float(spec.rule.temperature)  # type: ignore[arg-type]  # resolved for the SP rules
        self.every, self.loss_every, self.v_floor, self.weight = every, loss_every, v_floor, weight
        self.head_every, self.decay = head_every, decay
        self.hidden = spec.signal.hidden
        self.train_signal = train_signal and self.hidden  # input placement: the trace detaches z (no gradient)
        self.loss_gen = loss_gen
        self.C = spec.num_classes
        self.spike_count = spec.temporal is not None and spec.temporal.readout == "spike_count"
        self.names: list[tuple[str, str | None, str | None]] = []
        self.lifs: list[LIF] = []
        for i, (_, lif) in enumerate(spec.blocks):
            pre = f"blocks.{i}."
            rec = pre + "rec_weight" if spec.recurrent_layer(i) is not None else None
            self.names.append((pre + "weight", pre + "bias" if pre + "bias" in p else None, rec))
            self.lifs.append(lif)
        self.sums: dict[str, torch.Tensor] = {}
        self.touched: set[str] = set()
        self.z: torch.Tensor | None = None  # the signal of the current update interval (detached), C×D
        self.batch = -1
        # the loss value, summed lazily over the terms (block, step) since the last take_loss: v9/v1 keep Σ log P
        self.n_terms = 0
        self.logp_sum = torch.zeros(0)
        self.loss_sum = torch.zeros(())  # v14, l2: Σ of the terms' values

    # -- gradient sums
    def _acc(self, name: str) -> torch.Tensor:
        s = self.sums.get(name)
        if s is None:
            shape = (self.C, self.spec.signal_dim) if name == "z" else self.p[name].shape
            s = self.sums[name] = torch.zeros(shape)
        self.touched.add(name)
        return s

    def set_grads(self) -> None:
        """Write the interval's sums as ``.grad`` of the parameters they reached (∂W_S, ∂b_S by autograd from ∂z)."""
        for name in self.touched:
            if name != "z":
                self.p[name].grad = self.sums[name].clone()
        if "z" in self.touched:
            with torch.enable_grad():
                z = signal_forward(self.spec, torch.arange(self.C), self.p)
            torch.autograd.backward(z, self.sums["z"].reshape(z.shape))

    def zero(self) -> None:
        """After an update: empty sums; z is recomputed from the new W_S at the next step."""
        for name in self.touched:
            self.sums[name].zero_()
        self.touched.clear()
        self.z = None

    # -- the step
    def begin(self, batch: int) -> None:
        """Scratch buffers for a batch of B sequences: block 0's stacked current (hidden placement: rows B.. hold
        z), each block's (B+C)-row gradient g, and the parameters' transposed views (the optimizers update the
        parameters in place, so the views stay current)."""
        rows = batch + self.C
        self.batch = batch
        with torch.no_grad():
            self.wt = [(self.p[w].t(), None if r is None else self.p[r].t()) for w, _, r in self.names]
        hdims = [self.p[w].shape[0] for w, _, _ in self.names]
        self.g = [torch.zeros(rows, h) for h in hdims]
        self.g_halves = [(g[:batch], g[batch:]) for g in self.g]
        self.a0 = torch.zeros(rows, hdims[0])
        self.a0_top = self.a0[:batch]
        self.ones = torch.ones(rows)
        self.ones_top = self.ones[:batch]
        self.logp_sum = torch.zeros(batch, self.C)
        self.n_terms = 0
        self.z = None

    def take_loss(self, lab: FusedLabels) -> float:
        """Σ of the SP loss terms L_i[t] since the last call (v9/v1: n·const − ⟨w_onehot, Σ log P⟩), then reset."""
        value = float(self.loss_sum)
        if self.n_terms and self.kind in ("v9", "v1"):
            value += self.n_terms * lab.const - float(torch.dot(lab.w_onehot.view(-1), self.logp_sum.view(-1)))
            self.logp_sum.zero_()
        self.loss_sum.zero_()
        self.n_terms = 0
        return value

    def signal(self) -> torch.Tensor:
        if self.z is None:
            with torch.no_grad():
                self.z = signal_forward(self.spec, torch.arange(self.C), self.p).reshape(self.C, -1)
                if self.hidden:
                    self.a0[self.batch :] = self.z
        return self.z

    @torch.no_grad()
    def step(
        self, state: list[FusedBlock], readout: Readout, x_t: torch.Tensor, lab: FusedLabels, t: int, last: bool
    ) -> tuple[list[FusedBlock], Readout, torch.Tensor | None]:
        """Step t of both streams through every block, the loss gradients added to the sums. Returns the new state,
        the new readout and the head's CE (None when not formed); the SP loss value is read by :meth:`take_loss`."""
        b = x_t.shape[0]
        if b != self.batch:
            self.begin(b)
        p = self.p
        scale = self.weight(t) / self.every
        with_loss = (t + 1) % self.loss_every == 0
        z = self.signal()
        x = x_t if x_t.dim() == 2 else x_t.reshape(b, -1)
        if not self.hidden:
            x = torch.cat((x, z))
        new_state = []
        for i, lif in enumerate(self.lifs):
            wn, bn, rn = self.names[i]
            wt, rt = self.wt[i]
            st = state[i]
            first_hidden = i == 0 and self.hidden
            out = self.a0_top if first_hidden else None
            if bn is not None:
                a = torch.addmm(p[bn], x, wt, out=out)
            else:
                a = torch.mm(x, wt, out=out)
            if first_hidden:
                a = self.a0
            if st.s_prev is not None:
                a = torch.addmm(a, st.s_prev, rt)
            # LIF (edgesp.spiking.lif_step): u ← (1−du) u + a, v ← (1−dv) v + u + bias, s = 1[v > θ], reset
            ku, kv = 1.0 - lif.du, 1.0 - lif.dv
            if st.lif is None:  # zero state
                u = a.clone() if first_hidden else a  # (a is then the reused buffer)
                v = u if lif.bias == 0.0 else u + lif.bias
            else:
                u = torch.add(a, st.lif.u, alpha=ku)
                v = torch.add(u, st.lif.v, alpha=kv)
                if lif.bias != 0.0:
                    v = v + lif.bias
            if not lif.spiking:
                s = v_next = v
            else:
                s = (v > lif.threshold).float()
                v_next = torch.add(v, s, alpha=-lif.threshold) if lif.reset == "subtract" else v * (1.0 - s)
            # eligibility traces (PresynTrace): ε_u ← (1−du) ε_u + p, ε_v ← (1−dv) ε_v + ε_u
            eu_x = x if st.eu_x is None else torch.add(x, st.eu_x, alpha=ku)
            ev_x = eu_x if st.ev_x is None else torch.add(eu_x, st.ev_x, alpha=kv)
            eu_1 = ku * st.eu_1 + 1.0
            ev_1 = kv * st.ev_1 + eu_1
            eu_s = ev_s = None
            if st.s_prev is not None:
                eu_s = st.s_prev if st.eu_s is None else torch.add(st.s_prev, st.eu_s, alpha=ku)
                ev_s = eu_s if st.ev_s is None else torch.add(eu_s, st.ev_s, alpha=kv)
            new_state.append(
                FusedBlock(LIFState(u, v_next), s if rn is not None else None, eu_x, ev_x, eu_1, ev_1, eu_s, ev_s)
            )
            if with_loss:
                self._loss_grad(i, v, b, lab, scale)
                g = self.g[i]
                g_top, g_bot = self.g_halves[i]
                gw, ones = (g_top, self.ones_top) if first_hidden else (g, self.ones)
                self._acc(wn).addmm_(gw.t(), ev_x)
                if bn is not None:
                    self._acc(bn).addmv_(gw.t(), ones, alpha=ev_1)
                if ev_s is not None:
                    assert rn is not None
                    self._acc(rn).addmm_(g.t(), ev_s)
                if first_hidden and self.train_signal:
                    self._acc("z").add_(g_bot, alpha=ev_1)
            x = s
        readout = readout.step(x[:b], self.decay)
        ce = None
        if self.head_every or last:
            ce = self._head(readout, lab, scale if self.head_every else 1.0)
        return new_state, readout, ce

    def _loss_grad(self, i: int, v: torch.Tensor, b: int, lab: FusedLabels, scale: float) -> None:
        """Loss L_i[t] of block i (added to the lazy sums) and g = scale · ∂L/∂v (all B+C rows) written into
        ``self.g[i]`` (module docstring)."""
        self.n_terms += 1
        q = v if self.v_floor is None else v.clamp(min=self.v_floor)
        qh, qt = q[:b], q[b:]
        g_top, g_bot = self.g_halves[i]
        hdim = q.shape[1]
        if self.kind == "l2":
            diff = qh - qt[lab.y]
            self.loss_sum.add_(diff.square().sum(), alpha=1.0 / (b * hdim))
            g_top.copy_(diff).mul_(2.0 * scale / (b * hdim))
            g_bot.zero_().index_add_(0, lab.y, g_top, alpha=-1.0)
        else:
            c = 1.0 / (self.tau * hdim)
            if lab.logm is None:
                logits = torch.mm(qh, qt.t()).mul_(c)
            else:
                logits = torch.addmm(lab.logm, qh, qt.t(), alpha=c)
            logp = torch.log_softmax(logits, dim=1)
            if self.kind == "v14":
                assert lab.same is not None and lab.logm is not None
                noise = torch.rand((b, b), generator=self.loss_gen)
                tgt = lab.y[torch.argmax(lab.same * (noise + 1.0), dim=1)]
                neg = torch.zeros_like(lab.onehot).scatter_(1, tgt[:, None], -1.0 / b)
                self.loss_sum.add_((lab.logm[0, tgt] - logp.gather(1, tgt[:, None])[:, 0]).mean())
            else:
                neg = lab.neg_w_onehot
                self.logp_sum.add_(logp)
            dy = torch.addcmul(neg, logp.exp(), lab.w)  # w ⊙ (P − onehot)
            k = c * scale
            torch.addmm(g_top, dy, qt, beta=0.0, alpha=k, out=g_top)
            torch.addmm(g_bot, dy.t(), qh, beta=0.0, alpha=k, out=g_bot)
        if self.v_floor is not None:
            self.g[i].mul_(v >= self.v_floor)

    def _head(self, readout: Readout, lab: FusedLabels, scale: float) -> torch.Tensor:
        feats = readout.features(self.spec)
        logits = readout.logits(self.spec, self.p, feats)
        logp = torch.log_softmax(logits, dim=1)
        b = logits.shape[0]
        ce = -logp.gather(1, lab.y[:, None]).sum() / b
        dl = logp.exp_().sub_(lab.onehot).mul_(scale / b)
        self._acc("head.weight").addmm_(dl.t(), feats)
        if "head.bias" in self.p:
            self._acc("head.bias").add_(dl.sum(0), alpha=1.0 if self.spike_count else readout.beta)
        return ce
