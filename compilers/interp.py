"""Reference interpreter of :mod:`compilers.ir` in numpy (float32): the executable spec of every primitive."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from compilers.ir import Op, Program
from compilers.ops import OPS


def eval_op(op: Op, args: list[np.ndarray]) -> np.ndarray:
    """The numpy reference semantics of one op (:mod:`compilers.ops`)."""
    if op.kind not in OPS:
        raise ValueError(f"no reference semantics for {op.kind}")
    return OPS[op.kind].ref(args, dict(op.attrs))


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
