"""A tiny straight-line tensor program: the IR that every edge backend (ONNX, TFLite) emits op by op.

A :class:`Program` has graph inputs (e.g. ``x`` float32 (B,…), ``y`` int32 (B,), ``lr`` float32 ()),
*states* (parameters and optimizer state, each tagged with its forward-order ``layer``: 0 = signal
generator, i+1 = block i, N+1 = head), constants, a list of SSA :class:`Op` s, named outputs and, for
update steps, ``state_updates`` (state name → value holding its new value).

The primitive ops and their meaning (shape rule, numpy reference, vector-Jacobian product) are defined
once, in :mod:`compilers.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compilers.ops import F32, I32, KINDS, OPS, VARIADIC, value_inputs

__all__ = ["F32", "I32", "KINDS", "Op", "Program", "State", "Value", "broadcast_shape", "freeze_states"]


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
                needed.update(value_inputs(op))
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
    d = OPS[kind]
    if (len(ins) < 2) if d.arity == VARIADIC else (len(ins) != d.arity):
        want = "2 or more" if d.arity == VARIADIC else d.arity
        raise ValueError(f"op {kind} takes {want} inputs, got {len(ins)}")
    return d.shape(ins, attrs)
