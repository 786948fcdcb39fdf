"""Target descriptions as data. A target is a TOML file (``targets/*.toml`` ships the built-in ones;
users pass their own with ``--target path/to/file.toml``) with:

    name, runtime ("onnxruntime" | "tflite" | "lava"), precision ("fp32" | "int8" | "fixed_pt" | "floating_pt"),
    description, threads, memory_budget_bytes (RAM for weights + optimizer state + activations),
    storage_budget_bytes (artifact files), and for neuromorphic targets a [neuromorphic] table:
    chips, cores, neurons_per_core, synapses_per_core, weight_bits, fan_in, fan_out; for microcontrollers
    (runtime "mcu") an [mcu] table: cpu (gcc -mcpu), qemu_machine (qemu-system-arm -M), sram_bytes,
    flash_bytes, ram_origin, flash_origin (integers: addresses of the SRAM and flash regions).

Every value is type-checked (a TOML ``true`` is not an integer; strings are strings): threads is an integer
in 1 ... ``MAX_THREADS`` (256), budgets are integers > 0, neuromorphic values integers > 0 (weight_bits <= 64).
The file must be UTF-8 (TOML's own rule).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesp.errors import TargetError


@dataclass(frozen=True)
class Runtime:
    """A runtime edgesp compiles for: the module (in ``compilers/``) that implements the Backend protocol and the
    module (in ``firmware_sim/``) that implements the device side (a Device class, ``simulate``, ``profile``)."""

    name: str
    backend: str
    device: str


# the one registry of runtimes; compilers.BACKENDS and firmware_sim.SIMULATORS are views of it
RUNTIME_REGISTRY: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("onnxruntime", "compilers.onnx", "firmware_sim.onnx_device"),
        Runtime("tflite", "compilers.tflite", "firmware_sim.tflite_device"),
        Runtime("lava", "compilers.lava", "firmware_sim.lava_device"),
        Runtime("mcu", "compilers.mcu", "firmware_sim.mcu_device"),
    )
}
RUNTIMES = tuple(RUNTIME_REGISTRY)
PRECISIONS = ("fp32", "int8", "fixed_pt", "floating_pt")
MAX_THREADS = 256
MCU_KEYS = {
    "cpu": str,
    "qemu_machine": str,
    "sram_bytes": int,
    "flash_bytes": int,
    "ram_origin": int,
    "flash_origin": int,
}
NEUROMORPHIC_KEYS = ("chips", "cores", "neurons_per_core", "synapses_per_core", "weight_bits", "fan_in", "fan_out")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
    mcu: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TargetError(f'target name must be a non-empty string, got {self.name!r}: write name = "my-target"')
        for k in ("runtime", "precision", "description"):
            if not isinstance(getattr(self, k), str):
                raise TargetError(f"target {self.name!r}: {k} must be a string, got {getattr(self, k)!r}")
        if self.runtime not in RUNTIMES:
            raise TargetError(
                f"target {self.name!r}: unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}"
            )
        if self.precision not in PRECISIONS:
            raise TargetError(
                f"target {self.name!r}: unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        for k in ("memory_budget_bytes", "storage_budget_bytes"):
            v = getattr(self, k)
            if v is not None and (not _is_int(v) or v <= 0):
                raise TargetError(f"target {self.name!r}: {k} must be a positive integer of bytes, got {v!r}")
        if not _is_int(self.threads) or not 1 <= self.threads <= MAX_THREADS:
            raise TargetError(
                f"target {self.name!r}: threads must be an integer in [1, {MAX_THREADS}], got {self.threads!r}"
            )
        if not isinstance(self.neuromorphic, dict):
            raise TargetError(
                f"target {self.name!r}: neuromorphic must be a table ([neuromorphic] with "
                f"{', '.join(NEUROMORPHIC_KEYS)}), got {self.neuromorphic!r}"
            )
        for k, v in self.neuromorphic.items():
            if k not in NEUROMORPHIC_KEYS:
                raise TargetError(
                    f"target {self.name!r}: unknown [neuromorphic] key {k!r}; known: {', '.join(NEUROMORPHIC_KEYS)}"
                )
            if not _is_int(v) or v <= 0 or (k == "weight_bits" and v > 64):
                raise TargetError(
                    f"target {self.name!r}: neuromorphic.{k} must be a positive integer"
                    f"{' <= 64' if k == 'weight_bits' else ''}, got {v!r}"
                )

        self._check_mcu()

    def _check_mcu(self) -> None:
        if not isinstance(self.mcu, dict):
            raise TargetError(f"target {self.name!r}: mcu must be a table ([mcu] with {', '.join(MCU_KEYS)})")
        if self.runtime == "mcu":
            missing = [k for k in MCU_KEYS if k not in self.mcu]
            if missing:
                raise TargetError(f"target {self.name!r}: [mcu] lacks {', '.join(missing)}: add them to the file")
        elif self.mcu:
            raise TargetError(f'target {self.name!r}: an [mcu] table needs runtime = "mcu"')
        for k, v in self.mcu.items():
            if k not in MCU_KEYS:
                raise TargetError(f"target {self.name!r}: unknown [mcu] key {k!r}; known: {', '.join(MCU_KEYS)}")
            if MCU_KEYS[k] is str:
                if not isinstance(v, str) or not v.strip() or not all(c.isalnum() or c in "-_." for c in v):
                    raise TargetError(f"target {self.name!r}: mcu.{k} must be a plain name like 'cortex-m7', got {v!r}")
            elif not _is_int(v) or v < 0 or (k.endswith("_bytes") and v <= 0) or v >= 1 << 32:
                raise TargetError(f"target {self.name!r}: mcu.{k} must be an integer in [1, 2^32), got {v!r}")

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
            **({"mcu": dict(self.mcu)} if self.mcu else {}),
        }


def _from_file(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TargetError(
            f"target file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): "
            "save it as UTF-8"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"cannot read target file {path}: {str(e).splitlines()[0]}") from None
    known = {
        "name",
        "runtime",
        "precision",
        "description",
        "threads",
        "memory_budget_bytes",
        "storage_budget_bytes",
        "neuromorphic",
        "mcu",
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
