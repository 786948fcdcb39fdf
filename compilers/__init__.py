"""Compilers: lower a model spec (+ weights) to a runtime artifact that infers *and* learns with SP on device.

Backend contract (one module per runtime, tinygrad-style): a module named in ``BACKENDS`` exposes

    compile_model(spec: ModelSpec, params: dict[str, np.ndarray], target: Target, out_dir: Path,
                  batch: int) -> dict   # the manifest, also written to out_dir/manifest.json

It must check the target (fit, precision), write every artifact atomically, and write ``manifest.json``
with at least: ``target`` (name), ``runtime``, ``artifacts`` {``inference``, ``update``: file names},
``parameters`` (forward order: ``name``, ``layer``, ``shape``, ``update_output``), ``spec`` (the model
spec dict), ``batch``, ``planned_memory``. Backends read the spec, never the training code.

A backend may also expose ``export_inference(spec, params, out_dir, batch) -> {file: sha256}``: standalone
inference artifacts with the given (e.g. learned on device) weights baked in, runnable without edgesp.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgesp.errors import CompileError, RuntimeMissingError
from edgesp.manifest import Manifest
from edgesp.spec import ModelSpec
from targets import RUNTIME_REGISTRY, Target

BACKENDS = {name: r.backend for name, r in RUNTIME_REGISTRY.items()}  # one registry: targets.RUNTIME_REGISTRY


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides (checked for every registered runtime by tests/test_contracts.py)."""

    def compile_model(
        self,
        spec: ModelSpec,
        params: dict[str, np.ndarray],
        target: Target,
        out_dir: Path,
        batch: int,
        on_device_rule: str = "sigprop",
    ) -> Manifest:
        """Write every artifact into ``out_dir``, then the manifest (last); return the manifest."""
        ...

    def export_inference(
        self, spec: ModelSpec, params: dict[str, np.ndarray], out_dir: Path, batch: int
    ) -> dict[str, str]:
        """Standalone inference artifacts with ``params`` baked in; {file name: sha256}."""
        ...


FINETUNE_LR_SCALE = 0.1
# the rule the compiled update step learns with: SP (the product), or BP from the same compiler (a baseline for
# measuring SP against in the same runtime and profiler; MLPs, ONNX and TFLite)
ON_DEVICE_RULES = ("sigprop", "bp")


def finetune_spec(spec: ModelSpec, lr: float | None = None) -> ModelSpec:
    """The spec a *trained* (non-spiking) model keeps learning with on the device: the on-device learning rate is
    ``lr`` if given, else the host's × ``FINETUNE_LR_SCALE`` (0.1). The device starts with fresh optimizer
    state (Adam moments zero) and, at batch 1, far noisier gradients than the host's mini-batches: at the
    host's lr a digits MLP lost 2.2 points and an MNIST-1D CNN 6.1 points in 200 batch-1 steps; at 0.1× both
    kept or gained accuracy (bench/continue_on_device.py, docs/BENCHMARKS.md). Spiking models (Lava) keep the
    spec's lr (not measured there)."""
    from dataclasses import replace

    if lr is None:
        if spec.is_spiking:
            return spec
        lr = spec.rule.optimizer.lr * FINETUNE_LR_SCALE
    if not (lr > 0 and np.isfinite(lr)):
        raise CompileError(f"the on-device learning rate must be a finite number > 0, got {lr}")
    return spec.replace_rule(optimizer=replace(spec.rule.optimizer, lr=float(lr)))


def export_inference(
    runtime: str, spec: ModelSpec, params: dict[str, np.ndarray], out_dir: str | Path, batch: int = 1
) -> dict[str, str]:
    """Standalone inference artifacts for ``runtime`` with ``params`` baked in; {file name: sha256}."""
    if batch < 1:
        raise CompileError("batch must be >= 1")
    module = backend_module(runtime)
    if not hasattr(module, "export_inference"):
        raise CompileError(f"the {runtime} backend cannot export standalone inference artifacts yet")
    return module.export_inference(spec, params, Path(out_dir), batch)


def backend_module(runtime: str) -> Any:
    if runtime not in BACKENDS:
        raise CompileError(f"no compiler for runtime {runtime!r}; known: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[runtime])
    except ImportError as e:
        raise RuntimeMissingError(f"the {runtime} compiler cannot be imported ({e}): run 'make setup'") from None


def compile_model(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    target: Target,
    out_dir: str | Path,
    batch: int = 32,
    on_device_rule: str = "sigprop",
) -> Manifest:
    """Compile into ``out_dir`` as a whole: the backend writes a temporary sibling folder, which then replaces
    ``out_dir`` (:func:`edgesp.atomic.atomic_dir`); if anything fails midway an existing build is untouched.
    ``out_dir`` must be new, empty or an earlier build (it is replaced whole, so a folder holding other files is
    refused). Weights holding NaN or inf (a diverged run) are refused."""
    from edgesp.atomic import atomic_dir
    from edgesp.checkpoint import check_finite

    if batch < 1:
        raise CompileError("batch must be >= 1")
    if on_device_rule not in ON_DEVICE_RULES:
        raise CompileError(f"unknown on-device rule {on_device_rule!r}; choose one of {', '.join(ON_DEVICE_RULES)}")
    check_finite({k: np.asarray(v) for k, v in params.items()}, "cannot compile")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CompileError(f"the build folder {out_dir} is a file: pass a folder path (--out)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        # the whole folder is replaced: never a folder that holds anything but an earlier build
        raise CompileError(
            f"{out_dir} is not empty and not a build folder (no manifest.json); compiling replaces the whole "
            "folder: pass a new or empty folder (--out)"
        )
    backend = backend_module(target.runtime)
    with atomic_dir(out_dir) as tmp:
        manifest = backend.compile_model(spec, params, target, tmp, batch, on_device_rule=on_device_rule)
    return manifest
