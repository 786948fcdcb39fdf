"""Compilers: lower a model spec (+ weights) to a runtime artifact that infers *and* learns with SP on device.

Backend contract (one module per runtime, tinygrad-style): a module named in ``BACKENDS`` exposes

    compile_model(spec: ModelSpec, params: dict[str, np.ndarray], target: Target, out_dir: Path,
                  batch: int) -> dict   # the manifest, also written to out_dir/manifest.json

It must check the target (fit, precision), write every artifact atomically, and write ``manifest.json``
with at least: ``target`` (name), ``runtime``, ``artifacts`` {``inference``, ``update``: file names},
``parameters`` (forward order: ``name``, ``layer``, ``shape``, ``update_output``), ``spec`` (the model
spec dict), ``batch``, ``planned_memory``. Backends read the spec, never the training code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.errors import CompileError, RuntimeMissingError
from edgesp.spec import ModelSpec
from targets import Target

BACKENDS = {
    "onnxruntime": "compilers.onnx",
    "tflite": "compilers.tflite",
    "lava": "compilers.lava",
}


def backend_module(runtime: str) -> Any:
    if runtime not in BACKENDS:
        raise CompileError(f"no compiler for runtime {runtime!r}; known: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[runtime])
    except ImportError as e:
        raise RuntimeMissingError(f"the {runtime} compiler cannot be imported ({e}): run 'make setup'") from None


def compile_model(
    spec: ModelSpec, params: dict[str, np.ndarray], target: Target, out_dir: str | Path, batch: int = 32
) -> dict[str, Any]:
    if batch < 1:
        raise CompileError("batch must be >= 1")
    return backend_module(target.runtime).compile_model(spec, params, target, Path(out_dir), batch)
