"""A cached-target-stream build's class tables (manifest kind target_cache) on the devices: load_parameters()
recomputes them for the new weights, so no row is left stale (compilers.lower.class_preactivations is the spec)."""

import numpy as np
import pytest

from compilers import compile_model
from compilers.lower import class_preactivations
from firmware_sim.onnx_device import OrtDevice
from firmware_sim.tflite_device import TFLiteDevice
from targets import load_target
from tests.compilers.helpers import make


@pytest.mark.parametrize("target,device", [("edge-cpu", OrtDevice), ("edge-cpu-tflite", TFLiteDevice)])
def test_load_parameters_refreshes_the_class_tables(target, device, tmp_path, rng):
    spec, params = make("mlp", (64,), "v1", "sgd", lr=5e-2, width=16, depth=3)
    spec = spec.replace_rule(params={"target_stream": "cached"})
    compile_model(spec, params, load_target(target), tmp_path / "b", batch=1)
    dev = device(tmp_path / "b")
    for c in range(6):  # rows of classes 0-5 refreshed as their class is seen; the weights move
        dev.step(rng.standard_normal((1, 64)).astype(np.float32), np.array([c]))
    moved = dev.parameters()
    stale = class_preactivations(spec, moved)
    w = dev.weights()
    assert np.abs(w["tcache.3"][9] - stale[3][9]).max() > 1e-4  # class 9 unseen: its row is the initial one
    dev.load_parameters(params)
    w = dev.weights()
    for k, table in class_preactivations(spec, params).items():
        np.testing.assert_allclose(w[f"tcache.{k}"], table, atol=1e-6)
