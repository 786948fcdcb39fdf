"""Layer-local reverse-mode differentiation on :mod:`compilers.ir` programs.

``grad(program, loss, wrt)`` appends the vector-Jacobian products of the ops between ``wrt`` and the
scalar ``loss`` and returns the gradient value of each ``wrt``. Only ops whose output depends on one of
``wrt`` are differentiated, so a block's input (computed from earlier layers) is a constant here: the
gradient never crosses a block boundary. Gradients w.r.t. ``gather``/``pad``/``onehot`` data inputs are not
needed by SP (they only touch block inputs and labels) and are refused.
"""

from __future__ import annotations

from compilers.ir import Op, Program
from compilers.ops import OPS, NotDifferentiable

__all__ = ["NotDifferentiable", "grad"]


def _vjp(p: Program, op: Op, g: str, idx: int) -> str:
    """Cotangent contribution of ``op``'s output cotangent ``g`` to its input number ``idx`` (the op's rule in
    :mod:`compilers.ops`)."""
    rule = OPS[op.kind].vjp
    if rule is None:
        raise NotDifferentiable(f"no gradient rule for op {op.kind!r} (input {idx})")
    return rule(p, op, g, idx)


def grad(p: Program, loss: str, wrt: list[str]) -> dict[str, str]:
    if p.shape(loss) not in ((), (1,)):
        raise ValueError(f"loss must be a scalar, got shape {p.shape(loss)}")
    active = set(wrt)
    for op in p.ops:
        if any(i in active for i in op.inputs):
            active.add(op.output)
    if loss not in active:
        raise ValueError("the loss does not depend on the requested parameters")
    cot: dict[str, str] = {loss: p.const(1.0) if p.shape(loss) == () else p.const([1.0])}
    for op in reversed(list(p.ops)):
        if op.output not in cot or op.output not in active:
            continue
        g = cot[op.output]
        for idx, x in enumerate(op.inputs):
            if x not in active:
                continue
            contrib = _vjp(p, op, g, idx)
            cot[x] = p.add(cot[x], contrib) if x in cot else contrib
    missing = [w for w in wrt if w not in cot]
    if missing:
        raise ValueError(f"no gradient reaches {missing}")
    return {w: cot[w] for w in wrt}
