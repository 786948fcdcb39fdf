"""``edgesp demo``: the user's three jobs end to end on the embedded digits set.

train (SP, torch) → compile for a target → on-device learning simulation on the target's runtime →
memory profile, then a short summary (also ``summary.json``). For Lava targets the model is a spiking
``snn`` trained with ``sp-voltage``; otherwise an MLP trained with ``sigprop``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgesp.cli import main as cli_main


def _run(argv: list[str]) -> None:
    print("$ edgesp " + " ".join(argv), flush=True)
    rc = cli_main(argv)
    if rc != 0:
        raise SystemExit(rc)


def run_demo(out: Path, target: str = "edge-cpu", quick: bool = False) -> int:
    from targets import load_target

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
            *quiet,
        ]
    )
    _run(["profile", str(build_dir), "--json", str(out / "profile.json")])

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
    print(f"outputs in {out}/ (summary.json, simulate.json, profile.json, PNG curves); {summary['seconds']:.0f} s")
    return 0
