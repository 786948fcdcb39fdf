"""compilers.compile_model replaces a build folder as a whole for every backend (issue 12, defect 5)."""

import json

import numpy as np
import pytest

import compilers.onnx
from compilers import compile_model
from edgesp.errors import CheckpointError, CompileError
from targets import load_target
from tests.compilers.helpers import make


@pytest.fixture
def model():
    return make("mlp", (64,), "v9", "adam", lr=1e-3, width=16)


@pytest.mark.parametrize("target", ["edge-cpu", "edge-cpu-tflite"])
def test_recompile_replaces_the_build_as_a_whole(model, tmp_path, target):
    spec, params = model
    out = tmp_path / "b"
    compile_model(spec, params, load_target("edge-cpu"), out, batch=8)
    (out / "stale.txt").write_text("from an older build")
    manifest = compile_model(spec, params, load_target(target), out, batch=4)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest.to_dict()))
    assert not (out / "stale.txt").exists() and manifest.batch == 4
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_compile_failing_midway_keeps_the_old_build(model, tmp_path, monkeypatch):
    spec, params = model
    out = tmp_path / "b"
    compile_model(spec, params, load_target("edge-cpu"), out, batch=8)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = compilers.onnx.write_bytes
    calls = []

    def disk_full_on_second_file(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(compilers.onnx, "write_bytes", disk_full_on_second_file)
    with pytest.raises(OSError, match="No space left"):
        compile_model(spec, params, load_target("edge-cpu"), out, batch=4)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old working build, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_non_finite_weights_refused(model, tmp_path):
    spec, params = model
    bad = {k: np.array(v) for k, v in params.items()}
    bad["blocks.0.weight"][0, 0] = np.inf
    with pytest.raises(CheckpointError, match="blocks.0.weight holds NaN or inf"):
        compile_model(spec, bad, load_target("edge-cpu"), tmp_path / "b", batch=4)
    assert not (tmp_path / "b").exists()


def test_a_folder_that_is_not_a_build_is_never_replaced(model, tmp_path):
    spec, params = model
    (tmp_path / "notes.txt").write_text("my files")
    with pytest.raises(CompileError, match="not empty and not a build folder"):
        compile_model(spec, params, load_target("edge-cpu"), tmp_path, batch=4)
    assert (tmp_path / "notes.txt").read_text() == "my files"
    (tmp_path / "empty").mkdir()
    compile_model(spec, params, load_target("edge-cpu"), tmp_path / "empty", batch=4)
    assert (tmp_path / "empty" / "manifest.json").exists()
