"""The standardised head (edgesp/rules/head_norm.py): one optimizer step equals Adam on the standardised
parametrisation logits = A (f − μ)/σ + β c computed by torch autograd (the oracle), folded back to (W_h, b_h);
every spiking rule accepts it; bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgesp.errors import SpecError
from edgesp.functional import init_params
from edgesp.presets import build_spec, sequence_defaults
from edgesp.rules import make_trainer
from edgesp.rules.head_norm import EPS, HeadNorm
from edgesp.spec import LIF, OptimizerSpec, RuleSpec, TemporalSpec

BETA = 7.5  # a membrane readout's β_T (any positive value: it only scales the bias path)


def _head(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn((4, 6), generator=g) * 0.3).requires_grad_(True)
    b = (torch.randn(4, generator=g) * 0.1).requires_grad_(True)
    # readout-like features: non-negative, large unequal means and scales
    scale, mean = torch.tensor([0.5, 2.0, 8.0, 1.0, 12.0, 3.0]), torch.tensor([0, 1, 5, 0, 2, 9.0])
    f = torch.rand((16, 6), generator=g) * scale + mean
    y = torch.randint(0, 4, (16,), generator=g)
    return w, b, f, y


def _plain_grad(w: torch.Tensor, b: torch.Tensor, f: torch.Tensor, y: torch.Tensor) -> None:
    w.grad = b.grad = None
    F.cross_entropy(f @ w.T + BETA * b, y).backward()


def test_step_is_adam_on_standardised_coordinates() -> None:
    w, b, f, y = _head()
    hn = HeadNorm(w, b, BETA, momentum=0.05)
    hn.observe(f)  # first batch: μ, σ are this batch's
    mu, sigma = f.mean(0), f.std(0, unbiased=False) + EPS
    assert torch.allclose(hn.mu, mu) and torch.allclose(hn.sigma, sigma)
    # oracle: leaves (A, c) of the standardised model, autograd, torch Adam
    a0 = (w.detach() * sigma).requires_grad_(True)
    c0 = (b.detach() + w.detach() @ mu / BETA).requires_grad_(True)
    # the inverse fold preserves the function at step T
    assert torch.allclose(((f - mu) / sigma) @ a0.T + BETA * c0, f @ w.T + BETA * b, atol=1e-5)
    ref = torch.optim.Adam([a0, c0], lr=0.05)
    F.cross_entropy(((f - mu) / sigma) @ a0.T + BETA * c0, y).backward()
    ref.step()
    w_ref = a0.detach() / sigma
    b_ref = c0.detach() - a0.detach() @ (mu / sigma) / BETA
    # edgesp: the plain head's autograd gradient, mapped by HeadNorm.step
    w_plain0 = w.detach().clone()
    _plain_grad(w, b, f, y)
    hn.step(torch.optim.Adam(hn.leaves(), lr=0.05))
    # float32 tolerance: one Adam step moves each weight by ≈ lr = 0.05; the two paths differ only in rounding
    # order of O(1) quantities (≈ 1e-7 relative), far below the 1e-5 bound
    assert torch.allclose(w.detach(), w_ref, atol=1e-5)
    assert torch.allclose(b.detach(), b_ref, atol=1e-5)
    # and it is not the plain step (Adam directly on W_h, b_h): the test can tell them apart
    w2, b2, _, _ = _head()
    _plain_grad(w2, b2, f, y)
    torch.optim.Adam([w2, b2], lr=0.05).step()
    assert not torch.allclose(w2.detach(), w_ref, atol=1e-3)
    assert not torch.allclose(w.detach(), w_plain0)


def test_statistics_are_an_ema_and_scale_only_without_bias() -> None:
    w, b, f, _ = _head()
    hn = HeadNorm(w, b, BETA, momentum=0.25)
    hn.observe(f)
    hn.observe(f * 2.0)
    assert torch.allclose(hn.mu, 0.75 * f.mean(0) + 0.25 * (2 * f).mean(0))
    nb = HeadNorm(w, None, BETA, momentum=0.25)
    nb.observe(f)
    assert torch.equal(nb.mu, torch.zeros(6))  # centring cannot be folded without a bias
    with pytest.raises(SpecError, match="momentum"):
        HeadNorm(w, b, BETA, momentum=0.0)


def _seq_spec(rule: str, params: dict) -> object:
    d = sequence_defaults(rule)
    return build_spec(
        "snn",
        (1, 12),
        3,
        width=8,
        depth=1,
        rule=RuleSpec(
            name=rule,
            loss="v9",
            temperature=0.1 if rule.startswith("sp-") else None,
            optimizer=OptimizerSpec(lr=1e-2),
            params={**d["rule_params"], **params},
        ),
        temporal=TemporalSpec(time_steps=12, encoding="sequence"),
        lif=LIF(du=0.5, dv=0.05),
        recurrent=True,
    )


@pytest.mark.parametrize("rule", ["sp-online", "sp-voltage", "bptt", "eprop"])
def test_every_spiking_rule_trains_a_standardised_head(rule: str) -> None:
    spec = _seq_spec(rule, {"head_norm": "ema", "head_lr": 0.02})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 1, 12)).astype(np.float32)
    y = np.arange(8) % 3
    tr = make_trainer(spec, init_params(spec, 0), 0)
    head_opt = tr.opts[tr.head_index]
    assert all(g["lr"] == 0.02 for g in head_opt.param_groups)
    w0 = tr.params()["head.weight"].copy()
    tr.train_step(x, y)
    tr.train_step(x, y)
    assert tr.head_norm is not None and tr.head_norm.seen  # the step-T features were observed
    p = tr.params()
    assert set(p) == set(init_params(spec, 0))  # the model's parameters only: no (A, c) leaks out
    assert not np.allclose(p["head.weight"], w0)
    # predict reads the folded plain head: it equals the readout of the standardised coordinates at step T
    hn = tr.head_norm
    from edgesp.snn import run_readout

    with torch.no_grad():
        ro = run_readout(spec, torch.as_tensor(x), tr.p)
        a = tr.p["head.weight"] * hn.sigma
        c = tr.p["head.bias"] + tr.p["head.weight"] @ hn.mu / hn.beta_t
        std_logits = ((ro.features(spec) - hn.mu) / hn.sigma) @ a.T + hn.beta_t * c
    assert np.allclose(tr.predict(x), std_logits.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"head_norm": "batch"}, "head_norm must be one of"),
        ({"head_lr": "fast"}, "head_lr must be a positive number"),
        ({"head_lr": -1}, "head_lr must be a positive number"),
        ({"head_norm": "ema", "head_norm_momentum": 2}, "momentum"),
    ],
)
def test_bad_head_settings_are_refused(params: dict, match: str) -> None:
    spec = _seq_spec("sp-online", params)
    with pytest.raises(SpecError, match=match):
        make_trainer(spec, init_params(spec, 0), 0)


def test_rtrl_refuses_head_norm() -> None:
    spec = _seq_spec("rtrl", {"head_norm": "ema"})
    with pytest.raises(SpecError, match="rtrl"):
        make_trainer(spec, init_params(spec, 0), 0)


def test_a_step_without_head_gradient_leaves_the_head_alone() -> None:
    """sp-online updates every k steps but its head loss comes at step T only: the steps in between must not move
    the head (Adam would coast on its momentum; torch skips a parameter whose .grad is None)."""
    w, b, f, y = _head()
    hn = HeadNorm(w, b, BETA, momentum=0.05)
    hn.observe(f)
    opt = torch.optim.Adam(hn.leaves(), lr=0.05)
    _plain_grad(w, b, f, y)
    hn.step(opt)
    w1, b1 = w.detach().clone(), b.detach().clone()
    w.grad = b.grad = None
    hn.step(opt)
    assert torch.equal(w.detach(), w1) and torch.equal(b.detach(), b1)


def test_bptt_refuses_the_sp_rules_settings() -> None:
    """bptt/rtrl used to accept (and ignore) the SP rules' parameters; now one line names the known ones."""
    spec = _seq_spec("bptt", {"trace": "filter"})
    with pytest.raises(SpecError, match=r"unknown rule parameters \['trace'\] for bptt"):
        make_trainer(spec, init_params(spec, 0), 0)
    ok = _seq_spec("bptt", {"spike": "smooth", "head_lr": 0.01})
    make_trainer(ok, init_params(ok, 0), 0)
