"""The BP baseline step from the same compiler (what SP is compared with in the same runtime and profiler):
its updates equal torch autograd's backprop on the same MLP, in the numpy interpreter and in ONNX Runtime."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compilers import interp
from compilers.forward_only import ForwardOnlyError, check_program
from compilers.lower import lower_bp_update
from edgesp.errors import CompileError
from edgesp.functional import predict_logits, to_torch
from tests.compilers.helpers import make


def _torch_bp(spec, params, batches, lr, eps=1e-8):
    """Reference: CE on the logits, autograd through every block, one Adam (elementwise: = one per layer)."""
    p = {k: v for k, v in to_torch(params, requires_grad=True).items() if not k.startswith("signal.")}
    opt = torch.optim.Adam(p.values(), lr=lr, eps=eps)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(predict_logits(spec, torch.tensor(x), p), torch.tensor(y, dtype=torch.long))
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return {k: v.detach().numpy() for k, v in p.items()}, losses


def _batches(n, b=8):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((b, 64)).astype(np.float32), rng.integers(0, 10, b)) for _ in range(n)]


def test_bp_program_matches_torch_autograd():
    spec, params = make("mlp", (64,), "v1", "adam", lr=1e-3, depth=3)
    prog = lower_bp_update(spec, params, 8)
    state = {s.value.name: s.init for s in prog.states}
    for x, y in _batches(20):
        out, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-3)}, state)
        state.update(new)
    want, losses = _torch_bp(spec, params, _batches(20), 1e-3)
    assert float(out["loss_bp"]) == pytest.approx(losses[-1], rel=1e-5)
    for k, v in want.items():  # float32 rounding through Adam's normalisation (measured ~1e-7)
        np.testing.assert_allclose(state[k], v, atol=1e-5, err_msg=k)
        assert np.abs(v - params[k]).max() > 1e-3
    np.testing.assert_array_equal(state["signal.weight"], params["signal.weight"])  # carried, not learned


def test_bp_program_with_adam_in_row_blocks_matches_torch_autograd():
    """Batch 1 (g² by row products) on weights large enough for Adam's row blocks (compilers.lower._row_chunks).
    ε = 1e-6: see tests/compilers/test_lower.py::test_adam_in_row_blocks_matches_torch_trainer."""
    from dataclasses import replace

    spec, params = make("mlp", (64,), "v1", "adam", lr=1e-3, depth=2, width=256)
    spec = spec.replace_rule(optimizer=replace(spec.rule.optimizer, eps=1e-6))
    prog = lower_bp_update(spec, params, 1)
    assert prog.producer(prog.state_updates["blocks.1.weight"]).kind == "concat_rows"
    state = {s.value.name: s.init for s in prog.states}
    for x, y in _batches(6, b=1):
        _, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-3)}, state)
        state.update(new)
    want, _ = _torch_bp(spec, params, _batches(6, b=1), 1e-3, eps=1e-6)
    for k, v in want.items():
        np.testing.assert_allclose(state[k], v, atol=1e-5, err_msg=k)


def test_bp_step_is_not_forward_only_and_conv_is_refused():
    spec, params = make("mlp", (64,), "v1", "adam", lr=1e-3, depth=2)
    with pytest.raises(ForwardOnlyError, match="depends on later-layer state"):
        check_program(lower_bp_update(spec, params, 4))  # the structural check tells BP from SP
    cnn, cparams = make("cnn1d", (1, 40), "v1", "adam", lr=1e-3)
    with pytest.raises(CompileError, match="lowers MLPs only"):
        lower_bp_update(cnn, cparams, 4)


@pytest.mark.parametrize("target", ["edge-cpu", "edge-cpu-tflite"])
def test_bp_build_learns_in_the_runtime_like_torch(target, tmp_path):
    from compilers import compile_model
    from firmware_sim import SIMULATORS
    from targets import load_target

    spec, params = make("mlp", (64,), "v1", "adam", lr=1e-3, depth=2)
    m = compile_model(spec, params, load_target(target), tmp_path, batch=8, on_device_rule="bp")
    assert m.on_device_rule == "bp" and m.backend["forward_only_checked"] is False
    import importlib

    dev = importlib.import_module(SIMULATORS[m.runtime]).DEVICE(tmp_path)
    for x, y in _batches(10):
        losses = dev.step(x, y)
    assert set(losses) == {"loss_bp"}
    want, _ = _torch_bp(spec, params, _batches(10), 1e-3)
    got = dev.parameters()
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=1e-5, err_msg=k)
