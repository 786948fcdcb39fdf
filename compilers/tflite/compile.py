"""``compile_model`` for the TFLite runtime: one ``model.tflite`` holding four signatures.

* ``init(<state>…)``  assigns every resource variable (parameters + optimizer state) — feed ``state.npz``;
* ``step(x, y, lr) → loss_0 … loss_{N+1}``  one SP update step (reads the variables, writes new values);
* ``get() → <state>…``  reads every variable back;
* ``infer(x) → logits``  the forward pass from the parameter variables.

Every signature starts with CALL_ONCE of an internal subgraph that gives each variable its compiled value
(the initial parameters as constant buffers, zero optimizer state by FILL), so ``infer`` and ``step`` work
on a fresh interpreter without ``init``; ``init`` overrides them.

The weights stay inside the interpreter between calls. Shapes are static: ``x`` is (batch, …) for both
``step`` and ``infer`` (a partial last batch is padded by the caller). Also writes ``state.npz`` (the
initial states, float32, no pickles) and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from compilers.forward_only import check_program
from compilers.ir import Program
from compilers.lower import lower_bp_update, lower_inference, lower_update, state_kind
from compilers.tflite.emit import ModelWriter
from compilers.tflite.plan import plan_model
from edgesp.atomic import write_bytes
from edgesp.errors import CompileError, TargetError
from edgesp.manifest import Manifest, ParameterEntry, PlannedMemory, sha256
from edgesp.spec import ModelSpec
from targets import Target

MODEL_FILE, STATE_FILE = "model.tflite", "state.npz"


def build_model(update: Program, inference: Program) -> bytes:
    """The flatbuffer with the ``init``/``step``/``get``/``infer`` signatures."""
    states = [(s.value.name, s.value.shape) for s in update.states]
    known = dict(states)
    for s in inference.states:
        if known.get(s.value.name) != s.value.shape:
            raise CompileError(f"inference state {s.value.name} {s.value.shape} is not a state of the update step")
    w = ModelWriter(description=f"edgesp SP on-device learning: {update.name}")
    w.add_init(states)
    w.add_program(update, "step", assign=True)
    w.add_get(states)
    w.add_program(inference, "infer", assign=False)
    w.add_defaults([(s.value.name, s.init) for s in update.states])
    return w.finish()


def export_inference(spec: ModelSpec, params: dict[str, np.ndarray], out_dir: Path, batch: int) -> dict[str, str]:
    """Write a standalone ``inference.tflite`` with one signature ``infer(x (batch,…)) → logits`` and
    ``params`` as constant buffers (no variables, nothing to initialise). Returns {file name: sha256}."""
    from compilers.ir import freeze_states

    prog = freeze_states(lower_inference(spec, params, batch), params)
    w = ModelWriter(description=f"edgesp inference for {spec.name} (exported)")
    w.add_program(prog, "infer", assign=False)
    data = w.finish()
    write_bytes(Path(out_dir) / "inference.tflite", data)
    return {"inference.tflite": hashlib.sha256(data).hexdigest()}


def manifest_parameters(update: Program) -> list[dict[str, Any]]:
    """Every state (parameters, then optimizer state, per layer in forward order). ``update_output`` is
    the key of the ``get`` signature output holding the state's current value (the state's own name)."""
    out = [
        {
            "name": s.value.name,
            "layer": s.layer,
            "shape": list(s.value.shape),
            "kind": state_kind(s.value.name),
            "update_output": s.value.name,
        }
        for s in update.states
    ]
    out.sort(key=lambda d: (d["layer"], d["kind"] != "parameter"))
    return out


def compile_model(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    target: Target,
    out_dir: Path,
    batch: int,
    on_device_rule: str = "sigprop",
) -> Manifest:
    if target.runtime != "tflite":
        raise TargetError(
            f"target {target.name!r} runs {target.runtime}, not tflite: pick a tflite target such as edge-cpu-tflite"
        )
    if target.precision != "fp32":
        raise TargetError(f"target {target.name!r} asks for {target.precision}; the TFLite backend emits fp32 only")
    bp = on_device_rule == "bp"
    update = lower_bp_update(spec, params, batch) if bp else lower_update(spec, params, batch)
    if not bp:  # BP is not forward-only by construction
        check_program(update)  # raises ForwardOnlyError if any layer's update reads a later layer
    inference = lower_inference(spec, params, batch)
    data = build_model(update, inference)
    plan = plan_model(data)
    peak = max(plan["step"]["planned_peak_bytes"], plan["infer"]["planned_peak_bytes"])
    if target.memory_budget_bytes is not None and peak > target.memory_budget_bytes:
        raise TargetError(
            f"model does not fit {target.name}: the update step needs {peak:,} B (weights + "
            f"optimizer state + activations, planned) but the budget is "
            f"{target.memory_budget_bytes:,} B; use a smaller model or batch"
        )
    buf = io.BytesIO()
    np.savez(buf, **{s.value.name: np.asarray(s.init, np.float32) for s in update.states})
    state = buf.getvalue()
    storage = len(data) + len(state)
    if target.storage_budget_bytes is not None and storage > target.storage_budget_bytes:
        raise TargetError(
            f"artifacts of {storage:,} B exceed {target.name}'s storage budget of "
            f"{target.storage_budget_bytes:,} B; use a smaller model"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / MODEL_FILE, data)
    write_bytes(out_dir / STATE_FILE, state)
    manifest = Manifest(
        target=target.name,
        target_description=target.to_dict(),
        runtime="tflite",
        batch=int(batch),
        on_device_rule=on_device_rule,
        sp_loss=None if bp else spec.rule.loss,
        trained_with=spec.rule.name,
        learning_rate=float(spec.rule.optimizer.lr),
        artifacts={"inference": MODEL_FILE, "update": MODEL_FILE, "state": STATE_FILE},
        hashes={MODEL_FILE: sha256(data), STATE_FILE: sha256(state)},
        parameters=tuple(ParameterEntry(**p) for p in manifest_parameters(update)),
        planned_memory=PlannedMemory(
            update_step_peak_bytes=plan["step"]["planned_peak_bytes"],
            inference_peak_bytes=plan["infer"]["planned_peak_bytes"],
            details={
                "update_step": plan["step"],
                "inference": plan["infer"],
                "model_file_bytes": len(data),
                "state_file_bytes": len(state),
            },
        ),
        spec=spec.to_dict(),
        backend={
            "signatures": {"init": "init", "update": "step", "get": "get", "inference": "infer"},
            "inputs": {"update": [v.name for v in update.inputs], "inference": [v.name for v in inference.inputs]},
            "outputs": {"update": list(update.outputs), "inference": list(inference.outputs)},
            "forward_only_checked": not bp,
        },
    )
    manifest.write(out_dir)  # last: marks a complete build
    return manifest
