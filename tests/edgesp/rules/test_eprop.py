"""e-prop equals the exact gradient of the graph it is defined on, learns, and stays online."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgesp.errors import SpecError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.rules.eprop import EpropTrainer
from edgesp.spec import LIF, OptimizerSpec, RuleSpec, TemporalSpec


def _spec(reset: str = "zero", loss: str = "every", depth: int = 1, t: int = 7, **rp):
    return build_spec(
        "snn",
        (3, t),
        3,
        width=5,
        depth=depth,
        lif=LIF(du=0.6, dv=0.3, threshold=0.5, reset=reset),
        recurrent=True,
        temporal=TemporalSpec(encoding="sequence"),
        rule=RuleSpec(name="eprop", optimizer=OptimizerSpec(lr=1e-3), params={"eprop_loss": loss, **rp}),
    )


def _reference_grads(spec, p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, loss: str, k: float = 5.0):
    """Autograd on the graph e-prop differentiates exactly: surrogate spike derivative ψ = kσ'(k(v−θ)), the
    reset and the recurrent spikes s[t−1] treated as constants (detached), the readout exact. Float64."""
    lif = spec.blocks[0][1]
    q = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in p.items()}
    xt = torch.tensor(x, dtype=torch.float64)
    b, steps = xt.shape[0], xt.shape[-1]
    u = v = s = torch.zeros(b, 5, dtype=torch.float64)
    kappa = 1 - lif.dv
    e = torch.zeros(b, 5, dtype=torch.float64)
    beta, total, n = 0.0, 0.0, 0
    for t in range(steps):
        a = xt[..., t] @ q["blocks.0.weight"].T + q["blocks.0.bias"] + s.detach() @ q["blocks.0.rec_weight"].T
        u = (1 - lif.du) * u + a
        vv = (1 - lif.dv) * v + u
        soft = torch.sigmoid(k * (vv - lif.threshold))
        s = (vv > lif.threshold).double() + soft - soft.detach()
        reset = vv.detach() * s.detach() if lif.reset == "zero" else lif.threshold * s.detach()
        v = vv - reset
        e = kappa * e + s
        beta = kappa * beta + 1
        if loss == "every" or t == steps - 1:
            logits = e @ q["head.weight"].T + beta * q["head.bias"]
            total = total + F.cross_entropy(logits, torch.tensor(y))
            n += 1
    (total / n).backward()
    return {name: t.grad for name, t in q.items() if t.grad is not None}


@pytest.mark.parametrize(("reset", "loss"), [("zero", "every"), ("subtract", "final")])
def test_eprop_equals_autograd_on_its_graph(reset: str, loss: str) -> None:
    """One recurrent LIF layer (3 inputs per step → 5, T=7, B=6) with symmetric feedback: e-prop's
    eligibility traces and learning signal give exactly the gradient of the mean CE through the graph with the
    reset and the recurrent spikes held constant (the approximation e-prop makes, and nothing else).
    float32 vs float64 sums: tolerance 1e-5 absolute on gradients of size ≈ 0.1."""
    spec = _spec(reset, loss)
    p = {k: v * 3 for k, v in init_params(spec, 1).items()}
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 3, 7)) * 1.5).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    tr = make_trainer(spec, p, 0)
    assert isinstance(tr, EpropTrainer)
    seen = {}
    tr._step = lambda: seen.update({k: v.grad.clone() for k, v in tr.p.items() if v.grad is not None})
    tr.train_step(x, y)
    ref = _reference_grads(spec, p, x, y, loss)
    assert set(seen) == set(ref) == {k for k in p if not k.startswith("signal.")}
    for k in ref:
        assert ref[k].abs().max() > 1e-3, k  # the path is exercised
        torch.testing.assert_close(seen[k].double(), ref[k], rtol=0, atol=1e-5, msg=k)


def test_eprop_learns_and_rejects_bad_parameters() -> None:
    spec = _spec(depth=2, t=6)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    x = (rng.random((48, 3, 6)) < 0.1).astype(np.float32)
    x[np.arange(48), y, :] = 1.0  # the class's channel is on
    spec = spec.replace_rule(optimizer=OptimizerSpec(lr=3e-2))
    tr = make_trainer(spec, init_params(spec, 0), 0)
    first = tr.train_step(x, y)["ce"]
    for _ in range(40):
        last = tr.train_step(x, y)["ce"]
    assert last < 0.7 * first
    assert (tr.predict(x).argmax(1) == y).mean() > 0.9
    for bad, match in (({"eprop_feedback": "mirror"}, "eprop_feedback"), ({"trace": "filter"}, "unknown rule")):
        with pytest.raises(SpecError, match=match):
            make_trainer(_spec(**bad), init_params(_spec(), 0), 0)
