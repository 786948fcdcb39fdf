"""Target descriptions as data. A target is a TOML file (``targets/*.toml`` ships the built-in ones;
users pass their own with ``--target path/to/file.toml``) with:

    name, runtime ("onnxruntime" | "tflite" | "lava"), precision ("fp32" | "int8" | "fixed_pt" | "floating_pt"),
    description, threads, memory_budget_bytes (RAM for weights + optimizer state + activations),
    storage_budget_bytes (artifact files), and for neuromorphic targets a [neuromorphic] table:
    cores, neurons_per_core, synapses_per_core, weight_bits, fan_in, fan_out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesp.errors import TargetError

RUNTIMES = ("onnxruntime", "tflite", "lava")
BUILTIN_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str
    precision: str = "fp32"
    description: str = ""
    threads: int = 1
    memory_budget_bytes: int | None = None
    storage_budget_bytes: int | None = None
    neuromorphic: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise TargetError(
                f"target {self.name!r}: unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}"
            )
        for k in ("memory_budget_bytes", "storage_budget_bytes"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise TargetError(f"target {self.name!r}: {k} must be a positive integer of bytes, got {v!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise TargetError(f"target {self.name!r}: threads must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runtime": self.runtime,
            "precision": self.precision,
            "description": self.description,
            "threads": self.threads,
            "memory_budget_bytes": self.memory_budget_bytes,
            "storage_budget_bytes": self.storage_budget_bytes,
            "neuromorphic": dict(self.neuromorphic),
        }


def _from_file(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"cannot read target file {path}: {e}") from None
    known = {
        "name",
        "runtime",
        "precision",
        "description",
        "threads",
        "memory_budget_bytes",
        "storage_budget_bytes",
        "neuromorphic",
    }
    extra = set(data) - known
    if extra:
        raise TargetError(f"target file {path} has unknown keys {sorted(extra)}; known: {sorted(known)}")
    for k in ("name", "runtime"):
        if k not in data:
            raise TargetError(f"target file {path} is missing '{k}'")
    return Target(**data, path=str(path))


def builtin_targets() -> dict[str, Target]:
    return {t.name: t for t in (_from_file(p) for p in sorted(BUILTIN_DIR.glob("*.toml")))}


def load_target(name_or_path: str) -> Target:
    """A built-in target by name, or a user's TOML file by path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise TargetError(f"target file {p} does not exist")
        return _from_file(p)
    targets = builtin_targets()
    if name_or_path not in targets:
        raise TargetError(
            f"unknown target {name_or_path!r}; built-in targets: {', '.join(sorted(targets))} (or pass a .toml file)"
        )
    return targets[name_or_path]
