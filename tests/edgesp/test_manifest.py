"""The typed build manifest: round trip, schema checks with one-line errors, hash verification."""

import json

import pytest

from edgesp.errors import CompileError
from edgesp.manifest import FORMAT_VERSION, Manifest, ParameterEntry, PlannedMemory, sha256
from edgesp.presets import build_spec


def _manifest(tmp_path) -> Manifest:
    spec = build_spec("mlp", (4,), 3, width=2, depth=1)
    (tmp_path / "a.bin").write_bytes(b"abc")
    params = [
        ParameterEntry(name, spec.param_layer_index(name), shape, "parameter", name + "__new")
        for name, shape in spec.param_shapes().items()
    ]
    params.sort(key=lambda p: p.layer)
    return Manifest(
        target="t",
        runtime="onnxruntime",
        batch=2,
        artifacts={"update": "a.bin"},
        hashes={"a.bin": sha256(b"abc")},
        parameters=tuple(params),
        planned_memory=PlannedMemory(100, 50, {"x": 1}),
        spec=spec.to_dict(),
        learning_rate=1e-3,
        trained_with="sigprop",
        sp_loss="v1",
    )


def test_round_trip_and_verify(tmp_path):
    m = _manifest(tmp_path)
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back == m and back.parameter_names() == [p.name for p in m.parameters]
    assert json.loads((tmp_path / "manifest.json").read_text())["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda d: d.update(format_version=1), "build format version 1"),
        (lambda d: d.update(format="other"), "not an edgesp build manifest"),
        (lambda d: d.pop("hashes"), "lacks 'hashes'"),
        (lambda d: d.update(batch=0), "batch must be an integer >= 1"),
        (lambda d: d.update(batch="2"), "batch must be an integer"),
        (lambda d: d.update(learning_rate=float("nan")), "learning_rate must be a finite"),
        (lambda d: d["parameters"][0].update(shape=[9, 9]), "but the spec needs"),
        (lambda d: d["parameters"].reverse(), "forward .layer. order"),
        (lambda d: d["artifacts"].update(update="../x"), "plain file name"),
        (lambda d: d.update(surprise=1), r"unknown fields \[.surprise.\]"),
        (lambda d: d["planned_memory"].pop("inference_peak_bytes"), "planned_memory lacks 'inference_peak_bytes'"),
    ],
)
def test_bad_manifests_give_one_line_errors(tmp_path, edit, needle):
    d = _manifest(tmp_path).to_dict()
    edit(d)
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(CompileError, match=needle) as e:
        Manifest.read(tmp_path)
    assert "\n" not in str(e.value)


def test_swapped_or_missing_artifact_is_refused(tmp_path):
    _manifest(tmp_path).write(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"abd")
    with pytest.raises(CompileError, match="sha256 differs"):
        Manifest.read(tmp_path)
    assert Manifest.read(tmp_path, verify=False).runtime == "onnxruntime"
    (tmp_path / "a.bin").unlink()
    with pytest.raises(CompileError, match="lacks a.bin"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(CompileError, match="not valid JSON"):
        Manifest.read(tmp_path)
    with pytest.raises(CompileError, match="no manifest.json"):
        Manifest.read(tmp_path / "nowhere")
