"""Static memory plan of a TFLite flatbuffer, read back from the file's own tensors and operators.

Per signature subgraph: every non-constant, non-resource tensor of ``prod(shape) · itemsize`` bytes is
live from the op that defines it (subgraph inputs: before the first op) to its last consumer (subgraph
outputs: to the end). ``activations_peak_bytes`` = max over ops of the bytes live at that op (what an
arena planner with perfect reuse needs). Constants (buffers with data) and the resource variables the
subgraph touches (by ``shared_name``, size from their READ_VARIABLE/ASSIGN_VARIABLE tensors) are
resident for the whole call: ``planned_peak_bytes = variables + constants + activations_peak``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compilers.tflite.schema import load_schema

S = load_schema()
_ITEMSIZE = {
    S.TensorType.FLOAT32: 4,
    S.TensorType.INT32: 4,
    S.TensorType.BOOL: 1,
    S.TensorType.INT64: 8,
    S.TensorType.INT8: 1,
    S.TensorType.UINT8: 1,
    S.TensorType.FLOAT16: 2,
    S.TensorType.INT16: 2,
    S.TensorType.RESOURCE: 0,
}


def _bytes(t: Any) -> int:
    return (
        _ITEMSIZE.get(t.Type(), 4) * math.prod(int(s) for s in t.ShapeAsNumpy())
        if t.ShapeLength()
        else _ITEMSIZE.get(t.Type(), 4)
    )


def plan_model(data: bytes) -> dict[str, dict[str, int]]:
    """Planned memory per signature key: variables, constants, activation peak and their sum (bytes)."""
    model = S.Model.GetRootAs(data, 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    code_of = [max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) for c in codes]
    has_data = [model.Buffers(i).DataLength() > 0 for i in range(model.BuffersLength())]
    names = {}
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        names[sd.SubgraphIndex()] = sd.SignatureKey().decode()
    out: dict[str, dict[str, int]] = {}
    for gi in range(model.SubgraphsLength()):
        g = model.Subgraphs(gi)
        n_ops = g.OperatorsLength()
        tensors = [g.Tensors(i) for i in range(g.TensorsLength())]
        const = [has_data[t.Buffer()] for t in tensors]
        start = {int(i): -1 for i in g.InputsAsNumpy()} if g.InputsLength() else {}
        end: dict[int, int] = {}
        variables: dict[str, int] = {}
        handle_name: dict[int, str] = {}
        for oi in range(n_ops):
            op = g.Operators(oi)
            ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
            code = code_of[op.OpcodeIndex()]
            if code == S.BuiltinOperator.VAR_HANDLE:
                opt = S.VarHandleOptions()
                table = op.BuiltinOptions()
                opt.Init(table.Bytes, table.Pos)
                handle_name[outs[0]] = opt.SharedName().decode()
            elif code == S.BuiltinOperator.READ_VARIABLE:
                variables[handle_name[ins[0]]] = _bytes(tensors[outs[0]])
            elif code == S.BuiltinOperator.ASSIGN_VARIABLE:
                variables[handle_name[ins[0]]] = _bytes(tensors[ins[1]])
            for t in ins:
                if t >= 0:
                    end[t] = oi
            for t in outs:
                start.setdefault(t, oi)
        for t in g.OutputsAsNumpy() if g.OutputsLength() else []:
            end[int(t)] = n_ops
        live = np.zeros(max(n_ops, 1) + 1, np.int64)
        for t, s in start.items():
            if const[t] or tensors[t].Type() == S.TensorType.RESOURCE:
                continue
            e = end.get(t, s)
            live[max(s, 0) : max(e, s, 0) + 1] += _bytes(tensors[t])
        consts = sum(_bytes(t) for t, c in zip(tensors, const, strict=True) if c)
        act = int(live.max())
        var = int(sum(variables.values()))
        out[names.get(gi, f"subgraph{gi}")] = {
            "variables_bytes": var,
            "constants_bytes": int(consts),
            "activations_peak_bytes": act,
            "planned_peak_bytes": var + int(consts) + act,
            "operators": n_ops,
            "tensors": len(tensors),
        }
    return out
