"""The forward-only property, checked structurally on a compiled update step.

Every state (parameter or optimizer state) belongs to a layer k in forward order (0 = signal generator,
i+1 = block i, N+1 = head). The update step is *forward-only* iff, for every state of layer k, the value
that becomes its new value depends (transitively, through the graph's edges) on no state of a layer
> k — and so on no later layer's weights nor on any later layer's output, since every later output is
computed from a later layer's weights. Likewise each per-layer loss ``loss_k`` may only depend on layers ≤ k.
Checked on the IR program and, independently, on the emitted ONNX graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from edgesp.errors import CompileError

if TYPE_CHECKING:
    import onnx

    from compilers.ir import Program


class ForwardOnlyError(CompileError):
    """A layer's update depends on a later layer."""


def _closure(producers: Mapping[str, Iterable[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        stack.extend(producers.get(v, ()))
    return seen


def check_dependencies(
    producers: Mapping[str, Iterable[str]],
    state_layer: Mapping[str, int],
    updates: Mapping[str, str],
    losses: Mapping[int, str] | None = None,
) -> None:
    """``producers``: value → the values its producing node reads; ``state_layer``: state → layer;
    ``updates``: state → value holding its new value; ``losses``: layer → loss value. Raises
    :class:`ForwardOnlyError` listing every violation."""
    problems: list[str] = []
    checks = [(s, state_layer[s], v) for s, v in updates.items()]
    checks += [(f"loss_{k}", k, v) for k, v in (losses or {}).items()]
    for what, layer, value in checks:
        deps = _closure(producers, value)
        later = sorted(d for d in deps if d in state_layer and state_layer[d] > layer)
        if later:
            problems.append(f"{what} (layer {layer}) depends on later-layer state {', '.join(later[:3])}")
    if problems:
        raise ForwardOnlyError("update step is not forward-only: " + "; ".join(problems[:5]))


def check_program(program: Program) -> None:
    producers = {op.output: op.inputs for op in program.ops}
    state_layer = {s.value.name: s.layer for s in program.states}
    losses = {int(k[5:]): v for k, v in program.outputs.items() if k.startswith("loss_") and k[5:].isdigit()}
    check_dependencies(producers, state_layer, program.state_updates, losses)


def check_onnx(model: onnx.ModelProto, manifest_params: list[dict[str, Any]]) -> None:
    """Check an ONNX update-step graph using the manifest's parameter list (name, layer, update_output)."""
    producers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for out in node.output:
            producers[out] = [i for i in node.input if i]
    state_layer = {p["name"]: int(p["layer"]) for p in manifest_params}
    updates = {p["name"]: p["update_output"] for p in manifest_params if p.get("update_output")}
    outputs = {o.name for o in model.graph.output}
    missing = [v for v in updates.values() if v not in outputs]
    if missing:
        raise ForwardOnlyError(f"update outputs {missing} are not outputs of the graph")
    losses = {
        int(o.name[5:]): o.name for o in model.graph.output if o.name.startswith("loss_") and o.name[5:].isdigit()
    }
    check_dependencies(producers, state_layer, updates, losses)
