"""On-device learning in ONNX Runtime: the compiled SP update step driven sample batch after batch.

Parameters and optimizer state live as ``OrtValue`` s and are bound with IOBinding: each step binds the
current state as inputs and lets ORT allocate the new state as outputs, which become the next step's
inputs (two alternating buffers; nothing is recomputed in torch, no weight is copied through numpy).
``OrtValue.numpy()`` returns a view into ORT memory, so every value read out is copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.data import Dataset
from edgesp.errors import CompileError, DataError, RuntimeMissingError
from firmware_sim import checked_parameters, load_build, refreshed_target_cache


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeMissingError("onnxruntime is not installed: run 'make setup'") from None
    return ort


class OrtDevice:
    """A compiled build loaded into ONNX Runtime, holding its learning state."""

    def __init__(self, build_dir: str | Path, threads: int | None = None, profile_prefix: str | None = None):
        ort = _ort()
        self.build_dir = Path(build_dir)
        # schema, hashes, spec vs parameters vs state file (firmware_sim.load_build), before any artifact is used
        self.manifest, self.spec, init = load_build(self.build_dir, "onnxruntime")
        self.batch = self.manifest.batch
        self.params = self.manifest.parameters
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads or self.manifest.threads
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        art = self.manifest.artifacts
        try:
            self.update = ort.InferenceSession(
                str(self.build_dir / art["update"]), so, providers=["CPUExecutionProvider"]
            )
            self.inference = ort.InferenceSession(
                str(self.build_dir / art["inference"]), so, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ORT raises its own exception types for unreadable models
            raise CompileError(
                f"onnxruntime cannot load {build_dir} ({str(e).splitlines()[0][:160]}): re-run 'edgesp compile'"
            ) from None
        self._check_artifact_shapes()
        self.state = {p.name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(init[p.name])) for p in self.params}
        # second buffer set: each step reads state A and writes state B, then they swap (no allocation
        # per step; the same OrtValue is never both input and output of one run)
        self.spare = {
            p.name: ort.OrtValue.ortvalue_from_shape_and_type(list(p.shape) or [], np.float32)
            for p in self.params
            if p.update_output
        }
        self.update_outputs = [o.name for o in self.update.get_outputs()]
        # the parameters are overridable initializers of inference.onnx (ORT lists them apart from its inputs)
        self.param_names = [i.name for i in self.inference.get_inputs() if i.name != "x"] + [
            i.name for i in self.inference.get_overridable_initializers()
        ]
        self.lr = self.manifest.learning_rate

    def _check_artifact_shapes(self) -> None:
        """The manifest's batch, input shape and state layout must be the ONNX graphs' own (an edited manifest
        would otherwise feed wrong shapes: ORT tracebacks or silently different state)."""
        art = self.manifest.artifacts
        want = {"x": [self.batch, *self.spec.input_shape], "y": [self.batch]}
        want.update({p.name: list(p.shape) for p in self.params})
        needed = {art["update"]: ["x", "y", *(p.name for p in self.params)], art["inference"]: ["x"]}
        for sess, fname in ((self.update, art["update"]), (self.inference, art["inference"])):
            graph = {i.name: list(i.shape) for i in [*sess.get_inputs(), *sess.get_overridable_initializers()]}
            for name in [*needed[fname], *(n for n in graph if n in want and n not in needed[fname])]:
                if name not in graph:
                    problem = f"it has no input '{name}'"
                elif graph[name] != want[name]:
                    problem = f"'{name}' is {graph[name]} there, the manifest implies {want[name]} (edited?)"
                else:
                    continue
                raise CompileError(
                    f"{self.build_dir / 'manifest.json'} does not match {fname}: {problem}: re-run 'edgesp compile'"
                )

    # ------------------------------------------------------------------ device operations
    def check_batch(self, x: np.ndarray) -> None:
        if x.shape[0] != self.batch:
            raise DataError(
                f"the build was compiled for batch {self.batch}, got {x.shape[0]}: "
                "recompile with --batch or keep the batch"
            )

    def step(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> dict[str, float]:
        """One SP update on device; returns the per-layer local losses."""
        ort = _ort()
        self.check_batch(x)
        io = self.update.io_binding()
        io.bind_cpu_input("x", np.ascontiguousarray(x, np.float32))
        io.bind_cpu_input("y", np.ascontiguousarray(y, np.int32))
        io.bind_cpu_input("lr", np.asarray(self.lr if lr is None else lr, np.float32))
        for name, value in self.state.items():
            io.bind_ortvalue_input(name, value)
        loss_names = []
        for p in self.params:
            if p.update_output:
                io.bind_ortvalue_output(p.update_output, self.spare[p.name])
        for name in self.update_outputs:
            if name.startswith("loss_"):
                io.bind_output(name, "cpu")
                loss_names.append(name)
        self.update.run_with_iobinding(io)
        losses = (
            {
                k: float(np.array(v.numpy(), copy=True))
                for k, v in zip(loss_names, io.get_outputs()[-len(loss_names) :], strict=True)
            }
            if loss_names
            else {}
        )
        for name in self.spare:
            self.state[name], self.spare[name] = self.spare[name], self.state[name]
        del ort
        return losses

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits for any number of samples (padded to the compiled batch)."""
        n = len(x)
        out = []
        for i in range(0, n, self.batch):
            chunk = x[i : i + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            io = self.inference.io_binding()
            io.bind_cpu_input("x", np.ascontiguousarray(chunk, np.float32))
            for name in self.param_names:
                io.bind_ortvalue_input(name, self.state[name])
            io.bind_output("logits", "cpu")
            self.inference.run_with_iobinding(io)
            out.append(np.array(io.get_outputs()[0].numpy(), copy=True)[: len(x[i : i + self.batch])])
        return np.concatenate(out)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((np.argmax(self.predict(x), axis=1) == y).mean())

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of every state value (parameters and optimizer state)."""
        return {k: np.array(v.numpy(), copy=True) for k, v in self.state.items()}

    def load_parameters(self, params: dict[str, np.ndarray]) -> None:
        """Write model parameters into the device state (names and shapes as the manifest's; optimizer state kept;
        a cached target stream's class tables recomputed for the new parameters)."""
        ort = _ort()
        for name, arr in checked_parameters(self.manifest, params).items():
            self.state[name] = ort.OrtValue.ortvalue_from_numpy(arr)
        for name, arr in refreshed_target_cache(self.manifest, self.spec, self.parameters()).items():
            self.state[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))

    def parameters(self) -> dict[str, np.ndarray]:
        """Copies of the model parameters only (no optimizer state)."""
        return {p.name: np.array(self.state[p.name].numpy(), copy=True) for p in self.params if p.kind == "parameter"}


# ---------------------------------------------------------------------- simulation loop (shared)
def simulate(
    build_dir: Path,
    dataset: Dataset,
    steps: int,
    batch: int | None = None,
    seed: int = 0,
    out_png: Path | None = None,
    progress: bool = True,
    continual: bool = False,
    lr: float | None = None,
    save_state: Path | None = None,
    **_: Any,
) -> dict[str, Any]:
    device = OrtDevice(build_dir)
    if batch is not None and batch != device.batch:
        raise DataError(f"the build was compiled for batch {device.batch}, not {batch}: recompile with --batch {batch}")
    from firmware_sim.learning import run_learning

    res = run_learning(
        device, device.spec, dataset, steps, device.batch, seed, out_png, progress, continual, lr, save_state=save_state
    )
    res["build"] = str(build_dir)
    return res


# ---------------------------------------------------------------------- memory profile
def ort_profile_peaks(build_dir: Path, x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """ORT's own byte counts (max ``mem_in_use_peak`` over the nodes of a run, arena bytes in use) of one
    update step and one inference call, from a single profiled load of the build: (update, inference)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        dev = OrtDevice(build_dir, profile_prefix=str(Path(tmp) / "prof"))
        dev.step(x, y)
        dev.predict(x[: dev.batch])
        peaks = []
        for sess in (dev.update, dev.inference):
            events = json.loads(Path(sess.end_profiling()).read_text())
            peaks.append(
                max(
                    (int(e["args"]["mem_in_use_peak"]) for e in events if "mem_in_use_peak" in e.get("args", {})),
                    default=0,
                )
            )
    return peaks[0], peaks[1]


def measure_rss(build: Path, mode: str) -> int | None:
    """Run :mod:`firmware_sim.rss_probe` (``mode``: update | inference | bp) in a fresh process: this installation's
    module, never a ``firmware_sim/rss_probe.py`` of the current directory (:func:`firmware_sim.module_command`).
    Returns the RSS increase in bytes."""
    import subprocess

    from edgesp.errors import CompileError
    from firmware_sim import module_command

    cmd = module_command("firmware_sim.rss_probe", str(Path(build).resolve()), mode)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit code {r.returncode}"
        raise CompileError(f"memory measurement '{mode}' failed ({tail[:200]}): re-run 'edgesp profile'")
    v = json.loads(r.stdout.strip().splitlines()[-1])["rss_increase_bytes"]
    return None if v is None else int(v)


def profile(build_dir: Path, batch: int | None = None, **_: Any) -> dict[str, Any]:
    from firmware_sim.memory import annotate_peak, bp_training_memory

    dev = OrtDevice(build_dir)
    if batch is not None and batch != dev.batch:
        raise DataError(f"the build was compiled for batch {dev.batch}, not {batch}: recompile with --batch {batch}")
    pm = dev.manifest.planned_memory  # the typed manifest always has it (checked when the build was loaded)
    plan = {
        ("update_step", "peak_bytes"): pm.update_step_peak_bytes,
        ("inference", "peak_bytes"): pm.inference_peak_bytes,
        **{
            (k, "peak_activation_bytes"): pm.details.get(k, {}).get("peak_activation_bytes")
            for k in ("update_step", "inference")
        },
    }
    rng = np.random.default_rng(0)
    x = rng.standard_normal((dev.batch, *dev.spec.input_shape)).astype(np.float32)
    y = rng.integers(0, dev.spec.num_classes, dev.batch)
    # RSS in fresh processes (firmware_sim.rss_probe): the first run after loading, so the increase includes
    # the arena growth for the step's activations
    upd_rss, inf_rss = measure_rss(build_dir, "update"), measure_rss(build_dir, "inference")
    upd_prof, inf_prof = ort_profile_peaks(build_dir, x, y)
    bp = bp_training_memory(dev.spec, dev.parameters(), dev.batch)
    bp.pop("measured_peak_note", None)
    bp["measured_peak_bytes"] = measure_rss(build_dir, "bp")  # fresh process (this one's heap would hide the peak)
    annotate_peak(bp)
    state_bytes = sum(p.nbytes for p in dev.params)
    return {
        "runtime": "onnxruntime",
        "build": str(build_dir),
        "batch": dev.batch,
        "state_bytes": state_bytes,
        "update_step": {
            "measured_peak_bytes": upd_prof,
            "measured_rss_increase_bytes": upd_rss,
            "planned_peak_bytes": plan["update_step", "peak_bytes"],
            "planned_activation_bytes": plan["update_step", "peak_activation_bytes"],
        },
        "inference": {
            "measured_peak_bytes": inf_prof,
            "measured_rss_increase_bytes": inf_rss,
            "planned_peak_bytes": plan["inference", "peak_bytes"],
            "planned_activation_bytes": plan["inference", "peak_activation_bytes"],
        },
        "bp_baseline": bp,
        "largest_layer_working_set_bytes": pm.details.get("largest_layer_working_set_bytes"),
        "definitions": {
            "measured_peak_bytes": "ORT profiler: max mem_in_use_peak of the run (arena bytes; excludes "
            "caller-owned inputs such as weights bound from OrtValues)",
            "measured_rss_increase_bytes": "peak RSS (VmHWM) above RSS before the first run after loading, "
            "in a fresh process",
            "planned_peak_bytes": "liveness plan: inputs+state resident + max live intermediates",
            "bp_baseline.measured_peak_bytes": "torch autograd BP step: peak RSS increase of a steady-state step "
            "(fresh process, freed heap returned to the OS first)",
            "bp_baseline.saved_activation_bytes": "bytes autograd saves for the backward pass (exact)",
        },
    }


DEVICE = OrtDevice
