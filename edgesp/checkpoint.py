"""Checkpoints: the model spec plus its weights in one safetensors file (no code is executed on load).

Layout: tensors by parameter name (float32), and string metadata ``format`` = ``edgesp-checkpoint``,
``format_version``, ``spec`` (the spec's JSON), ``sha256`` (over every tensor's bytes in name order,
to detect corruption), and ``extra`` (JSON: training metadata). Written atomically and deterministically
(:func:`write_safetensors`: sorted tensors and keys, so identical weights give byte-identical files).
Non-finite weights (NaN, ±inf: a diverged run) are refused on save and on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
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


def check_finite(params: dict[str, np.ndarray], what: str) -> None:
    """Raise CheckpointError naming the first weight that holds NaN or ±inf."""
    for name in sorted(params):
        if not np.all(np.isfinite(params[name])):
            raise CheckpointError(
                f"{what}: weight {name} holds NaN or inf (a diverged run): re-train with a lower --lr"
            )


def write_safetensors(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write a float32 safetensors file byte-for-byte deterministically (atomically): an 8-byte little-endian
    header length, the JSON header (``__metadata__`` then every tensor's dtype/shape/data_offsets, keys
    sorted, no spaces) padded with spaces to a multiple of 8, then the tensors' little-endian bytes in name
    order. (``safetensors.numpy.save_file`` orders the metadata by a hash map: not reproducible.)"""
    header: dict[str, object] = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name in sorted(arrays):
        data = np.ascontiguousarray(arrays[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def save_checkpoint(
    path: str | os.PathLike, spec: ModelSpec, params: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    arrays = {k: np.ascontiguousarray(np.asarray(_to_numpy(v), dtype=np.float32)) for k, v in params.items()}
    check_params(spec, arrays)
    check_finite(arrays, f"cannot save checkpoint {path}")
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "spec": spec.to_json(),
        "sha256": _digest(arrays),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    write_safetensors(path, arrays, meta)
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
    check_finite(params, f"checkpoint {path} is unusable")
    try:
        extra = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError:
        extra = {}
    return spec, params, extra
