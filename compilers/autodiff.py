"""Layer-local reverse-mode differentiation on :mod:`compilers.ir` programs.

``grad(program, loss, wrt)`` appends the vector-Jacobian products of the ops between ``wrt`` and the
scalar ``loss`` and returns the gradient value of each ``wrt``. Only ops whose output depends on one of
``wrt`` are differentiated, so a block's input (computed from earlier layers) is a constant here: the
gradient never crosses a block boundary. Gradients w.r.t. ``gather``/``pad``/``onehot`` data inputs are not
needed by SP (they only touch block inputs and labels) and are refused.
"""

from __future__ import annotations

import numpy as np

from compilers.ir import Op, Program


class NotDifferentiable(ValueError):
    pass


def _unbroadcast(p: Program, g: str, shape: tuple[int, ...]) -> str:
    gs = p.shape(g)
    if gs == shape:
        return g
    lead = len(gs) - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and gs[i + lead] != 1)
    if axes:
        g = p.reduce("reduce_sum", g, axes, keepdims=True)
    return p.reshape(g, shape)


def _vjp(p: Program, op: Op, g: str, idx: int) -> str:
    """Cotangent contribution of ``op``'s output cotangent ``g`` to its input number ``idx``."""
    k, ins = op.kind, op.inputs
    x = ins[idx]
    xs = p.shape(x)
    if k == "add":
        return _unbroadcast(p, g, xs)
    if k == "sub":
        return _unbroadcast(p, g if idx == 0 else p.scale(g, -1.0), xs)
    if k == "mul":
        return _unbroadcast(p, p.mul(g, ins[1 - idx]), xs)
    if k == "div":
        if idx == 0:
            return _unbroadcast(p, p.div(g, ins[1]), xs)
        # d(a/b)/db = −a/b² = −out/b
        return _unbroadcast(p, p.scale(p.div(p.mul(g, op.output), ins[1]), -1.0), xs)
    if k == "matmul":
        a, b = ins
        if idx == 0:
            return p.matmul(g, p.transpose(b))
        return p.matmul(p.transpose(a), g)
    if k == "relu":
        return p.mul(g, p.op("greater", x, p.const(0.0)))
    if k == "leaky_relu":
        alpha = op.attr("alpha")
        pos = p.op("greater", x, p.const(0.0))
        return p.mul(g, p.add(p.scale(pos, 1.0 - alpha), p.const(alpha)))
    if k == "tanh":
        return p.mul(g, p.sub(p.const(1.0), p.mul(op.output, op.output)))
    if k == "exp":
        return p.mul(g, op.output)
    if k == "log":
        return p.div(g, x)
    if k == "sqrt":
        return p.div(p.scale(g, 0.5), op.output)
    if k == "log_softmax":
        sm = p.op("exp", op.output)
        return p.sub(g, p.mul(sm, p.reduce("reduce_sum", g, (-1,), keepdims=True)))
    if k == "softmax":
        gy = p.mul(g, op.output)
        return p.sub(gy, p.mul(op.output, p.reduce("reduce_sum", gy, (-1,), keepdims=True)))
    if k == "transpose":
        perm = op.attr("perm")
        src = p.producer(g)
        if perm == (1, 0) and src is not None and src.kind == "matmul":
            # (A·B)ᵀ = Bᵀ·Aᵀ: yields dW = dYᵀ·X directly, with no weight-sized transpose
            a, b = src.inputs
            return p.matmul(p.transpose(b), p.transpose(a))
        inv = tuple(perm.index(i) for i in range(len(perm)))
        return p.transpose(g, inv)
    if k == "reshape":
        return p.reshape(g, xs)
    if k == "broadcast_to":
        return _unbroadcast(p, g, xs)
    if k in ("reduce_sum", "reduce_mean", "reduce_max"):
        axes = op.attr("axes")
        kept = tuple(1 if i in axes else n for i, n in enumerate(xs))
        gk = p.broadcast_to(p.reshape(g, kept), xs)
        if k == "reduce_sum":
            return gk
        if k == "reduce_mean":
            n = 1
            for a in axes:
                n *= xs[a]
            return p.scale(gk, 1.0 / n)
        mx = p.broadcast_to(p.reshape(op.output, kept), xs)
        mask = p.op("equal", x, mx)
        if len(xs) == 2 and axes == (1,) and xs[1] > 1:
            # route to the first maximum only (torch's convention for ties): keep a maximum iff no
            # earlier element of its row is a maximum; earlier = mask · U, U strictly upper triangular
            upper = np.triu(np.ones((xs[1], xs[1]), np.float32), k=1)
            earlier = p.op("greater", p.matmul(mask, p.const(upper, "tri")), p.const(0.0))
            mask = p.mul(mask, p.sub(p.const(1.0), earlier))
        return p.mul(gk, mask)
    raise NotDifferentiable(f"no gradient rule for op {k!r} (input {idx})")


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
