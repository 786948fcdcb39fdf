"""Reference interpreter of :mod:`compilers.ir` in numpy (float32): the executable spec of every primitive."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from compilers.ir import Op, Program


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def eval_op(op: Op, args: list[np.ndarray]) -> np.ndarray:
    k = op.kind
    a = args[0]
    if k == "matmul":
        return a @ args[1]
    if k == "add":
        return a + args[1]
    if k == "sub":
        return a - args[1]
    if k == "mul":
        return a * args[1]
    if k == "div":
        return a / args[1]
    if k == "greater":
        return (a > args[1]).astype(np.float32)
    if k == "equal":
        return (a == args[1]).astype(np.float32)
    if k == "relu":
        return np.maximum(a, 0)
    if k == "leaky_relu":
        return np.maximum(a, np.float32(op.attr("alpha")) * a)
    if k == "tanh":
        return np.tanh(a)
    if k == "exp":
        return np.exp(a)
    if k == "log":
        return np.log(a)
    if k == "sqrt":
        return np.sqrt(a)
    if k == "softmax":
        return _softmax(a)
    if k == "log_softmax":
        m = a.max(axis=-1, keepdims=True)
        return a - m - np.log(np.exp(a - m).sum(axis=-1, keepdims=True))
    if k == "transpose":
        return np.transpose(a, op.attr("perm"))
    if k == "reshape":
        return a.reshape(op.attr("shape"))
    if k == "broadcast_to":
        return np.broadcast_to(a, np.broadcast_shapes(a.shape, op.attr("shape"))).copy()
    if k in ("reduce_sum", "reduce_mean", "reduce_max"):
        fn = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max}[k]
        return fn(a, axis=op.attr("axes"), keepdims=op.attr("keepdims"))
    if k == "onehot":
        return np.eye(op.attr("depth"), dtype=np.float32)[a]
    if k == "gather":
        return np.take(a, args[1], axis=op.attr("axis"))
    if k == "pad":
        return np.pad(a, op.attr("pads"))
    raise ValueError(f"no reference semantics for {k}")


def run(
    program: Program,
    feeds: Mapping[str, np.ndarray],
    states: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Execute the program. Returns (outputs by output name, new states by state name)."""
    env: dict[str, np.ndarray] = {}
    for v in program.inputs:
        if v.name not in feeds:
            raise KeyError(f"missing input {v.name}")
        env[v.name] = np.asarray(feeds[v.name], np.int32 if v.dtype == "int32" else np.float32)
    for s in program.states:
        env[s.value.name] = np.asarray((states or {}).get(s.value.name, s.init), np.float32)
    env.update(program.consts)
    for op in program.ops:
        out = eval_op(op, [env[i] for i in op.inputs])
        env[op.output] = np.asarray(out, np.float32 if program.values[op.output].dtype == "float32" else np.int32)
    outputs = {name: env[v] for name, v in program.outputs.items()}
    new_states = {s: env[v] for s, v in program.state_updates.items()}
    return outputs, new_states
