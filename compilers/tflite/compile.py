"""``compile_model`` for the TFLite runtime: one ``model.tflite`` holding four signatures.

* ``init(<state>…)``  assigns every resource variable (parameters + optimizer state) — feed ``state.npz``;
* ``step(x, y, lr) → loss_0 … loss_{N+1}``  one SP update step (reads the variables, writes new values);
* ``get() → <state>…``  reads every variable back;
* ``infer(x) → logits``  the forward pass from the parameter variables.

The weights stay inside the interpreter between calls. Shapes are static: ``x`` is (batch, …) for both
``step`` and ``infer`` (a partial last batch is padded by the caller). Also writes ``state.npz`` (the
initial states, float32, no pickles) and ``manifest.json``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from compilers.ir import Program
from compilers.tflite.emit import ModelWriter
from compilers.tflite.plan import plan_model
from edgesp.atomic import atomic_path, write_bytes, write_text
from edgesp.errors import CompileError, TargetError
from edgesp.spec import ModelSpec
from targets import Target

MODEL_FILE, STATE_FILE = "model.tflite", "state.npz"


def _forward_only_check(program: Program) -> bool:
    """Run the lead's forward-only checker when it exists; returns whether it ran."""
    try:
        mod = importlib.import_module("compilers.forward_only")
    except ImportError:
        return False
    mod.check_program(program)
    return True


def build_model(update: Program, inference: Program) -> bytes:
    """The flatbuffer with the ``init``/``step``/``get``/``infer`` signatures."""
    states = [(s.value.name, s.value.shape) for s in update.states]
    known = dict(states)
    for s in inference.states:
        if known.get(s.value.name) != s.value.shape:
            raise CompileError(f"inference state {s.value.name} {s.value.shape} is not a state of the "
                               "update step")
    w = ModelWriter(description=f"edgesp SP on-device learning: {update.name}")
    w.add_init(states)
    w.add_program(update, "step", assign=True)
    w.add_get(states)
    w.add_program(inference, "infer", assign=False)
    return w.finish()


def lower(spec: ModelSpec, params: dict[str, np.ndarray], batch: int) -> tuple[Program, Program]:
    try:
        from compilers.lower import lower_inference, lower_update
    except ImportError as e:
        raise CompileError(f"the IR lowering (compilers.lower) is unavailable ({e})") from None
    return lower_update(spec, params, batch), lower_inference(spec, params, batch)


def compile_model(spec: ModelSpec, params: dict[str, np.ndarray], target: Target, out_dir: Path,
                  batch: int) -> dict[str, Any]:
    if target.runtime != "tflite":
        raise TargetError(f"target {target.name!r} runs {target.runtime}, not tflite: pick a tflite target "
                          "such as edge-cpu-tflite")
    if target.precision != "fp32":
        raise TargetError(f"target {target.name!r} asks for {target.precision}; the TFLite backend emits "
                          "fp32 only")
    update, inference = lower(spec, params, batch)
    checked = _forward_only_check(update)
    data = build_model(update, inference)
    plan = plan_model(data)
    peak = max(plan["step"]["planned_peak_bytes"], plan["infer"]["planned_peak_bytes"])
    if target.memory_budget_bytes is not None and peak > target.memory_budget_bytes:
        raise TargetError(f"the model needs {peak} bytes of RAM (update step, planned) but target "
                          f"{target.name!r} "
                          f"has {target.memory_budget_bytes}: use a smaller model or batch")
    init = {s.value.name: np.asarray(s.init, np.float32) for s in update.states}
    storage = len(data) + sum(a.nbytes for a in init.values())
    if target.storage_budget_bytes is not None and storage > target.storage_budget_bytes:
        raise TargetError(f"the artifacts take {storage} bytes but target {target.name!r} has "
                          f"{target.storage_budget_bytes} bytes of storage: use a smaller model")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / MODEL_FILE, data)
    with atomic_path(out_dir / STATE_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **init)
    layer = {s.value.name: s.layer for s in update.states}
    names = [n for n in spec.param_shapes() if n in params]
    parameters = [{"name": n, "layer": layer.get(n, spec.param_layer_index(n)),
                   "shape": list(np.shape(params[n])), "update_output": n} for n in names]
    manifest = {
        "target": target.name, "runtime": "tflite",
        "artifacts": {"inference": MODEL_FILE, "update": MODEL_FILE, "state": STATE_FILE,
                      "signatures": {"init": "init", "update": "step", "get": "get", "inference": "infer"}},
        "parameters": parameters,
        "states": [{"name": s.value.name, "layer": s.layer, "shape": list(s.value.shape)}
                   for s in update.states],
        "inputs": {v.name: {"shape": list(v.shape), "dtype": v.dtype} for v in update.inputs},
        "losses": list(update.outputs),
        "lr": float(spec.rule.optimizer.lr),
        "spec": spec.to_dict(), "batch": int(batch),
        "planned_memory": {"inference": plan["infer"], "update": plan["step"],
                           "model_file_bytes": len(data), "state_file_bytes": int(storage - len(data))},
        "forward_only_checked": checked,
        "target_spec": target.to_dict(),
    }
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2))
    return manifest
