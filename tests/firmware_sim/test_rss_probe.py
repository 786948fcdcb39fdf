"""profile never executes a firmware_sim/rss_probe.py of the current directory (issue 12, defect 7), and a
peak too small to measure is reported as null with its reason, never as 0 bytes (defect 8)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compilers import compile_model
from targets import load_target
from tests.compilers.helpers import make

PLANTED = """
from pathlib import Path
Path(__file__).resolve().parents[1].joinpath("PLANTED_CODE_RAN").write_text("yes")
print('{"rss_increase_bytes": 1, "measured_peak_bytes": 1}')
"""


@pytest.fixture
def untrusted_cwd(tmp_path, monkeypatch):
    """A working folder holding its own firmware_sim package (rss_probe.py, tflite_device.py) and numpy.py."""
    cwd = tmp_path / "untrusted"
    (cwd / "firmware_sim").mkdir(parents=True)
    for name in ("__init__.py", "rss_probe.py", "tflite_device.py", "__main__.py"):
        (cwd / "firmware_sim" / name).write_text(PLANTED)
    (cwd / "numpy.py").write_text(PLANTED)
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("target", ["edge-cpu", "edge-cpu-tflite"])
def test_profile_from_an_untrusted_folder_runs_only_installed_modules(tmp_path, untrusted_cwd, target):
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=16)
    build = tmp_path / "b"
    compile_model(spec, params, load_target(target), build, batch=8)
    edgesp = Path(sys.executable).parent / "edgesp"  # the installed entry point, as a user runs it
    r = subprocess.run(
        [str(edgesp), "profile", str(build), "--json", str(tmp_path / "p.json")],
        cwd=untrusted_cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert not (untrusted_cwd / "PLANTED_CODE_RAN").exists()
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["update_step"]["measured_peak_bytes"] > 1  # a real measurement, not the planted '1'
    bp = prof["bp_baseline"]
    assert bp["measured_peak_bytes"] is None or bp["measured_peak_bytes"] > 0  # never a silent 0
    if bp["measured_peak_bytes"] is None:
        assert "not measurable" in bp["measured_peak_note"]


def test_measure_ignores_the_current_directory(tmp_path, untrusted_cwd):
    from firmware_sim.onnx_device import measure_rss as measure

    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=16)
    compile_model(spec, params, load_target("edge-cpu"), tmp_path / "b", batch=8)
    assert measure(tmp_path / "b", "update") > 1
    assert not (untrusted_cwd / "PLANTED_CODE_RAN").exists()


def test_zero_peak_is_reported_as_not_measurable():
    from firmware_sim.memory import annotate_peak

    r = annotate_peak({"measured_peak_bytes": 0, "saved_activation_bytes": 10})
    assert r["measured_peak_bytes"] is None and "below the resolution" in r["measured_peak_note"]
    assert annotate_peak({"measured_peak_bytes": 4096}) == {"measured_peak_bytes": 4096}
