"""The CLI as a user drives it: outputs, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from edgesp.cli import main

PY = [sys.executable, "-m", "edgesp"]


def run(args, **kw):
    return subprocess.run(PY + args, capture_output=True, text=True, timeout=300, **kw)


def test_help_lists_every_command():
    out = run(["--help"]).stdout
    for cmd in ("train", "evaluate", "targets", "compile", "simulate", "profile", "demo"):
        assert cmd in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--data", "digits", "--epochs", "2", "--width", "32", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_checkpoint_metrics_and_plot(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.5 < metrics["test_accuracy"] <= 1 and 0 <= metrics["train_accuracy"] <= 1
    assert (trained / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (trained / "model.safetensors").exists()


def test_compile_simulate_profile_from_cli(trained, tmp_path):
    build = tmp_path / "build"
    assert (
        main(
            ["compile", str(trained / "model.safetensors"), "--target", "edge-cpu", "--out", str(build), "--batch", "8"]
        )
        == 0
    )
    assert main(["simulate", str(build), "--steps", "5", "--json", str(tmp_path / "s.json"), "--quiet"]) == 0
    sim = json.loads((tmp_path / "s.json").read_text())
    assert {"accuracy_before", "accuracy_after", "steps", "samples_per_second"} <= set(sim)
    assert main(["profile", str(build), "--json", str(tmp_path / "p.json")]) == 0
    prof = json.loads((tmp_path / "p.json").read_text())
    for k in ("inference", "update_step"):
        assert {"measured_peak_bytes", "planned_peak_bytes"} <= set(prof[k])
    assert "measured_peak_bytes" in prof["bp_baseline"]
    assert (build / "memory_profile.png").read_bytes()[:4] == b"\x89PNG"


def test_compile_fresh(tmp_path):
    assert (
        main(
            [
                "compile",
                "--fresh",
                "--data",
                "digits",
                "--model",
                "cnn1d",
                "--target",
                "edge-cpu",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["artifacts"]["update"] == "update.onnx"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--data", "nope", "--out", "X"], "unknown dataset"),
        (["train", "--rule", "magic", "--out", "X"], "unknown rule"),
        (["train", "--model", "transformer", "--out", "X"], "unknown model"),
        (["train", "--epochs", "0", "--out", "X"], "--epochs must be an integer >= 1"),
        (["train", "--signal-placement", "output", "--out", "X"], "unknown signal placement"),
        (["train", "--rule", "kp", "--rule-param", "oops", "--out", "X"], "is not KEY=VALUE"),
        (["train", "--rule", "kp", "--rule-param", "nonsense=1", "--out", "X"], "has no parameter(s) ['nonsense']"),
        (
            ["compile", "--fresh", "--model", "cnn1d", "--target", "edge-cpu", "--on-device", "bp", "--out", "X"],
            "lowers MLPs only",
        ),
        (["train", "--signal-shape", "round", "--out", "X"], "unknown signal shape"),
        (["train", "--signal-shape", "channel", "--out", "X"], "needs a convolutional block 0"),
        (["train", "--signal-init-std", "0", "--out", "X"], "--signal-init-std must be a finite number > 0"),
        (["evaluate", "missing.safetensors"], "not found"),
        (["compile", "missing.safetensors", "--target", "edge-cpu", "--out", "X"], "not found"),
        (["compile", "--fresh", "--target", "nowhere", "--out", "X"], "unknown target"),
        (["simulate", "no_such_build"], "no manifest.json"),
        (["train", "--recurrent", "--out", "X"], "apply to spiking models only"),
        (
            ["compile", "--fresh", "--model", "snn", "--recurrent", "--target", "edge-cpu", "--out", "X"],
            "no ONNX/TFLite lowering",
        ),
        (
            ["compile", "--fresh", "--model", "snn", "--recurrent", "--target", "edge-cpu-tflite", "--out", "X"],
            "no ONNX/TFLite lowering",
        ),
        (["profile", "no_such_build"], "no manifest.json"),
    ],
)
def test_bad_input_gives_one_line_error(args, needle, tmp_path):
    r = run(args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "X").exists()


def test_corrupt_checkpoint_and_mismatched_data(trained, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((trained / "model.safetensors").read_bytes()[:-7])
    r = run(["evaluate", str(bad)])
    assert r.returncode == 2 and "corrupt" in r.stderr and "Traceback" not in r.stderr
    r = run(["evaluate", str(trained / "model.safetensors"), "--data", "mnist1d"])
    assert r.returncode == 2 and "expects" in r.stderr


def test_spiking_train_evaluate_and_compile_for_lava(tmp_path):
    out = tmp_path / "snn"
    assert (
        main(
            [
                "train",
                "--model",
                "snn",
                "--rule",
                "sp-voltage",
                "--width",
                "64",
                "--epochs",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.6  # chance 0.10; measured 0.85 with width 128
    assert main(["evaluate", str(out / "model.safetensors"), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    r = run(["compile", str(out / "model.safetensors"), "--target", "edge-cpu", "--out", str(tmp_path / "b")])
    assert r.returncode == 2 and "Lava" in r.stderr
    assert main(["compile", str(out / "model.safetensors"), "--target", "loihi2", "--out", str(tmp_path / "l")]) == 0
    assert json.loads((tmp_path / "l" / "manifest.json").read_text())["runtime"] == "lava"


def test_compile_loss_override_for_batch_one(tmp_path):
    """A checkpoint trained with a batch-dependent loss (v9) is refused at batch 1 with the fix (--loss v1)."""
    out = tmp_path / "t"
    argv = ["train", "--data", "digits", "--epochs", "1", "--width", "16", "--loss", "v9", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    ckpt = str(out / "model.safetensors")
    r = run(["compile", ckpt, "--target", "edge-cpu", "--out", str(tmp_path / "b"), "--batch", "1"])
    assert r.returncode == 2 and "--loss v1" in r.stderr and not (tmp_path / "b").exists()
    assert (
        main(["compile", ckpt, "--target", "edge-cpu", "--out", str(tmp_path / "b"), "--batch", "1", "--loss", "v1"])
        == 0
    )
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["sp_loss"] == "v1"


def test_compiled_checkpoint_learns_on_at_a_finetuning_rate(trained, tmp_path):
    """A trained checkpoint compiles with the on-device lr = host lr × 0.1 unless --lr says otherwise."""
    ckpt = str(trained / "model.safetensors")
    assert main(["compile", ckpt, "--target", "edge-cpu", "--out", str(tmp_path / "a"), "--batch", "4"]) == 0
    from edgesp.checkpoint import load_checkpoint

    host_lr = load_checkpoint(ckpt)[0].rule.optimizer.lr
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["learning_rate"] == pytest.approx(0.1 * host_lr)
    cmd = ["compile", ckpt, "--target", "edge-cpu-tflite", "--out", str(tmp_path / "b"), "--batch", "4", "--lr", "5e-3"]
    assert main(cmd) == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["learning_rate"] == pytest.approx(5e-3)
    r = run(["compile", ckpt, "--target", "edge-cpu", "--out", str(tmp_path / "c"), "--lr", "nan"])
    assert r.returncode == 2 and "--lr must be a finite number" in r.stderr and not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------- issue 12: nothing silently wrong
@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--lr", "inf", "--out", "X"], "--lr must be a finite number in (0, 1000], got inf"),
        (["train", "--lr", "nan", "--out", "X"], "--lr must be a finite number"),
        (["train", "--lr", "-1", "--out", "X"], "--lr must be a finite number"),
        (["train", "--lr", "0", "--out", "X"], "--lr must be a finite number"),
        (
            ["train", "--momentum", "nan", "--optimizer", "sgd", "--out", "X"],
            "--momentum must be a finite number in [0, 1)",
        ),
        (["train", "--momentum", "1", "--out", "X"], "--momentum must be a finite number in [0, 1)"),
        (["train", "--temperature", "0", "--out", "X"], "--temperature must be a finite number > 0"),
        (["train", "--temperature", "inf", "--out", "X"], "--temperature must be a finite number > 0"),
        (["train", "--seed", "-1", "--out", "X"], "--seed must be an integer in [0, 4294967295], got -1"),
        (["train", "--max-train", "0", "--out", "X"], "--max-train must be an integer >= 1, got 0"),
        (["train", "--max-train", "-5", "--out", "X"], "--max-train must be an integer >= 1, got -5"),
        (["train", "--batch", "0", "--out", "X"], "--batch must be an integer in [1, 1048576], got 0"),
        (["train", "--width", "0", "--out", "X"], "--width must be an integer >= 1"),
        (["train", "--model", "snn", "--du", "2", "--out", "X"], "--du must be a finite number in [0, 1]"),
        (["simulate", "no_such_build", "--seed", "-1"], "--seed must be an integer"),
        (["simulate", "no_such_build", "--lr", "nan"], "--lr must be a finite number"),
        (["simulate", "no_such_build", "--lr", "-1"], "--lr must be a finite number"),
        (["simulate", "no_such_build", "--steps", "0"], "--steps must be an integer >= 1"),
        (["profile", "no_such_build", "--batch", "0"], "--batch must be an integer in [1, 1048576], got 0"),
        (["evaluate", "missing.safetensors", "--seed", "-1"], "--seed must be an integer"),
        (["compile", "--fresh", "--target", "edge-cpu", "--out", "X", "--lr", "inf"], "--lr must be a finite number"),
        (["train", "--batch", "1", "--loss", "v9", "--out", "X"], "--loss v1"),
        (["train", "--batch", "1", "--loss", "v14", "--out", "X"], "sigprop loss v14 compares the samples"),
        (["train", "--batch", "1", "--loss", "v15", "--out", "X"], "sigprop loss v15 compares the samples"),
        (["train", "--max-train", "1", "--loss", "v9", "--out", "X"], "constant at batch 1"),
    ],
)
def test_every_number_checked_and_batch_one_losses_refused(args, needle, tmp_path):
    """Defect 1 (CLI numbers: one check for every command) and defect 2 (batch-1 training with v9/v14/v15)."""
    r = run(args, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not (tmp_path / "X").exists()


def test_batch_one_training_with_v1_is_accepted(tmp_path):
    out = tmp_path / "m"
    args = ["train", "--batch", "1", "--loss", "v1", "--epochs", "1", "--max-train", "20", "--width", "8"]
    assert main(args + ["--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").exists()


_DIVERGE = """
import sys
from edgesp.rules import sigprop
step = sigprop.SigpropTrainer.train_step
count = [0]
def faulty(self, x, y):  # the injected fault: the loss turns NaN from batch 5 of epoch 2 on
    count[0] += 1
    out = step(self, x, y)
    return {k: float("nan") for k in out} if count[0] >= 45 + 5 else out
sigprop.SigpropTrainer.train_step = faulty
from edgesp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_diverged_training_is_one_line_and_writes_nothing(tmp_path):
    """Defect 1: a NaN loss stops 'train' naming the epoch, batch and fix; no checkpoint or metrics.json."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", _DIVERGE, "train", "--epochs", "3", "--width", "16", "--quiet", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert (
        lines[0].startswith("error: training diverged at epoch 2, batch 5 (loss_")
        and "lower the learning rate" in lines[0]
    )
    assert not out.exists()


def test_json_output_is_always_valid_json(tmp_path):
    from edgesp.cli import _write_json

    _write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}} and "NaN" not in text


def test_one_stray_label_is_an_error_not_a_huge_model(tmp_path):
    """Defect 3: a label 10^6 in an npz (or a y_test label outside the training classes) is refused with one line."""
    import numpy as np

    rng = np.random.default_rng(0)
    f = tmp_path / "d.npz"
    np.savez(f, x=rng.standard_normal((50, 6)).astype(np.float32), y=np.r_[np.arange(49) % 3, 10**6])
    r = run(["train", "--data", f"npz:{f}", "--epochs", "1", "--out", str(tmp_path / "X")])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "label 1000000 is out of range" in r.stderr and "at most 1,000 classes" in r.stderr
    np.savez(f, x=np.zeros((9, 6)), y=np.arange(9) % 3, x_test=np.zeros((2, 6)), y_test=np.array([1, 50]))
    r = run(["train", "--data", f"npz:{f}", "--epochs", "1", "--out", str(tmp_path / "X")])
    assert r.returncode == 2 and "test label 50 is not among the training labels" in r.stderr
    assert not (tmp_path / "X").exists()


def test_output_locations_checked_before_the_work(tmp_path):
    """Defect 5: a bad --out/--png/--json fails at once with one line (not after training or simulating)."""
    import time

    (tmp_path / "file").write_text("")
    build = tmp_path / "build"
    assert (
        main(["compile", "--fresh", "--width", "8", "--target", "edge-cpu", "--out", str(build), "--batch", "4"]) == 0
    )
    cases = [
        (["train", "--epochs", "50", "--out", str(tmp_path / "file")], "is a file, not a folder"),
        (["train", "--epochs", "50", "--out", str(tmp_path / "file" / "sub")], "is a file, not a folder"),
        (["train", "--epochs", "50", "--out", "/proc/edgesp-run"], "/proc is not writable"),
        (["compile", "--fresh", "--target", "edge-cpu", "--out", str(tmp_path / "file")], "is a file, not a folder"),
        (["simulate", str(build), "--steps", "100000", "--png", str(tmp_path)], "is a folder: pass a file name"),
        (["simulate", str(build), "--steps", "100000", "--json", "/proc/edgesp/s.json"], "not writable"),
        (["profile", str(build), "--png", "/proc/edgesp/p.png"], "not writable"),
        (["profile", str(build), "--json", str(tmp_path / "file" / "p.json")], "is a file, not a folder"),
        (["evaluate", "missing.safetensors", "--json", str(tmp_path)], "is a folder"),
    ]
    for args, needle in cases:
        t0 = time.perf_counter()
        r = run(args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr)
        assert time.perf_counter() - t0 < 60  # refused up front: 50 epochs or 100,000 steps would take far longer
    assert not (build / "simulate_curve.png").exists() and not (build / "memory_profile.png").exists()


def test_default_png_into_a_read_only_build_is_refused_first(tmp_path, monkeypatch, capsys):
    """Defect 5: the default PNG goes into the build folder; a read-only build fails before the work (simulated
    read-only: the write probe is refused there, since root ignores permission bits)."""
    import tempfile

    import firmware_sim.onnx_device

    build = tmp_path / "build"
    assert (
        main(["compile", "--fresh", "--width", "8", "--target", "edge-cpu", "--out", str(build), "--batch", "4"]) == 0
    )
    real = tempfile.mkstemp

    def read_only(*a, dir=None, **kw):
        if dir is not None and str(dir) == str(build):
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(firmware_sim.onnx_device, "simulate", lambda *a, **k: pytest.fail("simulated anyway"))
    monkeypatch.setattr(firmware_sim.onnx_device, "profile", lambda *a, **k: pytest.fail("profiled anyway"))
    for cmd in ("simulate", "profile"):
        assert main([cmd, str(build)]) == 2
        err = capsys.readouterr().err
        assert f"cannot write --png {build}" in err and "not writable (Permission denied)" in err


def test_identical_train_runs_give_byte_identical_checkpoints(tmp_path):
    """Defect 8: two identical 'train' runs write the same checkpoint bytes (sha256), readable by safetensors."""
    import hashlib

    from safetensors.numpy import load_file

    digests = []
    for name in ("a", "b"):
        args = ["train", "--epochs", "1", "--width", "16", "--max-train", "200", "--quiet", "--out"]
        r = run(args + [str(tmp_path / name)])
        assert r.returncode == 0, r.stderr
        digests.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert set(load_file(str(tmp_path / "a" / "model.safetensors"))) >= {"head.weight", "blocks.0.weight"}


def test_rule_params_reach_the_checkpoint(tmp_path):
    argv = ["train", "--data", "digits", "--rule", "kp", "--epochs", "1", "--width", "16", "--quiet"]
    assert main([*argv, "--rule-param", "kp_decay=0.002", "--out", str(tmp_path / "k")]) == 0
    from edgesp.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "k" / "model.safetensors")[0].rule.params == {"kp_decay": 0.002}


def test_compile_target_stream_cached_at_batch_one_and_refused_elsewhere(trained, tmp_path):
    """--target-stream cached writes the per-layer class pre-activation tables as device state (manifest kind
    target_cache) and simulates; at batch > 1 it is refused in one line with nothing written."""
    ckpt = str(trained / "model.safetensors")
    b = tmp_path / "b"
    assert (
        main(["compile", ckpt, "--target", "edge-cpu", "--out", str(b), "--batch", "1", "--target-stream", "cached"])
        == 0
    )
    kinds = {p["name"]: p["kind"] for p in json.loads((b / "manifest.json").read_text())["parameters"]}
    assert {n for n, k in kinds.items() if k == "target_cache"} == {"tcache.2"}  # block 1; block 0 reads the signal
    assert main(["simulate", str(b), "--data", "digits", "--steps", "20", "--quiet"]) == 0
    r = run(["compile", ckpt, "--target", "edge-cpu", "--out", str(tmp_path / "c"), "--target-stream", "cached"])
    assert r.returncode == 2 and "batch-1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists()


def test_default_cli_run_on_mnist1d_seq_learns_far_above_chance(tmp_path):
    """The issue's command with no tuning flags (`edgesp train --data mnist1d-seq --model snn --rule sp-online`),
    shortened to 2 epochs on 3,000 samples (~20 s CPU): the sequence defaults (one recurrent layer of 128 LIF
    neurons du 0.5 / dv 0.05, eligibility traces, ramp weighting, updates every 10 steps, membrane floor, head on
    the final readout, cosine schedule) reach the spec and the run learns. Measured test accuracy 0.238 (chance
    0.10; round 1's defaults: 0.251 on this shortened run, so the bar is not raised: the new defaults gain with
    the 10-epoch budget, docs/benchmarks/temporal.md); before the sequence defaults the full 5-epoch run sat at
    0.096. The bar 0.17 is 1.7× chance, with 7 points of margin."""
    out = tmp_path / "seq"
    argv = ["train", "--data", "mnist1d-seq", "--model", "snn", "--rule", "sp-online", "--epochs", "2"]
    assert main([*argv, "--max-train", "3000", "--out", str(out), "--quiet"]) == 0
    from edgesp.checkpoint import load_checkpoint
    from edgesp.presets import sequence_defaults

    spec, params, _ = load_checkpoint(out / "model.safetensors")
    d = sequence_defaults("sp-online")
    assert spec.recurrent_blocks == tuple(range(d["depth"])) and params["blocks.0.rec_weight"].shape == (128, 128)
    assert spec.rule.params == d["rule_params"] and spec.blocks[0][1].dv == d["dv"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schedule"] == d["schedule"] == "cosine"
    acc = metrics["test_accuracy"]
    assert acc > 0.17, acc


def test_train_threads_sets_torch_threads_and_is_range_checked(tmp_path):
    """--threads (default 1) sets torch's intra-op threads for the run; 0 is refused in one line, nothing written."""
    import torch

    before = torch.get_num_threads()
    try:
        argv = ["train", "--data", "digits", "--epochs", "1", "--max-train", "64", "--quiet", "--threads", "2"]
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    r = run(["train", "--data", "digits", "--threads", "0", "--out", str(tmp_path / "b")])
    assert r.returncode != 0 and "--threads must be an integer in [1, 1024]" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
