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
import sys
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
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CompileError(f"{path} is corrupt ({str(e).splitlines()[0][:120]}): re-run 'edgesp compile'") from None
    except OSError as e:
        raise CompileError(f"cannot read {path} ({e.strerror}): check the build folder's permissions") from None
    if not isinstance(manifest, dict):
        raise CompileError(f"{path} is not a build manifest (a JSON object): re-run 'edgesp compile'")
    for key, kind in (("runtime", str), ("artifacts", dict), ("spec", dict)):
        if key not in manifest:
            raise CompileError(f"{path} lacks '{key}': re-run 'edgesp compile'")
        if not isinstance(manifest[key], kind):
            raise CompileError(f"{path}: '{key}' must be a JSON {_JSON_NAMES[kind]}: re-run 'edgesp compile'")
    return manifest


BUILD_FORMAT, BUILD_FORMAT_VERSION = "edgesp-build", 1
_JSON_NAMES = {str: "string", dict: "object", list: "array", int: "integer"}
# every key an ONNX/TFLite build's manifest must have, with its JSON type (checked before any artifact is used)
_REQUIRED = {
    "format": str,
    "format_version": int,
    "runtime": str,
    "batch": int,
    "artifacts": dict,
    "hashes": dict,
    "parameters": list,
    "spec": dict,
    "planned_memory": dict,
}


def verify_build(build_dir: str | Path, manifest: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Verify an ONNX/TFLite build before use and return (spec, initial state arrays). Checks, each failing with
    one line ``<manifest>: <problem>: re-run 'edgesp compile'``: the schema (required keys and their types,
    format, batch >= 1, learning_rate finite > 0, threads in range); ``hashes`` present, covering every artifact,
    and matching every file (a manifest without hashes is refused, not silently unverified); artifact names are
    plain file names inside the build; the spec parses; ``parameters`` well-formed, holding every spec parameter
    with the spec's shape; the state file holds every parameter with its manifest shape, float32 and finite.
    The runtime-specific part (the artifacts' own input shapes vs ``batch``) is checked by each device."""
    import hashlib
    import math
    import re

    import numpy as np

    from edgesp.errors import SpecError
    from edgesp.spec import ModelSpec

    build_dir = Path(build_dir)
    where = build_dir / "manifest.json"

    def bad(problem: str) -> CompileError:
        return CompileError(f"{where}: {problem}: re-run 'edgesp compile'")

    for key, kind in _REQUIRED.items():
        if key not in manifest:
            if key == "hashes":
                raise bad("lacks 'hashes' (a build is only used when every artifact matches its sha256)")
            raise bad(f"lacks '{key}'")
        v = manifest[key]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise bad(f"'{key}' must be a JSON {_JSON_NAMES[kind]}, got {type(v).__name__}")
    if manifest["format"] != BUILD_FORMAT or manifest["format_version"] != BUILD_FORMAT_VERSION:
        raise bad(
            f"format {manifest['format']!r} version {manifest['format_version']} is not "
            f"{BUILD_FORMAT!r} version {BUILD_FORMAT_VERSION}"
        )
    if manifest["batch"] < 1:
        raise bad(f"batch must be >= 1, got {manifest['batch']}")
    lr = manifest.get("learning_rate")
    if lr is not None and not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    ):
        raise bad(f"learning_rate must be a finite number > 0, got {lr!r}")
    threads = (manifest.get("target_description") or {}).get("threads", 1)
    from targets import MAX_THREADS

    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise bad(f"target_description.threads must be an integer in [1, {MAX_THREADS}], got {threads!r}")

    def plain(name: Any, what: str) -> str:
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise bad(f"{what} {name!r} is not a plain file name inside the build")
        return name

    arts = manifest["artifacts"]
    for key in ("inference", "update", "state"):
        if key not in arts:
            raise bad(f"artifacts lacks '{key}'")
        plain(arts[key], f"artifact '{key}'")
    hashes = manifest["hashes"]
    for key, fname in arts.items():
        if plain(fname, f"artifact '{key}'") not in hashes:
            raise bad(f"hashes lacks the artifact {fname}")
    for fname, digest in hashes.items():
        plain(fname, "hashed file")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"the hash of {fname} is not a sha256 hex digest")
        path = build_dir / fname
        if not path.is_file():
            raise CompileError(f"build {build_dir} lacks {fname}: re-run 'edgesp compile'")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise CompileError(f"{path} is corrupt (hash mismatch with manifest.json): re-run 'edgesp compile'")
    try:
        spec = ModelSpec.from_dict(manifest["spec"])
    except (SpecError, KeyError, TypeError, ValueError) as e:
        raise bad(f"holds an invalid spec ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    layout: dict[str, tuple[int, ...]] = {}
    for p in manifest["parameters"]:
        ok = isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("shape"), list)
        ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in p["shape"])
        ok = ok and p.get("kind") in ("parameter", "optimizer_state")
        ok = ok and (p.get("update_output") is None or isinstance(p.get("update_output"), str))
        if not ok:
            raise bad(f"parameters entry {str(p)[:80]} needs name, shape (integers), kind and update_output")
        if p["name"] in layout:
            raise bad(f"parameter {p['name']} is listed twice")
        layout[p["name"]] = tuple(p["shape"])
    kinds = {p["name"]: p["kind"] for p in manifest["parameters"]}
    for name, shape in spec.param_shapes().items():
        if kinds.get(name) != "parameter":
            raise bad(f"parameters lacks the spec's parameter {name}")
        if layout[name] != tuple(shape):
            raise bad(f"parameter {name} has shape {list(layout[name])} but the spec needs {list(shape)}")
    state_path = build_dir / arts["state"]
    try:
        with np.load(state_path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise CompileError(f"{state_path} is unreadable ({e}): re-run 'edgesp compile'") from None
    for name, shape in layout.items():
        if name not in state:
            raise bad(f"the state file {arts['state']} lacks {name}")
        a = state[name]
        if tuple(a.shape) != shape or a.dtype != np.float32:
            raise bad(f"{name} in {arts['state']} is {a.dtype}{list(a.shape)}, the manifest says float32{list(shape)}")
        if not np.all(np.isfinite(a)):
            raise bad(f"{name} in {arts['state']} holds NaN or inf")
    return spec, state


def planned(manifest: dict[str, Any], build_dir: str | Path, *keys: str) -> int:
    """``manifest['planned_memory'][keys...]`` as bytes; one-line CompileError if missing or not a count."""
    v: Any = manifest.get("planned_memory")
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CompileError(
            f"{Path(build_dir) / 'manifest.json'} lacks planned_memory.{'.'.join(keys)} (a byte count): "
            "re-run 'edgesp compile'"
        )
    return v


PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding this firmware_sim package

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import runpy; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def module_command(module: str, *args: str) -> list[str]:
    """argv that runs ``module`` (e.g. ``firmware_sim.rss_probe``) of *this* installation in a fresh Python:
    ``-P`` keeps the current directory off ``sys.path`` (a planted ``firmware_sim/`` or ``numpy.py`` in an
    untrusted working folder is never imported) and the package's own root is put first."""
    return [sys.executable, "-P", "-c", _BOOT, str(PACKAGE_ROOT), module, *args]


def simulator_module(runtime: str) -> Any:
    if runtime not in SIMULATORS:
        raise CompileError(f"no on-device simulator for runtime {runtime!r}; known: {', '.join(SIMULATORS)}")
    try:
        return importlib.import_module(SIMULATORS[runtime])
    except ImportError as e:
        raise RuntimeMissingError(f"the {runtime} runtime cannot be imported ({e}): run 'make setup'") from None
