"""On-device SP learning in the TFLite interpreter: stream batches through ``step`` (weights stay in the
interpreter's resource variables), evaluate with ``infer``, and profile memory.

Options (``**options``): ``interpreter`` = ``"litert"`` (ai-edge-litert, default) | ``"tflite_runtime"``;
``resolver`` = ``"auto"`` | ``"builtin"`` | ``"reference"`` (see :mod:`firmware_sim.tflite_runtime`);
``threads`` (default: the target's). ``lr`` (default: the manifest's learning rate) and ``continual``
are the simulator contract's own arguments.

Memory (``profile``): each measurement runs in a fresh Python process so freed memory of an earlier
measurement cannot hide a peak. ``measured_peak_bytes`` = VmHWM − VmRSS where both are read from
``/proc/self/status`` after resetting the high-water mark (``/proc/self/clear_refs`` ← 5) just before the
interpreter is created; it covers model load, arena allocation, ``init`` and three calls. Resolution is a
page (4 KiB) but allocator noise is ~±0.3 MiB, so small models are dominated by the interpreter's own
overhead; ``planned_peak_bytes`` is the static plan from the flatbuffer (:mod:`compilers.tflite.plan`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.data import Dataset
from edgesp.errors import CompileError, DataError
from edgesp.manifest import Manifest
from firmware_sim import checked_parameters, load_build, refreshed_target_cache
from firmware_sim.tflite_runtime import DEFAULT_INTERPRETER, TFLiteModel


# --------------------------------------------------------------------------- loading
class TFLiteDevice:
    """A build loaded into one TFLite interpreter; parameters and optimizer state stay in its variables.
    ``step``/``accuracy`` follow the device protocol of :func:`firmware_sim.onnx_device.run_learning`."""

    def __init__(
        self,
        build_dir: str | Path,
        interpreter: str = DEFAULT_INTERPRETER,
        resolver: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.build_dir = Path(build_dir)
        # schema, hashes, spec vs parameters vs state file (firmware_sim.load_build), before any artifact is used
        self.manifest, self.spec, state = load_build(self.build_dir, "tflite")
        self.batch = self.manifest.batch
        self.lr = self.manifest.learning_rate
        art = self.manifest.artifacts
        if threads is None:
            threads = self.manifest.threads
        self.model = TFLiteModel(self.build_dir / art["update"], interpreter, threads, resolver)
        self._check_artifact_shapes(art["update"])
        self.model.init({p.name: state[p.name] for p in self.manifest.parameters})

    def _check_artifact_shapes(self, fname: str) -> None:
        """The manifest's batch, input shape and state layout must be the flatbuffer's own signatures'."""
        want = {
            ("step", "x"): (self.batch, *self.spec.input_shape),
            ("step", "y"): (self.batch,),
            ("infer", "x"): (self.batch, *self.spec.input_shape),
        }
        if "init" in self.model.signatures:
            want.update({("init", p.name): p.shape for p in self.manifest.parameters})
        for (sig, name), shape in want.items():
            try:
                have = self.model.input_shape(sig, name)
            except KeyError:
                raise CompileError(
                    f"{self.build_dir / 'manifest.json'} does not match {fname}: its {sig} "
                    f"signature has no input '{name}': re-run 'edgesp compile'"
                ) from None
            if have != shape and not (shape == () and have in ((1,), ())):  # scalars may be stored as [1]
                raise CompileError(
                    f"{self.build_dir / 'manifest.json'} does not match {fname}: {sig}() input "
                    f"'{name}' is {list(have)} there, the manifest implies {list(shape)} (edited?): "
                    "re-run 'edgesp compile'"
                )

    def check_batch(self, x: np.ndarray) -> None:
        if x.shape[0] != self.batch:
            raise DataError(
                f"the build was compiled for batch {self.batch}, got {x.shape[0]}: "
                "recompile with --batch or keep the batch"
            )

    def step(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> dict[str, float]:
        """One SP update inside the interpreter; returns the per-layer local losses."""
        self.check_batch(x)
        out = self.model.step(np.asarray(x, np.float32), y, self.lr if lr is None else lr)
        return {k: float(v) for k, v in out.items()}  # non-finite losses: firmware_sim.learning stops the run

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits for any number of samples; the last chunk is zero-padded to the static batch."""
        out = []
        for i in range(0, len(x), self.batch):
            chunk = np.asarray(x[i : i + self.batch], np.float32)
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), np.float32)])
            out.append(self.model.infer(chunk)[:n])
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((np.argmax(self.predict(x), axis=1) == y).mean()) if len(x) else 0.0

    def weights(self) -> dict[str, np.ndarray]:
        """Every state variable (parameters and optimizer state), read with the ``get`` signature."""
        return self.model.get()

    def load_parameters(self, params: dict[str, np.ndarray]) -> None:
        """Write model parameters into the interpreter's variables (optimizer state kept; a cached target stream's
        class tables recomputed for the new parameters)."""
        state = {**self.weights(), **checked_parameters(self.manifest, params)}
        names = set(self.manifest.parameter_names())
        fresh = {k: v for k, v in state.items() if k in names}
        self.model.init({**state, **refreshed_target_cache(self.manifest, self.spec, fresh)})

    def parameters(self) -> dict[str, np.ndarray]:
        """The model parameters only (no optimizer state)."""
        names = set(self.manifest.parameter_names())
        return {k: v for k, v in self.weights().items() if k in names}


# --------------------------------------------------------------------------- simulate
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
    **options: Any,
) -> dict[str, Any]:
    """Stream ``steps`` shuffled batches through ``step`` (the shared loop of
    :func:`firmware_sim.onnx_device.run_learning`: test accuracy with ``infer`` before, along and after;
    samples/s counts ``step`` calls only; ``continual`` feeds the classes in stages of two)."""
    from firmware_sim.learning import run_learning

    if steps < 1:
        raise DataError("steps must be >= 1")
    device = TFLiteDevice(
        build_dir,
        options.get("interpreter", DEFAULT_INTERPRETER),
        options.get("resolver", "auto"),
        options.get("threads"),
    )
    if batch is not None and batch != device.batch:
        raise DataError(f"the build was compiled for batch {device.batch}, not {batch}: recompile with --batch {batch}")
    res = run_learning(
        device,
        device.spec,
        dataset,
        steps,
        device.batch,
        seed,
        out_png,
        progress,
        continual,
        lr,
        runtime=f"tflite ({device.model.name})",
        save_state=options.get("save_state"),
    )
    res.update(
        runtime="tflite", interpreter=device.model.name, resolver=options.get("resolver", "auto"), build=str(build_dir)
    )
    return res


# --------------------------------------------------------------------------- memory
def _measure_here(kind: str, build_dir: str, interpreter: str, resolver: str, calls: int = 3) -> dict[str, Any]:
    """Runs in the child process. ``inference``/``update``: peak RSS increase of creating the interpreter,
    ``init`` and ``calls`` calls (+ the steady-state increase of one more call after that); ``bp``: the
    torch-autograd BP step of :func:`firmware_sim.memory.bp_training_memory` on the same network."""
    from firmware_sim.memory import bp_training_memory, peak_rss_increase

    manifest = Manifest.read(build_dir)
    b = manifest.batch
    spec = manifest.model_spec()
    if kind == "bp":
        with np.load(Path(build_dir) / manifest.artifacts["state"], allow_pickle=False) as z:
            params = {k: z[k] for k in spec.param_shapes() if k in z.files}
        from firmware_sim.memory import release_freed_heap

        # freed heap returned to the OS first, as in firmware_sim.rss_probe: else the step reuses pages freed by
        # the warm-up and the peak RSS increase reads 0 (what profile reported before)
        return bp_training_memory(spec, params, b, before=release_freed_heap)
    import importlib

    from firmware_sim.tflite_runtime import INTERPRETERS

    importlib.import_module(INTERPRETERS[interpreter])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, b).astype(np.int32)
    holder: dict[str, Any] = {}

    def call() -> None:
        if kind == "inference":
            holder["dev"].model.infer(x)
        else:
            holder["dev"].step(x, y)

    def cold() -> None:
        holder["dev"] = TFLiteDevice(build_dir, interpreter, resolver, 1)
        for _ in range(calls):
            call()

    total, _ = peak_rss_increase(cold)
    steady, _ = peak_rss_increase(call)
    return {"measured_peak_bytes": int(total), "steady_call_rss_increase_bytes": int(steady)}


def _measure(kind: str, build_dir: Path, interpreter: str, resolver: str) -> dict[str, Any]:
    """Run :func:`_measure_here` in a fresh interpreter process (so no earlier allocation hides a peak)."""
    from firmware_sim import module_command  # this installation's module, never one of the current directory

    cmd = module_command("firmware_sim.tflite_device", kind, str(Path(build_dir).resolve()), interpreter, resolver)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompileError(f"memory measurement '{kind}' failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def profile(build_dir: Path, batch: int | None = None, **options: Any) -> dict[str, Any]:
    """Measured (fresh process, peak RSS increase) and planned (flatbuffer tensors + lifetimes) memory of
    inference and of the update step, plus a torch-autograd BP step of the same network and batch."""
    build_dir = Path(build_dir)
    interpreter, resolver = options.get("interpreter", DEFAULT_INTERPRETER), options.get("resolver", "auto")
    dev = TFLiteDevice(build_dir, interpreter, resolver)
    if batch is not None and batch != dev.batch:
        raise DataError(f"the build was compiled for batch {dev.batch}, not {batch}: recompile with --batch {batch}")
    details = dev.manifest.planned_memory.details  # the flatbuffer plan of each signature
    plan = {
        (k, f): details.get(k, {}).get(f)
        for k in ("inference", "update_step")
        for f in ("planned_peak_bytes", "activations_peak_bytes", "variables_bytes")
    }
    result: dict[str, Any] = {
        "runtime": "tflite",
        "interpreter": interpreter,
        "resolver": resolver,
        "build": str(build_dir),
        "batch": dev.batch,
        "state_bytes": sum(p.nbytes for p in dev.manifest.parameters),
    }
    for key, kind in (("inference", "inference"), ("update_step", "update")):
        m = _measure(kind, build_dir, interpreter, resolver)
        result[key] = {
            **m,
            "planned_peak_bytes": plan[key, "planned_peak_bytes"],
            "planned_activation_bytes": plan[key, "activations_peak_bytes"],
            "planned_variable_bytes": plan[key, "variables_bytes"],
        }
    result["bp_baseline"] = _measure("bp", build_dir, interpreter, resolver)
    result["definitions"] = {
        "measured_peak_bytes": "peak RSS (VmHWM) above RSS before creating the interpreter, through init and "
        "3 calls (model, arena, variables, runtime overhead); fresh process",
        "steady_call_rss_increase_bytes": "peak RSS increase of one more call after those",
        "planned_peak_bytes": "flatbuffer plan: variables + constants + max live tensors over the op order",
        "bp_baseline.measured_peak_bytes": "torch autograd BP step: peak RSS increase of a steady-state step",
    }
    return result


# --------------------------------------------------------------------------- benchmark
def bench_step(
    build_dir: str | Path,
    steps: int = 200,
    interpreter: str = DEFAULT_INTERPRETER,
    resolver: str = "auto",
    warmup: int = 10,
) -> dict[str, Any]:
    """Update-step throughput in this process (samples/s over ``steps`` calls after ``warmup``, 1 thread;
    also per CPU-second of this process, which a loaded machine distorts less) and the update step's peak
    RSS increase (fresh process, see :func:`profile`)."""
    dev = TFLiteDevice(build_dir, interpreter, resolver, 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((dev.batch, *dev.spec.input_shape)).astype(np.float32)
    y = rng.integers(0, dev.spec.num_classes, dev.batch).astype(np.int32)
    for _ in range(warmup):
        dev.model.step(x, y, dev.lr)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        dev.model.step(x, y, dev.lr)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = _measure("update", Path(build_dir), interpreter, resolver)
    return {
        "samples_per_second": steps * dev.batch / dt,
        "steps_per_second": steps / dt,
        "samples_per_cpu_second": steps * dev.batch / max(cpu, 1e-9),
        "peak_rss_bytes": mem["measured_peak_bytes"],
        "planned_peak_bytes": dev.manifest.planned_memory.update_step_peak_bytes,
    }


DEVICE = TFLiteDevice


if __name__ == "__main__":  # child process of _measure: <kind> <build_dir> <interpreter> <resolver>
    print(json.dumps(_measure_here(*sys.argv[1:5])))
