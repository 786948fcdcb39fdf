"""The int8 rule's numpy reference (edgesp/int8.py): integer invariants, rounding, and that it learns."""

import numpy as np
import pytest

from edgesp import int8
from edgesp.errors import SpecError
from edgesp.functional import init_params
from edgesp.presets import build_spec


def _net(model="mlp", shape=(64,), **kw):
    spec = build_spec(model, shape, 10, **kw)
    plan, state = int8.quantise(spec, init_params(spec, 0))
    return spec, int8.Int8Net(plan, state)


def test_stochastic_rounding_is_unbiased_floor_of_g_plus_r():
    r = int8.rand32(7, 3, 1, 0, 200_000)
    g = np.full(r.shape, 5, np.int64)  # 5 / 2^4 = 0.3125
    q = int8.sround(g, 4, r)
    assert set(np.unique(q)) == {0, 1}
    assert abs(q.mean() - 5 / 16) < 0.005  # unbiased (binomial std ~0.001)
    assert np.array_equal(int8.sround(np.array([-5]), 4, np.array([0])), [-1])  # floor, not truncation
    assert np.array_equal(int8.sround(np.array([-5]), 0, np.array([9])), [-5])


def test_hash_is_stateless_and_distinct_per_layer_and_step():
    a = int8.rand32(0, 1, 2, 10, 5)
    assert np.array_equal(a, int8.rand32(0, 1, 2, 0, 15)[10:])
    assert not np.array_equal(a, int8.rand32(0, 2, 2, 10, 5))
    assert not np.array_equal(a, int8.rand32(0, 1, 3, 10, 5))


def test_sp_step_keeps_every_integer_in_range_and_changes_weights():
    spec, net = _net(width=32)
    rng = np.random.default_rng(0)
    before = {k: v.copy() for k, v in net.state().items()}
    for i in range(20):
        net.sp_step(rng.integers(-127, 128, 64).astype(np.int8), i % 10)
    after = net.state()
    assert after["blocks.0.weight"].dtype == np.int8 and after["head.bias"].dtype == np.int32
    assert any(not np.array_equal(before[k], after[k]) for k in after)
    assert all(np.abs(after[k]).max() <= 127 for k in after if k.endswith("weight"))
    assert after["signal.weight"].min() >= 0
    assert net.step == 20


def test_conv_target_table_pools_back_to_itself():
    spec, net = _net("cnn2d", (1, 8, 8), depth=1, channels=4)
    p = net.plan
    t = p.z_target(net.z, 3)
    assert np.array_equal(int8.maxpool(p.blocks[0], t.reshape(-1)), net.z[:, 3])
    assert np.array_equal(p.z_grad(t), 4 * net.z[:, 3])  # 2x2 windows


def test_refuses_what_the_int8_rule_does_not_compute():
    from edgesp.spec import SignalSpec

    spec = build_spec("mlp", (64,), 10, width=16, signal=SignalSpec(placement="input"))
    with pytest.raises(SpecError, match="hidden"):
        int8.quantise(spec, init_params(spec, 0))


def test_int8_sp_learns_digits_on_the_host(digits):
    """One epoch of integer SP from a fresh 2x64 MLP: far above chance (10 %)."""
    from edgesp.rules.int8_rule import Int8Trainer, to_int8_spec

    spec = build_spec("mlp", (64,), 10, width=64)
    spec8, params8 = to_int8_spec(spec, init_params(spec, 0))
    tr = Int8Trainer(spec8, params8)
    x = digits.x_train.reshape(len(digits.x_train), -1)
    tr.train_step(x, digits.y_train)
    acc = float(np.mean(tr.predict(digits.x_test.reshape(len(digits.x_test), -1)).argmax(1) == digits.y_test))
    assert acc > 0.6, acc
