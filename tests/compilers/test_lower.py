"""The lowered SP update step (numpy reference interpreter) against the torch reference trainer."""

import numpy as np
import pytest

from compilers import interp
from compilers.lower import lower_inference, lower_update
from edgesp.errors import CompileError
from edgesp.rules.sigprop import SigpropTrainer
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
    prog = lower_update(spec, params, 1)
    trainer = SigpropTrainer(spec, params, 0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    y = np.array([3])
    _, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-2)})
    trainer.train_step(x, y)
    for k, v in trainer.params().items():
        np.testing.assert_allclose(new[k], v, atol=1e-6, err_msg=k)
    assert np.abs(new["blocks.0.weight"] - params["blocks.0.weight"]).max() > 1e-5
