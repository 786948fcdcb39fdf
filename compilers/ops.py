"""Every IR primitive's meaning in one place: its shape rule, its numpy reference semantics (the spec the
backends are tested against) and its vector-Jacobian product, one :class:`OpDef` per op in ``OPS``.

Backends register their emission in one table each (``compilers.onnx_emit``, ``compilers.tflite.emit``),
checked at import to cover exactly ``KINDS``: a new op is one entry here plus one emitter per backend; a new
backend is one emission table. All values are float32 unless noted; broadcasting follows numpy.

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
concat_rows(a, b, …), slice_rows(a)   stack (2 or more inputs) / cut along axis 0 (attrs start, stop)
after(x, y)    x, computed once y is (an ordering edge); ∂/∂y = 0
straight_through(a, z)   a; ∂/∂a = ∂/∂z = g. z is a *gradient-only* input: its value is never read, so
               the ops computing it are dead code for the runtimes (:func:`value_inputs`)
=============  ==========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from compilers.ir import Op, Program, Value

F32, I32 = "float32", "int32"
VARIADIC = -1  # OpDef.arity of an op taking two or more inputs
Shape = tuple[int, ...]


class NotDifferentiable(ValueError):
    pass


@dataclass(frozen=True)
class OpDef:
    """``shape(inputs, attrs) -> (shape, dtype)``; ``ref(args, attrs) -> array`` (numpy, the spec);
    ``vjp(p, op, g, idx) -> value``: appends to program ``p`` the cotangent of input ``idx`` given the
    output's cotangent ``g`` (None: not differentiable)."""

    kind: str
    arity: int
    shape: Callable[[list[Value], dict[str, Any]], tuple[Shape, str]]
    ref: Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]
    vjp: Callable[[Program, Op, str, int], str] | None = None


OPS: dict[str, OpDef] = {}


def _define(kind: str, arity: int, shape: Any, ref: Any, vjp: Any = None) -> None:
    OPS[kind] = OpDef(kind, arity, shape, ref, vjp)


# --------------------------------------------------------------------------- shared shape rules / helpers
def _same(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    return ins[0].shape, F32


def _broadcast(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(np.broadcast_shapes(ins[0].shape, ins[1].shape)), F32


def unbroadcast(p: Program, g: str, shape: Shape) -> str:
    """Sum a broadcast cotangent back to ``shape``."""
    gs = p.shape(g)
    if gs == shape:
        return g
    lead = len(gs) - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and gs[i + lead] != 1)
    if axes:
        g = p.reduce("reduce_sum", g, axes, keepdims=True)
    return p.reshape(g, shape)


def _log_softmax(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=-1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=-1, keepdims=True))


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- elementwise binary
def _vjp_add(p: Program, op: Op, g: str, idx: int) -> str:
    return unbroadcast(p, g, p.shape(op.inputs[idx]))


def _vjp_sub(p: Program, op: Op, g: str, idx: int) -> str:
    return unbroadcast(p, g if idx == 0 else p.scale(g, -1.0), p.shape(op.inputs[idx]))


def _vjp_mul(p: Program, op: Op, g: str, idx: int) -> str:
    return unbroadcast(p, p.mul(g, op.inputs[1 - idx]), p.shape(op.inputs[idx]))


def _vjp_div(p: Program, op: Op, g: str, idx: int) -> str:
    xs = p.shape(op.inputs[idx])
    if idx == 0:
        return unbroadcast(p, p.div(g, op.inputs[1]), xs)
    # d(a/b)/db = −a/b² = −out/b
    return unbroadcast(p, p.scale(p.div(p.mul(g, op.output), op.inputs[1]), -1.0), xs)


_define("add", 2, _broadcast, lambda a, _: a[0] + a[1], _vjp_add)
_define("sub", 2, _broadcast, lambda a, _: a[0] - a[1], _vjp_sub)
_define("mul", 2, _broadcast, lambda a, _: a[0] * a[1], _vjp_mul)
_define("div", 2, _broadcast, lambda a, _: a[0] / a[1], _vjp_div)
_define("greater", 2, _broadcast, lambda a, _: (a[0] > a[1]).astype(np.float32))
_define("equal", 2, _broadcast, lambda a, _: (a[0] == a[1]).astype(np.float32))


# --------------------------------------------------------------------------- matmul
def _shape_matmul(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    a, b = ins[0].shape, ins[1].shape
    if len(a) != 2 or len(b) != 2 or a[1] != b[0]:
        raise ValueError(f"matmul shapes {a} x {b}")
    return (a[0], b[1]), F32


def _vjp_matmul(p: Program, op: Op, g: str, idx: int) -> str:
    a, b = op.inputs
    if idx == 0:
        return p.matmul(g, p.transpose(b))
    return p.matmul(p.transpose(a), g)


_define("matmul", 2, _shape_matmul, lambda a, _: a[0] @ a[1], _vjp_matmul)


# --------------------------------------------------------------------------- elementwise unary
def _vjp_relu(p: Program, op: Op, g: str, idx: int) -> str:
    return p.mul(g, p.op("greater", op.inputs[0], p.const(0.0)))


def _vjp_leaky_relu(p: Program, op: Op, g: str, idx: int) -> str:
    alpha = op.attr("alpha")
    pos = p.op("greater", op.inputs[0], p.const(0.0))
    return p.mul(g, p.add(p.scale(pos, 1.0 - alpha), p.const(alpha)))


def _vjp_tanh(p: Program, op: Op, g: str, idx: int) -> str:
    return p.mul(g, p.sub(p.const(1.0), p.mul(op.output, op.output)))


def _vjp_log_softmax(p: Program, op: Op, g: str, idx: int) -> str:
    sm = p.op("exp", op.output)
    return p.sub(g, p.mul(sm, p.reduce("reduce_sum", g, (-1,), keepdims=True)))


def _vjp_softmax(p: Program, op: Op, g: str, idx: int) -> str:
    gy = p.mul(g, op.output)
    return p.sub(gy, p.mul(op.output, p.reduce("reduce_sum", gy, (-1,), keepdims=True)))


_define("relu", 1, _same, lambda a, _: np.maximum(a[0], 0), _vjp_relu)
_define("leaky_relu", 1, _same, lambda a, at: np.maximum(a[0], np.float32(at["alpha"]) * a[0]), _vjp_leaky_relu)
_define("tanh", 1, _same, lambda a, _: np.tanh(a[0]), _vjp_tanh)
_define("exp", 1, _same, lambda a, _: np.exp(a[0]), lambda p, op, g, i: p.mul(g, op.output))
_define("log", 1, _same, lambda a, _: np.log(a[0]), lambda p, op, g, i: p.div(g, op.inputs[0]))
_define("sqrt", 1, _same, lambda a, _: np.sqrt(a[0]), lambda p, op, g, i: p.div(p.scale(g, 0.5), op.output))
_define("softmax", 1, _same, lambda a, _: _softmax(a[0]), _vjp_softmax)
_define("log_softmax", 1, _same, lambda a, _: _log_softmax(a[0]), _vjp_log_softmax)


# --------------------------------------------------------------------------- layout
def _shape_transpose(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(ins[0].shape[i] for i in attrs["perm"]), ins[0].dtype


def _vjp_transpose(p: Program, op: Op, g: str, idx: int) -> str:
    perm = op.attr("perm")
    src = p.producer(g)
    if perm == (1, 0) and src is not None and src.kind == "matmul":
        # (A·B)ᵀ = Bᵀ·Aᵀ: yields dW = dYᵀ·X directly, with no weight-sized transpose
        a, b = src.inputs
        return p.matmul(p.transpose(b), p.transpose(a))
    inv = tuple(perm.index(i) for i in range(len(perm)))
    return p.transpose(g, inv)


def _shape_reshape(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    if math.prod(attrs["shape"]) != math.prod(ins[0].shape):
        raise ValueError(f"reshape {ins[0].shape} -> {attrs['shape']}")
    return tuple(attrs["shape"]), ins[0].dtype


def _shape_broadcast_to(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(np.broadcast_shapes(ins[0].shape, tuple(attrs["shape"]))), ins[0].dtype


_define("transpose", 1, _shape_transpose, lambda a, at: np.transpose(a[0], at["perm"]), _vjp_transpose)
_define(
    "reshape",
    1,
    _shape_reshape,
    lambda a, at: a[0].reshape(at["shape"]),
    lambda p, op, g, i: p.reshape(g, p.shape(op.inputs[0])),
)
_define(
    "broadcast_to",
    1,
    _shape_broadcast_to,
    lambda a, at: np.broadcast_to(a[0], np.broadcast_shapes(a[0].shape, at["shape"])).copy(),
    lambda p, op, g, i: unbroadcast(p, g, p.shape(op.inputs[0])),
)


# --------------------------------------------------------------------------- reductions
def _shape_reduce(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    axes, keep = attrs["axes"], attrs.get("keepdims", True)
    s = ins[0].shape
    if keep:
        return tuple(1 if i in axes else n for i, n in enumerate(s)), F32
    return tuple(n for i, n in enumerate(s) if i not in axes), F32


def _vjp_reduce(p: Program, op: Op, g: str, idx: int) -> str:
    x = op.inputs[0]
    xs = p.shape(x)
    axes = op.attr("axes")
    kept = tuple(1 if i in axes else n for i, n in enumerate(xs))
    gk = p.broadcast_to(p.reshape(g, kept), xs)
    if op.kind == "reduce_sum":
        return gk
    if op.kind == "reduce_mean":
        return p.scale(gk, 1.0 / math.prod(xs[a] for a in axes))
    mx = p.broadcast_to(p.reshape(op.output, kept), xs)
    mask = p.op("equal", x, mx)
    if len(xs) == 2 and axes == (1,) and xs[1] > 1:
        # route to the first maximum only (torch's convention for ties): keep a maximum iff no earlier
        # element of its row is a maximum; earlier = mask · U, U strictly upper triangular
        upper = np.triu(np.ones((xs[1], xs[1]), np.float32), k=1)
        earlier = p.op("greater", p.matmul(mask, p.const(upper, "tri")), p.const(0.0))
        mask = p.mul(mask, p.sub(p.const(1.0), earlier))
    return p.mul(gk, mask)


for _kind, _fn in (("reduce_sum", np.sum), ("reduce_mean", np.mean), ("reduce_max", np.max)):
    _define(
        _kind,
        1,
        _shape_reduce,
        lambda a, at, fn=_fn: fn(a[0], axis=at["axes"], keepdims=at["keepdims"]),
        _vjp_reduce,
    )


# --------------------------------------------------------------------------- indexing (not differentiated: SP
# needs no gradient w.r.t. labels, gather/pad data inputs are block inputs or their im2col copies)
def _shape_onehot(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    if ins[0].dtype != I32:
        raise ValueError("onehot needs int32 labels")
    return (*ins[0].shape, attrs["depth"]), F32


def _shape_gather(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    ax, s = attrs["axis"], ins[0].shape
    return (*s[:ax], *ins[1].shape, *s[ax + 1 :]), ins[0].dtype


def _shape_pad(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    return tuple(n + p0 + p1 for n, (p0, p1) in zip(ins[0].shape, attrs["pads"], strict=True)), ins[0].dtype


# --------------------------------------------------------------------------- rows (axis 0): the update step stacks
# the sample and target streams into one tensor so each block runs one GEMM for both (and one weight gradient)
def _shape_concat_rows(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    shapes = [v.shape for v in ins]
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ValueError(f"concat_rows shapes {shapes}")
    return (sum(s[0] for s in shapes), *shapes[0][1:]), ins[0].dtype


def _shape_slice_rows(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    s, (start, stop) = ins[0].shape, (attrs["start"], attrs["stop"])
    if not 0 <= start < stop <= s[0]:
        raise ValueError(f"slice_rows [{start}:{stop}] of {s}")
    return (stop - start, *s[1:]), ins[0].dtype


def _vjp_concat_rows(p: Program, op: Op, g: str, idx: int) -> str:
    start = sum(p.shape(i)[0] for i in op.inputs[:idx])
    return p.op("slice_rows", g, start=start, stop=start + p.shape(op.inputs[idx])[0])


def _vjp_slice_rows(p: Program, op: Op, g: str, idx: int) -> str:
    s = p.shape(op.inputs[0])
    pads = ((op.attr("start"), s[0] - op.attr("stop")), *((0, 0),) * (len(s) - 1))
    return p.op("pad", g, pads=pads)


_define("concat_rows", VARIADIC, _shape_concat_rows, lambda a, _: np.concatenate(a, axis=0), _vjp_concat_rows)
_define("slice_rows", 1, _shape_slice_rows, lambda a, at: a[0][at["start"] : at["stop"]], _vjp_slice_rows)


# --------------------------------------------------------------------------- scheduling
# after(x, y) = x, computed once y is: an ordering edge for runtimes that schedule a graph themselves (ONNX Runtime
# runs independent branches in its own order). The update step puts each block's input after the previous layer's
# weight update, so one layer's intermediates are live at a time. ∂after/∂y = 0.
def _vjp_after(p: Program, op: Op, g: str, idx: int) -> str:
    return g if idx == 0 else p.const(np.zeros(p.shape(op.inputs[1]), np.float32), "zero")  # x does not vary with y


_define("after", 2, lambda ins, at: (ins[0].shape, ins[0].dtype), lambda a, _: a[0], _vjp_after)


# straight_through(a, z) = a with the gradient of a + (z − stop_gradient(z)): the value comes from a (e.g. a
# cached pre-activation), the gradient also flows into z (e.g. the same layer applied to cached inputs with the
# current weights). Only a's value is read, so z's forward ops are dead code once autodiff has taken their VJPs.
def _shape_straight_through(ins: list[Value], attrs: dict[str, Any]) -> tuple[Shape, str]:
    if ins[0].shape != ins[1].shape:
        raise ValueError(f"straight_through shapes {ins[0].shape} and {ins[1].shape}")
    return ins[0].shape, ins[0].dtype


_define("straight_through", 2, _shape_straight_through, lambda a, _: a[0], lambda p, op, g, idx: g)

GRADIENT_ONLY_INPUTS: dict[str, tuple[int, ...]] = {"straight_through": (1,)}


def value_inputs(op: Op) -> tuple[str, ...]:
    """The inputs whose *values* an op reads (all but its gradient-only ones): what dead-code removal follows."""
    skip = GRADIENT_ONLY_INPUTS.get(op.kind, ())
    return tuple(x for i, x in enumerate(op.inputs) if i not in skip)


_define("onehot", 1, _shape_onehot, lambda a, at: np.eye(at["depth"], dtype=np.float32)[a[0]])
_define("gather", 2, _shape_gather, lambda a, at: np.take(a[0], a[1], axis=at["axis"]))
_define("pad", 1, _shape_pad, lambda a, at: np.pad(a[0], at["pads"]))

KINDS = tuple(OPS)


def check_table(table: dict[str, Any], backend: str) -> None:
    """A backend's emission table must cover exactly the IR's ops (checked at the backend's import)."""
    missing, extra = set(KINDS) - set(table), set(table) - set(KINDS)
    if missing or extra:
        raise RuntimeError(f"{backend} emission table: missing {sorted(missing)}, unknown {sorted(extra)}")
