"""The build manifest: the one typed contract between a backend (which writes a build) and a device (which
loads it). Every backend writes a :class:`Manifest`; every device reads one with :meth:`Manifest.read`, which
checks the schema and every artifact's sha256 before anything is used.

``manifest.json`` (written last, atomically: its presence marks a complete build):

- ``format`` = "edgesp-build", ``format_version`` = 2 (version 1 builds, from before this contract, are
  refused with the fix: re-compile);
- ``target``, ``target_description`` (the target as data), ``runtime`` (a key of the backend registry);
- ``batch`` (static on-device batch), ``learning_rate`` (on-device), ``on_device_rule``, ``sp_loss``,
  ``trained_with`` (the rule the weights came from);
- ``artifacts``: role → file name (``inference``, ``update``, ``state``, …), ``hashes``: file → sha256 of
  every artifact file;
- ``parameters``: forward-ordered entries (``name``, ``layer``, ``shape``, ``kind`` = parameter |
  optimizer_state | target_cache (per-layer class pre-activations of a cached batch-1 target stream),
  ``update_output``: where the device finds the new value, or null if it is not learned);
- ``planned_memory``: ``update_step_peak_bytes`` and ``inference_peak_bytes`` (the same two keys for every
  backend) and ``details`` (the backend's own breakdown);
- ``spec`` (the model spec dict) and ``backend`` (backend-specific facts: opset, signatures, notes, …).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgesp.errors import CompileError, SpecError

FORMAT = "edgesp-build"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
PARAM_KINDS = ("parameter", "optimizer_state", "target_cache")


def _fail(where: str, problem: str) -> CompileError:
    return CompileError(f"{where}: {problem}: re-run 'edgesp compile'")


@dataclass(frozen=True)
class ParameterEntry:
    """One state of the build: a model parameter or an optimizer state, in forward order (``layer``)."""

    name: str
    layer: int
    shape: tuple[int, ...]
    kind: str = "parameter"
    update_output: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"parameter name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise ValueError(f"parameter {self.name}: layer must be an integer >= 0, got {self.layer!r}")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.shape):
            raise ValueError(f"parameter {self.name}: shape must be positive integers, got {self.shape!r}")
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"parameter {self.name}: kind must be one of {PARAM_KINDS}, got {self.kind!r}")
        if self.update_output is not None and not isinstance(self.update_output, str):
            raise ValueError(f"parameter {self.name}: update_output must be a string or null")

    @property
    def nbytes(self) -> int:
        return 4 * math.prod(self.shape)


@dataclass(frozen=True)
class PlannedMemory:
    """Planned bytes of the on-device update step and of inference (weights + state + live activations)."""

    update_step_peak_bytes: int
    inference_peak_bytes: int
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k in ("update_step_peak_bytes", "inference_peak_bytes"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"planned_memory.{k} must be an integer >= 0, got {v!r}")


@dataclass(frozen=True)
class Manifest:
    target: str
    runtime: str
    batch: int
    artifacts: dict[str, str]
    hashes: dict[str, str]
    parameters: tuple[ParameterEntry, ...]
    planned_memory: PlannedMemory
    spec: dict[str, Any]
    learning_rate: float
    trained_with: str
    on_device_rule: str = "sigprop"
    sp_loss: str | None = None
    target_description: dict[str, Any] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", tuple(self.parameters))
        if self.format != FORMAT:
            raise ValueError(f"format must be {FORMAT!r}, got {self.format!r}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not {FORMAT_VERSION}")
        for k in ("target", "runtime", "trained_with", "on_device_rule"):
            if not isinstance(getattr(self, k), str) or not getattr(self, k):
                raise ValueError(f"{k} must be a non-empty string, got {getattr(self, k)!r}")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite number, got {self.learning_rate!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for k in ("artifacts", "hashes"):
            d = getattr(self, k)
            if not isinstance(d, dict) or not all(isinstance(a, str) and isinstance(b, str) for a, b in d.items()):
                raise ValueError(f"{k} must map strings to strings")
        for role, fname in self.artifacts.items():
            if "/" in fname or "\\" in fname or fname in ("", ".", ".."):
                raise ValueError(f"artifact {role} must be a plain file name in the build folder, got {fname!r}")
            if fname not in self.hashes:
                raise ValueError(f"artifact {fname} has no sha256 in hashes")
        threads = self.target_description.get("threads", 1) if isinstance(self.target_description, dict) else None
        from targets import MAX_THREADS

        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"target_description.threads must be an integer in [1, {MAX_THREADS}], got {threads!r}")
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names repeat")
        layers = [p.layer for p in self.parameters]
        if layers != sorted(layers):
            raise ValueError("parameters are not in forward (layer) order")
        try:
            from edgesp.spec import ModelSpec

            want = ModelSpec.from_dict(self.spec).param_shapes()
        except (SpecError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"holds an invalid spec ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"
            ) from None
        got = {p.name: p.shape for p in self.parameters if p.kind == "parameter"}
        for name, shape in want.items():
            if name not in got:
                raise ValueError(f"parameters lacks the spec's parameter {name}")
            if got[name] != tuple(shape):
                raise ValueError(f"parameter {name} has shape {list(got[name])} but the spec needs {list(shape)}")
        extra = sorted(set(got) - set(want))
        if extra:
            raise ValueError(f"parameters {extra} are not in the spec")

    # ------------------------------------------------------------------ views
    def model_spec(self) -> Any:
        from edgesp.spec import ModelSpec

        return ModelSpec.from_dict(self.spec)

    def parameter_names(self) -> list[str]:
        """Model parameters (no optimizer state), forward order."""
        return [p.name for p in self.parameters if p.kind == "parameter"]

    @property
    def threads(self) -> int:
        return int(self.target_description.get("threads", 1))

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parameters"] = [{**asdict(p), "shape": list(p.shape)} for p in self.parameters]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "manifest.json") -> Manifest:
        if not isinstance(d, dict):
            raise _fail(where, "not a JSON object")
        if d.get("format") != FORMAT:
            raise CompileError(f"{where} is not an edgesp build manifest (format {d.get('format')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise _fail(where, f"build format version {d.get('format_version')!r}, this edgesp reads {FORMAT_VERSION}")
        from dataclasses import MISSING, fields

        known = {f.name: f for f in fields(cls)}
        if "hashes" not in d:
            raise _fail(where, "lacks 'hashes' (a build is only used when every artifact matches its sha256)")
        for name, f in known.items():
            if f.default is MISSING and f.default_factory is MISSING and name not in d:
                raise _fail(where, f"missing the field {name!r}")
        for name, kind in (("parameters", list), ("planned_memory", dict), ("artifacts", dict), ("spec", dict)):
            if not isinstance(d[name], kind):
                raise _fail(where, f"'{name}' must be a JSON {'array' if kind is list else 'object'}")
        for k in ("update_step_peak_bytes", "inference_peak_bytes"):
            if k not in d["planned_memory"]:
                raise _fail(where, f"planned_memory lacks {k!r} (a byte count)")
        if not all(isinstance(p, dict) for p in d["parameters"]):
            raise _fail(where, "every 'parameters' entry must be a JSON object")
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise _fail(where, f"unknown fields {unknown}")
        try:
            params = tuple(ParameterEntry(**p) for p in d["parameters"])
            mem = PlannedMemory(**d["planned_memory"])
            fields = {k: v for k, v in d.items() if k not in ("parameters", "planned_memory")}
            return cls(parameters=params, planned_memory=mem, **fields)
        except TypeError as e:
            raise _fail(where, f"bad or unknown fields ({e})") from None
        except ValueError as e:
            raise _fail(where, str(e)) from None

    # ------------------------------------------------------------------ files
    def write(self, build_dir: str | Path) -> Path:
        """Write ``manifest.json`` atomically (last, after every artifact: it marks a complete build)."""
        from edgesp.atomic import write_text

        path = Path(build_dir) / MANIFEST
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, build_dir: str | Path, verify: bool = True) -> Manifest:
        """Load and check a build's manifest; with ``verify`` also every artifact's presence and sha256."""
        build_dir = Path(build_dir)
        path = build_dir / MANIFEST
        if not path.is_file():
            raise CompileError(f"{build_dir} is not a build folder (no {MANIFEST}): run 'edgesp compile' first")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _fail(str(path), f"not valid JSON ({e})") from None
        m = cls.from_dict(d, str(path))
        if verify:
            m.verify(build_dir)
        return m

    def verify(self, build_dir: str | Path) -> None:
        """Every artifact exists and matches its sha256."""
        build_dir = Path(build_dir)
        for fname, digest in self.hashes.items():
            path = build_dir / fname
            if not path.is_file():
                raise _fail(str(build_dir), f"the build lacks {fname}")
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != digest:
                raise _fail(str(path), "corrupt or replaced (sha256 differs from the manifest)")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
