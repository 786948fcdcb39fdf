"""Opt-in SP variants (``RuleSpec.variant``): spec validation and JSON, the trainer's updates, compiler refusal."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgesp.errors import CompileError, SpecError
from edgesp.functional import block_forward, init_params, to_torch
from edgesp.losses import sp_logits, sp_loss
from edgesp.presets import build_spec
from edgesp.rules.sigprop import SigpropTrainer
from edgesp.spec import ModelSpec, OptimizerSpec, RuleSpec, SignalSpec, SPVariant

V1 = dict(loss="v1", temperature=0.01)
VARIANTS = [
    SPVariant(codes=3),
    SPVariant(codes=3, predict="nearest"),
    SPVariant(free_targets=True),
    SPVariant(free_targets=True, predict="nearest"),
    SPVariant(aux=0.5),
    SPVariant(aux=1.0, aux_pool="channel"),
    SPVariant(aux=1.0, codes=2),
]


def _spec(preset="mlp", variant=None, opt=None, signal=None, depth=2):
    variant = variant or SPVariant()
    shape = (64,) if preset == "mlp" else (1, 40)
    rule = RuleSpec(**V1, variant=variant, optimizer=opt or OptimizerSpec())
    return build_spec(preset, shape, 10, width=32, channels=4, depth=depth, rule=rule, signal=signal)


def _batch(rng, spec, n=24):
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    return x, rng.integers(0, spec.num_classes, n)


# ----------------------------------------------------------------------------------------- spec
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.describe())
@pytest.mark.parametrize("preset", ["mlp", "cnn1d"])
def test_variant_json_round_trip(variant, preset):
    spec = _spec(preset, variant)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.rule.variant == variant
    assert json.loads(spec.to_json())["rule"]["variant"] == {
        "codes": variant.codes,
        "free_targets": variant.free_targets,
        "aux": variant.aux,
        "aux_pool": variant.aux_pool,
        "predict": variant.predict,
    }


def test_plain_spec_json_has_no_variant_and_old_specs_load_plain():
    spec = _spec()
    d = spec.to_dict()
    assert "variant" not in d["rule"]  # a plain-SP spec writes exactly what it wrote before variants existed
    assert ModelSpec.from_dict(d).rule.variant.is_plain
    assert ModelSpec.from_dict(d) == spec


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(codes=0), "codes"),
        (dict(aux=-1.0), "aux"),
        (dict(aux=float("nan")), "aux"),
        (dict(aux_pool="max"), "aux_pool"),
        (dict(predict="vote"), "predict"),
        (dict(free_targets=1), "free_targets"),
    ],
)
def test_bad_variant_fields_are_refused(bad, match):
    with pytest.raises(SpecError, match=match):
        SPVariant(**bad)
    d = _spec().to_dict()
    d["rule"]["variant"] = {**SPVariant().__dict__, **bad}
    with pytest.raises(SpecError, match=match):
        ModelSpec.from_dict(d)


def test_unknown_variant_field_is_a_spec_error():
    d = _spec().to_dict()
    d["rule"]["variant"] = {"codez": 2}
    with pytest.raises(SpecError, match="variant"):
        ModelSpec.from_dict(d)


def test_variant_needs_sigprop_v1_and_hidden_placement():
    with pytest.raises(SpecError, match="sigprop"):
        build_spec("mlp", (64,), 10, rule=RuleSpec(name="bp", variant=SPVariant(aux=1.0)))
    with pytest.raises(SpecError, match="v1"):
        build_spec("mlp", (64,), 10, rule=RuleSpec(loss="v9", variant=SPVariant(codes=2)))
    with pytest.raises(SpecError, match="hidden"):
        _spec(variant=SPVariant(free_targets=True), signal=SignalSpec(placement="input"))


def test_variant_parameter_shapes_and_layers():
    plain = _spec("cnn1d")
    codes = _spec("cnn1d", SPVariant(codes=4), signal=SignalSpec(shape="channel"))
    d_ch = plain.block_output_shape(0)[0]
    assert codes.param_shapes()["signal.weight"] == (d_ch, 40)
    free = _spec("cnn1d", SPVariant(free_targets=True), depth=3)
    shapes = free.param_shapes()
    assert "targets.0.weight" not in shapes  # block 0's target is the signal
    for i in (1, 2):
        d = int(np.prod(free.block_output_shape(i)))
        assert shapes[f"targets.{i}.weight"] == (d, 10) and free.param_layer_index(f"targets.{i}.bias") == i + 1
    assert free.num_params() - _spec("cnn1d", depth=3).num_params() == sum(
        int(np.prod(free.block_output_shape(i))) * 11 for i in (1, 2)
    )
    aux = _spec("cnn1d", SPVariant(aux=1.0, aux_pool="channel"))
    assert aux.param_shapes()["aux.1.weight"] == (10, aux.block_output_shape(1)[0])
    assert aux.param_layer_index("aux.0.weight") == 1


# ----------------------------------------------------------------------------------------- trainer
def test_code_loss_is_the_nearest_code_of_the_class():
    torch.manual_seed(0)
    h, t = torch.randn(5, 6), torch.randn(3 * 4, 6)  # 3 classes × 4 codes, row c·4 + k
    y = torch.tensor([0, 2, 1, 1, 0])
    got = sp_loss("v1", h, t, y, y, torch.arange(3), temperature=0.5, codes=4)
    logits = (h @ t.T / (0.5 * 6)).reshape(5, 3, 4)
    want = (
        -sum(torch.log_softmax(logits[i].max(1).values, 0)[y[i]] for i in range(5)) / 5
    )  # positive: the class's nearest code; negatives: every other class's nearest code
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="v1"):
        sp_loss("v9", h, t, y, y, torch.arange(3), codes=4)


@pytest.mark.parametrize("preset", ["mlp", "cnn1d"])
def test_identical_codes_give_the_plain_sp_update(preset, rng):
    """K copies of each class's code: max over codes = the code, so with plain SGD every block and the head get
    exactly plain SP's update, and the K codes of a class share the plain signal's update (ties split evenly)."""
    opt = OptimizerSpec(name="sgd", lr=0.1, momentum=0.0)
    plain = _spec(preset, opt=opt)
    codes = _spec(preset, SPVariant(codes=3), opt=opt)
    p0 = init_params(plain, 0)
    pc = dict(p0, **{"signal.weight": np.repeat(p0["signal.weight"], 3, axis=1)})
    a, b = SigpropTrainer(plain, p0, 0), SigpropTrainer(codes, pc, 0)
    x, y = _batch(rng, plain)
    la, lb = a.train_step(x, y), b.train_step(x, y)
    assert la == pytest.approx(lb, rel=1e-5)
    pa, pb = a.params(), b.params()
    for k in pa:
        if k != "signal.weight":
            np.testing.assert_allclose(pa[k], pb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    dw_codes = (pb["signal.weight"] - pc["signal.weight"]).reshape(-1, 10, 3).sum(2)
    np.testing.assert_allclose(dw_codes, pa["signal.weight"] - p0["signal.weight"], rtol=1e-4, atol=1e-6)


def test_free_target_update_equals_hand_gradient(rng):
    """Block 1's loss uses its own target z_1 = relu(LN(T_1·onehot + b_1)), not f_1(t_1); one SGD step on T_1
    equals −lr·∂L/∂T_1 computed by hand from that definition."""
    opt = OptimizerSpec(name="sgd", lr=0.05, momentum=0.0)
    spec = _spec("mlp", SPVariant(free_targets=True), opt=opt)
    params = init_params(spec, 0)
    x, y = _batch(rng, spec)
    tr = SigpropTrainer(spec, params, 0)
    tr.train_step(x, y)
    p = to_torch(params)
    h0 = block_forward(spec, 0, torch.as_tensor(x), p)
    h1 = block_forward(spec, 1, h0, p)
    w = p["targets.1.weight"].clone().requires_grad_(True)
    z = F.relu(F.layer_norm(w.T + p["targets.1.bias"], (w.shape[0],), eps=1e-5))
    loss = F.cross_entropy(sp_logits(h1, z, 0.01), torch.as_tensor(y))
    (g,) = torch.autograd.grad(loss, [w])
    np.testing.assert_allclose(
        tr.params()["targets.1.weight"], params["targets.1.weight"] - 0.05 * g.numpy(), rtol=1e-4, atol=1e-6
    )
    # block 1's target no longer depends on block 0's signal
    assert "targets.0.weight" not in tr.params()


def test_aux_loss_is_added_to_the_block_loss(rng):
    spec = _spec("cnn1d", SPVariant(aux=0.7, aux_pool="channel"))
    params = init_params(spec, 0)
    x, y = _batch(rng, spec)
    got = SigpropTrainer(spec, params, 0).train_step(x, y)
    plain = SigpropTrainer(_spec("cnn1d"), {k: v for k, v in params.items() if not k.startswith("aux.")}, 0)
    base = plain.train_step(x, y)
    p = to_torch(params)
    h = block_forward(spec, 0, torch.as_tensor(x), p)
    ce = F.cross_entropy(F.linear(h.mean(2), p["aux.0.weight"], p["aux.0.bias"]), torch.as_tensor(y))
    assert got["loss_1"] == pytest.approx(base["loss_1"] + 0.7 * float(ce), rel=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.describe())
def test_variant_updates_stay_local(variant, rng):
    """Locality still holds: changing blocks after i (and the head) leaves every layer <= i's update unchanged."""
    spec = _spec("mlp", variant, opt=OptimizerSpec(name="sgd", lr=0.1), depth=3)
    params = init_params(spec, 0)
    x, y = _batch(rng, spec)
    for i in range(len(spec.blocks)):
        changed = {
            k: (rng.standard_normal(v.shape).astype(np.float32) * 3 if spec.param_layer_index(k) > i + 1 else v)
            for k, v in params.items()
        }
        t1, t2 = SigpropTrainer(spec, params, 0), SigpropTrainer(spec, changed, 0)
        t1.train_step(x, y)
        t2.train_step(x, y)
        p1, p2 = t1.params(), t2.params()
        for k in params:
            if spec.param_layer_index(k) <= i + 1:
                np.testing.assert_array_equal(p1[k] - params[k], p2[k] - changed[k], err_msg=k)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.describe())
def test_variant_loss_decreases_on_a_fixed_batch(variant, rng):
    spec = _spec("cnn1d", variant)
    tr = SigpropTrainer(spec, init_params(spec, 0), 0)
    x, y = _batch(rng, spec, 32)
    first = tr.train_step(x, y)
    for _ in range(30):
        last = tr.train_step(x, y)
    for k in first:
        assert last[k] < first[k], (k, first[k], last[k])
    assert tr.predict(x).shape == (32, 10)


def test_nearest_prediction_is_similarity_to_the_class_targets(rng):
    spec = _spec("mlp", SPVariant(predict="nearest"))
    params = init_params(spec, 0)
    tr = SigpropTrainer(spec, params, 0)
    x, _ = _batch(rng, spec, 5)
    p = to_torch(params)
    from edgesp.functional import signal_forward

    t = block_forward(spec, 1, signal_forward(spec, torch.arange(10), p), p)
    h = block_forward(spec, 1, block_forward(spec, 0, torch.as_tensor(x), p), p)
    np.testing.assert_allclose(tr.predict(x), (sp_logits(h, t, 0.01)).numpy(), rtol=1e-5, atol=1e-6)


def test_codes_learn_digits(digits):
    from edgesp.rules import make_trainer
    from edgesp.train import fit

    spec = build_spec("mlp", (64,), 10, width=64, rule=RuleSpec(**V1, variant=SPVariant(codes=4)))
    tr = make_trainer(spec, init_params(spec, 0), 0)
    hist = fit(tr, digits, spec.input_shape, epochs=3, batch=32, progress=False)
    assert hist.test_accuracy[-1] > 0.65  # chance 0.10; measured 0.78 (plain SP with these settings: 0.74)


# ----------------------------------------------------------------------------------------- compilers
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.describe())
def test_compilers_refuse_variants_naming_the_fix(variant):
    from compilers.lower import lower_inference, lower_update

    spec = _spec("mlp", variant)
    params = init_params(spec, 0)
    for lower in (lower_update, lower_inference):
        with pytest.raises(CompileError, match=r"SP variant .* no on-device lowering yet: compile a plain-SP spec"):
            lower(spec, params, 4)
