"""Target TOML files: every value type-checked, one-line errors (issue 12, defect 8)."""

import subprocess
import sys

import pytest

from edgesp.errors import TargetError
from targets import MAX_THREADS, builtin_targets, load_target

GOOD = 'name = "mine"\nruntime = "onnxruntime"\n'


def test_builtin_targets_load():
    assert {"edge-cpu", "edge-cpu-small", "edge-cpu-tflite", "lava-cpu", "loihi2"} <= set(builtin_targets())
    assert load_target("loihi2").neuromorphic["cores"] == 128


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("memory_budget_bytes = true\n", "memory_budget_bytes must be a positive integer of bytes, got True"),
        ("storage_budget_bytes = 0\n", "storage_budget_bytes must be a positive integer"),
        ("threads = 2000\n", f"threads must be an integer in [1, {MAX_THREADS}], got 2000"),
        ("threads = 0\n", "threads must be an integer in [1, 256]"),
        ("threads = true\n", "threads must be an integer"),
        ("neuromorphic = 5\n", "neuromorphic must be a table"),
        ("[neuromorphic]\ncores = true\n", "neuromorphic.cores must be a positive integer, got True"),
        ("[neuromorphic]\nweight_bits = 100\n", "neuromorphic.weight_bits must be a positive integer <= 64"),
        ("[neuromorphic]\nsize = 3\n", "unknown [neuromorphic] key 'size'"),
        ('precision = "fp64"\n', "unknown precision 'fp64'"),
        ("description = 3\n", "description must be a string"),
    ],
)
def test_bad_values_refused(tmp_path, extra, needle):
    f = tmp_path / "t.toml"
    f.write_text(GOOD + extra)
    with pytest.raises(TargetError) as e:
        load_target(str(f))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_name_must_be_a_string(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('name = 5\nruntime = "onnxruntime"\n')
    with pytest.raises(TargetError, match="target name must be a non-empty string, got 5"):
        load_target(str(f))


def test_non_utf8_file_is_one_line_error_in_the_cli(tmp_path):
    f = tmp_path / "t.toml"
    f.write_bytes(GOOD.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(TargetError, match=r"not UTF-8 text \(byte 0xe9 at offset \d+\): save it as UTF-8"):
        load_target(str(f))
    g = tmp_path / "n.toml"
    g.write_text(GOOD + "neuromorphic = 5\n")
    for bad in (f, g):
        cmd = [sys.executable, "-m", "edgesp", "compile", "--fresh", "--target", str(bad), "--out", str(tmp_path / "X")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: target"), r.stderr
        assert not (tmp_path / "X").exists()
