"""The microcontroller flow from the command line: train --precision int8 → compile for cortex-m7 → simulate on
QEMU → profile (SP and the int8 BP baseline side by side), and one-line errors."""

import json
import subprocess
import sys

PY = [sys.executable, "-m", "edgesp"]


def run(*args):
    return subprocess.run(PY + list(args), capture_output=True, text=True, timeout=300)


def test_int8_train_compile_simulate_profile(tmp_path):
    ck, build = tmp_path / "ck", tmp_path / "build"
    r = run(
        "train",
        "--precision",
        "int8",
        "--data",
        "digits",
        "--width",
        "32",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        str(ck),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((ck / "metrics.json").read_text())
    assert m["precision"] == "int8" and m["test_accuracy"] > 0.6  # 2 epochs of integer SP from scratch (measured 0.88)
    r = run("evaluate", str(ck / "model.safetensors"))
    assert r.returncode == 0 and f"{m['test_accuracy']:.4f}" in r.stdout  # evaluated with the int8 rule
    r = run("compile", str(ck / "model.safetensors"), "--target", "cortex-m7", "--out", str(build))
    assert r.returncode == 0, r.stderr
    r = run(
        "simulate",
        str(build),
        "--data",
        "digits",
        "--steps",
        "30",
        "--quiet",
        "--json",
        str(tmp_path / "s.json"),
        "--save-state",
        str(tmp_path / "learned.npz"),
    )
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert (
        s["steps"] == 30 and s["instructions_per_step"] > 1000 and abs(s["accuracy_before"] - m["test_accuracy"]) < 1e-9
    )
    r = run("profile", str(build), "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    p = json.loads((tmp_path / "p.json").read_text())
    sp, bp = p["update_step"], p["bp_baseline"]
    assert sp["rule"] == "sigprop" and bp["rule"] == "bp"
    assert 0 < sp["learning_weights_bytes"] < sp["learning_sram_bytes"] < sp["sram_total_bytes"] <= 327680
    assert sp["step_stack_bytes"] > 0 and sp["flash_bytes"] > sp["learning_weights_bytes"]


def test_cli_errors_are_one_line(tmp_path):
    r = run(
        "compile",
        "--fresh",
        "--data",
        "digits",
        "--width",
        "1024",
        "--depth",
        "3",
        "--target",
        "cortex-m4",
        "--out",
        str(tmp_path / "big"),
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SRAM needs" in r.stderr
    assert not (tmp_path / "big").exists()
    r = run(
        "compile",
        "--fresh",
        "--data",
        "digits",
        "--model",
        "snn",
        "--rule",
        "sp-voltage",
        "--target",
        "cortex-m7",
        "--out",
        str(tmp_path / "snn"),
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "int8" in r.stderr
