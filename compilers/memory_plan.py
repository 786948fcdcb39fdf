"""Static memory plan of an ONNX graph with fixed shapes: a liveness pass over the topological order.

Graph inputs (data, parameters, optimizer state) and graph outputs (the new state, written into
caller-owned buffers: the second half of a double buffer) are resident; every other tensor lives from the
node that produces it to its last consumer. Constant
initializers that are not graph inputs count as resident weights. Sizes in bytes.
``peak_bytes`` = max over nodes of (resident + live intermediates); ``peak_activation_bytes`` is the
intermediate part alone, ``largest_node_bytes`` the largest single node's inputs+outputs working set.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import shape_inference

_ITEMSIZE = {
    onnx.TensorProto.FLOAT: 4,
    onnx.TensorProto.INT32: 4,
    onnx.TensorProto.INT64: 8,
    onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.DOUBLE: 8,
    onnx.TensorProto.FLOAT16: 2,
}


def _sizes(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    sizes: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        if any(d <= 0 for d in dims):
            continue
        sizes[vi.name] = math.prod(dims) * _ITEMSIZE.get(t.elem_type, 4)
    for init in model.graph.initializer:
        sizes[init.name] = int(np.prod(init.dims)) * _ITEMSIZE.get(init.data_type, 4)
    return sizes


def plan(model: onnx.ModelProto) -> dict[str, int]:
    sizes = _sizes(model)
    graph = model.graph
    input_names = {i.name for i in graph.input}
    output_names = {o.name for o in graph.output}
    resident = sum(sizes.get(n, 0) for n in input_names | output_names)
    resident += sum(sizes.get(i.name, 0) for i in graph.initializer if i.name not in input_names)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for i in node.input:
            last_use[i] = idx
    end = len(graph.node)
    for o in graph.output:
        last_use[o.name] = end
    live: dict[str, int] = {}
    peak_act = 0
    largest_node = 0
    for idx, node in enumerate(graph.node):
        for o in node.output:
            if o and o not in input_names and o not in output_names:
                live[o] = sizes.get(o, 0)
        peak_act = max(peak_act, sum(live.values()))
        work = sum(sizes.get(n, 0) for n in list(node.input) + list(node.output) if n)
        largest_node = max(largest_node, work)
        for name in [n for n in live if last_use.get(n, idx) <= idx]:
            del live[name]
    return {
        "resident_bytes": int(resident),
        "peak_activation_bytes": int(peak_act),
        "peak_bytes": int(resident + peak_act),
        "largest_node_bytes": int(largest_node),
    }
