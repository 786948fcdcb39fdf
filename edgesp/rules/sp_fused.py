"""Fused, autograd-free sp-online step: rule ``sp-online`` with ``trace='filter'`` and ``online_loss='voltage'``
(the CLI's sequence defaults), loss v9, v1, v14 or l2, Linear → LIF blocks; also rule ``sp-voltage`` with
``trace='filter'``, which is the same step with one update per sequence (every = T) and the head's CE at step T.
The same arithmetic as the autograd path of :class:`edgesp.rules.spiking_rules.SPTrainer` (the general fallback and
this module's test oracle), written out so that a step is a few dense ops instead of a graph
(tests/edgesp/rules/test_sp_online_fused.py).

Rows: the sample stream's B rows and the target stream's C rows (one per class, by class id) are stacked into one
(B+C)-row batch per block, and a recurrent block's input is the stacked matrix X = [x | s[t−1]] (each stream's own
previous spikes) against one weight [W | W_rec]: a = X [W | W_rec]ᵀ + o with the offset o = [b ; z] for block 0 with
hidden placement (z is the target's input current there, and the target's x rows are 0: W x + b is the sample
stream's only) and o = b otherwise; x_t = z for block 0 with input placement. Then the LIF update of
:func:`edgesp.spiking.lif_step` written out and one eligibility-trace update over all columns of X
(:class:`~edgesp.rules.spiking_rules.PresynTrace`: ε_u ← (1−du) ε_u + X, ε_v ← (1−dv) ε_v + ε_u; ε_1 for the bias,
a scalar). The spikes of step t are written straight into step t+1's X.

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
of an update interval: ∂[W | W_rec] += gᵀ ε_v (both streams; with hidden placement the target rows' x part of ε_v is
0, so W sees the sample rows only, W_rec both), ∂b += ε_v,1 Σ_rows g (block 0 with hidden placement: the B sample
rows; the C target rows give ∂z += ε_v,1 g_t instead). z depends on W_S, b_S only, which change only at an update: z
is computed once per interval and at the update the summed ∂z goes through :func:`edgesp.functional.signal_forward`
in closed form: z = act(n), n = (a − μ)/σ over the D features of a_c = W_S[:, c] + b_S, ∂n = ∂z·1[n > 0] (ReLU), ∂a
= (∂n − mean(∂n) − n·mean(∂n·n))/σ, ∂W_S[:, c] = ∂a_c, ∂b_S = Σ_c ∂a_c (input placement: the trace detaches the
target's input, so — as on the autograd path — no loss reaches W_S).
Head: CE of the readout logits ℓ = W_h f + β b_h (f the readout features, β the bias factor; 1 for a spike-count
readout): ∂ℓ = (softmax(ℓ) − onehot(y))/B, ∂W_h += ∂ℓᵀ f, ∂b_h += β Σ_i ∂ℓ_i; weighted w_t/k with
``head_steps='every'``, 1 at step T with 'last'. At an update the sums become the ``.grad`` of exactly the parameters
a term reached (as autograd would leave the others at None) and the trainer's torch optimizers step.

Cost: the state and traces are updated in place (no allocation per step), and :class:`SPTrainer` runs Adam on
torch's fused kernel whenever this step applies (docs/benchmarks/sp_online_fused.md).

``loss_every`` = n ≥ 1: the SP loss and its gradient products are formed only at steps with (t+1) % n == 0 (the
state and traces still advance every step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgesp.functional import Params, signal_forward
from edgesp.snn import Readout
from edgesp.spec import LIF, Linear, ModelSpec

FUSED_LOSSES = ("v9", "v1", "v14", "l2")


def fused_unsupported(spec: ModelSpec, mode: str, trace: str) -> str | None:
    """Why the fused step cannot run this configuration (None: it can)."""
    if spec.rule.name not in ("sp-online", "sp-voltage"):
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


@dataclass(slots=True)
class FusedBlock:
    """Carried state of one block, both streams stacked (rows 0..B−1 the sample, B..B+C−1 the target of class c):
    the LIF state (u, v after reset); for a recurrent block the next step's input buffer ``xs`` = [x | s] whose
    s part holds this step's spikes (its x part is written at the next step; one of the block's two buffers, used
    in turn); the eligibility traces ε_u, ε_v of the block's whole input [x | s[t−1]] (one column per presynaptic
    value; the target rows of block 0's x part are 0 with hidden placement, where the target has no x) and ε_1 (a
    scalar shared by all rows). The step updates u, v, ε_u and ε_v in place: copy a state to keep it."""

    u: torch.Tensor | None = None
    v: torch.Tensor | None = None
    xs: torch.Tensor | None = None
    eu: torch.Tensor | None = None
    ev: torch.Tensor | None = None
    eu_1: float = 0.0
    ev_1: float = 0.0


@dataclass
class FusedLabels:
    """Constants of one label vector y (B,) for the closed-form losses (see module docstring)."""

    y: torch.Tensor
    onehot: torch.Tensor  # B×C
    w: torch.Tensor  # B×1: n_i/B (v9) or 1/B
    w_onehot: torch.Tensor  # B×C: w_i·onehot(y_i) (a term's loss value is const − Σ_i w_i log P_{i,y_i})
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
        if v_floor is not None:  # the largest float32 below v_floor: v > it ⇔ v ≥ v_floor for float32 v
            f32 = torch.tensor(v_floor, dtype=torch.float32)
            self.below_floor = float(torch.nextafter(f32, torch.tensor(-math.inf)))
        self.head_every, self.decay = head_every, decay
        self.hidden = spec.signal.hidden
        # input placement: the trace detaches z (no gradient); SPTrainer refuses a learned signal there
        self.train_signal = train_signal and self.hidden
        self.relu = spec.signal.activation == "relu"
        self.loss_gen = loss_gen
        self.C = spec.num_classes
        self.spike_count = spec.temporal is not None and spec.temporal.readout == "spike_count"
        # per block: parameter names (W, b, W_rec), LIF, input features I, neurons H
        self.blocks: list[tuple[str, str | None, str | None, LIF, int, int]] = []
        for i, (lin, lif) in enumerate(spec.blocks):
            pre = f"blocks.{i}."
            rec = pre + "rec_weight" if spec.recurrent_layer(i) is not None else None
            bias = pre + "bias" if pre + "bias" in p else None
            self.blocks.append((pre + "weight", bias, rec, lif, lin.in_features, lin.out_features))
        # gradient sums of one update interval: "in{i}" = ∂[W | W_rec] of block i, "z" = ∂z, then b and the head
        self.sums: dict[str, torch.Tensor] = {}
        for i, (_, bn, rn, _, fi, h) in enumerate(self.blocks):
            self.sums[f"in{i}"] = torch.zeros(h, fi + (h if rn else 0))
            if bn is not None:
                self.sums[bn] = torch.zeros(h)
        self.sums["z"] = torch.zeros(self.C, spec.signal_dim)
        for name in ("head.weight", "head.bias"):
            if name in p:
                self.sums[name] = torch.zeros(p[name].shape)
        self.touched: set[str] = set()
        self.fresh = False  # the per-interval constants (z, [W | W_rec]ᵀ, the current offsets) are current
        self.batch = -1
        # the loss value, summed lazily over the terms (block, step) since the last take_loss: v9/v1 keep Σ log P
        self.n_terms = 0
        self.logp_sum = torch.zeros(0)
        self.loss_sum = torch.zeros(())  # v14, l2: Σ of the terms' values

    # -- gradient sums
    def set_grads(self) -> None:
        """Write the interval's sums as ``.grad`` of the parameters they reached (as autograd would leave the others
        at None: W_rec only from a step with previous spikes); ∂W_S, ∂b_S from ∂z in closed form (module docstring)."""
        t = self.touched
        for i, (wn, bn, rn, _, fi, _) in enumerate(self.blocks):
            key = f"in{i}"
            if key in t:
                self.p[wn].grad = self.sums[key][:, :fi].clone()
                if rn is not None and rn in t:
                    self.p[rn].grad = self.sums[key][:, fi:].clone()
            if bn is not None and bn in t:
                self.p[bn].grad = self.sums[bn].clone()
        for name in ("head.weight", "head.bias"):
            if name in t:
                self.p[name].grad = self.sums[name].clone()
        if "z" in t:  # z = act(n), n = LayerNorm(a) = (a − μ)/σ, a_c = W_S[:, c] + b_S (edgesp.functional)
            dn = self.sums["z"] * (self.z_n > 0) if self.relu else self.sums["z"]
            n = self.z_n
            da = (dn - dn.mean(1, keepdim=True) - n * (dn * n).mean(1, keepdim=True)) / self.z_sigma
            self.p["signal.weight"].grad = da.t().contiguous()
            self.p["signal.bias"].grad = da.sum(0)

    def zero(self) -> None:
        """After an update: empty sums; the per-interval constants are recomputed from the new weights."""
        for s in self.sums.values():
            s.zero_()
        self.touched.clear()
        self.fresh = False

    # -- the step
    def begin(self, batch: int) -> None:
        """Scratch buffers for a batch of B sequences (each block's (B+C)-row gradient g; block 0's input with zero
        target rows for a non-recurrent block 0); the per-interval constants are recomputed at the next step. A batch
        of the size of the previous one reuses its buffers (every entry a step reads is written before it is read)."""
        self.n_terms = 0
        self.fresh = False
        if batch == self.batch:
            self.logp_sum.zero_()
            return
        rows = batch + self.C
        self.batch = batch
        self.g = [torch.zeros(rows, h) for *_, h in self.blocks]
        self.g_halves = [(g[:batch], g[batch:]) for g in self.g]
        self.x0 = torch.zeros(rows, self.blocks[0][4])
        # a recurrent block's two input buffers [x | s], used in turn (step t reads one, writes s[t] into the other)
        self.xbuf = [
            (torch.zeros(rows, fi + h), torch.zeros(rows, fi + h)) if rn is not None else None
            for _, _, rn, _, fi, h in self.blocks
        ]
        self.ones = torch.ones(rows)
        self.logp_sum = torch.zeros(batch, self.C)

    def refresh(self) -> None:
        """Constants of an update interval (the weights change only at updates): z (and its n, σ when the signal
        learns), each block's [W | W_rec]ᵀ and current offset: [b ; z] (block 0, hidden placement), b, or 0."""
        p, b = self.p, self.batch
        with torch.no_grad():
            if self.train_signal:  # signal_forward written out, keeping n and σ for the closed-form gradient
                a = p["signal.weight"].t() + p["signal.bias"]  # onehot(c) W_Sᵀ + b_S for c = 0..C−1
                d = a - a.mean(dim=1, keepdim=True)
                self.z_sigma = torch.sqrt((d**2).mean(dim=1, keepdim=True) + 1e-5)
                self.z_n = d / self.z_sigma
                z = torch.relu(self.z_n) if self.relu else self.z_n
            else:
                z = signal_forward(self.spec, torch.arange(self.C), p).reshape(self.C, -1)
            self.z = z
            self.wt, self.offset = [], []
            for i, (wn, bn, rn, _, _, h) in enumerate(self.blocks):
                w = p[wn] if rn is None else torch.cat((p[wn], p[rn]), 1)
                self.wt.append(w.t())
                bias = p[bn] if bn is not None else torch.zeros(h)
                self.offset.append(torch.cat((bias.expand(b, h), z)) if i == 0 and self.hidden else bias)
        self.fresh = True

    def step(
        self, state: list[FusedBlock], readout: Readout, x_t: torch.Tensor, lab: FusedLabels, t: int, last: bool
    ) -> tuple[list[FusedBlock], Readout, torch.Tensor | None]:
        """Step t of both streams through every block, the loss gradients added to the sums (call under
        ``torch.no_grad()``). Returns the new state, the new readout and the head's CE (None when not formed); the SP
        loss value is read by :meth:`take_loss`."""
        b = x_t.shape[0]
        if b != self.batch:
            self.begin(b)
        if not self.fresh:
            self.refresh()
        with_loss = (t + 1) % self.loss_every == 0
        scale = self.weight(t) / self.every if with_loss or self.head_every else 1.0
        x = x_t if x_t.dim() == 2 else x_t.reshape(b, -1)
        new_state = []
        for i, (*_, lif, fi, _h) in enumerate(self.blocks):
            st = state[i]
            ku, kv, theta = 1.0 - lif.du, 1.0 - lif.dv, lif.threshold
            # the block's input X = [x | s[t−1]] over all B + C rows
            buf = self.xbuf[i]
            if buf is not None:
                if st.xs is None:  # first step: no previous spikes
                    xs = buf[0]
                    xs[:, fi:] = 0.0
                else:
                    xs = st.xs
                if i != 0:
                    xs[:, :fi] = x
                else:
                    xs[:b, :fi] = x
                    if not self.hidden:
                        xs[b:, :fi] = self.z
            elif i == 0:
                xs = self.x0  # reused: target rows hold z (input placement) or 0 (hidden placement)
                xs[:b] = x
                if not self.hidden:
                    xs[b:] = self.z
            else:
                xs = x
            a = torch.addmm(self.offset[i], xs, self.wt[i])
            # LIF (edgesp.spiking.lif_step): u ← (1−du) u + a, v ← (1−dv) v + u + bias, s = 1[v > θ], reset.
            # The state's u, v and traces are updated in place (a state handed to another trainer must be copied).
            if st.u is None:  # zero state
                u, v = a, a.clone()
            else:
                u = torch.add(a, st.u, alpha=ku, out=st.u)
                v = torch.add(u, st.v, alpha=kv, out=st.v)
            if lif.bias != 0.0:
                v.add_(lif.bias)
            xs_next = None
            if buf is not None:  # (recurrent ⇒ spiking) the spikes go straight into the next step's input buffer
                xs_next = buf[1] if xs is buf[0] else buf[0]
                s = torch.gt(v, theta, out=xs_next[:, fi:])
            else:
                s = (v > theta).float() if lif.spiking else v.clone()
            # eligibility traces (PresynTrace) of every input column: ε_u ← (1−du) ε_u + X, ε_v ← (1−dv) ε_v + ε_u
            if st.eu is None:
                eu, ev = xs.clone(), xs.clone()
            else:
                eu = torch.add(xs, st.eu, alpha=ku, out=st.eu)
                ev = torch.add(eu, st.ev, alpha=kv, out=st.ev)
            eu_1 = ku * st.eu_1 + 1.0
            ev_1 = kv * st.ev_1 + eu_1
            if with_loss:  # (on the pre-reset v)
                self._loss_grad(i, v, b, lab, scale)
                self._grads(i, st.xs is not None, ev, ev_1)
            if lif.spiking:
                if lif.reset == "subtract":
                    v.sub_(s, alpha=theta)
                else:  # reset to zero: v (1 − s) = v − v·s, exactly (s is 0 or 1)
                    v.addcmul_(v, s, value=-1.0)
            new_state.append(FusedBlock(u, v, xs_next, eu, ev, eu_1, ev_1))
            x = s
        readout = readout.step(x[:b], self.decay)
        ce = None
        if self.head_every or last:
            ce = self._head(readout, lab, scale if self.head_every else 1.0)
        return new_state, readout, ce

    def _grads(self, i: int, had_spikes: bool, ev: torch.Tensor, ev_1: float) -> None:
        """Add block i's gradient products (module docstring) to the sums, g = ``self.g[i]``."""
        _, bn, rn, *_ = self.blocks[i]
        g, touched = self.g[i], self.touched
        key = f"in{i}"
        self.sums[key].addmm_(g.t(), ev)  # target rows' x part of ε is 0 where W is not on their path
        touched.add(key)
        if rn is not None and had_spikes:  # s[t−1] exists: W_rec is on the path
            touched.add(rn)
        first_hidden = i == 0 and self.hidden
        if bn is not None:
            gb = self.g_halves[i][0] if first_hidden else g
            self.sums[bn].addmv_(gb.t(), self.ones[: gb.shape[0]], alpha=ev_1)
            touched.add(bn)
        if first_hidden and self.train_signal:
            self.sums["z"].add_(self.g_halves[i][1], alpha=ev_1)
            touched.add("z")

    def take_loss(self, lab: FusedLabels) -> float:
        """Σ of the SP loss terms L_i[t] since the last call (v9/v1: n·const − Σ_i w_i Σ log P_{i,y_i}), then reset."""
        value = float(self.loss_sum)
        if self.n_terms and self.kind in ("v9", "v1"):  # (log P of absent classes is −inf: read the targets only)
            value += self.n_terms * lab.const - float((lab.w * self.logp_sum.gather(1, lab.y[:, None])).sum())
            self.logp_sum.zero_()
        self.loss_sum.zero_()
        self.n_terms = 0
        return value

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
        if self.v_floor is not None:  # g ← g · 1[v ≥ v_floor] (as v > the next float32 below v_floor), in place
            torch.ops.aten.threshold_backward.grad_input(self.g[i], v, self.below_floor, grad_input=self.g[i])

    def _head(self, readout: Readout, lab: FusedLabels, scale: float) -> torch.Tensor:
        feats = readout.features(self.spec)
        logits = readout.logits(self.spec, self.p, feats)
        logp = torch.log_softmax(logits, dim=1)
        b = logits.shape[0]
        ce = -logp.gather(1, lab.y[:, None]).sum() / b
        dl = logp.exp_().sub_(lab.onehot).mul_(scale / b)
        self.sums["head.weight"].addmm_(dl.t(), feats)
        self.touched.add("head.weight")
        if "head.bias" in self.p:
            self.sums["head.bias"].add_(dl.sum(0), alpha=1.0 if self.spike_count else readout.beta)
            self.touched.add("head.bias")
        return ce
