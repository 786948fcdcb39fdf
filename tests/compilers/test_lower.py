"""The lowered SP update step (numpy reference interpreter) against the torch reference trainer."""

import numpy as np
import pytest

from compilers import interp
from compilers.lower import class_targets, lower_inference, lower_update, target_stream
from edgesp.errors import CompileError
from edgesp.rules.sigprop import SigpropTrainer
from edgesp.spec import SignalSpec
from tests.compilers.helpers import make

CASES = [
    ("mlp", (64,), "v9", "adam"),
    ("mlp", (64,), "v1", "sgd"),
    ("mlp", (64,), "l2", "adam"),
    ("cnn1d", (1, 40), "v9", "sgd"),
    ("cnn2d", (1, 8, 8), "v9", "adam"),
    ("vgg8", (1, 8, 8), "v1", "sgd"),
]


@pytest.mark.parametrize("preset,shape,loss,opt", CASES)
def test_update_program_matches_torch_trainer(preset, shape, loss, opt, rng):
    # Tolerance: float32 with different summation orders; 5 steps of Adam at lr 1e-2 stay within 1e-5
    # absolute on weights of magnitude ~0.1-1 (measured max 1.3e-6).
    spec, params = make(preset, shape, loss, opt)
    prog = lower_update(spec, params, 16)
    trainer = SigpropTrainer(spec, params, 0)
    state = {s.value.name: s.init for s in prog.states}
    for _ in range(5):
        x = rng.standard_normal((16, *spec.input_shape)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        out, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-2)}, state)
        state.update(new)
        losses = trainer.train_step(x, y)
        for k, v in losses.items():
            assert float(out[k]) == pytest.approx(v, rel=1e-5, abs=1e-5)
    for k, v in trainer.params().items():
        np.testing.assert_allclose(state[k], v, atol=1e-5, err_msg=k)
    logits, _ = interp.run(lower_inference(spec, trainer.params(), 16), {"x": x}, trainer.params())
    np.testing.assert_allclose(logits["logits"], trainer.predict(x), atol=1e-5)


def test_unsupported_models_are_refused():
    spec, params = make(loss="v14")
    with pytest.raises(CompileError, match="v14"):
        lower_update(spec, params, 4)
    spec, params = make("snn", (64,))
    with pytest.raises(CompileError, match="Lava"):
        lower_update(spec, params, 4)


def test_batch_losses_are_refused_at_batch_one_and_v1_learns_there(rng):
    """v9 compares the samples of a batch: at batch 1 its loss is constant, so compiling it is refused;
    v1 (one target per class) gives the batch-1 step real gradients that match the torch trainer."""
    spec, params = make(loss="v9")
    with pytest.raises(CompileError, match="--loss v1"):
        lower_update(spec, params, 1)
    spec, params = make(loss="v1", opt="sgd")
    spec = _with_stream(spec, "exact")
    prog = lower_update(spec, params, 1)
    trainer = SigpropTrainer(spec, params, 0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    y = np.array([3])
    _, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-2)})
    trainer.train_step(x, y)
    for k, v in trainer.params().items():
        np.testing.assert_allclose(new[k], v, atol=1e-6, err_msg=k)
    assert np.abs(new["blocks.0.weight"] - params["blocks.0.weight"]).max() > 1e-5


def _with_stream(spec, mode):
    return spec.replace_rule(params={"target_stream": mode})


@pytest.mark.parametrize("placement", ["hidden", "input"])
def test_cached_target_stream_is_the_exact_step_minus_the_other_classes_gradients(placement, rng):
    """Batch 1, loss v1: the cached step runs one target row per block (not C) and reads the other classes'
    targets from tcache.k. From an exact cache its losses equal the exact step's; what only the sample reaches
    (block 0 / the head) learns identically; the signal's columns of absent classes and the cache rows of absent
    classes do not move; the cache row of the sample's class becomes its exact (pre-step) target."""
    spec, params = make(loss="v1", opt="sgd", signal=SignalSpec(placement=placement))
    assert target_stream(spec, 1) == "exact" and target_stream(_with_stream(spec, "cached"), 1) == "cached"
    cached, exact = (
        lower_update(_with_stream(spec, "cached"), params, 1),
        lower_update(_with_stream(spec, "exact"), params, 1),
    )
    assert {s.value.name for s in cached.states} - {s.value.name for s in exact.states} == {
        f"tcache.{k}" for k in class_targets(spec, params)
    }
    x = rng.standard_normal((1, 64)).astype(np.float32)
    feeds = {"x": x, "y": np.array([3], np.int32), "lr": np.float32(1e-2)}
    out_c, new_c = interp.run(cached, feeds)
    out_e, new_e = interp.run(exact, feeds)
    assert out_c.keys() == out_e.keys()
    for k in out_c:
        assert float(out_c[k]) == pytest.approx(float(out_e[k]), rel=1e-5, abs=1e-6), k
    np.testing.assert_allclose(new_c["head.weight"], new_e["head.weight"], atol=1e-6)
    if placement == "hidden":
        np.testing.assert_allclose(new_c["blocks.0.weight"], new_e["blocks.0.weight"], atol=1e-6)
    others = [c for c in range(10) if c != 3]
    np.testing.assert_array_equal(new_c["signal.weight"][:, others], params["signal.weight"][:, others])
    assert np.abs(new_e["signal.weight"][:, others] - params["signal.weight"][:, others]).max() > 0
    before = class_targets(spec, params)
    for k, table in before.items():
        np.testing.assert_array_equal(new_c[f"tcache.{k}"][others], table[others])
        np.testing.assert_allclose(new_c[f"tcache.{k}"][3], table[3], atol=1e-6)
    with pytest.raises(CompileError, match="batch-1 steps with loss v1"):
        lower_update(_with_stream(spec, "cached"), params, 4)
    with pytest.raises(CompileError, match="unknown"):
        lower_update(_with_stream(spec, "bogus"), params, 1)
