"""The host-side learning-rate schedule of edgesp.train (available to every rule) and the default lr."""

import math

import numpy as np
import pytest

from edgesp.data import Dataset
from edgesp.errors import SpecError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.spec import OptimizerSpec, RuleSpec
from edgesp.train import _optimizers, default_lr, fit, lr_factor, set_lr_scale

NON_SPIKING = ["sigprop", "bp", "fa", "dfa", "local"]


def test_lr_factor_values():
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0, abs=1e-12)
    xs = [lr_factor("cosine", k, 50) for k in range(51)]
    assert all(a >= b for a, b in zip(xs, xs[1:], strict=False))  # monotone non-increasing
    with pytest.raises(ValueError, match="cosine"):
        lr_factor("step", 0, 10)


def test_default_lr():
    assert default_lr("sigprop") == 2e-3
    assert default_lr("bp") == default_lr("fa") == default_lr("dfa") == default_lr("local") == 1e-3
    assert default_lr("sp-voltage", spiking=True) == 3e-3
    assert default_lr("sp-online", spiking=True) == 1e-3


def _lrs(trainer) -> list[float]:
    return [g["lr"] for o in _optimizers(trainer) for g in o.param_groups]


@pytest.mark.parametrize("rule", NON_SPIKING)
def test_set_lr_scale_reaches_every_optimizer_of_every_rule(rule):
    spec = build_spec("mlp", (8,), 3, width=8, rule=RuleSpec(name=rule, optimizer=OptimizerSpec(lr=2e-3)))
    tr = make_trainer(spec, init_params(spec, 0), 0)
    before = _lrs(tr)
    assert before and all(lr == pytest.approx(2e-3) for lr in before)
    set_lr_scale(tr, 0.25)
    assert all(lr == pytest.approx(5e-4) for lr in _lrs(tr))
    set_lr_scale(tr, 0.5)  # relative to the base rate, not compounding
    assert all(lr == pytest.approx(1e-3) for lr in _lrs(tr))
    set_lr_scale(tr, 1.0)
    assert _lrs(tr) == pytest.approx(before)


def _tiny_data(n=40, d=8, c=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    return Dataset(name="tiny", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10], num_classes=c)


@pytest.mark.parametrize("rule", ["sigprop", "bp"])
def test_fit_cosine_schedule_steps_the_rate(rule, monkeypatch):
    """fit() sets factor(k) before step k of K = epochs · batches; the rate ends near 0."""
    spec = build_spec("mlp", (8,), 3, width=8, rule=RuleSpec(name=rule, optimizer=OptimizerSpec(lr=1e-2)))
    tr = make_trainer(spec, init_params(spec, 0), 0)
    seen: list[float] = []
    step = tr.train_step

    def spy(x, y):
        seen.append(_lrs(tr)[0])
        return step(x, y)

    monkeypatch.setattr(tr, "train_step", spy)
    fit(tr, _tiny_data(), spec.input_shape, epochs=2, batch=10, progress=False, schedule="cosine")
    total = 2 * 4
    assert seen == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * k / total)) for k in range(total)])


def test_fit_rejects_unknown_schedule():
    spec = build_spec("mlp", (8,), 3, width=8)
    tr = make_trainer(spec, init_params(spec, 0), 0)
    with pytest.raises((ValueError, SpecError), match="schedule"):
        fit(tr, _tiny_data(), spec.input_shape, epochs=1, batch=10, progress=False, schedule="step")


def test_cli_train_takes_a_schedule(tmp_path):
    """`edgesp train --schedule cosine` trains any rule with the schedule and records it in metrics.json."""
    import json

    from edgesp.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--rule", "bp", "--width", "8", "--epochs", "1", "--max-train", "64"]
    assert main([*args, "--schedule", "cosine", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["schedule"] == "cosine"
