"""Spiking learning rules: SP learns, never differentiates the spike, learns online from the current step only;
RTRL equals BPTT."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgesp.data import adapt_inputs, load_digits
from edgesp.errors import SpecError
from edgesp.functional import init_params, signal_forward
from edgesp.losses import sp_loss
from edgesp.presets import build_spec
from edgesp.rtrl import add_recurrence, bptt_loss, rtrl_loss_and_grads
from edgesp.rules import make_trainer
from edgesp.rules.spiking_rules import SPTrainer
from edgesp.spec import OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec
from edgesp.spiking import SpikeDerivativeUsed, smooth_spike, strict_spike, surrogate_spike


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("rule", ["sp-voltage", "sp-surrogate"])
def test_spiking_sp_learns_digits(digits, rule: str) -> None:
    """Rate-coded digits, T=8, one 64-neuron LIF layer, 640 samples × 3 epochs (~3 s).
    Measured test accuracy over seeds 0-2: sp-voltage 0.82/0.87/0.86, sp-surrogate 0.76/0.82/0.84
    (chance 0.10); the bar 0.60 leaves a margin of > 0.15."""
    torch.set_num_threads(1)
    spec = build_spec("snn", digits.input_shape, 10, width=64, depth=1,
                      temporal=TemporalSpec(time_steps=8, encoding="rate"),
                      rule=RuleSpec(name=rule, optimizer=OptimizerSpec(lr=1e-2)))
    tr = make_trainer(spec, init_params(spec, 0), 0)
    x, y = adapt_inputs(digits.x_train, spec.input_shape)[:640], digits.y_train[:640]
    for _ in range(3):
        for b in range(0, 640, 32):
            losses = tr.train_step(x[b:b + 32], y[b:b + 32])
            assert all(np.isfinite(v) for v in losses.values())
    acc = float((tr.predict(adapt_inputs(digits.x_test, spec.input_shape)).argmax(1) == digits.y_test).mean())
    assert acc >= 0.60, f"{rule} reached only {acc:.3f}"


def _small(rule: str, *, signal: str = "learned", t: int = 6, width: int = 12, depth: int = 2, **rp):
    return build_spec("snn", (16,), 4, width=width, depth=depth, signal=SignalSpec(kind=signal),
                      temporal=TemporalSpec(time_steps=t, encoding="rate", seed=1),
                      rule=RuleSpec(name=rule, params=rp))


def _batch(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 16)).astype(np.float32), rng.integers(0, 4, n)


@pytest.mark.parametrize("rule", ["sp-voltage", "sp-surrogate", "sp-online"])
def test_sp_rules_never_differentiate_the_spike(rule: str) -> None:
    """The SP rules step neurons with strict_spike, whose backward raises: a full train step completes, so no
    gradient reached S; the negative control (a loss on the spikes) raises, so the guard is live."""
    spec = _small(rule)
    tr = make_trainer(spec, init_params(spec, 0), 0)
    assert isinstance(tr, SPTrainer) and tr.spike is strict_spike
    before = tr.params()
    x, y = _batch()
    tr.train_step(x, y)
    after = tr.params()
    assert all(not np.array_equal(before[k], after[k]) for k in before if k.startswith("blocks."))
    bad = make_trainer(spec, init_params(spec, 0), 0)
    bad._z = lambda v, i: strict_spike(v, 1.0)  # loss on S(v): must hit the guard
    with pytest.raises(SpikeDerivativeUsed):
        bad.train_step(x, y)


def test_sp_voltage_gradient_is_local_in_time() -> None:
    """Independent check of sp-voltage's gradient for one block with a fixed signal: re-simulate the LIF by
    hand, treat each step's pre-reset membranes as leaves to get ∂L_t/∂v, and assemble
    ∂L/∂W = (1/T) Σ_t [(∂L_t/∂v^h_t)ᵀ s^h_in[t] + (∂L_t/∂v^t_t)ᵀ s^t_in[t]] — i.e. ∂v[t]/∂W = s_in[t], no
    surrogate and no earlier step. Float32 sums in a different order: tolerance 1e-5 relative."""
    spec = _small("sp-voltage", signal="fixed", depth=1, t=5)
    params = init_params(spec, 2)
    params["blocks.0.weight"] *= 4
    tr = make_trainer(spec, params, 0)
    x, y = _batch(10, 3)
    gen = copy.deepcopy(tr.gen)
    tr.train_step(x, y)  # updates once with Adam; recompute the gradient it used instead:
    xt, yt = torch.tensor(x), torch.tensor(y)
    classes, inv = torch.unique(yt, return_inverse=True)
    p = {k: torch.tensor(v) for k, v in params.items()}
    t0 = signal_forward(spec, torch.arange(4), p)
    from edgesp.encoding import Encoder

    enc = Encoder(spec, xt, gen)
    lif = spec.blocks[0][1]
    state = {"h": (torch.zeros(10, 12), torch.zeros(10, 12)), "t": (torch.zeros(4, 12),) * 2}
    gw = torch.zeros_like(p["blocks.0.weight"])
    gb = torch.zeros_like(p["blocks.0.bias"])
    spikes = 0.0
    for step in range(5):
        vs, ins = {}, {"h": enc.step(step), "t": t0}
        for s in ("h", "t"):
            u, v = state[s]
            a = ins[s] @ p["blocks.0.weight"].T + p["blocks.0.bias"]
            u = (1 - lif.du) * u + a
            v = (1 - lif.dv) * v + u + lif.bias
            vs[s] = v.clone().requires_grad_(True)
            fire = (v > lif.threshold).float()
            spikes += float(fire.mean())
            state[s] = (u, v * (1 - fire))
        loss = sp_loss("v9", vs["h"], vs["t"][classes], inv, yt, classes, temperature=0.1, t_prev_cls=t0[classes])
        dh, dt = torch.autograd.grad(loss, [vs["h"], vs["t"]])
        gw += (dh.T @ ins["h"] + dt.T @ ins["t"]) / 5
        gb += (dh.sum(0) + dt.sum(0)) / 5
    assert spikes > 0  # spikes and resets happened, so the detached state mattered
    # Adam's first step moves each weight by lr·sign(g) (|g| ≫ eps): compare the sign pattern and reproduce it
    lr = spec.rule.optimizer.lr
    moved = (params["blocks.0.weight"] - tr.params()["blocks.0.weight"]) / lr
    big = gw.abs() > 1e-4
    np.testing.assert_allclose(moved[big.numpy()], torch.sign(gw)[big].numpy(), rtol=1e-3, atol=1e-3)
    moved_b = (params["blocks.0.bias"] - tr.params()["blocks.0.bias"]) / lr
    np.testing.assert_allclose(moved_b, torch.sign(gb).numpy(), rtol=1e-3, atol=1e-3)


def test_online_update_reads_only_current_step_and_neuron_state() -> None:
    """sp-online, update every step. Trainer A runs steps 0..k-1 on the real batch; trainer B on *different*
    inputs and labels. B then receives A's weights, optimizer state and neuron state (u, v, readout trace) —
    nothing else — and both run step k on the same input and labels: the updates must be identical. Any
    stored past input, target or trace outside the neuron state would make them differ."""
    spec = _small("sp-online", t=8)
    x, y = _batch(12, 0)
    k = 5
    a = make_trainer(spec, init_params(spec, 0), 0)
    b = make_trainer(spec, init_params(spec, 0), 0)
    assert isinstance(a, SPTrainer) and isinstance(b, SPTrainer)
    a.begin(12)
    b.begin(12)
    rng = torch.Generator().manual_seed(5)
    steps = [(torch.rand(12, 16, generator=rng) < 0.4).float() for _ in range(k + 1)]
    yt = torch.tensor(y)
    for t in range(k):
        a.online_step(steps[t], yt)
        b.online_step(torch.rand(12, 16, generator=rng) * 3, torch.randint(0, 4, (12,), generator=rng))
    assert any(not torch.equal(a.p[n], b.p[n]) for n in a.p)  # histories really differ
    with torch.no_grad():
        for n in a.p:
            b.p[n].copy_(a.p[n])
    for i in a.opts:
        b.opts[i].load_state_dict(copy.deepcopy(a.opts[i].state_dict()))
    b.h_state, b.t_state, b.readout = list(a.h_state), list(a.t_state), a.readout  # state objects are immutable
    before = {n: v.detach().clone() for n, v in a.p.items()}
    a.online_step(steps[k], yt)
    b.online_step(steps[k], yt)
    for n in a.p:
        assert not torch.equal(a.p[n], before[n]) or n.startswith("signal.bias")
        torch.testing.assert_close(b.p[n], a.p[n], rtol=0, atol=0, msg=n)


def test_online_step_graph_reaches_only_current_parameters() -> None:
    """The autograd graph of one online step's loss has no path into earlier steps: its leaves are exactly
    the model parameters (the neuron state carried over is detached, inputs are constants)."""
    spec = _small("sp-online", t=4)
    tr = make_trainer(spec, init_params(spec, 0), 0)
    tr.begin(12)
    x, y = _batch(12, 1)
    yt = torch.tensor(y)
    for _ in range(3):
        tr.online_step(torch.tensor(x), yt)
    loss = tr.step_loss(torch.tensor(x), yt) + tr.head_loss(yt)
    leaves, seen, todo = set(), set(), [loss.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        todo.extend(nxt for nxt, _ in fn.next_functions)
    params = {id(v): n for n, v in tr.p.items()}
    assert leaves <= set(params)
    assert {params[i] for i in leaves} == set(tr.p)  # every layer (signal, blocks, head) learns here


def _tiny_recurrent(dtype=torch.float64):
    spec = build_spec("snn", (3,), 3, width=5, depth=1, rule=RuleSpec(name="bptt"),
                      temporal=TemporalSpec(time_steps=8, encoding="direct"))
    p = add_recurrence(spec, init_params(spec, 0), 0)
    p = {k: torch.tensor(v, dtype=dtype) * 3 for k, v in p.items()}  # large enough to cross threshold
    x = torch.tensor(np.random.default_rng(0).standard_normal((4, 3)) * 2, dtype=dtype)
    return spec, p, x, torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("spike", ["smooth", "surrogate"])
def test_rtrl_gradient_matches_bptt(spike: str) -> None:
    """Tiny recurrent LIF layer (3 → 5 with 5×5 recurrent weights, T=8, B=4), float64. RTRL (forward
    sensitivities) vs BPTT (autograd) compute the same chain rule in a different order: they must agree
    to 1e-12 absolute (observed ≤ 5e-16 on gradients of size ≈ 1)."""
    spec, p, x, y = _tiny_recurrent()
    fn = smooth_spike(5.0) if spike == "smooth" else surrogate_spike(5.0)
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    loss_b, _ = bptt_loss(spec, x, y, leaves, fn)
    loss_b.backward()
    loss_r, _, grads, nbytes = rtrl_loss_and_grads(spec, x, y, p, fn)
    assert abs(float(loss_b) - float(loss_r)) < 1e-12
    assert set(grads) == {k for k in p if not k.startswith("signal.")}
    assert nbytes == 4 * (5 + 5 + 5 + 5) * (15 + 5 + 25) * 8  # B·S·P·8 bytes: u, v, prev, e × W, b, R
    for k, g in grads.items():
        ref = leaves[k].grad
        assert ref is not None and ref.abs().max() > 1e-3
        torch.testing.assert_close(g, ref, rtol=0, atol=1e-12)


def test_rtrl_gradient_matches_finite_differences() -> None:
    """Smooth units make the loss differentiable: RTRL equals central differences (h=1e-6, float64; truncation
    error O(h²)·f''' ≈ 1e-11, rounding ≈ 1e-16/h = 1e-10), tolerance 1e-6."""
    spec, p, x, y = _tiny_recurrent()
    fn = smooth_spike(5.0)
    _, _, grads, _ = rtrl_loss_and_grads(spec, x, y, p, fn)
    rng = np.random.default_rng(1)
    for name in ("blocks.0.weight", "blocks.0.recurrent", "blocks.0.bias"):
        for _ in range(3):
            idx = tuple(int(rng.integers(0, n)) for n in p[name].shape)
            vals = []
            for sign in (1, -1):
                q = {k: v.clone() for k, v in p.items()}
                q[name][idx] += sign * 1e-6
                vals.append(float(bptt_loss(spec, x, y, q, fn)[0]))
            fd = (vals[0] - vals[1]) / 2e-6
            assert abs(fd - float(grads[name][idx])) < 1e-6


def test_rtrl_trainer_learns_and_refuses_oversized_models() -> None:
    spec = _small("rtrl", depth=1, width=6)
    tr = make_trainer(spec, init_params(spec, 0), 0)
    x, y = _batch(16, 0)
    first = tr.train_step(x, y)["ce"]
    for _ in range(30):
        last = tr.train_step(x, y)["ce"]
    assert last < first  # fits one batch
    big = _small("rtrl", depth=1, width=64, rtrl_max_mib=1)
    with pytest.raises(SpecError, match="RTRL needs about"):
        make_trainer(big, init_params(big, 0), 0).train_step(x, y)


def test_unknown_rule_parameter_is_rejected() -> None:
    spec = _small("sp-online", update_evry=2)
    with pytest.raises(SpecError, match="unknown rule parameters"):
        make_trainer(spec, init_params(spec, 0), 0)
