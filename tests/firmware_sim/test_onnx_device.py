import json

import numpy as np
import pytest

from compilers import compile_model
from edgesp.errors import CompileError, DataError
from firmware_sim.onnx_device import OrtDevice, profile, simulate
from targets import load_target
from tests.compilers.helpers import make


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=64)
    compile_model(spec, params, load_target("edge-cpu"), out, batch=16)
    return out


def test_simulate_learns_from_scratch(build, digits, tmp_path):
    res = simulate(build, digits, steps=200, seed=0, out_png=tmp_path / "c.png", progress=False)
    assert res["accuracy_before"] < 0.35 and res["accuracy_after"] > 0.7  # measured ~0.12 -> ~0.85
    assert res["steps"] == 200 and res["samples_per_second"] > 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(res)


def test_weights_live_on_device_and_change(build, digits):
    dev = OrtDevice(build)
    before = dev.weights()
    dev.step(digits.x_train[:16].reshape(16, 64), digits.y_train[:16])
    after = dev.weights()
    assert all(np.abs(after[k] - before[k]).max() > 0 for k in before if not k.startswith("opt.") or ".m" in k)


def test_continual_reports_stages(build, digits):
    res = simulate(build, digits, steps=20, progress=False, continual=True)
    stages = res["continual"]["stages"]
    assert [s["classes"] for s in stages] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert all(0 <= s["accuracy_seen"] <= 1 for s in stages)


def test_profile_reports_measured_and_planned(build):
    res = profile(build)
    for key in ("inference", "update_step"):
        assert res[key]["measured_peak_bytes"] > 0 and res[key]["planned_peak_bytes"] > 0
    assert res["update_step"]["measured_peak_bytes"] > res["inference"]["measured_peak_bytes"]
    assert res["bp_baseline"]["saved_activation_bytes"] > 0
    assert "measured_peak_bytes" in res["bp_baseline"]


def test_bad_inputs(build, tmp_path, digits):
    from edgesp.data import load_dataset

    with pytest.raises(DataError, match="compiled for batch 16"):
        simulate(build, digits, steps=1, batch=8, progress=False)
    mnist1d_like = load_dataset.__globals__["Dataset"](
        "x", np.zeros((4, 1, 40), np.float32), np.arange(4), np.zeros((4, 1, 40), np.float32), np.arange(4), 10
    )
    with pytest.raises(DataError, match="expects"):
        simulate(build, mnist1d_like, steps=1, progress=False)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in build.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "update.onnx").write_bytes(b"\x00" * 10)
    with pytest.raises(CompileError, match="corrupt"):
        OrtDevice(corrupt)
    with pytest.raises(CompileError, match="no manifest.json"):
        OrtDevice(tmp_path)
