"""The fused, autograd-free sp-online step (edgesp.rules.sp_fused) against its oracle, the autograd path of the same
trainer (``trainer.fused = None``): same seed, same parameters, two sequences of T = 12 steps (several update
intervals each) give the same parameters over the settings the step covers, and dropping one term of the fused
step (the ramp weight, the floor mask, the target stream's W_rec term, the signal gradient) breaks the agreement.

Tolerance (SGD): |θ_fused − θ_autograd| ≤ 1e-5 · (1 + max|θ_autograd − θ_0|), i.e. 1e-5 relative to how far
training moved the parameters. Both paths compute the same float32 sums in a different order (the trace recursion
with fused multiply-adds, the loss against all C target rows instead of the B×B gathered logits, a closed-form
softmax gradient, W_rec's two streams in one product), so each gradient differs by a few float32 ulps (relative
≈ 1e-6; measured ≤ 7e-6 of the movement over these cases, the most with non-spiking integrators, whose membranes
are largest); SGD is linear in the gradient, so the differences just add up over the updates. Adam normalises each
entry's step to ≈ lr whatever |g|, so an entry whose gradient is a near-cancellation keeps its rounding noise at
relative size: there the bound is 1e-3 of the largest possible move, lr per update (measured ≈ 1.1e-4 of it). A
dropped term changes the parameters by ≥ 100× the tolerance (the controls assert it). A spike flipped by rounding
would exceed the tolerance: none does here (the runs are deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgesp.errors import SpecError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.rules.spiking_rules import SPTrainer
from edgesp.spec import LIF, OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec

T = 12
BASE = {
    "loss": "v9",
    "recurrent": True,
    "placement": "hidden",
    "signal": "learned",
    "update_every": 5,
    "head_steps": "last",
    "v_floor": -1.0,
    "depth": 1,
    "optimizer": "sgd",
    "step_weight": "ramp",
    "loss_every": 1,
    "reset": "zero",
    "lif_bias": 0.0,
    "spiking": True,
    "activation": "relu",
    "readout": "membrane",
    "labels": 4,  # labels drawn from the first `labels` of the 4 classes (3: a class absent from every batch)
    "head_norm": "none",
    "rule": "sp-online",
}


def _spec(**kw):
    c = {**BASE, **kw}
    rp = {
        "trace": "filter",
        "step_weight": c["step_weight"],
        "update_every": c["update_every"],
        "head_steps": c["head_steps"],
        "loss_every": c["loss_every"],
        "head_norm": c["head_norm"],
    }
    if c["v_floor"] is not None:
        rp["v_floor"] = c["v_floor"]
    opt = OptimizerSpec(name="sgd", lr=0.05) if c["optimizer"] == "sgd" else OptimizerSpec(lr=1e-2)
    return build_spec(
        "snn",
        (6, T),
        4,
        width=16,
        depth=c["depth"],
        lif=LIF(du=0.5, dv=0.2, threshold=0.5, reset=c["reset"], bias=c["lif_bias"], spiking=c["spiking"]),
        recurrent=c["recurrent"],
        signal=SignalSpec(kind=c["signal"], placement=c["placement"], activation=c["activation"]),
        temporal=TemporalSpec(encoding="sequence", readout=c["readout"]),
        rule=RuleSpec(name=c["rule"], loss=c["loss"], temperature=0.1, params=rp, optimizer=opt),
    )


def _data(seed: int = 0, labels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((8, 6, T)) < 0.5).astype(np.float32), rng.integers(0, labels, 8)


def _params(spec) -> dict[str, np.ndarray]:
    """Initial weights ×3 in the blocks, so neurons spike, reset and recur within a few steps."""
    return {k: v * (3 if k.startswith("blocks.") else 1) for k, v in init_params(spec, 1).items()}


def _train(
    spec, params, fused: bool, patch=None, labels: int = 4, metrics: list | None = None
) -> dict[str, np.ndarray]:
    tr = make_trainer(spec, params, 0)
    assert isinstance(tr, SPTrainer)
    assert tr.fused is not None  # every configuration here is one the fused step covers
    if not fused:
        tr.fused = None
    elif patch is not None:
        patch(tr.fused)
    for seed in (0, 1):
        m = tr.train_step(*_data(seed, labels))
        if metrics is not None:
            metrics.append(m)
    return tr.params()


def _gap(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _tol(params: dict, trained: dict, adam_updates: int = 0, lr: float = 0.0) -> float:
    return 1e-3 * lr * adam_updates if adam_updates else 1e-5 * (1.0 + _gap(params, trained))


CASES = [
    {},
    {"loss": "v1"},
    {"loss": "l2"},
    {"loss": "v14"},
    {"recurrent": False},
    {"placement": "input", "signal": "fixed"},  # a learned signal with input placement is refused (trace filter)
    {"signal": "fixed"},
    {"update_every": 1},
    {"head_steps": "every"},
    {"v_floor": None},
    {"depth": 2},
    {"optimizer": "adam"},
    {"loss_every": 3},
    {"reset": "subtract", "lif_bias": 0.1},
    {"labels": 3},
    {"activation": "none", "readout": "spike_count"},
    {"spiking": False, "recurrent": False},
    {"labels": 3, "loss": "v14"},
    {
        "depth": 2,
        "placement": "input",
        "signal": "fixed",
        "recurrent": False,
        "update_every": 1,
        "head_steps": "every",
        "loss": "v1",
    },
    {"depth": 2, "signal": "fixed", "v_floor": None, "loss": "l2", "update_every": 1},
    {"head_norm": "ema"},  # the standardised head (edgesp.rules.head_norm): statistics observed at T on both paths
    {"head_norm": "ema", "optimizer": "adam", "head_steps": "every", "readout": "spike_count"},
    # sp-voltage = the same step with one update per sequence and the head at step T (update_every/head_steps unused)
    {"rule": "sp-voltage"},
    {"rule": "sp-voltage", "optimizer": "adam", "v_floor": None, "head_steps": "every", "loss": "v1"},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_fused_step_matches_autograd(case: dict) -> None:
    """Fused vs autograd from the same seed and parameters: the same parameters after 2 sequences × 12 steps, to
    1e-5 relative to how far they moved (Adam: 1e-3 of lr per update; module docstring); every parameter moved."""
    spec = _spec(**case)
    params = _params(spec)
    m_want: list[dict] = []
    m_got: list[dict] = []
    want = _train(spec, params, fused=False, labels=case.get("labels", 4), metrics=m_want)
    got = _train(spec, params, fused=True, labels=case.get("labels", 4), metrics=m_got)
    # the reported losses agree too: 1e-4 relative, as the log-softmax of logits Y of up to ~1e3 (|Y|·6e-8 float32
    # rounding, absolute) is a difference of large numbers; measured ≤ 5e-5
    for a, b in zip(m_got, m_want, strict=True):
        for k in ("sp_loss", "head_ce"):
            assert np.isfinite(a[k]) and a[k] == pytest.approx(b[k], rel=1e-4), (k, a[k], b[k])
    adam = case.get("optimizer") == "adam"
    tol = _tol(params, want, 2 * 3 if adam else 0, spec.rule.optimizer.lr)  # updates at steps 5, 10, 12
    assert _gap(params, want) > 100 * tol
    for k in params:
        if k.startswith("signal.") and case.get("signal") == "fixed":  # frozen: unchanged on both paths
            np.testing.assert_array_equal(got[k], params[k], err_msg=k)
            np.testing.assert_array_equal(want[k], params[k], err_msg=k)
            continue
        assert np.abs(want[k] - params[k]).max() > 0, k  # the parameter learned
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol, err_msg=k)


def _drop_floor(f) -> None:
    f.v_floor = None


def _drop_ramp(f) -> None:
    f.weight = lambda t: 1.0


def _drop_target_rec(f) -> None:
    """W_rec's gradient from the sample rows only (the target stream's own recurrent term dropped)."""
    orig = torch.Tensor.addmm_

    def without_target_rows(self, m1, m2, **kw):
        out = orig(self, m1, m2, **kw)
        if self is f.sums["in0"]:  # ∂[W | W_rec] of block 0: remove the target rows' W_rec part
            fi, b = f.blocks[0][4], f.batch
            self[:, fi:].sub_(m1[:, b:] @ m2[b:, fi:])
        return out

    real = f.step

    def step(*a, **kw):
        torch.Tensor.addmm_ = without_target_rows
        try:
            return real(*a, **kw)
        finally:
            torch.Tensor.addmm_ = orig

    f.step = step


def _drop_signal(f) -> None:
    f.train_signal = False


@pytest.mark.parametrize(
    ("patch", "changed"),
    [
        (_drop_floor, "blocks.0.weight"),
        (_drop_ramp, "blocks.0.weight"),
        (_drop_target_rec, "blocks.0.rec_weight"),
        (_drop_signal, "signal.weight"),
    ],
    ids=["floor-mask", "ramp", "target-W_rec", "signal-grad"],
)
def test_a_dropped_term_breaks_the_agreement(patch, changed: str) -> None:
    """The control of the parity test: the fused step with one term removed differs from autograd by far more
    than the tolerance (≥ 100×), so the parity test would catch its loss."""
    spec = _spec()
    params = _params(spec)
    want = _train(spec, params, fused=False)
    got = _train(spec, params, fused=True, patch=patch)
    assert np.abs(got[changed] - want[changed]).max() > 100 * _tol(params, want)


def test_settings_change_the_result() -> None:
    """The settings the parity test varies matter: each one changes the trained parameters by ≥ 100× the
    tolerance (so agreement under each is not agreement of two paths that ignore it)."""
    params = _params(_spec())
    base = _train(_spec(), params, fused=True)
    tol = _tol(params, base)
    for change in (
        {"step_weight": "uniform"},
        {"v_floor": None},
        {"update_every": 4},
        {"head_steps": "every"},
        {"loss_every": 2},
    ):
        other = _train(_spec(**change), params, fused=True)
        assert _gap(base, other) > 100 * tol, change


def test_the_step_is_autograd_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """No autograd anywhere in the fused path (the signal's gradient is closed-form too): the autograd SP loss is
    never called, torch.autograd.backward never runs, and yet every parameter — the learned signal included —
    learns."""
    import edgesp.rules.spiking_rules as sr

    def refuse(*a, **kw):
        raise AssertionError("autograd was used on the fused path")

    monkeypatch.setattr(sr, "sp_loss", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    spec = _spec()
    params = _params(spec)
    trained = _train(spec, params, fused=True)
    for k in params:
        assert np.abs(trained[k] - params[k]).max() > 0, k


def test_block0_sums_do_not_read_later_layers() -> None:
    """Two recurrent blocks, fused step: after a whole sequence (no update yet) block 0's and the signal's gradient
    sums are bit-identical whatever block 1's and the head's weights are (which do change their own sums)."""
    spec = _spec(depth=2, update_every=100, head_steps="every")
    x, y = _data(3)
    sums = []
    for scale in (1.0, -2.0):
        params = _params(spec)
        for k in ("blocks.1.weight", "blocks.1.rec_weight", "head.weight"):
            params[k] = params[k] * scale
        tr = make_trainer(spec, params, 0)
        assert isinstance(tr, SPTrainer) and tr.fused is not None
        tr.begin(8)
        for t in range(T - 1):
            tr.online_step(torch.tensor(x[..., t]), torch.tensor(y))
        sums.append({k: v.clone() for k, v in tr.fused.sums.items()})
    a, b = sums
    for k in ("z", "in0", "blocks.0.bias"):  # in0 = ∂[W_0 | W_rec,0]
        assert a[k].abs().max() > 0
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(a["in1"], b["in1"])  # the control: block 1's own sums did change


@pytest.mark.parametrize(
    "change", [{"loss": "v15"}, {"trace": "none"}, {"online_loss": "surrogate"}], ids=["v15", "trace-none", "surr"]
)
def test_other_settings_fall_back_to_autograd(change: dict) -> None:
    """Settings the fused step does not cover use the autograd path (and still train)."""
    spec = _spec()
    rule = spec.rule
    if "loss" in change:
        spec = spec.replace_rule(loss=change["loss"])
    else:
        spec = spec.replace_rule(params={**rule.params, **change})
    tr = make_trainer(spec, _params(spec), 0)
    assert isinstance(tr, SPTrainer) and tr.fused is None
    before = tr.params()
    tr.train_step(*_data())
    assert _gap(before, tr.params()) > 0


@pytest.mark.parametrize("rule", ["sp-voltage", "sp-surrogate"])
def test_loss_every_on_the_per_batch_rules(rule: str) -> None:
    """loss_every also thins the per-batch SP rules' losses (sp-voltage: fused step; sp-surrogate: autograd path):
    they train, and differently."""
    ends = []
    for n in (1, 3):
        spec = _spec(loss_every=n).replace_rule(name=rule)
        params = _params(spec)
        tr = make_trainer(spec, params, 0)
        assert isinstance(tr, SPTrainer) and (tr.fused is None) == (rule == "sp-surrogate")
        m = tr.train_step(*_data())
        assert np.isfinite(m["sp_loss"]) and _gap(params, tr.params()) > 0
        ends.append(tr.params())
    assert _gap(*ends) > 1e-4


@pytest.mark.parametrize("bad", [0, 2.5, "often", True])
def test_loss_every_is_validated(bad) -> None:
    from edgesp.errors import SpecError

    with pytest.raises(SpecError, match="loss_every must be an integer >= 1"):
        make_trainer(_spec(loss_every=bad), _params(_spec()), 0)


def test_loss_every_from_the_cli(tmp_path) -> None:
    """CLI: a bad loss_every is one error line (exit 2, nothing written); a good one trains (sp-online, fused)."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "edgesp", "train", "--data", "mnist1d-seq", "--model", "snn", "--rule", "sp-online"]
    bad = subprocess.run(
        [*base, "--rule-param", "loss_every=2.5", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss_every must be an integer >= 1" in lines[0]
    assert not (tmp_path / "x").exists()
    from edgesp.cli import main

    out = tmp_path / "ok"
    argv = ["train", "--data", "mnist1d-seq", "--model", "snn", "--rule", "sp-online", "--epochs", "1"]
    assert main([*argv, "--max-train", "256", "--rule-param", "loss_every=10", "--out", str(out)]) == 0
    assert (out / "model.safetensors").exists()


def test_a_learned_signal_with_input_placement_and_traces_is_refused() -> None:
    """With trace 'filter' the target's input t_0 enters the traces as a constant, so no loss reaches W_S: a
    'learned' signal would silently stay at its init. Refused with the fix; a fixed signal is accepted."""
    spec = _spec(placement="input")
    with pytest.raises(SpecError, match="leaves the learned signal W_S untrained"):
        make_trainer(spec, _params(spec), 0)
    fixed = _spec(placement="input", signal="fixed")
    assert make_trainer(fixed, _params(fixed), 0).fused is not None


def test_adam_runs_the_fused_kernel_exactly_where_the_fused_step_does() -> None:
    """Adam's per-update cost is what an update interval amortises (docs/benchmarks/sp_online_fused.md): a trainer
    on the fused step runs torch's fused Adam kernel in every layer's optimizer; the autograd fallback (here: loss
    v15) keeps the default kernel, and so does ``trainer.fused = None`` on a covered spec (its optimizer is chosen
    from the spec, so the parity cases above compare the same optimizer)."""
    covered = _spec(optimizer="adam")
    tr = make_trainer(covered, _params(covered), 0)
    assert isinstance(tr, SPTrainer) and tr.fused is not None
    assert all(g["fused"] for o in tr.opts.values() for g in o.param_groups)
    fallback = covered.replace_rule(loss="v15")
    tr = make_trainer(fallback, _params(fallback), 0)
    assert isinstance(tr, SPTrainer) and tr.fused is None
    assert not any(g["fused"] for o in tr.opts.values() for g in o.param_groups)
