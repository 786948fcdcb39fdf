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
from edgesp.spiking import LIFState, lif_step

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
    """Constants of one label vector y (B,): the closed-form losses' weights (see module docstring)."""

    y: torch.Tensor
    onehot: torch.Tensor  # B×C
    w: torch.Tensor  # B×1: n_i/B (v9) or 1/B
    logm: torch.Tensor | None  # 1×C: log m_c (−inf for absent classes), None for v1
    const: float  # v9: Σ_i (n_i/B) log n_i
    same: torch.Tensor | None  # B×B: 1[y_i = y_j] (v14's positives)


def make_labels(kind: str, y: torch.Tensor, num_classes: int) -> FusedLabels:
    b = y.shape[0]
    onehot = F.one_hot(y, num_classes).float()
    counts = onehot.sum(0)
    if kind == "v9":
        n = counts[y]
        return FusedLabels(y, onehot, (n / b)[:, None], counts.log()[None, :], float((n * n.log()).sum() / b), None)
    logm = counts.log()[None, :] if kind == "v14" else None
    same = (y[:, None] == y[None, :]).float() if kind == "v14" else None
    return FusedLabels(y, onehot, torch.full((b, 1), 1.0 / b), logm, 0.0, same)


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
        self.tau = float(spec.rule.temperature or 0.1)
        self.every, self.loss_every, self.v_floor, self.weight = every, loss_every, v_floor, weight
        self.head_every, self.decay = head_every, decay
        self.hidden = spec.signal.hidden
        self.train_signal = train_signal and self.hidden  # input placement: the trace detaches z (no gradient)
        self.loss_gen = loss_gen
        self.C = spec.num_classes
        self.blocks = []
        for i, (_, lif) in enumerate(spec.blocks):
            pre = f"blocks.{i}."
            self.blocks.append(
                (
                    lif,
                    pre + "weight",
                    pre + "bias" if pre + "bias" in p else None,
                    pre + "rec_weight" if spec.recurrent_layer(i) is not None else None,
                )
            )
        self.sums: dict[str, torch.Tensor] = {}
        self.touched: set[str] = set()
        self.z: torch.Tensor | None = None  # the signal of the current update interval (detached)

    # -- gradient sums
    def _acc(self, name: str) -> torch.Tensor:
        s = self.sums.get(name)
        if s is None:
            shape = (self.C, *self.spec.signal_shape()) if name == "z" else self.p[name].shape
            s = self.sums[name] = torch.zeros(shape)
        self.touched.add(name)
        return s

    def set_grads(self) -> None:
        """Write the interval's sums as ``.grad`` of the parameters they reached (∂W_S, ∂b_S by autograd from ∂z)."""
        for name in self.touched:
            if name != "z":
                self.p[name].grad = self.sums[name].clone()
        if "z" in self.touched:
            z = signal_forward(self.spec, torch.arange(self.C), self.p)
            torch.autograd.backward(z, self.sums["z"])

    def zero(self) -> None:
        """After an update: empty sums; z is recomputed from the new W_S at the next step."""
        for name in self.touched:
            self.sums[name].zero_()
        self.touched.clear()
        self.z = None

    # -- the step
    def signal(self) -> torch.Tensor:
        if self.z is None:
            with torch.no_grad():
                self.z = signal_forward(self.spec, torch.arange(self.C), self.p).reshape(self.C, -1)
        return self.z

    @torch.no_grad()
    def step(
        self, state: list[FusedBlock], readout: Readout, x_t: torch.Tensor, lab: FusedLabels, t: int, last: bool
    ) -> tuple[list[FusedBlock], Readout, torch.Tensor, torch.Tensor | None]:
        """Step t of both streams through every block, the loss gradients added to the sums. Returns the new state,
        the new readout, Σ_i L_i[t] (0 at a step without loss) and the head's CE (None when not formed)."""
        p, b = self.p, x_t.shape[0]
        scale = self.weight(t) / self.every
        with_loss = (t + 1) % self.loss_every == 0
        z = self.signal()
        x = x_t.reshape(b, -1)
        if not self.hidden:
            x = torch.cat((x, z))
        total = x.new_zeros(())
        new_state = []
        for i, (lif, wn, bn, rn) in enumerate(self.blocks):
            st = state[i]
            bias = p[bn] if bn is not None else None
            a = torch.addmm(bias, x, p[wn].t()) if bias is not None else torch.mm(x, p[wn].t())
            if i == 0 and self.hidden:
                a = torch.cat((a, z))
            if st.s_prev is not None:
                a = torch.addmm(a, st.s_prev, p[rn].t())
            lst = st.lif or LIFState(torch.zeros_like(a), torch.zeros_like(a))
            s, v, lst = lif_step(lif, a, lst)
            ku, kv = 1.0 - lif.du, 1.0 - lif.dv
            eu_x = x if st.eu_x is None else torch.add(x, st.eu_x, alpha=ku)
            ev_x = eu_x if st.ev_x is None else torch.add(eu_x, st.ev_x, alpha=kv)
            eu_1 = ku * st.eu_1 + 1.0
            ev_1 = kv * st.ev_1 + eu_1
            eu_s = ev_s = None
            if st.s_prev is not None:
                eu_s = st.s_prev if st.eu_s is None else torch.add(st.s_prev, st.eu_s, alpha=ku)
                ev_s = eu_s if st.ev_s is None else torch.add(eu_s, st.ev_s, alpha=kv)
            new_state.append(FusedBlock(lst, s if rn is not None else None, eu_x, ev_x, eu_1, ev_1, eu_s, ev_s))
            if with_loss:
                loss, g = self._loss_grad(v, b, lab, scale)
                total = total + loss
                gw = g[:b] if i == 0 and self.hidden else g
                self._acc(wn).addmm_(gw.t(), ev_x)
                if bn is not None:
                    self._acc(bn).add_(gw.sum(0), alpha=ev_1)
                if ev_s is not None:
                    self._acc(rn).addmm_(g.t(), ev_s)
                if i == 0 and self.train_signal:
                    self._acc("z").add_(g[b:].reshape(self.sums["z"].shape), alpha=ev_1)
            x = s
        readout = readout.step(x[:b], self.decay)
        ce = None
        if self.head_every or last:
            ce = self._head(readout, lab, scale if self.head_every else 1.0)
        return new_state, readout, total, ce

    def _loss_grad(self, v: torch.Tensor, b: int, lab: FusedLabels, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss L_i[t] of one block and g = scale · ∂L/∂v for all B+C rows (module docstring)."""
        q = v if self.v_floor is None else v.clamp(min=self.v_floor)
        qh, qt = q[:b], q[b:]
        hdim = q.shape[1]
        if self.kind == "l2":
            diff = qh - qt[lab.y]
            loss = diff.square().sum() / (b * hdim)
            dh = diff.mul_(2.0 * scale / (b * hdim))
            dt = torch.zeros_like(qt).index_add_(0, lab.y, dh, alpha=-1.0)
            g = torch.cat((dh, dt))
        else:
            c = 1.0 / (self.tau * hdim)
            if self.kind == "v14":
                noise = torch.rand((b, b), generator=self.loss_gen)
                assert lab.same is not None
                tgt = lab.y[torch.argmax(lab.same * (noise + 1.0), dim=1)]
                onehot = lab.onehot.new_zeros(lab.onehot.shape).scatter_(1, tgt[:, None], 1.0)
            else:
                tgt, onehot = lab.y, lab.onehot
            if lab.logm is None:
                logits = torch.mm(qh, qt.t()).mul_(c)
            else:
                logits = torch.addmm(lab.logm, qh, qt.t(), alpha=c)
            logp = torch.log_softmax(logits, dim=1)
            picked = logp.gather(1, tgt[:, None])
            if self.kind == "v14":
                assert lab.logm is not None
                picked = picked - lab.logm[0, tgt][:, None]
            loss = lab.const - (lab.w * picked).sum()
            dy = logp.exp_().sub_(onehot).mul_(lab.w)
            g = torch.cat((torch.mm(dy, qt), torch.mm(dy.t(), qh))).mul_(c * scale)
        if self.v_floor is not None:
            g.mul_(v >= self.v_floor)
        return loss, g

    def _head(self, readout: Readout, lab: FusedLabels, scale: float) -> torch.Tensor:
        feats = readout.features(self.spec)
        logits = readout.logits(self.spec, self.p, feats)
        logp = torch.log_softmax(logits, dim=1)
        b = logits.shape[0]
        ce = -logp.gather(1, lab.y[:, None]).sum() / b
        dl = logp.exp_().sub_(lab.onehot).mul_(scale / b)
        self._acc("head.weight").addmm_(dl.t(), feats)
        if "head.bias" in self.p:
            spike_count = self.spec.temporal is not None and self.spec.temporal.readout == "spike_count"
            self._acc("head.bias").add_(dl.sum(0), alpha=1.0 if spike_count else readout.beta)
        return ce
