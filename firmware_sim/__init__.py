"""The on-device side: update loops that stream samples through a compiled artifact on its runtime,
fixed-point arithmetic where a target needs it, and memory profiling.

Simulator contract (one module per runtime, named in ``SIMULATORS``):

    simulate(build_dir: Path, dataset: Dataset, steps: int, batch: int | None, seed: int,
             out_png: Path | None, progress: bool, **options) -> dict
        # keys at least: accuracy_before, accuracy_after, steps, samples_per_second, curve
    profile(build_dir: Path, batch: int | None, **options) -> dict
        # keys at least: inference {measured_peak_bytes, planned_peak_bytes},
        #                update_step {measured_peak_bytes, planned_peak_bytes}, bp_baseline {measured_peak_bytes}
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from edgesp.errors import CompileError, RuntimeMissingError

SIMULATORS = {
    "onnxruntime": "firmware_sim.onnx_device",
    "tflite": "firmware_sim.tflite_device",
    "lava": "firmware_sim.lava_device",
}


def read_manifest(build_dir: str | Path) -> dict[str, Any]:
    build_dir = Path(build_dir)
    path = build_dir / "manifest.json"
    if not path.exists():
        raise CompileError(f"{build_dir} is not a build folder (no manifest.json): run 'edgesp compile' first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CompileError(f"{path} is corrupt ({e}): re-run 'edgesp compile'") from None
    for key in ("runtime", "artifacts", "spec"):
        if key not in manifest:
            raise CompileError(f"{path} lacks '{key}': re-run 'edgesp compile'")
    return manifest


def simulator_module(runtime: str) -> Any:
    if runtime not in SIMULATORS:
        raise CompileError(f"no on-device simulator for runtime {runtime!r}; known: {', '.join(SIMULATORS)}")
    try:
        return importlib.import_module(SIMULATORS[runtime])
    except ImportError as e:
        raise RuntimeMissingError(f"the {runtime} runtime cannot be imported ({e}): run 'make setup'") from None
