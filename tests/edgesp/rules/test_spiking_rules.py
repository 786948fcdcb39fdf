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
from edgesp.rtrl import bptt_loss, rtrl_loss_and_grads
from edgesp.rules import make_trainer
from edgesp.rules.spiking_rules import SPTrainer
from edgesp.spec import OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec
from edgesp.spiking import SpikeDerivativeUsed, smooth_spike, strict_spike, surrogate_spike

# SP loss settings pinned (the spec defaults are tuned for continuous networks; spiking SP needs τ ≈ 0.1,
# docs/benchmarks/spiking.md); the hand-computed references below use the same loss and temperature
SP = {"loss": "v9", "temperature": 0.1}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("rule", ["sp-voltage", "sp-surrogate"])
def test_spiking_sp_learns_digits(digits, rule: str) -> None:
    """Rate-coded digits, T=8, one 64-neuron LIF layer, 640 samples × 3 epochs (~3 s).
    Measured test accuracy over seeds 0-2 (hidden signal placement): sp-voltage 0.89/0.89/0.89, sp-surrogate
    0.85/0.86/0.83 (chance 0.10); the bar 0.70 leaves a margin of > 0.13."""
    torch.set_num_threads(1)
    spec = build_spec(
        "snn",
        digits.input_shape,
        10,
        width=64,
        depth=1,
        temporal=TemporalSpec(time_steps=8, encoding="rate"),
        rule=RuleSpec(name=rule, optimizer=OptimizerSpec(lr=1e-2), **SP),
    )
    tr = make_trainer(spec, init_params(spec, 0), 0)
    x, y = adapt_inputs(digits.x_train, spec.input_shape)[:640], digits.y_train[:640]
    for _ in range(3):
        for b in range(0, 640, 32):
            losses = tr.train_step(x[b : b + 32], y[b : b + 32])
            assert all(np.isfinite(v) for v in losses.values())
    acc = float((tr.predict(adapt_inputs(digits.x_test, spec.input_shape)).argmax(1) == digits.y_test).mean())
    assert acc >= 0.70, f"{rule} reached only {acc:.3f}"


def _small(
    rule: str, *, signal: str = "learned", placement: str = "hidden", t: int = 6, width: int = 12, depth: int = 2, **rp
):
    return build_spec(
        "snn",
        (16,),
        4,
        width=width,
        depth=depth,
        signal=SignalSpec(kind=signal, placement=placement),
        temporal=TemporalSpec(time_steps=t, encoding="rate", seed=1),
        rule=RuleSpec(name=rule, params=rp, **SP),
    )


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


@pytest.mark.parametrize("placement", ["input", "hidden"])
def test_sp_voltage_gradient_is_local_in_time(placement: str) -> None:
    """Independent check of sp-voltage's gradient for one block with a fixed signal: re-simulate the LIF by
    hand, treat each step's pre-reset membranes as leaves to get ∂L_t/∂v, and assemble
    ∂L/∂W = (1/T) Σ_t [(∂L_t/∂v^h_t)ᵀ s^h_in[t] + (∂L_t/∂v^t_t)ᵀ s^t_in[t]] — i.e. ∂v[t]/∂W = s_in[t], no
    surrogate and no earlier step. Hidden placement: the target's current is z itself (a^t = z), so only the
    sample path reaches W. Float32 sums in a different order: tolerance 1e-5 relative."""
    spec = _small("sp-voltage", signal="fixed", placement=placement, depth=1, t=5)
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
            if s == "t" and placement == "hidden":
                a = t0
            else:
                a = ins[s] @ p["blocks.0.weight"].T + p["blocks.0.bias"]
            u = (1 - lif.du) * u + a
            v = (1 - lif.dv) * v + u + lif.bias
            vs[s] = v.clone().requires_grad_(True)
            fire = (v > lif.threshold).float()
            spikes += float(fire.mean())
            state[s] = (u, v * (1 - fire))
        prev = torch.eye(4)[classes] if placement == "hidden" else t0[classes]
        loss = sp_loss("v9", vs["h"], vs["t"][classes], inv, yt, classes, temperature=0.1, t_prev_cls=prev)
        dh, dt = torch.autograd.grad(loss, [vs["h"], vs["t"]])
        if placement == "hidden":
            gw += dh.T @ ins["h"] / 5
            gb += dh.sum(0) / 5
        else:
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
    for k in ("signal.weight", "signal.bias"):  # fixed signal: frozen
        np.testing.assert_array_equal(tr.params()[k], params[k])


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


@pytest.mark.parametrize(
    ("rule", "kind", "moves"),
    [
        ("sp-voltage", "learned", True),
        ("sp-surrogate", "learned", True),
        ("sp-online", "learned", True),
        ("sp-voltage", "fixed", False),
        ("sp-online", "fixed", False),
        ("bptt", "learned", False),
        ("rtrl", "learned", False),
    ],
)
def test_hidden_signal_learns_only_under_sp_with_learned_kind(rule: str, kind: str, moves: bool) -> None:
    """Hidden placement: W_S, b_S move under the SP rules with a learned signal (they share block 0's
    optimizer, layer 1) and stay bit-identical under a fixed signal or bptt/rtrl (which never read it),
    while the blocks learn in every case."""
    spec = _small(rule, signal=kind, depth=2, width=8)
    assert spec.signal.hidden and spec.param_layer_index("signal.weight") == 1
    tr = make_trainer(spec, init_params(spec, 0), 0)
    before = tr.params()
    x, y = _batch(12, 2)
    for _ in range(2):
        tr.train_step(x, y)
    after = tr.params()
    assert all(not np.array_equal(before[k], after[k]) for k in before if k.startswith("blocks.0."))
    for k in ("signal.weight", "signal.bias"):
        assert (not np.array_equal(before[k], after[k])) == moves, k
    if isinstance(tr, SPTrainer):
        sig = {id(t) for n, t in tr.p.items() if n.startswith("signal.")}
        in_opt = {id(t) for o in tr.opts.values() for g in o.param_groups for t in g["params"]}
        assert bool(sig & in_opt) == moves
        if moves:  # one optimizer for block 0 and the signal
            group = [id(t) for g in tr.opts[1].param_groups for t in g["params"]]
            assert sig <= set(group) and id(tr.p["blocks.0.weight"]) in group


def test_hidden_signal_gradient_comes_only_from_block0_loss() -> None:
    """Two blocks, hidden placement, after 3 steps of warm-up: the gradient of one step's total loss
    Σ_i L_i[t] with respect to W_S, b_S equals the gradient of block 0's loss alone, recomputed by hand from
    the carried neuron state: z is the target's block-0 current, u = (1−du)u' + z, v = (1−dv)v' + u + bias,
    L_0 = v9(v^h_0, v^t_0) with the label as previous target. Block 1's loss (nonzero, and it does move block 1)
    contributes nothing to W_S."""
    spec = _small("sp-voltage", depth=2, width=10, t=6)
    params = init_params(spec, 3)
    params["blocks.0.weight"] *= 4  # spikes in block 0, so block 1 has input
    tr = make_trainer(spec, params, 0)
    assert isinstance(tr, SPTrainer)
    x, y = _batch(12, 4)
    yt = torch.tensor(y)
    tr.begin(12)
    rng = torch.Generator().manual_seed(1)
    for _ in range(3):
        tr.step_loss((torch.rand(12, 16, generator=rng) < 0.5).float(), yt)
    x_t = (torch.rand(12, 16, generator=rng) < 0.5).float()
    st_h, st_t = tr.h_state[0].lif[1], tr.t_state[0].lif[1]
    tr._zero()
    total = tr.step_loss(x_t, yt)
    total.backward()
    got = {k: tr.p[k].grad.clone() for k in ("signal.weight", "signal.bias", "blocks.1.weight")}
    assert got["blocks.1.weight"].abs().max() > 0 and float(tr.t_state[0].lif[1].v.abs().sum()) > 0

    lif = spec.blocks[0][1]
    p = {k: torch.tensor(v, requires_grad=k.startswith("signal.")) for k, v in params.items()}
    z = signal_forward(spec, torch.arange(4), p)
    v_t = (1 - lif.dv) * st_t.v + (1 - lif.du) * st_t.u + z + lif.bias
    a_h = x_t @ p["blocks.0.weight"].T + p["blocks.0.bias"]
    v_h = (1 - lif.dv) * st_h.v + (1 - lif.du) * st_h.u + a_h + lif.bias
    classes, inv = torch.unique(yt, return_inverse=True)
    l0 = sp_loss("v9", v_h, v_t[classes], inv, yt, classes, temperature=0.1, t_prev_cls=torch.eye(4)[classes])
    want = torch.autograd.grad(l0, [p["signal.weight"], p["signal.bias"]])
    assert want[0].abs().max() > 1e-4
    torch.testing.assert_close(got["signal.weight"], want[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["signal.bias"], want[1], rtol=1e-5, atol=1e-7)


def test_input_placement_learns_and_refuses_too_few_features(digits) -> None:
    """Input placement keeps t_0 as block 0's input current (W_S layer 0, trained through W_0): 64 LIF, T=8,
    640 digits × 2 epochs learns (W_S moves). A per-step input with fewer features than classes is refused
    with the fix, while hidden placement trains on it."""
    spec = build_spec(
        "snn",
        digits.input_shape,
        10,
        width=64,
        depth=1,
        signal=SignalSpec(placement="input"),
        temporal=TemporalSpec(time_steps=8, encoding="rate"),
        rule=RuleSpec(name="sp-voltage", optimizer=OptimizerSpec(lr=1e-2), **SP),
    )
    assert spec.param_layer_index("signal.weight") == 0
    tr = make_trainer(spec, init_params(spec, 0), 0)
    w0 = tr.params()["signal.weight"]
    x, y = adapt_inputs(digits.x_train, spec.input_shape)[:640], digits.y_train[:640]
    for _ in range(2):
        for b in range(0, 640, 32):
            tr.train_step(x[b : b + 32], y[b : b + 32])
    assert not np.array_equal(w0, tr.params()["signal.weight"])
    acc = float((tr.predict(adapt_inputs(digits.x_test, spec.input_shape)).argmax(1) == digits.y_test).mean())
    assert acc >= 0.65, acc  # measured seeds 0-2: 0.84/0.82/0.86

    def seq(placement: str):
        return build_spec(
            "snn",
            (1, 12),
            4,
            width=8,
            depth=1,
            signal=SignalSpec(placement=placement),
            temporal=TemporalSpec(encoding="sequence"),
            rule=RuleSpec(name="sp-online"),
        )

    with pytest.raises(SpecError, match="use placement hidden"):
        make_trainer(seq("input"), init_params(seq("input"), 0), 0)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((8, 1, 12)).astype(np.float32), rng.integers(0, 4, 8)
    tr = make_trainer(seq("hidden"), init_params(seq("hidden"), 0), 0)
    w0 = tr.params()["signal.weight"]
    assert w0.shape == (8, 4)
    tr.train_step(xs, ys)
    assert not np.array_equal(w0, tr.params()["signal.weight"])
    tr = make_trainer(seq("input").replace_rule(name="bptt"), init_params(seq("input"), 0), 0)
    tr.train_step(xs, ys)  # bptt ignores the signal: no placement constraint


def test_v1_loss_uses_every_class_target() -> None:
    """Loss v1 (direct label) scores each sample against all C classes' targets, also those absent from the
    batch: first step, one block, fresh state, so v^h = W x + b and v^t = z (hidden placement);
    L = CE(v^h z^T / (τ d), y) by hand."""
    spec = build_spec(
        "snn",
        (16,),
        4,
        width=12,
        depth=1,
        temporal=TemporalSpec(time_steps=3, encoding="rate", seed=1),
        rule=RuleSpec(name="sp-voltage", loss="v1", temperature=0.1),
    )
    tr = make_trainer(spec, init_params(spec, 0), 0)
    assert isinstance(tr, SPTrainer)
    x = (torch.rand(6, 16, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    y = torch.tensor([0, 0, 1, 1, 0, 1])  # classes 2, 3 absent
    tr.begin(6)
    got = tr.step_loss(x, y)
    with torch.no_grad():
        z = signal_forward(spec, torch.arange(4), tr.p)
        v_h = x @ tr.p["blocks.0.weight"].T + tr.p["blocks.0.bias"]
        want = torch.nn.functional.cross_entropy(v_h @ z.T / (0.1 * 12), y)
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def _tiny_recurrent(dtype=torch.float64):
    spec = build_spec(
        "snn",
        (3,),
        3,
        width=5,
        depth=1,
        rule=RuleSpec(name="bptt"),
        temporal=TemporalSpec(time_steps=8, encoding="direct"),
        recurrent=True,
    )
    p = init_params(spec, 0)
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
    for name in ("blocks.0.weight", "blocks.0.rec_weight", "blocks.0.bias"):
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
