"""On-device SP learning in the TFLite interpreters: simulate, profile, the CLI path and bad inputs."""

import json

import numpy as np
import pytest

from compilers import compile_model
from edgesp.errors import CompileError, DataError
from firmware_sim.tflite_device import TFLiteDevice, bench_step, profile, simulate
from targets import load_target
from tests.compilers.helpers import make


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite_build")
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=64)
    compile_model(spec, params, load_target("edge-cpu-tflite"), out, batch=16)
    return out


@pytest.mark.parametrize("interpreter", ["litert", "tflite_runtime"])
def test_simulate_learns_from_scratch(build, digits, tmp_path, interpreter):
    res = simulate(
        build, digits, steps=150, seed=0, out_png=tmp_path / "c.png", progress=False, interpreter=interpreter
    )
    assert res["accuracy_before"] < 0.35 and res["accuracy_after"] > 0.7  # measured 0.11 -> ~0.85
    assert res["steps"] == 150 and res["samples_per_second"] > 0 and res["interpreter"] == interpreter
    assert res["runtime"] == "tflite"
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(res)


def test_both_interpreters_learn_identically(build, digits):
    a = simulate(build, digits, steps=20, seed=3, out_png=None, progress=False, interpreter="litert")
    b = simulate(build, digits, steps=20, seed=3, out_png=None, progress=False, interpreter="tflite_runtime")
    assert a["curve"]["test_accuracy"] == pytest.approx(b["curve"]["test_accuracy"], abs=2 / len(digits.y_test))


def test_weights_stay_and_change_inside_the_interpreter(build, digits):
    dev = TFLiteDevice(build)
    before = dev.weights()
    for i in range(3):
        dev.step(digits.x_train[16 * i : 16 * (i + 1)].reshape(16, 64), digits.y_train[16 * i : 16 * (i + 1)])
    after = dev.weights()
    assert float(after["opt.1.step"]) == 3.0  # the Adam step counter lives in a variable too
    assert all(np.abs(after[k] - before[k]).max() > 0 for k in before if not k.endswith(".step"))
    fresh = TFLiteDevice(build)  # a new interpreter starts again from state.npz
    np.testing.assert_array_equal(fresh.weights()["blocks.0.weight"], before["blocks.0.weight"])


def test_continual_reports_stages(build, digits):
    res = simulate(build, digits, steps=10, progress=False, continual=True)
    assert [s["classes"] for s in res["continual"]["stages"]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_profile_reports_measured_and_planned(build):
    res = profile(build)
    for key in ("inference", "update_step"):
        assert res[key]["measured_peak_bytes"] > 0
        assert res[key]["planned_peak_bytes"] > res[key]["planned_variable_bytes"] > 0
    assert res["update_step"]["planned_peak_bytes"] > res["inference"]["planned_peak_bytes"]
    assert res["bp_baseline"]["saved_activation_bytes"] > 0 and "measured_peak_bytes" in res["bp_baseline"]
    json.dumps(res)


def test_bench_step_reports_throughput(build):
    r = bench_step(build, steps=20, interpreter="tflite_runtime")
    assert r["samples_per_second"] > 0 and r["peak_rss_bytes"] > 0 and r["planned_peak_bytes"] > 0


def test_bad_inputs_and_corrupt_builds(build, digits, tmp_path):
    import shutil

    with pytest.raises(DataError, match="compiled for batch 16"):
        simulate(build, digits, steps=1, batch=8, progress=False)
    with pytest.raises(DataError, match="compiled for batch 16"):
        TFLiteDevice(build).step(np.zeros((8, 64), np.float32), np.zeros(8, np.int32))
    with pytest.raises(DataError, match="shape"):
        TFLiteDevice(build).step(np.zeros((16, 65), np.float32), np.zeros(16, np.int32))
    with pytest.raises(CompileError, match="no manifest.json"):
        TFLiteDevice(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(build, broken)
    data = (broken / "model.tflite").read_bytes()
    (broken / "model.tflite").write_bytes(data[: len(data) // 2])
    with pytest.raises(CompileError, match="corrupt") as e:
        simulate(broken, digits, steps=1, progress=False)
    assert "\n" not in str(e.value)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest.pop("hashes")  # a manifest without hashes is refused, not silently unverified (issue 12)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CompileError, match="lacks 'hashes'") as e:
        TFLiteDevice(broken)
    assert "\n" not in str(e.value)
    import hashlib

    manifest["hashes"] = {  # hashes that match the truncated file: the interpreter itself must refuse it
        f: hashlib.sha256((broken / f).read_bytes()).hexdigest() for f in ("model.tflite", "state.npz")
    }
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CompileError, match="not a loadable TFLite model") as e:
        TFLiteDevice(broken)
    assert "\n" not in str(e.value)
    with pytest.raises(CompileError, match="unknown TFLite interpreter"):
        TFLiteDevice(build, interpreter="tensorflow")


def test_cli_compile_simulate_profile(tmp_path, capsys):
    from edgesp.cli import main

    out = tmp_path / "b"
    assert (
        main(
            [
                "compile",
                "--fresh",
                "--data",
                "digits",
                "--model",
                "mlp",
                "--width",
                "32",
                "--target",
                "edge-cpu-tflite",
                "--out",
                str(out),
                "--batch",
                "16",
            ]
        )
        == 0
    )
    assert (out / "model.tflite").exists()
    assert main(["simulate", str(out), "--steps", "30", "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["runtime"] == "tflite"
    assert main(["simulate", str(out), "--steps", "3", "--batch", "7", "--quiet"]) == 2
    assert "compiled for batch 16" in capsys.readouterr().err
