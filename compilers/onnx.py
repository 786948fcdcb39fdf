"""ONNX backend: ``compile_model`` writes ``inference.onnx``, ``update.onnx`` and ``manifest.json``.

* ``inference.onnx``: (x (B,…), parameters) → logits. The compiled parameters are also initializers of the
  same names, so the file runs alone (``InferenceSession("inference.onnx").run(None, {"x": x})``) while the
  device feeds its current weights over them.
* ``update.onnx``: (x, y int32, lr, every parameter and optimizer state) → (loss_0…loss_{N+1},
  ``<state>__new``): the whole SP step, forward-only (checked on the graph at every compile).
* ``initial_state.npz``: initial parameters and optimizer state (load with ``allow_pickle=False``).
* the fit check: planned update-step peak (weights + optimizer state + live activations) against the
  target's memory budget, artifact sizes against its storage budget.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compilers.forward_only import check_onnx, check_program
from compilers.ir import Program
from compilers.lower import lower_bp_update, lower_inference, lower_update, state_kind
from compilers.memory_plan import plan
from compilers.onnx_emit import IR_VERSION, NEW_SUFFIX, OPSET, initial_state, to_onnx
from edgesp.atomic import write_bytes
from edgesp.errors import CompileError, TargetError
from edgesp.manifest import Manifest, ParameterEntry, PlannedMemory, sha256
from edgesp.spec import ModelSpec
from targets import Target


def manifest_parameters(spec: ModelSpec, program: Program) -> list[dict[str, Any]]:
    """Forward-ordered parameter/optimizer-state layout of an update program."""
    out = []
    for s in program.states:
        name = s.value.name
        out.append(
            {
                "name": name,
                "layer": s.layer,
                "shape": list(s.value.shape),
                "kind": state_kind(name),
                "update_output": name + NEW_SUFFIX if name in program.state_updates else None,
            }
        )
    out.sort(key=lambda d: (d["layer"], d["kind"] != "parameter"))
    return out


def check_fit(target: Target, planned_peak: int, storage: int, what: str = "update step") -> None:
    if target.memory_budget_bytes is not None and planned_peak > target.memory_budget_bytes:
        raise TargetError(
            f"model does not fit {target.name}: the {what} needs {planned_peak:,} B (weights + optimizer state + "
            f"activations) but the budget is {target.memory_budget_bytes:,} B; use a smaller model or batch"
        )
    if target.storage_budget_bytes is not None and storage > target.storage_budget_bytes:
        raise TargetError(
            f"artifacts of {storage:,} B exceed {target.name}'s storage budget of "
            f"{target.storage_budget_bytes:,} B; use a smaller model"
        )


def compile_model(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    target: Target,
    out_dir: Path,
    batch: int,
    on_device_rule: str = "sigprop",
) -> Manifest:
    if target.runtime != "onnxruntime":
        raise CompileError(f"target {target.name} runs {target.runtime}, not onnxruntime")
    if target.precision != "fp32":
        raise TargetError(f"the ONNX backend emits fp32; target {target.name} asks for {target.precision}")
    bp = on_device_rule == "bp"
    update_prog = lower_bp_update(spec, params, batch) if bp else lower_update(spec, params, batch)
    if not bp:  # BP is not forward-only by construction
        check_program(update_prog)
    infer_prog = lower_inference(spec, params, batch)
    update_model = to_onnx(update_prog, doc=f"edgesp SP update step for {spec.name}")
    infer_model = to_onnx(infer_prog, doc=f"edgesp inference for {spec.name}", state_defaults=True)
    for m in (update_model, infer_model):
        try:
            onnx.checker.check_model(m, full_check=True)
        except onnx.checker.ValidationError as e:  # a compiler bug, but never write a broken artifact
            raise CompileError(f"generated ONNX graph failed the checker: {str(e).splitlines()[0]}") from None
    params_layout = manifest_parameters(spec, update_prog)
    if not bp:
        check_onnx(update_model, params_layout)

    update_bytes = update_model.SerializeToString()
    infer_bytes = infer_model.SerializeToString()
    state_bytes = _npz_bytes(initial_state(update_prog))
    update_plan, infer_plan = plan(update_model), plan(infer_model)
    check_fit(target, update_plan["peak_bytes"], len(update_bytes) + len(infer_bytes) + len(state_bytes))

    largest_layer = _largest_layer_working_set(spec, batch)
    manifest = Manifest(
        target=target.name,
        target_description=target.to_dict(),
        runtime="onnxruntime",
        batch=batch,
        on_device_rule=on_device_rule,
        sp_loss=None if bp else spec.rule.loss,
        trained_with=spec.rule.name,
        learning_rate=float(spec.rule.optimizer.lr),
        artifacts={"inference": "inference.onnx", "update": "update.onnx", "state": "initial_state.npz"},
        hashes={
            "inference.onnx": sha256(infer_bytes),
            "update.onnx": sha256(update_bytes),
            "initial_state.npz": sha256(state_bytes),
        },
        parameters=tuple(ParameterEntry(**p) for p in params_layout),
        planned_memory=PlannedMemory(
            update_step_peak_bytes=update_plan["peak_bytes"],
            inference_peak_bytes=infer_plan["peak_bytes"],
            details={
                "update_step": update_plan,
                "inference": infer_plan,
                "largest_layer_working_set_bytes": largest_layer,
            },
        ),
        spec=spec.to_dict(),
        backend={
            "opset": OPSET,
            "ir_version": IR_VERSION,
            "inputs": {"update": [v.name for v in update_prog.inputs], "inference": ["x"]},
            "outputs": {"update": list(update_prog.outputs), "inference": ["logits"]},
            "forward_only_checked": not bp,
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / "update.onnx", update_bytes)
    write_bytes(out_dir / "inference.onnx", infer_bytes)
    write_bytes(out_dir / "initial_state.npz", state_bytes)
    manifest.write(out_dir)  # last: marks a complete build
    return manifest


def export_inference(spec: ModelSpec, params: dict[str, np.ndarray], out_dir: Path, batch: int) -> dict[str, str]:
    """Write a standalone ``inference.onnx`` (x (batch,…) → logits) with ``params`` baked in as initializers
    (no parameter inputs). Returns {file name: sha256}."""
    from compilers.ir import freeze_states

    prog = freeze_states(lower_inference(spec, params, batch), params)
    model = to_onnx(prog, doc=f"edgesp inference for {spec.name} (exported)")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise CompileError(f"exported ONNX graph failed the checker: {str(e).splitlines()[0]}") from None
    data = model.SerializeToString()
    write_bytes(Path(out_dir) / "inference.onnx", data)
    return {"inference.onnx": hashlib.sha256(data).hexdigest()}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _largest_layer_working_set(spec: ModelSpec, batch: int) -> int:
    """Bytes needed to update the largest single block on its own: its input and largest activation for
    both streams (B + C rows) plus one gradient of its parameters (float32)."""
    rows = batch + spec.num_classes
    shapes = spec.shapes()
    prev = spec.block_input_shape()
    pshapes = spec.param_shapes()
    best = 0
    for i, per in enumerate(shapes[:-1]):
        act = max([math.prod(prev)] + [math.prod(s) for s in per])
        grad = sum(math.prod(s) for n, s in pshapes.items() if n.startswith(f"blocks.{i}."))
        best = max(best, 4 * (rows * (math.prod(prev) + act) + grad))
        prev = per[-1]
    return best
