"""Emit :mod:`compilers.ir` programs as one TFLite flatbuffer with resource variables and signatures.

Every IR primitive becomes TFLite builtin ops (float32 kernels):

==============================  =========================================================
matmul(a, b)                    FULLY_CONNECTED(a, W) when b = transpose(W) (y = a·Wᵀ, no copy
                                of W); else BATCH_MATMUL (adj_x when a = transpose(A))
add/sub/mul/div                 ADD/SUB/MUL/DIV (numpy broadcasting)
relu/leaky_relu/tanh/exp/log/sqrt  RELU/LEAKY_RELU/TANH/EXP/LOG/SQRT
greater/equal                   GREATER/EQUAL (bool) + CAST → float32 {0, 1}
transpose/reshape/broadcast_to  TRANSPOSE/RESHAPE/BROADCAST_TO (int32 constant perm/shape)
reduce_sum/mean/max             SUM/MEAN/REDUCE_MAX (int32 constant axes, keep_dims)
softmax/log_softmax             SOFTMAX (beta 1)/LOG_SOFTMAX over the last axis
onehot(y)                       ONE_HOT(y, depth, 1.0, 0.0), axis −1
gather(a, idx)                  GATHER (constant int32 indices, negatives wrapped)
pad                             PAD (zero, int32 constant paddings)
==============================  =========================================================

States live in resource variables shared by all subgraphs of the model (VAR_HANDLE with
``shared_name`` = state name): READ_VARIABLE at the top of a subgraph, ASSIGN_VARIABLE of the new value
after the last op. :class:`ModelWriter` builds subgraphs for the signatures ``init(states…)``,
``step(inputs…) → outputs``, ``get() → states`` and ``infer(inputs…) → outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np

from compilers.ir import Op, Program
from compilers.tflite.schema import load_schema
from edgesp.errors import CompileError

S = load_schema()
BO = S.BuiltinOperator
OPT = S.BuiltinOptions
TT = S.TensorType
DTYPES = {"float32": TT.FLOAT32, "int32": TT.INT32, "bool": TT.BOOL, "resource": TT.RESOURCE}
NP_DTYPES = {"float32": np.float32, "int32": np.int32}
FILE_IDENTIFIER = b"TFL3"

_ELEMENTWISE = {"relu": BO.RELU, "tanh": BO.TANH, "exp": BO.EXP, "log": BO.LOG, "sqrt": BO.SQRT}
_ARITH = {"add": (BO.ADD, OPT.AddOptions, S.AddOptionsT), "sub": (BO.SUB, OPT.SubOptions, S.SubOptionsT),
          "mul": (BO.MUL, OPT.MulOptions, S.MulOptionsT), "div": (BO.DIV, OPT.DivOptions, S.DivOptionsT)}
_REDUCE = {"reduce_sum": BO.SUM, "reduce_mean": BO.MEAN, "reduce_max": BO.REDUCE_MAX}
# minimum registered kernel versions for the float32 paths used here (BROADCAST_TO starts at 2)
_VERSION = {BO.BROADCAST_TO: 2}


@dataclass
class _Subgraph:
    name: str
    tensors: list[Any] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    operators: list[Any] = field(default_factory=list)
    inputs: list[tuple[str, int]] = field(default_factory=list)   # (signature name, tensor index)
    outputs: list[tuple[str, int]] = field(default_factory=list)


class ModelWriter:
    """Accumulates subgraphs, operator codes and constant buffers; :meth:`finish` returns the bytes."""

    def __init__(self, description: str = "edgesp") -> None:
        self.description = description
        self.buffers: list[Any] = [S.BufferT()]  # buffer 0: the empty sentinel for non-constant tensors
        self.opcodes: dict[int, int] = {}
        self.codes: list[Any] = []
        self.subgraphs: list[_Subgraph] = []
        self._const_buffers: dict[tuple[str, tuple[int, ...], bytes], int] = {}

    # ------------------------------------------------------------------ low level
    def _opcode(self, code: int) -> int:
        if code not in self.opcodes:
            oc = S.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = _VERSION.get(code, 1)
            self.opcodes[code] = len(self.codes)
            self.codes.append(oc)
        return self.opcodes[code]

    def _buffer(self, arr: np.ndarray) -> int:
        data = np.ascontiguousarray(arr).tobytes()
        key = (str(arr.dtype), tuple(arr.shape), data)
        if key not in self._const_buffers:
            b = S.BufferT()
            b.data = np.frombuffer(data, np.uint8) if data else None
            self._const_buffers[key] = len(self.buffers)
            self.buffers.append(b)
        return self._const_buffers[key]

    @staticmethod
    def _tensor(g: _Subgraph, name: str, shape: tuple[int, ...], dtype: str, buffer: int = 0) -> int:
        if name in g.index:
            raise CompileError(f"tensor {name} defined twice in subgraph {g.name}")
        t = S.TensorT()
        t.name = name
        t.shape = np.asarray(shape, np.int32)
        t.type = DTYPES[dtype]
        t.buffer = buffer
        t.hasRank = True
        g.index[name] = len(g.tensors)
        g.tensors.append(t)
        return g.index[name]

    def _const(self, g: _Subgraph, arr: np.ndarray, name: str) -> int:
        arr = np.asarray(arr)
        dtype = "int32" if arr.dtype.kind in "iu" else "float32"
        arr = arr.astype(NP_DTYPES[dtype])
        if name in g.index:
            return g.index[name]
        return self._tensor(g, name, tuple(arr.shape), dtype, self._buffer(arr))

    def _op(self, g: _Subgraph, code: int, inputs: list[int], outputs: list[int], opt_type: int = 0,
            opt: Any = None) -> None:
        o = S.OperatorT()
        o.opcodeIndex = self._opcode(code)
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        o.builtinOptionsType = opt_type
        o.builtinOptions = opt
        g.operators.append(o)

    def _var_handle(self, g: _Subgraph, state: str) -> int:
        key = f"{state}/handle"
        if key in g.index:
            return g.index[key]
        h = self._tensor(g, key, (), "resource")
        opt = S.VarHandleOptionsT()
        opt.container = ""
        opt.sharedName = state
        self._op(g, BO.VAR_HANDLE, [], [h], OPT.VarHandleOptions, opt)
        return h

    def _read(self, g: _Subgraph, state: str, shape: tuple[int, ...], name: str | None = None) -> int:
        h = self._var_handle(g, state)
        t = self._tensor(g, name or state, shape, "float32")
        self._op(g, BO.READ_VARIABLE, [h], [t], OPT.ReadVariableOptions, S.ReadVariableOptionsT())
        return t

    def _assign(self, g: _Subgraph, state: str, value: int) -> None:
        h = self._var_handle(g, state)
        self._op(g, BO.ASSIGN_VARIABLE, [h, value], [], OPT.AssignVariableOptions, S.AssignVariableOptionsT())

    def _new(self, name: str) -> _Subgraph:
        if any(s.name == name for s in self.subgraphs):
            raise CompileError(f"signature {name} defined twice")
        g = _Subgraph(name)
        self.subgraphs.append(g)
        return g

    # ------------------------------------------------------------------ signatures
    def add_init(self, states: list[tuple[str, tuple[int, ...]]], name: str = "init") -> None:
        """``init(state…)``: assign each input to its variable. Outputs nothing."""
        g = self._new(name)
        for s, shape in states:
            t = self._tensor(g, s, shape, "float32")
            g.inputs.append((s, t))
            self._assign(g, s, t)

    def add_get(self, states: list[tuple[str, tuple[int, ...]]], name: str = "get") -> None:
        """``get() → state…``: read every variable."""
        g = self._new(name)
        for s, shape in states:
            g.outputs.append((s, self._read(g, s, shape)))

    def add_program(self, program: Program, name: str, assign: bool = True) -> None:
        """A subgraph computing ``program``: inputs → outputs; states are read from their variables and,
        when ``assign``, the ``state_updates`` are written back after every other op."""
        g = self._new(name)
        needed = _live_values(program, assign)
        for v in program.inputs:
            t = self._tensor(g, v.name, v.shape, v.dtype)
            g.inputs.append((v.name, t))
        for s in program.states:
            if s.value.name in needed:
                self._read(g, s.value.name, s.value.shape)
        for cname, arr in program.consts.items():
            if cname in needed:
                self._const(g, arr, cname)
        fusable = _fusable_transposes(program, needed)
        for op in program.ops:
            if op.output in needed and op.output not in fusable:
                self._emit(g, program, op, fusable)
        for oname, v in program.outputs.items():
            g.outputs.append((oname, self._as_output(g, program, v, oname)))
        if assign:
            for s, v in program.state_updates.items():
                if v != s:
                    self._assign(g, s, g.index[v])

    def _as_output(self, g: _Subgraph, program: Program, v: str, oname: str) -> int:
        """A subgraph output must be a computed tensor; copy inputs/consts/states through a RESHAPE."""
        idx = g.index[v]
        if any(op.output == v for op in program.ops) and all(idx != o for _, o in g.outputs):
            return idx
        shape = program.values[v].shape
        out = self._tensor(g, f"{oname}/out", shape, program.values[v].dtype)
        new_shape = self._const(g, np.asarray(shape, np.int32), f"{oname}/out/shape")
        self._op(g, BO.RESHAPE, [idx, new_shape], [out], OPT.ReshapeOptions, S.ReshapeOptionsT())
        return out

    # ------------------------------------------------------------------ primitives
    def _emit(self, g: _Subgraph, p: Program, op: Op, fusable: dict[str, str]) -> None:
        k = op.kind
        ins = [g.index[i] for i in op.inputs if i not in fusable]
        val = p.values[op.output]
        out_name = op.output

        def out(dtype: str | None = None, name: str = out_name, shape: tuple[int, ...] = val.shape) -> int:
            return self._tensor(g, name, shape, dtype or val.dtype)

        def ci(values: Any, suffix: str) -> int:
            return self._const(g, np.asarray(values, np.int32).reshape(-1), f"{out_name}/{suffix}")

        if k == "matmul":
            a, b = op.inputs
            if b in fusable and a not in fusable:  # a · Wᵀ → FULLY_CONNECTED(a, W), W: (N, K)
                opt = S.FullyConnectedOptionsT()
                opt.keepNumDims = False
                self._op(g, BO.FULLY_CONNECTED, [g.index[a], g.index[fusable[b]], -1], [out()],
                         OPT.FullyConnectedOptions, opt)
                return
            opt = S.BatchMatMulOptionsT()
            ia = g.index[fusable[a]] if a in fusable else g.index[a]
            ib = g.index[fusable[b]] if b in fusable else g.index[b]
            opt.adjX, opt.adjY = a in fusable, b in fusable
            self._op(g, BO.BATCH_MATMUL, [ia, ib], [out()], OPT.BatchMatMulOptions, opt)
        elif k in _ARITH:
            code, ot, cls = _ARITH[k]
            self._op(g, code, ins, [out()], ot, cls())
        elif k in _ELEMENTWISE:
            self._op(g, _ELEMENTWISE[k], ins, [out()])
        elif k == "leaky_relu":
            opt = S.LeakyReluOptionsT()
            opt.alpha = float(op.attr("alpha"))
            self._op(g, BO.LEAKY_RELU, ins, [out()], OPT.LeakyReluOptions, opt)
        elif k in ("greater", "equal"):
            mask = out("bool", name=f"{out_name}/bool")
            if k == "greater":
                self._op(g, BO.GREATER, ins, [mask], OPT.GreaterOptions, S.GreaterOptionsT())
            else:
                self._op(g, BO.EQUAL, ins, [mask], OPT.EqualOptions, S.EqualOptionsT())
            opt = S.CastOptionsT()
            opt.inDataType, opt.outDataType = TT.BOOL, TT.FLOAT32
            self._op(g, BO.CAST, [mask], [out()], OPT.CastOptions, opt)
        elif k == "softmax":
            opt = S.SoftmaxOptionsT()
            opt.beta = 1.0
            self._op(g, BO.SOFTMAX, ins, [out()], OPT.SoftmaxOptions, opt)
        elif k == "log_softmax":
            self._op(g, BO.LOG_SOFTMAX, ins, [out()], OPT.LogSoftmaxOptions, S.LogSoftmaxOptionsT())
        elif k == "transpose":
            self._op(g, BO.TRANSPOSE, [ins[0], ci(op.attr("perm"), "perm")], [out()], OPT.TransposeOptions,
                     S.TransposeOptionsT())
        elif k == "reshape":
            opt = S.ReshapeOptionsT()
            opt.newShape = np.asarray(val.shape, np.int32)
            self._op(g, BO.RESHAPE, [ins[0], ci(val.shape, "shape")], [out()], OPT.ReshapeOptions, opt)
        elif k == "broadcast_to":
            self._op(g, BO.BROADCAST_TO, [ins[0], ci(val.shape, "shape")], [out()], OPT.BroadcastToOptions,
                     S.BroadcastToOptionsT())
        elif k in _REDUCE:
            opt = S.ReducerOptionsT()
            opt.keepDims = bool(op.attr("keepdims", True))
            self._op(g, _REDUCE[k], [ins[0], ci(op.attr("axes"), "axes")], [out()], OPT.ReducerOptions, opt)
        elif k == "onehot":
            opt = S.OneHotOptionsT()
            opt.axis = -1
            depth = self._const(g, np.asarray(op.attr("depth"), np.int32), f"{out_name}/depth")
            on = self._const(g, np.asarray(1.0, np.float32), f"{out_name}/on")
            off = self._const(g, np.asarray(0.0, np.float32), f"{out_name}/off")
            self._op(g, BO.ONE_HOT, [ins[0], depth, on, off], [out()], OPT.OneHotOptions, opt)
        elif k == "gather":
            axis = int(op.attr("axis"))
            idx_name = op.inputs[1]
            if idx_name not in p.consts:
                raise CompileError(f"gather {out_name}: indices must be a constant, got {idx_name}")
            n = p.values[op.inputs[0]].shape[axis]
            idx = np.asarray(p.consts[idx_name], np.int64)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise CompileError(f"gather {out_name}: index out of range for axis of size {n}")
            wrapped = self._const(g, np.mod(idx, n).astype(np.int32), f"{out_name}/indices")
            opt = S.GatherOptionsT()
            opt.axis, opt.batchDims = axis, 0
            self._op(g, BO.GATHER, [ins[0], wrapped], [out()], OPT.GatherOptions, opt)
        elif k == "pad":
            pads = self._const(g, np.asarray(op.attr("pads"), np.int32).reshape(-1, 2), f"{out_name}/pads")
            self._op(g, BO.PAD, [ins[0], pads], [out()], OPT.PadOptions, S.PadOptionsT())
        else:  # pragma: no cover - KINDS is closed
            raise CompileError(f"the TFLite emitter has no lowering for IR op {k!r}")

    # ------------------------------------------------------------------ output
    def finish(self) -> bytes:
        model = S.ModelT()
        model.version = 3
        model.description = self.description
        model.operatorCodes = self.codes
        model.buffers = self.buffers
        model.subgraphs, model.signatureDefs = [], []
        for i, g in enumerate(self.subgraphs):
            sg = S.SubGraphT()
            sg.name = g.name
            sg.tensors = g.tensors
            sg.inputs = np.asarray([t for _, t in g.inputs], np.int32)
            sg.outputs = np.asarray([t for _, t in g.outputs], np.int32)
            sg.operators = g.operators
            model.subgraphs.append(sg)
            sd = S.SignatureDefT()
            sd.signatureKey = g.name
            sd.subgraphIndex = i
            sd.inputs = [_tensor_map(n, t) for n, t in g.inputs]
            sd.outputs = [_tensor_map(n, t) for n, t in g.outputs]
            model.signatureDefs.append(sd)
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def _tensor_map(name: str, index: int) -> Any:
    m = S.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m


def _live_values(program: Program, assign: bool) -> set[str]:
    """Names the outputs (and, when ``assign``, the state updates) depend on: dead ops are not emitted."""
    producer = {op.output: op for op in program.ops}
    roots = list(program.outputs.values()) + (list(program.state_updates.values()) if assign else [])
    seen: set[str] = set()
    stack = roots
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in producer:
            stack.extend(producer[v].inputs)
    return seen


def _fusable_transposes(program: Program, needed: set[str]) -> dict[str, str]:
    """2-D transposes consumed only by matmuls (and not outputs): output name → transposed source.
    Those are folded into FULLY_CONNECTED (b = Wᵀ) or BATCH_MATMUL's adj_x/adj_y instead of copied."""
    consumers: dict[str, list[tuple[Op, int]]] = {}
    for op in program.ops:
        if op.output in needed:
            for pos, i in enumerate(op.inputs):
                consumers.setdefault(i, []).append((op, pos))
    outs = set(program.outputs.values()) | set(program.state_updates.values())
    fusable = {}
    for op in program.ops:
        if (op.kind == "transpose" and op.output in needed and op.output not in outs
                and len(program.values[op.inputs[0]].shape) == 2 and tuple(op.attr("perm")) == (1, 0)):
            uses = consumers.get(op.output, [])
            if uses and all(u.kind == "matmul" and u.inputs[0] != u.inputs[1] for u, _ in uses):
                fusable[op.output] = op.inputs[0]
    return fusable
