import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from compilers import compile_model
from edgesp.errors import TargetError
from edgesp.rules.sigprop import SigpropTrainer
from edgesp.spec import SignalSpec
from targets import load_target
from tests.compilers.helpers import make


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture
def build(tmp_path):
    spec, params = make("cnn1d", (1, 40), "v9", "adam", lr=1e-3)
    manifest = compile_model(spec, params, load_target("edge-cpu"), tmp_path / "b", batch=8)
    return spec, params, manifest, tmp_path / "b"


def test_artifacts_are_valid_single_file_models(build):
    _, _, manifest, out = build
    assert sorted(p.name for p in out.iterdir()) == [
        "inference.onnx",
        "initial_state.npz",
        "manifest.json",
        "update.onnx",
    ]
    for name in ("inference.onnx", "update.onnx"):
        m = onnx.load(str(out / name))
        onnx.checker.check_model(m, full_check=True)
        assert m.opset_import[0].version == 18
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["runtime"] == "onnxruntime" and on_disk["target"] == "edge-cpu"
    layers = [p["layer"] for p in on_disk["parameters"]]
    assert layers == sorted(layers) and layers[0] == 1  # hidden placement: the signal learns with block 0
    upd_outputs = {o.name for o in onnx.load(str(out / "update.onnx")).graph.output}
    for p in on_disk["parameters"]:
        assert p["update_output"] in upd_outputs


def test_ort_matches_onnx_reference_evaluator(build, rng):
    """Independent ONNX implementation: same outputs within 1e-5 (float32 kernels differ in order)."""
    _, _, manifest, out = build
    state = dict(np.load(out / "initial_state.npz"))
    feeds = {
        "x": rng.standard_normal((8, 1, 40)).astype(np.float32),
        "y": rng.integers(0, 10, 8).astype(np.int32),
        "lr": np.asarray(1e-3, np.float32),
        **state,
    }
    got = _session(out / "update.onnx").run(None, feeds)
    ref = ReferenceEvaluator(onnx.load(str(out / "update.onnx"))).run(None, feeds)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_adam_in_row_blocks_in_ort_matches_reference_evaluator(tmp_path, rng):
    """Adam's row blocks (compilers.lower._row_chunks) on ONNX Runtime: one step of a width-256 MLP against
    onnx.reference.ReferenceEvaluator, every output within 1e-5 (float32 summation order)."""
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-2, width=256, depth=2)
    # ε = 1e-3: Adam's first step is lr·g/(|g| + ε), so on gradient entries near zero the float32
    # summation-order rounding of g (~1e-8 here) moves the update by up to lr·δg/ε: measured 9e-5 at ε = 1e-8
    # and 7e-5 at ε = 1e-6 on 2-4 of 65,536 weights; at ε = 1e-3 it is ~1e-7
    spec = spec.replace_rule(optimizer=replace(spec.rule.optimizer, eps=1e-3))
    compile_model(spec, params, load_target("edge-cpu"), tmp_path / "b", batch=8)
    model = onnx.load(str(tmp_path / "b" / "update.onnx"))
    assert sum(n.op_type == "Concat" and len(n.input) == 16 for n in model.graph.node) == 2  # blocks.1: W and ṽ
    feeds = {
        "x": rng.standard_normal((8, 64)).astype(np.float32),
        "y": rng.integers(0, 10, 8).astype(np.int32),
        "lr": np.asarray(1e-2, np.float32),
        **dict(np.load(tmp_path / "b" / "initial_state.npz")),
    }
    got = _session(tmp_path / "b" / "update.onnx").run(None, feeds)
    ref = ReferenceEvaluator(model).run(None, feeds)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset,shape", [("mlp", (64,)), ("cnn1d", (1, 40))])
def test_cached_target_stream_in_ort_matches_reference_evaluator_and_interpreter(preset, shape, tmp_path, rng):
    """The cached batch-1 step on ONNX Runtime: 4 steps (state carried) against the numpy IR interpreter, and
    each step against onnx.reference.ReferenceEvaluator on the same feeds (1e-5: float32 summation order)."""
    from compilers import interp
    from compilers.lower import lower_update

    spec, params = make(preset, shape, "v1", "sgd", lr=1e-2, width=16, depth=3, channels=4)
    spec = spec.replace_rule(params={"target_stream": "cached"})
    compile_model(spec, params, load_target("edge-cpu"), tmp_path / "b", batch=1)
    model = onnx.load(str(tmp_path / "b" / "update.onnx"))
    sess, ref_eval = _session(tmp_path / "b" / "update.onnx"), ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    prog = lower_update(spec, params, 1)
    state = {s.value.name: s.init for s in prog.states}
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    upd = {p["name"]: p["update_output"] for p in manifest["parameters"]}
    assert {"tcache.2", "tcache.3"} <= set(upd)
    for _ in range(4):
        feeds = {
            "x": rng.standard_normal((1, *shape)).astype(np.float32),
            "y": rng.integers(0, 10, 1).astype(np.int32),
            "lr": np.asarray(1e-2, np.float32),
        }
        got = dict(zip(names, sess.run(None, {**feeds, **state}), strict=True))
        ref = dict(zip(names, ref_eval.run(None, {**feeds, **state}), strict=True))
        outs, new = interp.run(prog, feeds, state)
        for k in outs:
            np.testing.assert_allclose(got[k], outs[k], atol=1e-5, rtol=1e-5, err_msg=k)
        for k, v in new.items():
            np.testing.assert_allclose(got[upd[k]], v, atol=1e-5, rtol=1e-5, err_msg=k)
            np.testing.assert_allclose(ref[upd[k]], v, atol=1e-5, rtol=1e-5, err_msg=k)
        state = new


@pytest.mark.parametrize(
    "preset,shape,opt,loss,signal",
    [
        ("mlp", (64,), "adam", "v9", SignalSpec()),
        ("mlp", (64,), "adam", "v1", SignalSpec(placement="input", init_std=1.0)),
        ("cnn1d", (1, 40), "sgd", "v9", SignalSpec()),
        ("cnn1d", (1, 40), "adam", "v1", SignalSpec(shape="channel")),
    ],
    ids=["mlp-hidden", "mlp-input-v1", "cnn1d-hidden-sgd", "cnn1d-channel-v1"],
)
def test_n_steps_in_ort_match_torch(rng, tmp_path, preset, shape, opt, loss, signal):
    """50 SP steps in ORT vs the torch trainer, for every signal placement/shape. Tolerance 1e-4 absolute
    on weights: float32 rounding differences (summation order, fused Gemm accumulation) compound through
    Adam's normalisation (measured ~1e-6)."""
    lr = 1e-3 if opt == "adam" else 1e-2
    spec, params = make(preset, shape, loss, opt, lr=lr, depth=3 if preset == "mlp" else 2, signal=signal)
    compile_model(spec, params, load_target("edge-cpu"), tmp_path, batch=16)
    from firmware_sim.onnx_device import OrtDevice

    dev = OrtDevice(tmp_path)
    trainer = SigpropTrainer(spec, params, 0)
    for _ in range(50):
        x = rng.standard_normal((16, *shape)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        d_losses = dev.step(x, y)
        t_losses = trainer.train_step(x, y)
    assert d_losses == pytest.approx(t_losses, rel=1e-4, abs=1e-4)
    w = dev.weights()
    for k, v in trainer.params().items():
        np.testing.assert_allclose(w[k], v, atol=1e-4, err_msg=k)
        assert np.abs(v - params[k]).max() > 1e-3  # it really learned


def test_fit_check_names_sizes(tmp_path):
    spec, params = make(width=512, depth=3)
    with pytest.raises(TargetError, match=r"does not fit edge-cpu-small: .* needs [\d,]+ B .* budget is 2,000,000 B"):
        compile_model(spec, params, load_target("edge-cpu-small"), tmp_path / "b", batch=32)
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_unknown_target_and_bad_target_file(tmp_path):
    with pytest.raises(TargetError, match="unknown target 'mcu9000'"):
        load_target("mcu9000")
    bad = tmp_path / "t.toml"
    bad.write_text('name = "x"\nruntime = "coreml"\n')
    with pytest.raises(TargetError, match="unknown runtime"):
        load_target(str(bad))
    bad.write_text('name = "x"\nruntime = "onnxruntime"\nmemory_budget_bytes = -5\n')
    with pytest.raises(TargetError, match="memory_budget_bytes"):
        load_target(str(bad))


def test_bp_trained_checkpoint_keeps_learning_with_sp_on_device(tmp_path, digits):
    """Any non-spiking checkpoint compiles; the on-device step is SP (manifest says so)."""
    from edgesp.rules import make_trainer
    from edgesp.train import fit
    from firmware_sim.onnx_device import OrtDevice

    spec, params = make(width=32)
    spec = spec.replace_rule(name="bp")
    trainer = make_trainer(spec, params, 0)
    fit(trainer, digits, spec.input_shape, epochs=1, batch=32, progress=False)
    manifest = compile_model(spec, trainer.params(), load_target("edge-cpu"), tmp_path, batch=16)
    assert manifest.trained_with == "bp" and manifest.on_device_rule == "sigprop"
    dev = OrtDevice(tmp_path)
    x = digits.x_test.reshape(len(digits.x_test), 64)
    np.testing.assert_allclose(dev.predict(x[:16]), trainer.predict(x[:16]), atol=1e-4)
    losses = dev.step(x[:16], digits.y_test[:16])
    assert set(losses) == {"loss_1", "loss_2", "loss_3"}  # hidden placement: no layer-0 loss


def test_inference_graph_matches_reference_evaluator_and_torch(build, rng):
    spec, params, _, out = build
    x = rng.standard_normal((8, 1, 40)).astype(np.float32)
    feeds = {"x": x, **{k: v for k, v in params.items() if not k.startswith("signal.")}}
    got = _session(out / "inference.onnx").run(None, feeds)[0]
    ref = ReferenceEvaluator(onnx.load(str(out / "inference.onnx"))).run(None, feeds)[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(got, SigpropTrainer(spec, params).predict(x), atol=1e-5)


def test_user_target_file_is_checked(tmp_path):
    """A user's own TOML target: its budget is enforced and its name appears in the error and the manifest."""
    spec, params = make(width=64)
    tight = tmp_path / "my-mcu.toml"
    tight.write_text('name = "my-mcu"\nruntime = "onnxruntime"\nmemory_budget_bytes = 50000\n')
    with pytest.raises(TargetError, match=r"does not fit my-mcu: .* budget is 50,000 B"):
        compile_model(spec, params, load_target(str(tight)), tmp_path / "b1", batch=8)
    roomy = tmp_path / "my-sbc.toml"
    roomy.write_text('name = "my-sbc"\nruntime = "onnxruntime"\nmemory_budget_bytes = 100000000\nthreads = 2\n')
    manifest = compile_model(spec, params, load_target(str(roomy)), tmp_path / "b2", batch=8)
    assert manifest.target == "my-sbc" and manifest.target_description["threads"] == 2
