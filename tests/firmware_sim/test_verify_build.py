"""ONNX and TFLite builds are verified before use (issue 12, defect 6): manifest schema, hashes present and
matching, shapes/batch consistent with the artifacts, the memory plan present for profile."""

import hashlib
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from compilers import compile_model
from edgesp.errors import CompileError
from targets import load_target
from tests.compilers.helpers import make


@pytest.fixture(scope="module", params=["edge-cpu", "edge-cpu-tflite"])
def build(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "b"
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=16)
    compile_model(spec, params, load_target(request.param), out, batch=8)
    return out


def _device(build):
    m = json.loads((build / "manifest.json").read_text())
    if m["runtime"] == "onnxruntime":
        from firmware_sim.onnx_device import OrtDevice

        return OrtDevice
    from firmware_sim.tflite_device import TFLiteDevice

    return TFLiteDevice


def _edited(build, tmp_path, edit):
    """A copy of the build whose manifest ``edit(manifest)`` changed (the injected fault)."""
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    m = json.loads((copy / "manifest.json").read_text())
    edit(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


def _set(path, value):
    def edit(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        if value is _DEL:
            del d[path[-1]]
        else:
            d[path[-1]] = value

    return edit


_DEL = object()


def test_intact_build_loads(build):
    assert _device(build)(build).batch == 8


@pytest.mark.parametrize(
    "edit,needle",
    [
        (_set(["hashes"], _DEL), "lacks 'hashes' (a build is only used when every artifact matches its sha256)"),
        (_set(["batch"], 4), "the manifest implies [4, 64] (edited?)"),
        (_set(["batch"], "8"), "batch must be an integer >= 1, got '8'"),
        (_set(["batch"], True), "batch must be an integer >= 1, got True"),
        (_set(["batch"], 0), "batch must be an integer >= 1, got 0"),
        (_set(["parameters", 2, "shape"], [16, 65]), "has shape [16, 65] but the spec needs [16, 64]"),
        (_set(["parameters"], {}), "'parameters' must be a JSON array"),
        (_set(["planned_memory"], _DEL), "missing the field 'planned_memory'"),
        (_set(["format_version"], 7), "build format version 7, this edgesp reads 2"),
        (_set(["learning_rate"], -1), "learning_rate must be > 0, got -1"),
        (_set(["target_description", "threads"], 2000), "threads must be an integer in [1, 256], got 2000"),
        (_set(["spec", "num_classes"], "ten"), "holds an invalid spec"),
    ],
)
def test_edited_manifest_refused_with_one_line(build, tmp_path, edit, needle):
    copy = _edited(build, tmp_path, edit)
    with pytest.raises(CompileError) as e:
        _device(build)(copy)
    assert needle in str(e.value) and "\n" not in str(e.value) and "re-run 'edgesp compile'" in str(e.value)


def test_artifact_outside_the_build_or_unhashed_refused(build, tmp_path):
    def escape(m):
        m["artifacts"]["state"] = "../state.npz"

    with pytest.raises(CompileError, match="must be a plain file name in the build folder"):
        _device(build)(_edited(build, tmp_path / "a", escape))

    def unhashed(m):
        m["hashes"].pop(m["artifacts"]["state"])

    with pytest.raises(CompileError, match="has no sha256 in hashes"):
        _device(build)(_edited(build, tmp_path / "b", unhashed))


def test_state_file_swapped_with_its_hash_still_checked(build, tmp_path):
    """A state file replaced together with its hash is still checked against the layout: NaN or wrong shapes."""
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    m = json.loads((copy / "manifest.json").read_text())
    name = m["artifacts"]["state"]
    with np.load(copy / name) as z:
        state = {k: z[k] for k in z.files}
    state["blocks.0.weight"][0, 0] = np.nan
    buf = io.BytesIO()
    np.savez(buf, **state)
    (copy / name).write_bytes(buf.getvalue())
    m["hashes"][name] = hashlib.sha256(buf.getvalue()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CompileError, match="blocks.0.weight in .* holds NaN or inf"):
        _device(build)(copy)


def test_manifest_not_utf8_or_not_an_object(build, tmp_path):
    from firmware_sim import read_manifest

    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    (copy / "manifest.json").write_bytes(b'{"runtime": "\xff"}')
    with pytest.raises(CompileError, match="not valid JSON"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(CompileError, match="not a JSON object"):
        read_manifest(copy)


def test_profile_without_the_memory_plan_is_one_line(build, tmp_path):
    copy = _edited(build, tmp_path, lambda m: m["planned_memory"].pop("inference_peak_bytes"))
    r = subprocess.run(
        [sys.executable, "-m", "edgesp", "profile", str(copy)], capture_output=True, text=True, timeout=300
    )
    lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("INFO: Created TensorFlow Lite")]
    assert r.returncode == 2 and len(lines) == 1 and "planned_memory lacks 'inference_peak_bytes'" in lines[0], r.stderr
    copy2 = _edited(build, tmp_path / "x", _set(["planned_memory"], _DEL))
    r = subprocess.run(
        [sys.executable, "-m", "edgesp", "profile", str(copy2)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2 and "missing the field 'planned_memory'" in r.stderr and "Traceback" not in r.stderr
