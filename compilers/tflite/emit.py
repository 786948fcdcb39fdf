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
from compilers.ops import check_table, value_inputs
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
_ARITH = {
    "add": (BO.ADD, OPT.AddOptions, S.AddOptionsT),
    "sub": (BO.SUB, OPT.SubOptions, S.SubOptionsT),
    "mul": (BO.MUL, OPT.MulOptions, S.MulOptionsT),
    "div": (BO.DIV, OPT.DivOptions, S.DivOptionsT),
}
_REDUCE = {"reduce_sum": BO.SUM, "reduce_mean": BO.MEAN, "reduce_max": BO.REDUCE_MAX}
# minimum registered kernel versions for the float32 paths used here (BROADCAST_TO starts at 2)
_VERSION = {BO.BROADCAST_TO: 2}


@dataclass
class _Subgraph:
    name: str
    tensors: list[Any] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    operators: list[Any] = field(default_factory=list)
    inputs: list[tuple[str, int]] = field(default_factory=list)  # (signature name, tensor index)
    outputs: list[tuple[str, int]] = field(default_factory=list)
    signature: bool = True  # False: an internal subgraph (run by CALL_ONCE), not a signature


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

    def _op(
        self, g: _Subgraph, code: int, inputs: list[int], outputs: list[int], opt_type: int = 0, opt: Any = None
    ) -> None:
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

    def _new(self, name: str, signature: bool = True) -> _Subgraph:
        if any(s.name == name for s in self.subgraphs):
            raise CompileError(f"signature {name} defined twice")
        g = _Subgraph(name, signature=signature)
        self.subgraphs.append(g)
        return g

    def add_defaults(self, states: list[tuple[str, np.ndarray]]) -> None:
        """Give every variable a value before any signature runs: an internal subgraph assigns each state
        its default (a constant buffer, or FILL(0) for all-zero states such as fresh optimizer moments, so
        they cost no file bytes), and every signature added so far starts with CALL_ONCE of it (TFLite runs
        it once per interpreter, before the signature's own ops). So ``infer`` and ``step`` work without a
        prior ``init``, and ``init`` still overrides the defaults. Call after adding the signatures."""
        signatures = [g for g in self.subgraphs if g.signature]
        g = self._new("defaults", signature=False)
        for name, arr in states:
            arr = np.asarray(arr, np.float32)
            if arr.any():
                value = self._const(g, arr, f"{name}/default")
            else:
                value = self._tensor(g, f"{name}/default", tuple(arr.shape), "float32")
                dims = self._const(g, np.asarray(arr.shape, np.int32).reshape(-1), f"{name}/dims")
                zero = self._const(g, np.asarray(0.0, np.float32), "zero")
                self._op(g, BO.FILL, [dims, zero], [value], OPT.FillOptions, S.FillOptionsT())
            self._assign(g, name, value)
        index = self.subgraphs.index(g)
        for sg in signatures:
            opt = S.CallOnceOptionsT()
            opt.initSubgraphIndex = index
            code = self._opcode(BO.CALL_ONCE)
            o = S.OperatorT()
            o.opcodeIndex = code
            o.inputs = np.asarray([], np.int32)
            o.outputs = np.asarray([], np.int32)
            o.builtinOptionsType = OPT.CallOnceOptions
            o.builtinOptions = opt
            sg.operators.insert(0, o)

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
        TFLITE_EMIT[op.kind](_Ctx(self, g, p, op, fusable))

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
            if not g.signature:
                continue
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
            stack.extend(value_inputs(producer[v]))
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
        if (
            op.kind == "transpose"
            and op.output in needed
            and op.output not in outs
            and len(program.values[op.inputs[0]].shape) == 2
            and tuple(op.attr("perm")) == (1, 0)
        ):
            uses = consumers.get(op.output, [])
            if uses and all(u.kind == "matmul" and u.inputs[0] != u.inputs[1] for u, _ in uses):
                fusable[op.output] = op.inputs[0]
    return fusable


# ------------------------------------------------------------------------ one emitter per IR op
@dataclass
class _Ctx:
    """What an op's emitter needs: the writer, the subgraph, the program, the op, the fusable transposes."""

    w: ModelWriter
    g: _Subgraph
    p: Program
    op: Op
    fusable: dict[str, str]

    @property
    def ins(self) -> list[int]:
        return [self.g.index[i] for i in self.op.inputs if i not in self.fusable]

    def out(self, dtype: str | None = None, name: str | None = None) -> int:
        val = self.p.values[self.op.output]
        return self.w._tensor(self.g, name or self.op.output, val.shape, dtype or val.dtype)

    def ci(self, values: Any, suffix: str) -> int:
        return self.w._const(self.g, np.asarray(values, np.int32).reshape(-1), f"{self.op.output}/{suffix}")

    def emit(self, code: int, inputs: list[int], opt_type: int = 0, opt: Any = None) -> None:
        self.w._op(self.g, code, inputs, [self.out()], opt_type, opt)


def _t_matmul(c: _Ctx) -> None:
    a, b = c.op.inputs
    g, f = c.g, c.fusable
    if b in f and a not in f:  # a · Wᵀ → FULLY_CONNECTED(a, W), W: (N, K)
        opt = S.FullyConnectedOptionsT()
        opt.keepNumDims = False
        c.emit(BO.FULLY_CONNECTED, [g.index[a], g.index[f[b]], -1], OPT.FullyConnectedOptions, opt)
        return
    opt = S.BatchMatMulOptionsT()
    ia = g.index[f[a]] if a in f else g.index[a]
    ib = g.index[f[b]] if b in f else g.index[b]
    opt.adjX, opt.adjY = a in f, b in f
    c.emit(BO.BATCH_MATMUL, [ia, ib], OPT.BatchMatMulOptions, opt)


def _t_arith(c: _Ctx) -> None:
    code, ot, cls = _ARITH[c.op.kind]
    c.emit(code, c.ins, ot, cls())


def _t_leaky_relu(c: _Ctx) -> None:
    opt = S.LeakyReluOptionsT()
    opt.alpha = float(c.op.attr("alpha"))
    c.emit(BO.LEAKY_RELU, c.ins, OPT.LeakyReluOptions, opt)


def _t_compare(c: _Ctx) -> None:
    mask = c.out("bool", name=f"{c.op.output}/bool")
    if c.op.kind == "greater":
        c.w._op(c.g, BO.GREATER, c.ins, [mask], OPT.GreaterOptions, S.GreaterOptionsT())
    else:
        c.w._op(c.g, BO.EQUAL, c.ins, [mask], OPT.EqualOptions, S.EqualOptionsT())
    opt = S.CastOptionsT()
    opt.inDataType, opt.outDataType = TT.BOOL, TT.FLOAT32
    c.emit(BO.CAST, [mask], OPT.CastOptions, opt)


def _t_softmax(c: _Ctx) -> None:
    opt = S.SoftmaxOptionsT()
    opt.beta = 1.0
    c.emit(BO.SOFTMAX, c.ins, OPT.SoftmaxOptions, opt)


def _t_reshape(c: _Ctx) -> None:
    shape = c.p.values[c.op.output].shape
    opt = S.ReshapeOptionsT()
    opt.newShape = np.asarray(shape, np.int32)
    c.emit(BO.RESHAPE, [c.ins[0], c.ci(shape, "shape")], OPT.ReshapeOptions, opt)


def _t_reduce(c: _Ctx) -> None:
    opt = S.ReducerOptionsT()
    opt.keepDims = bool(c.op.attr("keepdims", True))
    c.emit(_REDUCE[c.op.kind], [c.ins[0], c.ci(c.op.attr("axes"), "axes")], OPT.ReducerOptions, opt)


def _t_onehot(c: _Ctx) -> None:
    opt = S.OneHotOptionsT()
    opt.axis = -1
    name = c.op.output
    depth = c.w._const(c.g, np.asarray(c.op.attr("depth"), np.int32), f"{name}/depth")
    on = c.w._const(c.g, np.asarray(1.0, np.float32), f"{name}/on")
    off = c.w._const(c.g, np.asarray(0.0, np.float32), f"{name}/off")
    c.emit(BO.ONE_HOT, [c.ins[0], depth, on, off], OPT.OneHotOptions, opt)


def _t_gather(c: _Ctx) -> None:
    axis, name, idx_name = int(c.op.attr("axis")), c.op.output, c.op.inputs[1]
    if idx_name not in c.p.consts:
        raise CompileError(f"gather {name}: indices must be a constant, got {idx_name}")
    n = c.p.values[c.op.inputs[0]].shape[axis]
    idx = np.asarray(c.p.consts[idx_name], np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise CompileError(f"gather {name}: index out of range for axis of size {n}")
    wrapped = c.w._const(c.g, np.mod(idx, n).astype(np.int32), f"{name}/indices")
    opt = S.GatherOptionsT()
    opt.axis, opt.batchDims = axis, 0
    c.emit(BO.GATHER, [c.ins[0], wrapped], OPT.GatherOptions, opt)


def _t_pad(c: _Ctx) -> None:
    pads = c.w._const(c.g, np.asarray(c.op.attr("pads"), np.int32).reshape(-1, 2), f"{c.op.output}/pads")
    c.emit(BO.PAD, [c.ins[0], pads], OPT.PadOptions, S.PadOptionsT())


def _t_concat_rows(c: _Ctx) -> None:
    opt = S.ConcatenationOptionsT()
    opt.axis = 0
    c.emit(BO.CONCATENATION, c.ins, OPT.ConcatenationOptions, opt)


def _t_slice_rows(c: _Ctx) -> None:
    shape = c.p.values[c.op.inputs[0]].shape
    start, stop = c.op.attr("start"), c.op.attr("stop")
    begin = c.ci([start, *([0] * (len(shape) - 1))], "begin")
    size = c.ci([stop - start, *shape[1:]], "size")
    c.emit(BO.SLICE, [c.ins[0], begin, size], OPT.SliceOptions, S.SliceOptionsT())


def _t_after(c: _Ctx) -> None:
    """TFLite runs operators in list order, which is already the program's: ``after`` (and ``straight_through``, whose
    second input is gradient-only) is its first input itself (an alias)."""
    c.g.index[c.op.output] = c.g.index[c.op.inputs[0]]


TFLITE_EMIT: dict[str, Any] = {
    "matmul": _t_matmul,
    **{k: _t_arith for k in _ARITH},
    **{k: (lambda c, code=code: c.emit(code, c.ins)) for k, code in _ELEMENTWISE.items()},
    "leaky_relu": _t_leaky_relu,
    "greater": _t_compare,
    "equal": _t_compare,
    "softmax": _t_softmax,
    "log_softmax": lambda c: c.emit(BO.LOG_SOFTMAX, c.ins, OPT.LogSoftmaxOptions, S.LogSoftmaxOptionsT()),
    "transpose": lambda c: c.emit(
        BO.TRANSPOSE, [c.ins[0], c.ci(c.op.attr("perm"), "perm")], OPT.TransposeOptions, S.TransposeOptionsT()
    ),
    "reshape": _t_reshape,
    "broadcast_to": lambda c: c.emit(
        BO.BROADCAST_TO,
        [c.ins[0], c.ci(c.p.values[c.op.output].shape, "shape")],
        OPT.BroadcastToOptions,
        S.BroadcastToOptionsT(),
    ),
    **{k: _t_reduce for k in _REDUCE},
    "onehot": _t_onehot,
    "gather": _t_gather,
    "pad": _t_pad,
    "concat_rows": _t_concat_rows,
    "slice_rows": _t_slice_rows,
    "after": _t_after,
    "straight_through": _t_after,
}
check_table(TFLITE_EMIT, "TFLite")
