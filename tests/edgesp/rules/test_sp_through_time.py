"""SP through time on recurrent spiking layers: the eligibility-trace gradient ('trace': 'filter') is exact
through each neuron's own dynamics, an update reads only the current step, the carried state and traces, and
no block's update reads a later layer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgesp.functional import init_params, signal_forward
from edgesp.losses import sp_loss
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.rules.spiking_rules import SPTrainer
from edgesp.spec import LIF, RuleSpec, SignalSpec, TemporalSpec


def _spec(rule: str = "sp-online", depth: int = 1, reset: str = "subtract", signal: str = "fixed", **rp):
    return build_spec(
        "snn",
        (4, 9),
        3,
        width=7,
        depth=depth,
        lif=LIF(du=0.5, dv=0.2, threshold=0.5, reset=reset),
        recurrent=True,
        signal=SignalSpec(kind=signal),
        temporal=TemporalSpec(encoding="sequence"),
        rule=RuleSpec(name=rule, loss="v9", temperature=0.1, params={"trace": "filter", **rp}),
    )


def _inputs(b: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return torch.tensor((rng.random((b, 4, 9)) < 0.5).astype(np.float32)), torch.tensor(rng.integers(0, 3, b))


@pytest.mark.parametrize("v_floor", [None, 0.0])
def test_trace_gradient_equals_autograd_through_the_whole_history_with_spikes_held(v_floor: float | None) -> None:
    """One recurrent block, reset 'subtract', fixed hidden signal. At step t = 8 the trainer's gradient of that
    step's loss L[t] = v9(v^h[t], v^t[t]) w.r.t. W, b, W_rec must equal autograd through the *entire* history
    of u and v of both streams (nothing detached but the spikes, which SP never differentiates): ∂v[t]/∂θ =
    Σ_t' filters of x[t'], 1, s[t'−1]; W_rec also reaches the target stream through its own previous spikes.
    With ``v_floor`` the loss reads max(v, v_floor) in both streams (the floor must bind for some entries and
    change the gradient). Float32 sums in a different order: tolerance 1e-5 relative, 1e-7 absolute."""
    spec = _spec() if v_floor is None else _spec(v_floor=v_floor)
    params = {k: v * (3 if k.startswith("blocks.") else 1) for k, v in init_params(spec, 2).items()}
    tr = make_trainer(spec, params, 0)
    assert isinstance(tr, SPTrainer)
    x, y = _inputs()
    tr.begin(6)
    for t in range(8):
        tr.step_loss(x[..., t], y)
    tr._zero()
    tr.step_loss(x[..., 8], y).backward()
    names = ("blocks.0.weight", "blocks.0.bias", "blocks.0.rec_weight")
    got = {k: tr.p[k].grad.clone() for k in names}

    lif = spec.blocks[0][1]
    p = {k: torch.tensor(v, requires_grad=k in names) for k, v in params.items()}
    z = signal_forward(spec, torch.arange(3), p).detach()
    r = p["blocks.0.rec_weight"]
    u = v = s = torch.zeros(6, 7)
    ut = vt = st = torch.zeros(3, 7)  # the target stream (one row per class) has its own recurrent state
    spikes = 0.0
    for t in range(9):
        u = (1 - lif.du) * u + x[..., t] @ p["blocks.0.weight"].T + p["blocks.0.bias"] + s @ r.T
        vv = (1 - lif.dv) * v + u
        s = (vv > lif.threshold).float()  # a constant: no gradient through the spike
        v = vv - lif.threshold * s
        ut = (1 - lif.du) * ut + z + st @ r.T
        vvt = (1 - lif.dv) * vt + ut
        st = (vvt > lif.threshold).float()
        vt = vvt - lif.threshold * st
        spikes += float(s.mean() + st.mean()) / 2
    classes, inv = torch.unique(y, return_inverse=True)
    if v_floor is not None:
        below = float((vv < v_floor).float().mean() + (vvt < v_floor).float().mean()) / 2
        assert 0.05 < below < 0.95, below  # the floor binds for some entries, not all
        free = sp_loss("v9", vv, vvt[classes], inv, y, classes, temperature=0.1, t_prev_cls=torch.eye(3)[classes])
        free_grad = torch.autograd.grad(free, [p["blocks.0.weight"]], retain_graph=True)[0]
        vv, vvt = vv.clamp(min=v_floor), vvt.clamp(min=v_floor)
    loss = sp_loss("v9", vv, vvt[classes], inv, y, classes, temperature=0.1, t_prev_cls=torch.eye(3)[classes])
    want = torch.autograd.grad(loss, [p[k] for k in names])
    if v_floor is not None:  # the control: without the floor the gradient differs
        assert (free_grad - want[0]).abs().max() > 1e-3
    assert 0.05 < spikes / 9 < 0.95  # spikes, resets and recurrent input all happened
    for k, w in zip(names, want, strict=True):
        assert w.abs().max() > 1e-3
        torch.testing.assert_close(got[k], w, rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("rule", ["sp-online", "sp-voltage"])
def test_no_block_update_reads_a_later_layer(rule: str) -> None:
    """Two recurrent blocks with the trace: the gradients of block 0 and the signal after a whole sequence are
    bit-identical whatever block 1's and the head's weights are (which do change their own gradients)."""
    spec = _spec(rule, depth=2, signal="learned")
    x, y = _inputs(6, 1)
    grads = []
    for scale in (1.0, -2.0):
        params = {k: v * (3 if k.startswith("blocks.0") else 1) for k, v in init_params(spec, 0).items()}
        params["blocks.1.weight"] = params["blocks.1.weight"] * scale
        params["blocks.1.rec_weight"] = params["blocks.1.rec_weight"] * scale
        params["head.weight"] = params["head.weight"] * scale
        tr = make_trainer(spec, params, 0)
        assert isinstance(tr, SPTrainer)
        tr.begin(6)
        tr._zero()
        for t in range(9):
            (tr.step_loss(x[..., t], y) + tr.head_loss(y)).backward()
        grads.append({k: v.grad.clone() for k, v in tr.p.items() if v.grad is not None})
    a, b = grads
    for k in ("signal.weight", "signal.bias", "blocks.0.weight", "blocks.0.bias", "blocks.0.rec_weight"):
        assert a[k].abs().max() > 0
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(a["blocks.1.weight"], b["blocks.1.weight"])  # the control: later layers did differ


@pytest.mark.parametrize("fused", [True, False])
def test_online_recurrent_update_reads_only_current_step_state_and_traces(fused: bool) -> None:
    """sp-online with traces on a 2-block recurrent model: trainer B runs 5 steps on other inputs and labels,
    then receives A's weights, optimizer state, neuron state (u, v, previous spikes), eligibility traces and
    readout trace — nothing else; step 6 on the same input and labels gives bit-identical updates. Both for the
    fused step (its state: both streams stacked, ``f_state``) and the autograd path."""
    spec = _spec(depth=2, signal="learned")
    a = make_trainer(spec, init_params(spec, 0), 0)
    b = make_trainer(spec, init_params(spec, 0), 0)
    assert isinstance(a, SPTrainer) and isinstance(b, SPTrainer)
    assert a.fused is not None
    if not fused:
        a.fused = b.fused = None
    x, y = _inputs(6, 2)
    xo, yo = _inputs(6, 3)
    a.begin(6)
    b.begin(6)
    for t in range(5):
        a.online_step(x[..., t], y)
        b.online_step(xo[..., t] * 2, yo)
    with torch.no_grad():
        for n in a.p:
            b.p[n].copy_(a.p[n])
    for i in a.opts:
        b.opts[i].load_state_dict(copy.deepcopy(a.opts[i].state_dict()))
    b.h_state, b.t_state, b.readout = list(a.h_state), list(a.t_state), a.readout
    b.h_trace, b.t_trace = list(a.h_trace), list(a.t_trace)
    b.f_state = copy.deepcopy(a.f_state)  # the fused step updates its state in place: hand over a copy
    a.online_step(x[..., 5], y)
    b.online_step(x[..., 5], y)
    for n in a.p:
        torch.testing.assert_close(b.p[n], a.p[n], rtol=0, atol=0, msg=n)


def test_head_steps_last_updates_the_head_from_the_final_readout_only() -> None:
    """sp-online with ``head_steps='last'`` and SGD (lr 0.1, no momentum), updates every 4 steps of 9: the head
    changes exactly by −lr·∂CE(W_h e[T] + β[T] b_h, y)/∂(W_h, b_h) at the initial head weights (its only
    update, at step T); with 'every' it also learns at the intermediate updates, so it ends elsewhere. Float32:
    tolerance 1e-6 absolute. An unknown value is refused."""
    from edgesp.spec import OptimizerSpec

    x, y = _inputs(6, 3)
    ends = {}
    for mode in ("last", "every"):
        spec = _spec(head_steps=mode, update_every=4).replace_rule(optimizer=OptimizerSpec(name="sgd", lr=0.1))
        params = init_params(spec, 4)
        tr = make_trainer(spec, params, 0)
        tr.train_step(x.numpy(), y.numpy())
        ends[mode] = tr.p["head.weight"].detach().clone()
        if mode == "last":
            feats = tr.readout.features(spec)
            w = torch.tensor(params["head.weight"], requires_grad=True)
            b = torch.tensor(params["head.bias"], requires_grad=True)
            ce = torch.nn.functional.cross_entropy(feats @ w.T + tr.readout.beta * b, y)
            gw, gb = torch.autograd.grad(ce, [w, b])
            assert gw.abs().max() > 1e-3
            torch.testing.assert_close(tr.p["head.weight"].detach(), w.detach() - 0.1 * gw, rtol=0, atol=1e-6)
            torch.testing.assert_close(tr.p["head.bias"].detach(), b.detach() - 0.1 * gb, rtol=0, atol=1e-6)
    assert (ends["last"] - ends["every"]).abs().max() > 1e-4
    from edgesp.errors import SpecError

    with pytest.raises(SpecError, match="head_steps"):
        make_trainer(_spec(head_steps="sometimes"), init_params(_spec(), 0), 0)
    with pytest.raises(SpecError, match="v_floor"):
        make_trainer(_spec(v_floor="low"), init_params(_spec(), 0), 0)
