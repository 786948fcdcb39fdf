"""A tiny straight-line tensor program: the IR that every edge backend (ONNX, TFLite) emits op by op.

A :class:`Program` has graph inputs (e.g. ``x`` float32 (B,…), ``y`` int32 (B,), ``lr`` float32 ()),
*states* (parameters and optimizer state, each tagged with its forward-order ``layer``: 0 = signal
generator, i+1 = block i, N+1 = head), constants, a list of SSA :class:`Op` s, named outputs and, for
update steps, ``state_updates`` (state name → value holding its new value).

Primitive ops (all float32 unless noted; broadcasting follows numpy; the numpy semantics in
:mod:`compilers.interp` are the spec):

=============  ==========================================================================
matmul(a, b)   2-D matrix product (M,K)·(K,N)
add/sub/mul/div elementwise with broadcasting
relu, tanh, exp, log, sqrt   elementwise
leaky_relu     attrs alpha: max(x, alpha·x) for 0 < alpha < 1
greater(a, b)  float mask 1[a > b];   equal(a, b): float mask 1[a == b]
transpose      attrs perm
reshape        attrs shape (static)
broadcast_to   attrs shape
reduce_sum/reduce_mean/reduce_max   attrs axes (tuple), keepdims (bool)
softmax, log_softmax   over the last axis
onehot(y)      int32 labels (B,) → float (B, depth); attrs depth
gather(a, idx) idx is an int32 *constant*; attrs axis (numpy.take)
pad            attrs pads: tuple of (before, after) per axis, zero padding
=============  ==========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

F32, I32 = "float32", "int32"
UNARY = ("relu", "tanh", "exp", "log", "sqrt", "leaky_relu", "softmax", "log_softmax")
BINARY = ("add", "sub", "mul", "div", "greater", "equal", "matmul")
OTHER = ("transpose", "reshape", "broadcast_to", "reduce_sum", "reduce_mean", "reduce_max", "onehot", "gather", "pad")
KINDS = UNARY + BINARY + OTHER


@dataclass(frozen=True)
class Value:
    name: str
    shape: tuple[int, ...]
    dtype: str = F32


@dataclass(frozen=True)
class Op:
    kind: str
    inputs: tuple[str, ...]
    output: str
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key: str, default: Any = None) -> Any:
        return dict(self.attrs).get(key, default)


@dataclass
class State:
    value: Value
    layer: int
    init: np.ndarray


@dataclass
class Program:
    """A straight-line program. ``values`` maps every name (inputs, states, consts, op outputs) to a Value."""

    name: str = "program"
    inputs: list[Value] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    state_updates: dict[str, str] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    _counter: int = 0
    _producers: dict[str, Op] = field(default_factory=dict)

    # ----------------------------------------------------------------- declarations
    def _fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def input(self, name: str, shape: tuple[int, ...], dtype: str = F32) -> str:
        v = Value(name, tuple(shape), dtype)
        self.inputs.append(v)
        self.values[name] = v
        return name

    def state(self, name: str, init: np.ndarray, layer: int) -> str:
        init = np.asarray(init, np.float32)
        v = Value(name, tuple(init.shape), F32)
        self.states.append(State(v, layer, init))
        self.values[name] = v
        return name

    def const(self, array: np.ndarray | float, hint: str = "c", dtype: str = F32) -> str:
        arr = np.asarray(array, np.int32 if dtype == I32 else np.float32)
        for k, existing in self.consts.items():  # share identical small constants
            if (
                existing.dtype == arr.dtype
                and existing.shape == arr.shape
                and arr.size <= 16
                and np.array_equal(existing, arr)
            ):
                return k
        name = self._fresh(hint)
        self.consts[name] = arr
        self.values[name] = Value(name, tuple(arr.shape), dtype)
        return name

    def output(self, name: str, value: str) -> None:
        self.outputs[name] = value

    def update_state(self, state: str, value: str) -> None:
        if self.values[state].shape != self.values[value].shape:
            raise ValueError(f"update of {state}: shape {self.values[value].shape} != {self.values[state].shape}")
        self.state_updates[state] = value

    def shape(self, name: str) -> tuple[int, ...]:
        return self.values[name].shape

    # ----------------------------------------------------------------- ops
    def op(self, kind: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown op {kind}")
        for i in inputs:
            if i not in self.values:
                raise KeyError(f"op {kind}: unknown input {i}")
        shape, dtype = _infer(kind, [self.values[i] for i in inputs], attrs)
        out = self._fresh(hint or kind)
        frozen = tuple(sorted((k, _freeze(v)) for k, v in attrs.items()))
        self.ops.append(Op(kind, tuple(inputs), out, frozen))
        self._producers[out] = self.ops[-1]
        self.values[out] = Value(out, shape, dtype)
        return out

    # convenience wrappers
    def matmul(self, a: str, b: str) -> str:
        return self.op("matmul", a, b)

    def add(self, a: str, b: str) -> str:
        return self.op("add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("div", a, b)

    def scale(self, a: str, s: float) -> str:
        return self.mul(a, self.const(np.float32(s)))

    def transpose(self, a: str, perm: tuple[int, ...] | None = None) -> str:
        perm = tuple(perm or reversed(range(len(self.shape(a)))))
        src = self.producer(a)
        if src is not None and src.kind == "transpose":  # transpose(transpose(x)) = x when the perms cancel
            inner = src.attr("perm")
            if tuple(inner[i] for i in perm) == tuple(range(len(perm))):
                return src.inputs[0]
        return self.op("transpose", a, perm=perm)

    def producer(self, name: str) -> Op | None:
        return self._producers.get(name)

    def live_ops(self) -> list[Op]:
        """Ops needed by the outputs and state updates (dead code removed), in program order."""
        needed = set(self.outputs.values()) | set(self.state_updates.values())
        keep: list[Op] = []
        for op in reversed(self.ops):
            if op.output in needed:
                keep.append(op)
                needed.update(op.inputs)
        return keep[::-1]

    def reshape(self, a: str, shape: tuple[int, ...]) -> str:
        if tuple(shape) == self.shape(a):
            return a
        return self.op("reshape", a, shape=tuple(int(s) for s in shape))

    def reduce(self, kind: str, a: str, axes: tuple[int, ...], keepdims: bool = True) -> str:
        nd = len(self.shape(a))
        return self.op(kind, a, axes=tuple(sorted(ax % nd for ax in axes)), keepdims=keepdims)

    def broadcast_to(self, a: str, shape: tuple[int, ...]) -> str:
        if self.shape(a) == tuple(shape):
            return a
        return self.op("broadcast_to", a, shape=tuple(shape))


def freeze_states(program: Program, values: dict[str, np.ndarray]) -> Program:
    """A copy of a program without state updates whose states are constants holding ``values`` (float32,
    shapes checked): a standalone program (e.g. inference with learned weights baked in)."""
    from dataclasses import replace

    if program.state_updates:
        raise ValueError("only programs without state updates (inference) can be frozen")
    consts = dict(program.consts)
    for s in program.states:
        name = s.value.name
        arr = np.asarray(values[name], np.float32)
        if arr.shape != s.value.shape:
            raise ValueError(f"state {name}: value of shape {arr.shape}, the program needs {s.value.shape}")
        consts[name] = arr
    return replace(program, states=[], consts=consts, values=dict(program.values))


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(a, b))


def _infer(kind: str, ins: list[Value], attrs: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    if kind in UNARY:
        return ins[0].shape, F32
    if kind == "matmul":
        a, b = ins[0].shape, ins[1].shape
        if len(a) != 2 or len(b) != 2 or a[1] != b[0]:
            raise ValueError(f"matmul shapes {a} x {b}")
        return (a[0], b[1]), F32
    if kind in BINARY:
        return broadcast_shape(ins[0].shape, ins[1].shape), F32
    if kind == "transpose":
        return tuple(ins[0].shape[p] for p in attrs["perm"]), ins[0].dtype
    if kind == "reshape":
        if math.prod(attrs["shape"]) != math.prod(ins[0].shape):
            raise ValueError(f"reshape {ins[0].shape} -> {attrs['shape']}")
        return tuple(attrs["shape"]), ins[0].dtype
    if kind == "broadcast_to":
        return broadcast_shape(ins[0].shape, tuple(attrs["shape"])), ins[0].dtype
    if kind.startswith("reduce_"):
        axes, keep = attrs["axes"], attrs.get("keepdims", True)
        s = ins[0].shape
        if keep:
            return tuple(1 if i in axes else n for i, n in enumerate(s)), F32
        return tuple(n for i, n in enumerate(s) if i not in axes), F32
    if kind == "onehot":
        if ins[0].dtype != I32:
            raise ValueError("onehot needs int32 labels")
        return (*ins[0].shape, attrs["depth"]), F32
    if kind == "gather":
        ax = attrs["axis"]
        s = ins[0].shape
        return (*s[:ax], *ins[1].shape, *s[ax + 1 :]), ins[0].dtype
    if kind == "pad":
        return tuple(n + p0 + p1 for n, (p0, p1) in zip(ins[0].shape, attrs["pads"], strict=True)), ins[0].dtype
    raise ValueError(kind)
