"""Checkpoints: the model spec plus its weights in one safetensors file (no code is executed on load).

Layout: tensors by parameter name (float32), and string metadata ``format`` = ``edgesp-checkpoint``,
``format_version``, ``spec`` (the spec's JSON), ``sha256`` (over every tensor's bytes in name order,
to detect corruption), and ``extra`` (JSON: training metadata). Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.atomic import atomic_path
from edgesp.errors import CheckpointError, SpecError
from edgesp.spec import ModelSpec

FORMAT = "edgesp-checkpoint"
FORMAT_VERSION = 1


def _digest(params: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name], dtype=np.float32).tobytes())
    return h.hexdigest()


def check_params(spec: ModelSpec, params: dict[str, np.ndarray]) -> None:
    """Raise CheckpointError unless ``params`` has exactly the spec's parameters with their shapes."""
    want = spec.param_shapes()
    missing = set(want) - set(params)
    extra = set(params) - set(want)
    if missing or extra:
        raise CheckpointError(f"weights do not match the spec: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, shape in want.items():
        if tuple(params[name].shape) != tuple(shape):
            raise CheckpointError(f"weight {name} has shape {tuple(params[name].shape)}, the spec needs {shape}")


def save_checkpoint(
    path: str | os.PathLike, spec: ModelSpec, params: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(np.asarray(_to_numpy(v), dtype=np.float32)) for k, v in params.items()}
    check_params(spec, arrays)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "spec": spec.to_json(),
        "sha256": _digest(arrays),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
    return path


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def load_checkpoint(path: str | os.PathLike) -> tuple[ModelSpec, dict[str, np.ndarray], dict[str, Any]]:
    """Return (spec, params, extra). Raises CheckpointError for a missing/corrupt/unsupported file."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found: pass the model.safetensors written by 'edgesp train'")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            params = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a damaged header/body
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a safetensors file ({type(e).__name__}): "
            "re-create it with 'edgesp train'"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an edgesp checkpoint (no '{FORMAT}' metadata)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('format_version')}, this edgesp reads {FORMAT_VERSION}"
        )
    try:
        spec = ModelSpec.from_json(meta["spec"])
    except (SpecError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} holds an invalid spec: {e}") from None
    if _digest(params) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt (weights checksum mismatch): re-create it")
    check_params(spec, params)
    try:
        extra = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError:
        extra = {}
    return spec, params, extra
