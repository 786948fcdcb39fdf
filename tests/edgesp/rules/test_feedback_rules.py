"""ifa, bdfa, kp, wm, tp, dtp, dfc: one update against the formula in numpy, learning digits, alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgesp.data import load_dataset
from edgesp.errors import SpecError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.rules.feedback_rules import RULE_NAMES, make
from edgesp.spec import OptimizerSpec, RuleSpec

SGD1 = OptimizerSpec(name="sgd", lr=1.0, momentum=0.0)


def _spec(preset, shape, rule, classes=10, opt=None, params=None, **kw):
    rule_spec = RuleSpec(name=rule, optimizer=opt or OptimizerSpec(), params=params or {})
    return build_spec(preset, shape, classes, rule=rule_spec, **kw)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# Measured (seed 0, width 64, 3 epochs, batch 32, Adam 1e-3): ifa 0.87, bdfa 0.87, kp 0.92, wm 0.94,
# tp 0.78, dtp 0.92, dfc 0.86 (bp 0.94, dfa 0.88). Chance is 0.10.
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_learns_digits(digits, rule):
    spec = _spec("mlp", digits.input_shape, rule, width=64)
    tr = make_trainer(spec, init_params(spec, 0), seed=0)
    rng = np.random.default_rng(0)
    xtr = digits.x_train.reshape(len(digits.x_train), -1)
    for _ in range(3):
        idx = rng.permutation(len(xtr))
        for s in range(0, len(idx), 32):
            b = idx[s : s + 32]
            losses = tr.train_step(xtr[b], digits.y_train[b])
    assert all(np.isfinite(v) for v in losses.values())
    acc = (tr.predict(digits.x_test.reshape(len(digits.x_test), -1)).argmax(1) == digits.y_test).mean()
    assert acc > 0.7, f"{rule}: test accuracy {acc:.3f}"


# ---------------------------------------------------------------------------- numpy reference, 2 blocks + head
def _ln_relu(a, eps=1e-5):
    mu = a.mean(1, keepdims=True)
    sig = np.sqrt(((a - mu) ** 2).mean(1, keepdims=True) + eps)
    z = (a - mu) / sig
    return np.maximum(z, 0), (z, sig)


def _jln(v, z, sig):
    """J_LN v (J_LN = (I − 1/n − z zᵀ/n)/σ is symmetric)."""
    return (v - v.mean(1, keepdims=True) - z * (v * z).mean(1, keepdims=True)) / sig


def _jt(w, js):
    """J_gᵀ w for g = ReLU ∘ LN."""
    z, sig = js
    return _jln(w * (z > 0), z, sig)


def _j(v, js):
    """J_g v."""
    z, sig = js
    return (z > 0) * _jln(v, z, sig)


def _f64(d):
    return {k: np.asarray(v, np.float64) for k, v in d.items()}


def _forward(p, x, inject=(0.0, 0.0), head_inject=0.0):
    h0 = x
    h1, j1 = _ln_relu(h0 @ p["blocks.0.weight"].T + p["blocks.0.bias"] + inject[0])
    h2, j2 = _ln_relu(h1 @ p["blocks.1.weight"].T + p["blocks.1.bias"] + inject[1])
    out = h2 @ p["head.weight"].T + p["head.bias"] + head_inject
    return (h0, h1, h2), (j1, j2), out


def _softmax(out):
    sm = np.exp(out - out.max(1, keepdims=True))
    return sm / sm.sum(1, keepdims=True)


def _eps(out, y, classes):
    return _softmax(out) - np.eye(classes)[y]


def _grads(h, das, e):
    g = {"head.weight": e.T @ h[2], "head.bias": e.sum(0)}
    for i, da in enumerate(das):
        g[f"blocks.{i}.weight"], g[f"blocks.{i}.bias"] = da.T @ h[i], da.sum(0)
    return g


def _setup(rule, params=None):
    spec = _spec("mlp", (4,), rule, classes=3, opt=SGD1, params=params, width=5)
    p0 = init_params(spec, 3)
    tr = make(spec, p0, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    return spec, p0, tr, x, y


def _check(p0, p1, g, skip=()):
    for name, grad in g.items():
        if name in skip:
            continue
        # float32 forward vs float64 reference on O(1) values
        np.testing.assert_allclose(p0[name] - p1[name], grad, atol=1e-5, rtol=1e-4, err_msg=name)
        assert np.abs(grad).max() > 1e-4, f"{name}: degenerate check"


def test_ifa_update_matches_numpy():
    spec, p0, tr, x, y = _setup("ifa")
    b0 = tr.feedback["blocks.0"].numpy().astype(np.float64)
    p = _f64(p0)
    h, js, out = _forward(p, x.astype(np.float64))
    e = _eps(out, y, 3) / len(y)
    da1 = _jt(e @ b0, js[0])
    da2 = _jt(_j(_j(da1, js[0]) @ p["blocks.1.weight"].T, js[1]), js[1])  # J₂ᵀJ₂(W₂ J₁ δa₁)
    tr.train_step(x, y)
    _check(p0, tr.params(), _grads(h, [da1, da2], e))


def test_ifa_equals_noklands_formula_for_elementwise_relu():
    """With ReLU blocks (no LayerNorm), IFA's δa_2 is exactly (W_2 δa_1) ⊙ f′(a_2)."""
    from edgesp.spec import Linear, ModelSpec, ReLU

    spec = ModelSpec(
        input_shape=(4,),
        num_classes=3,
        blocks=((Linear(4, 6), ReLU()), (Linear(6, 5), ReLU())),
        head=Linear(5, 3),
        rule=RuleSpec(name="ifa", optimizer=SGD1),
    )
    p0 = init_params(spec, 0)
    tr = make(spec, p0, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    p = _f64(p0)
    a1 = x @ p["blocks.0.weight"].T + p["blocks.0.bias"]
    h1 = np.maximum(a1, 0)
    a2 = h1 @ p["blocks.1.weight"].T + p["blocks.1.bias"]
    out = np.maximum(a2, 0) @ p["head.weight"].T + p["head.bias"]
    e = _eps(out, y, 3) / 6
    da1 = (e @ tr.feedback["blocks.0"].numpy()) * (a1 > 0)
    da2 = (da1 @ p["blocks.1.weight"].T) * (a2 > 0)
    g, _ = tr.gradients(x, y)
    np.testing.assert_allclose(g["blocks.0.weight"].numpy(), da1.T @ x, atol=1e-6)
    np.testing.assert_allclose(g["blocks.1.weight"].numpy(), da2.T @ h1, atol=1e-6)
    assert np.abs(da2).max() > 1e-4


def test_bdfa_update_and_feedback_learning_match_numpy():
    spec, p0, tr, x, y = _setup("bdfa", None)
    fb = {k: v.detach().numpy().astype(np.float64) for k, v in tr.learned_feedback.items()}
    p = _f64(p0)
    h, js, out = _forward(p, x.astype(np.float64))
    e = _eps(out, y, 3) / len(y)
    das = [_jt(e @ fb[f"blocks.{i}"], js[i]) for i in range(2)]
    tr.train_step(x, y)
    _check(p0, tr.params(), _grads(h, das, e))
    prob = _softmax(out)
    for i in range(2):  # ΔB_l = pᵀ(p B_l − h_l)/n, one step of the rule's optimizer (here SGD, lr 1)
        g = prob.T @ (prob @ fb[f"blocks.{i}"] - h[i + 1]) / len(y)
        got = tr.learned_feedback[f"blocks.{i}"].detach().numpy()
        np.testing.assert_allclose(fb[f"blocks.{i}"] - got, g, atol=1e-5, rtol=1e-4)


def _fa_das(p, fb, h, js, e):
    da2 = _jt(e @ fb["head"], js[1])
    da1 = _jt(da2 @ fb["blocks.1"], js[0])
    return [da1, da2]


def test_kp_update_matches_numpy():
    lam = 0.1
    spec, p0, tr, x, y = _setup("kp", {"kp_decay": lam})
    fb = {k: v.detach().numpy().astype(np.float64) for k, v in tr.learned_feedback.items()}
    assert set(fb) == {"blocks.1", "head"}  # block 0 sends no error anywhere: no B
    p = _f64(p0)
    h, js, out = _forward(p, x.astype(np.float64))
    e = _eps(out, y, 3) / len(y)
    g = _grads(h, _fa_das(p, fb, h, js, e), e)
    tr.train_step(x, y)
    p1 = tr.params()
    _check(p0, p1, g, skip=("blocks.1.weight", "head.weight"))
    for prefix in ("blocks.1", "head"):
        u = -g[prefix + ".weight"]  # SGD lr 1: the optimizer's increment
        want_w = (1 - lam) * (p[prefix + ".weight"] + u)
        want_b = (1 - lam) * (fb[prefix] + u)
        np.testing.assert_allclose(p1[prefix + ".weight"], want_w, atol=1e-5, rtol=1e-4, err_msg=prefix)
        got_b = tr.learned_feedback[prefix].detach().numpy()
        np.testing.assert_allclose(got_b, want_b, atol=1e-5, rtol=1e-4, err_msg=prefix)
        # W − B shrinks by exactly (1 − λ)
        np.testing.assert_allclose(
            p1[prefix + ".weight"] - got_b, (1 - lam) * (p[prefix + ".weight"] - fb[prefix]), atol=1e-5
        )


def test_wm_update_and_mirror_step_match_numpy():
    eta, sigma, m = 0.2, 0.5, 7
    spec, p0, tr, x, y = _setup("wm", {"wm_lr": eta, "wm_noise": sigma, "wm_samples": m})
    fb = {k: v.detach().numpy().astype(np.float64) for k, v in tr.learned_feedback.items()}
    gen = torch.Generator()
    gen.set_state(tr.noise.get_state())
    p = _f64(p0)
    h, js, out = _forward(p, x.astype(np.float64))
    e = _eps(out, y, 3) / len(y)
    g = _grads(h, _fa_das(p, fb, h, js, e), e)
    tr.train_step(x, y)
    p1 = _f64(tr.params())
    _check(p0, p1, g)
    for prefix, n_in in (("blocks.1", 5), ("head", 5)):  # mirror step at the updated weights, same noise
        xi = (sigma * torch.randn((m, n_in), generator=gen)).numpy().astype(np.float64)
        resp = xi @ p1[prefix + ".weight"].T  # δ_l = W δ_{l-1}
        est = resp.T @ xi / (sigma**2 * m)
        want = fb[prefix] + eta * (est - fb[prefix])
        got = tr.learned_feedback[prefix].detach().numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=prefix)


@pytest.mark.parametrize("rule", ["tp", "dtp"])
def test_target_propagation_matches_numpy(rule):
    eta_t, sigma = 0.7, 0.3
    spec, p0, tr, x, y = _setup(rule, {"tp_target_lr": eta_t, "tp_noise": sigma})
    inv = {k: v.detach().numpy().astype(np.float64) for k, v in tr.inverses[0].items()}
    gen = torch.Generator()
    gen.set_state(tr.noise.get_state())
    p = _f64(p0)
    h, js, out = _forward(p, x.astype(np.float64))
    n = len(y)
    e = _eps(out, y, 3) / n

    def g0(v):  # inverse of block 1: h_2 → h_1
        return v @ inv["weight"].T + inv["bias"]

    t2 = h[2] - eta_t * _eps(out, y, 3) @ p["head.weight"]
    t1 = h[1] + g0(t2) - g0(h[2]) if rule == "dtp" else g0(t2)
    das = [_jt((h[1] - t1) / n, js[0]), _jt((h[2] - t2) / n, js[1])]
    tr.train_step(x, y)
    p1 = _f64(tr.params())
    _check(p0, p1, _grads(h, das, e))
    # inverse trained on the noisy reconstruction at the updated weights: r = g(f(h_1 + ξ)) − (h_1 + ξ)
    noisy = h[1] + (sigma * torch.randn(h[1].shape, generator=gen)).numpy()
    up, _ = _ln_relu(noisy @ p1["blocks.1.weight"].T + p1["blocks.1.bias"])
    r = g0(up) - noisy
    got = {k: v.detach().numpy() for k, v in tr.inverses[0].items()}
    np.testing.assert_allclose(inv["weight"] - got["weight"], r.T @ up / n, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(inv["bias"] - got["bias"], r.sum(0) / n, atol=1e-5, rtol=1e-4)


def test_dfc_update_matches_numpy():
    k_steps, dt, alpha, lam = 6, 0.4, 0.2, 1.5
    params = {"dfc_steps": k_steps, "dfc_dt": dt, "dfc_alpha": alpha, "dfc_target": lam}
    spec, p0, tr, x, y = _setup("dfc", params)
    q = [tr.feedback[f"blocks.{i}"].numpy().astype(np.float64) for i in range(2)]
    p = _f64(p0)
    x64 = x.astype(np.float64)
    u = np.zeros((len(y), 3))
    _, _, ff = _forward(p, x64)
    target = ff - lam * _eps(ff, y, 3)
    out = ff
    for _ in range(k_steps):
        u = u + dt * ((target - out) - alpha * u)
        h, _, out = _forward(p, x64, (u @ q[0], u @ q[1]), u)
    n = len(y)
    das = []
    for i in range(2):  # −(φ(a_ss) − φ(a_ss^ff))/n, a_ss^ff = W h_ss + b at the steady-state input
        a_ff = h[i] @ p[f"blocks.{i}.weight"].T + p[f"blocks.{i}.bias"]
        das.append(-(_ln_relu(a_ff + u @ q[i])[0] - _ln_relu(a_ff)[0]) / n)
    tr.train_step(x, y)
    _check(p0, tr.params(), _grads(h, das, -u / n))
    assert np.abs(target - out).max() < np.abs(target - ff).max()  # the controller moved the output to the target


def test_cnn1d_every_rule_updates_every_layer():
    for rule in RULE_NAMES:
        spec = _spec("cnn1d", (1, 40), rule, channels=4)
        params = init_params(spec, 0)
        tr = make_trainer(spec, params, seed=0)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 1, 40)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        first = tr.train_step(x, y)["ce"]
        for _ in range(15):
            last = tr.train_step(x, y)["ce"]
        assert last < first, f"{rule}: CE {first:.3f} -> {last:.3f}"
        out = tr.params()
        assert {k: v.shape for k, v in out.items()} == spec.param_shapes()
        for n, v in out.items():
            if n.startswith("signal."):
                np.testing.assert_array_equal(v, params[n])
            else:
                assert not np.array_equal(v, params[n]), f"{rule}: {n} not updated"
        ang = tr.alignment(x, y)
        assert set(ang) == {"blocks.0.weight", "blocks.1.weight", "head.weight"}


def test_wm_conv_mirror_estimates_the_kernel():
    """Weight mirror on a conv layer: with many noise draws B converges to W (taps at the padded edges
    normalised by how many positions feed them)."""
    spec = _spec("cnn1d", (1, 16), "wm", channels=3, params={"wm_lr": 1.0, "wm_samples": 4000})
    tr = make(spec, init_params(spec, 0), seed=0)
    tr.update_extra(None)
    for prefix, b in tr.learned_feedback.items():
        w = tr.p[prefix + ".weight"].detach()
        rel = float((b.detach() - w).norm() / w.norm())
        assert rel < 0.25, f"{prefix}: relative error {rel:.2f}"


def test_alignment_is_bp_angle_and_changes_nothing():
    spec = _spec("mlp", (6,), "kp", classes=3, width=8)
    params = init_params(spec, 0)
    tr = make(spec, params, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    a = tr.alignment(x, y)
    assert a["head.weight"] < 1e-3  # the head gets its true gradient
    for prefix, b in tr.learned_feedback.items():  # weight transport: KP/FA with B = W is BP
        b.data.copy_(tr.p[prefix + ".weight"].detach())
    a_bp = tr.alignment(x, y)
    assert all(v < 0.1 for v in a_bp.values()), a_bp
    assert a["blocks.0.weight"] > 5  # random B: not BP
    out = tr.params()
    for n in params:
        np.testing.assert_array_equal(out[n], params[n])


def test_unknown_rule_param_rejected():
    spec = _spec("mlp", (4,), "tp", classes=3, params={"tp_lr": 1.0})
    with pytest.raises(SpecError, match="tp_target_lr"):
        make(spec, init_params(spec, 0), seed=0)
