"""``edgesp demo``: the user's three jobs end to end on the embedded digits set.

train (SP, torch) → compile for a target → on-device learning simulation on the target's runtime (saving
the learned weights) → memory profile → export of the learned model, whose standalone inference artifact
is then run without edgesp (a bare ``onnxruntime.InferenceSession`` fed only ``x``, or the TFLite
interpreter), then a short summary (also ``summary.json``). For Lava targets the model is a spiking ``snn``
trained with ``sp-voltage``; otherwise an MLP trained with ``sigprop``.

The demo drives the CLI's commands; the caller passes the CLI entry point (``cli``) so that this module
does not import the CLI (no import cycle).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _standalone_accuracy(runtime: str, export_dir: Path, batch: int) -> float | None:
    """Test accuracy of the exported inference artifact run by its runtime alone (no edgesp code)."""
    from edgesp.data import adapt_inputs, load_dataset

    info = json.loads((export_dir / "export.json").read_text())
    data = load_dataset("digits")
    x = adapt_inputs(data.x_test, tuple(info["inputs"]["x"][1:])).astype(np.float32)
    n = (len(x) // batch) * batch
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(export_dir / "inference.onnx"), so)
        logits = np.concatenate([sess.run(None, {"x": x[i : i + batch]})[0] for i in range(0, n, batch)])
    elif runtime == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        infer = Interpreter(model_path=str(export_dir / "inference.tflite")).get_signature_runner("infer")
        logits = np.concatenate([infer(x=x[i : i + batch])["logits"] for i in range(0, n, batch)])
    else:
        return None
    return float((logits.argmax(1) == data.y_test[:n]).mean())


def run_demo(out: Path, cli: Callable[[list[str]], int], target: str = "edge-cpu", quick: bool = False) -> int:
    from targets import load_target

    def _run(argv: list[str]) -> None:
        print("$ edgesp " + " ".join(argv), flush=True)
        rc = cli(argv)
        if rc != 0:
            raise SystemExit(rc)

    t0 = time.perf_counter()
    tgt = load_target(target)
    out.mkdir(parents=True, exist_ok=True)
    train_dir, build_dir = out / "train", out / "build"
    spiking = tgt.runtime == "lava"
    model = ["--model", "snn", "--rule", "sp-voltage", "--width", "128"] if spiking else ["--model", "mlp"]
    epochs = "2" if quick and spiking else "1" if quick else ("4" if spiking else "10")
    quiet = ["--quiet"] if quick else []
    _run(["train", "--data", "digits", *model, "--epochs", epochs, "--out", str(train_dir), *quiet])
    _run(
        [
            "compile",
            str(train_dir / "model.safetensors"),
            "--target",
            target,
            "--out",
            str(build_dir),
            "--batch",
            "1" if spiking else "32",
        ]
    )
    steps = "20" if quick else ("300" if spiking else "200")
    _run(
        [
            "simulate",
            str(build_dir),
            "--data",
            "digits",
            "--steps",
            steps,
            "--json",
            str(out / "simulate.json"),
            "--png",
            str(out / "simulate_curve.png"),
            "--save-state",
            str(out / "learned_state.npz"),
            *quiet,
        ]
    )
    _run(["profile", str(build_dir), "--json", str(out / "profile.json")])
    export_dir, ebatch = out / "exported", 1
    _run(["export", str(build_dir), "--state", str(out / "learned_state.npz"), "--out", str(export_dir)])
    standalone: dict[str, Any] = {
        "exported_to": str(export_dir),
        "standalone_test_accuracy": _standalone_accuracy(tgt.runtime, export_dir, ebatch),
    }

    metrics = json.loads((train_dir / "metrics.json").read_text())
    sim = json.loads((out / "simulate.json").read_text())
    prof = json.loads((out / "profile.json").read_text())
    summary = {
        "target": target,
        "runtime": tgt.runtime,
        "train_test_accuracy": metrics["test_accuracy"],
        "device_accuracy_before": sim["accuracy_before"],
        "device_accuracy_after": sim["accuracy_after"],
        "device_samples_per_second": sim["samples_per_second"],
        "update_step_measured_peak_bytes": prof.get("update_step", {}).get("measured_peak_bytes"),
        "update_step_planned_peak_bytes": prof.get("update_step", {}).get("planned_peak_bytes"),
        "bp_baseline_peak_bytes": prof.get("bp_baseline", {}).get("measured_peak_bytes"),
        **standalone,
        "seconds": time.perf_counter() - t0,
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
    }
    from edgesp.atomic import write_text

    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print("\n=== edgesp demo summary ===")
    print(
        f"target {target} ({tgt.runtime}); model trained with SP in torch: test accuracy "
        f"{summary['train_test_accuracy']:.4f}"
    )
    print(
        f"on-device SP learning: accuracy {summary['device_accuracy_before']:.4f} -> "
        f"{summary['device_accuracy_after']:.4f} at {summary['device_samples_per_second']:.0f} samples/s"
    )
    if summary["update_step_measured_peak_bytes"] is not None:
        print(
            f"update-step memory: measured {summary['update_step_measured_peak_bytes']:,} B, planned "
            f"{summary['update_step_planned_peak_bytes']:,} B"
        )
    bp = prof.get("bp_baseline", {})
    if bp.get("saved_activation_bytes") is not None:
        print(
            f"backprop of the same model (torch): saves {bp['saved_activation_bytes']:,} B of activations + "
            f"{bp.get('gradient_bytes', 0):,} B of gradients per step"
        )
    if standalone.get("standalone_test_accuracy") is not None:
        what = "onnxruntime.InferenceSession fed only x" if tgt.runtime == "onnxruntime" else "the TFLite interpreter"
        print(
            f"exported learned model ({standalone['exported_to']}) run by {what}: test accuracy "
            f"{standalone['standalone_test_accuracy']:.4f}"
        )
    print(f"outputs in {out}/ (summary.json, simulate.json, profile.json, PNG curves); {summary['seconds']:.0f} s")
    return 0
