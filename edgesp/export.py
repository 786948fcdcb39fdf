"""Learned weights back out of a device: a build's learned state → a checkpoint + standalone artifacts.

``export_build(build, state, out, batch)`` reads the build's manifest (its spec and runtime) and a state
file written by ``edgesp simulate BUILD --save-state FILE`` (the parameters as learned on the device), and
writes into ``out`` (a folder written whole: a temporary sibling, renamed when complete):

* ``model.safetensors``: an edgesp checkpoint (the build's spec, the learned weights) that
  ``edgesp evaluate``, ``edgesp compile`` and ``edgesp train``'s tools read;
* standalone inference artifacts for the build's runtime, with the learned weights baked in
  (``inference.onnx`` for ONNX Runtime, ``inference.tflite`` for TFLite; x (batch, …) → logits);
* ``export.json``: what was exported from what (build, runtime, batch, files and their sha256).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgesp.errors import DataError


def export_build(build_dir: str | Path, state_file: str | Path, out_dir: str | Path, batch: int = 1) -> dict[str, Any]:
    from compilers import export_inference
    from edgesp.atomic import atomic_dir, write_text
    from edgesp.checkpoint import check_params, save_checkpoint
    from edgesp.errors import CheckpointError
    from edgesp.manifest import Manifest
    from firmware_sim.learning import read_state

    build_dir, out_dir = Path(build_dir), Path(out_dir)
    if batch < 1:
        raise DataError(f"--batch must be >= 1, got {batch}")
    manifest = Manifest.read(build_dir)  # verified: the state is exported against this exact build
    spec = manifest.model_spec()
    params = read_state(Path(state_file))
    try:
        check_params(spec, params)
    except CheckpointError as e:
        raise DataError(f"state file {state_file} does not belong to build {build_dir}: {e}") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file: give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "export.json").exists():
        raise DataError(f"{out_dir} is not empty and not an earlier export (no export.json): pass a new or empty --out")
    with atomic_dir(out_dir) as tmp:  # the folder is replaced whole; a failure leaves an existing one as it was
        save_checkpoint(tmp / "model.safetensors", spec, params, extra={"exported_from": str(build_dir)})
        files = export_inference(manifest.runtime, spec, params, tmp, batch)
        info = {
            "format": "edgesp-export",
            "format_version": 1,
            "build": str(build_dir),
            "runtime": manifest.runtime,
            "target": manifest.target,
            "batch": batch,
            "checkpoint": "model.safetensors",
            "inference": files,
            "inputs": {"x": [batch, *spec.input_shape]},
            "outputs": {"logits": [batch, spec.num_classes]},
        }
        write_text(tmp / "export.json", json.dumps(info, indent=2) + "\n")
    return info
