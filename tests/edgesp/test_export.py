"""simulate → export → evaluate: the weights learned on the device come back out, as a checkpoint and as
standalone inference artifacts that run without edgesp."""

import json

import numpy as np
import pytest

from edgesp.cli import main
from edgesp.data import load_dataset

TARGETS = {"onnxruntime": "edge-cpu", "tflite": "edge-cpu-tflite"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("runtime", sorted(TARGETS))
def test_simulate_export_evaluate_reproduces_device_accuracy(runtime, digits, tmp_path):
    build, state, out = tmp_path / "b", tmp_path / "state.npz", tmp_path / "exported"
    compile_cmd = ["compile", "--fresh", "--data", "digits", "--width", "32", "--target", TARGETS[runtime]]
    assert main([*compile_cmd, "--out", str(build), "--batch", "8"]) == 0
    sim = tmp_path / "sim.json"
    cmd = ["simulate", str(build), "--steps", "150", "--quiet", "--json", str(sim), "--save-state", str(state)]
    assert main(cmd) == 0
    acc_device = json.loads(sim.read_text())["accuracy_after"]
    assert acc_device > 0.5  # it learned on the device (fresh weights: ~0.1)
    assert main(["export", str(build), "--state", str(state), "--out", str(out), "--batch", "4"]) == 0
    ev = tmp_path / "ev.json"
    assert main(["evaluate", str(out / "model.safetensors"), "--data", "digits", "--json", str(ev)]) == 0
    n = len(digits.y_test)
    # torch (evaluate) vs the runtime (simulate): float32 rounding may flip at most a near-tie
    assert abs(json.loads(ev.read_text())["test_accuracy"] - acc_device) <= 1.0 / n
    info = json.loads((out / "export.json").read_text())
    assert info["runtime"] == runtime and info["batch"] == 4

    x = digits.x_test[:4].reshape(4, 64).astype(np.float32)
    from edgesp.checkpoint import load_checkpoint
    from edgesp.rules import make_trainer

    spec, params, _ = load_checkpoint(out / "model.safetensors")
    ref = make_trainer(spec, params).predict(x)
    if runtime == "onnxruntime":  # a bare session, only x: the learned weights are inside the file
        import onnxruntime as ort

        logits = ort.InferenceSession(str(out / "inference.onnx")).run(None, {"x": x})[0]
    else:
        from ai_edge_litert.interpreter import Interpreter

        logits = Interpreter(model_path=str(out / "inference.tflite")).get_signature_runner("infer")(x=x)["logits"]
    np.testing.assert_allclose(logits, ref, atol=1e-4)  # float32 kernels in another order


def test_compiled_inference_onnx_runs_alone_with_only_x(tmp_path):
    """The build's own inference.onnx carries its weights as (overridable) initializers."""
    import onnxruntime as ort

    assert (
        main(
            ["compile", "--fresh", "--data", "digits", "--width", "16", "--target", "edge-cpu"]
            + ["--out", str(tmp_path / "b"), "--batch", "2"]
        )
        == 0
    )
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(tmp_path / "b" / "inference.onnx"), so)
    assert sess.run(None, {"x": np.zeros((2, 64), np.float32)})[0].shape == (2, 10)


def test_export_refuses_a_foreign_or_bad_state(tmp_path):
    from edgesp.errors import DataError
    from edgesp.export import export_build

    assert (
        main(
            ["compile", "--fresh", "--data", "digits", "--width", "16", "--target", "edge-cpu"]
            + ["--out", str(tmp_path / "b"), "--batch", "2"]
        )
        == 0
    )
    np.savez(tmp_path / "wrong.npz", **{"head.weight": np.zeros((10, 16), np.float32)})
    with pytest.raises(DataError, match="does not belong to build .*missing"):
        export_build(tmp_path / "b", tmp_path / "wrong.npz", tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        export_build(tmp_path / "b", tmp_path / "nope.npz", tmp_path / "out")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        export_build(tmp_path / "b", tmp_path / "junk.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_lava_simulate_export_evaluate(digits, tmp_path):
    """lava-cpu (floating_pt): the weights learned on chip come back as a checkpoint whose torch evaluation gives
    the accuracy the on-chip run reported. Tolerance 2 test samples: learning is off during the evaluation, so
    both run the same network with the same weights; float32 sums in another order may flip a near-tie."""
    build, state, out = tmp_path / "b", tmp_path / "state.npz", tmp_path / "exported"
    cmd = ["compile", "--fresh", "--data", "digits", "--model", "snn", "--rule", "sp-voltage", "--width", "32"]
    assert main([*cmd, "--encoding", "direct", "--time-steps", "5", "--target", "lava-cpu", "--out", str(build)]) == 0
    sim = tmp_path / "sim.json"
    cmd = ["simulate", str(build), "--steps", "500", "--quiet", "--json", str(sim), "--save-state", str(state)]
    assert main(cmd) == 0
    res = json.loads(sim.read_text())
    assert res["accuracy_after"] > res["accuracy_before"] + 0.2  # it learned on chip
    assert main(["export", str(build), "--state", str(state), "--out", str(out)]) == 0
    assert set(json.loads((out / "export.json").read_text())["inference"]) == {
        "snn_inference.npz",
        "snn_inference.json",
    }
    ev = tmp_path / "ev.json"
    assert main(["evaluate", str(out / "model.safetensors"), "--data", "digits", "--json", str(ev)]) == 0
    assert abs(json.loads(ev.read_text())["test_accuracy"] - res["accuracy_after"]) <= 2 / len(digits.y_test)


def test_export_replaces_an_earlier_export_whole_and_never_a_foreign_folder(tmp_path):
    from edgesp.errors import DataError
    from edgesp.export import export_build
    from edgesp.manifest import Manifest
    from firmware_sim.learning import write_state

    cmd = ["compile", "--fresh", "--data", "digits", "--width", "16", "--target", "edge-cpu", "--batch", "2"]
    assert main([*cmd, "--out", str(tmp_path / "b")]) == 0
    from edgesp.functional import init_params

    spec = Manifest.read(tmp_path / "b").model_spec()
    write_state(tmp_path / "s.npz", init_params(spec, 1))
    export_build(tmp_path / "b", tmp_path / "s.npz", tmp_path / "out")
    (tmp_path / "out" / "stale.txt").write_text("old")
    export_build(tmp_path / "b", tmp_path / "s.npz", tmp_path / "out")
    assert not (tmp_path / "out" / "stale.txt").exists()  # replaced as a whole
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not an earlier export"):
        export_build(tmp_path / "b", tmp_path / "s.npz", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
