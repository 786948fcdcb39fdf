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
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgesp.errors import CompileError, RuntimeMissingError
from edgesp.manifest import Manifest
from targets import RUNTIME_REGISTRY

SIMULATORS = {name: r.device for name, r in RUNTIME_REGISTRY.items()}  # one registry: targets.RUNTIME_REGISTRY


@runtime_checkable
class Device(Protocol):
    """A build loaded on its runtime, holding its learning state (``DEVICE`` of each device module).

    ``step`` runs one on-device update on a batch of the compiled size and returns the per-layer losses;
    ``predict`` returns logits for any number of samples; ``parameters`` reads the current model parameters
    and ``load_parameters`` writes them (optimizer state is kept)."""

    spec: Any
    batch: int

    def step(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> dict[str, float]: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float: ...

    def parameters(self) -> dict[str, np.ndarray]: ...

    def load_parameters(self, params: dict[str, np.ndarray]) -> None: ...


def read_manifest(build_dir: str | Path) -> Manifest:
    """A build's typed manifest, schema-checked but its artifacts not yet hashed (what the CLI needs to pick the
    simulator); devices load builds with :func:`load_build`, which also verifies every artifact."""
    return Manifest.read(build_dir, verify=False)


def checked_parameters(manifest: Manifest, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parameters to write into a device: each a model parameter of the build with its shape, finite;
    returned as contiguous float32 copies (one-line DataError otherwise)."""
    from edgesp.errors import DataError

    layout = {p.name: p.shape for p in manifest.parameters if p.kind == "parameter"}
    out = {}
    for name, value in params.items():
        arr = np.array(value, np.float32, copy=True, order="C")
        if layout.get(name) != arr.shape:
            raise DataError(f"parameter {name!r} of shape {arr.shape} is not one of this build's {sorted(layout)}")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"parameter {name!r} holds NaN or inf")
        out[name] = arr
    return out


def refreshed_target_cache(manifest: Manifest, spec: Any, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``target_cache`` states (``tcache.k``) of a cached-target-stream build recomputed exactly for the full
    parameter set ``params`` ({} when the build has none): after :meth:`load_parameters` every class row is
    fresh again instead of stale until its class is seen."""
    if not any(p.kind == "target_cache" for p in manifest.parameters):
        return {}
    from compilers.lower import class_preactivations

    return {f"tcache.{k}": v for k, v in class_preactivations(spec, params).items()}


def load_build(build_dir: str | Path, runtime: str) -> tuple[Manifest, Any, dict[str, np.ndarray]]:
    """Verify a build before any artifact is used and return (manifest, spec, initial state arrays).

    :meth:`edgesp.manifest.Manifest.read` checks the schema (types, format version, batch, learning rate,
    threads, plain artifact names, parameters vs the spec) and every artifact's sha256 (a manifest without
    hashes is refused, not silently unverified); here, in addition: the build is for ``runtime``, and the state
    file holds every state of the layout with its shape, float32 and finite (a state file swapped together with
    its hash is still checked). Each device then checks the artifacts' own input shapes against ``batch``.
    Every failure is one line ``<where>: <problem>: re-run 'edgesp compile'``."""
    build_dir = Path(build_dir)
    m = Manifest.read(build_dir)
    if m.runtime != runtime:
        raise CompileError(
            f"{build_dir} was compiled for {m.runtime}, not {runtime}: use its own simulator or re-compile"
        )
    for key in ("inference", "update", "state"):
        if key not in m.artifacts:
            raise CompileError(f"{build_dir / 'manifest.json'}: artifacts lacks '{key}': re-run 'edgesp compile'")
    state_path = build_dir / m.artifacts["state"]
    try:
        with np.load(state_path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise CompileError(f"{state_path} is unreadable ({e}): re-run 'edgesp compile'") from None
    for p in m.parameters:
        where = f"{build_dir / 'manifest.json'}"
        if p.name not in state:
            raise CompileError(
                f"{where}: the state file {m.artifacts['state']} lacks {p.name}: re-run 'edgesp compile'"
            )
        a = state[p.name]
        if tuple(a.shape) != p.shape or a.dtype != np.float32:
            raise CompileError(
                f"{where}: {p.name} in {m.artifacts['state']} is {a.dtype}{list(a.shape)}, the manifest says "
                f"float32{list(p.shape)}: re-run 'edgesp compile'"
            )
        if not np.all(np.isfinite(a)):
            raise CompileError(f"{where}: {p.name} in {m.artifacts['state']} holds NaN or inf: re-run 'edgesp compile'")
    return m, m.model_spec(), state


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
