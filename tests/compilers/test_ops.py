"""Every IR op against torch (the oracle, micrograd-style): the numpy reference's values, the shape rule, and the
vector-Jacobian product appended by autodiff; every backend's emission table covers exactly the IR's ops."""

import numpy as np
import pytest
import torch

from compilers import interp
from compilers.autodiff import NotDifferentiable, grad
from compilers.ir import I32, Program
from compilers.ops import KINDS, OPS, check_table

R = np.random.default_rng(0)


def _x(*shape):
    return (R.standard_normal(shape) + 0.1).astype(np.float32)


# kind -> (input arrays, attrs, torch function of the input tensors)
CASES = {
    "add": ([_x(3, 4), _x(1, 4)], {}, lambda a, b: a + b),
    "sub": ([_x(3, 4), _x(3, 1)], {}, lambda a, b: a - b),
    "mul": ([_x(3, 4), _x(4)], {}, lambda a, b: a * b),
    "div": ([_x(3, 4), np.abs(_x(3, 4)) + 1], {}, lambda a, b: a / b),
    "greater": ([_x(3, 4), _x(3, 4)], {}, lambda a, b: (a > b).float()),
    "equal": (
        [np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 0.0, 3.0], np.float32)],
        {},
        lambda a, b: (a == b).float(),
    ),
    "matmul": ([_x(3, 5), _x(5, 2)], {}, lambda a, b: a @ b),
    "relu": ([_x(4, 3)], {}, torch.relu),
    "leaky_relu": ([_x(4, 3)], {"alpha": 0.1}, lambda a: torch.nn.functional.leaky_relu(a, 0.1)),
    "tanh": ([_x(4, 3)], {}, torch.tanh),
    "exp": ([_x(4, 3)], {}, torch.exp),
    "log": ([np.abs(_x(4, 3)) + 0.5], {}, torch.log),
    "sqrt": ([np.abs(_x(4, 3)) + 0.5], {}, torch.sqrt),
    "softmax": ([_x(4, 5)], {}, lambda a: torch.softmax(a, -1)),
    "log_softmax": ([_x(4, 5)], {}, lambda a: torch.log_softmax(a, -1)),
    "transpose": ([_x(2, 3, 4)], {"perm": (2, 0, 1)}, lambda a: a.permute(2, 0, 1)),
    "reshape": ([_x(2, 6)], {"shape": (3, 4)}, lambda a: a.reshape(3, 4)),
    "broadcast_to": ([_x(3, 1)], {"shape": (3, 4)}, lambda a: a.expand(3, 4)),
    "reduce_sum": ([_x(3, 4)], {"axes": (1,), "keepdims": True}, lambda a: a.sum(1, keepdim=True)),
    "reduce_mean": ([_x(3, 4, 2)], {"axes": (0, 2), "keepdims": False}, lambda a: a.mean((0, 2))),
    "reduce_max": ([_x(5, 4)], {"axes": (1,), "keepdims": True}, lambda a: a.max(1, keepdim=True).values),
    "onehot": (
        [np.array([2, 0, 1], np.int32)],
        {"depth": 4},
        lambda a: torch.nn.functional.one_hot(a.long(), 4).float(),
    ),
    "gather": ([_x(2, 5), np.array([4, 0, 2], np.int32)], {"axis": 1}, lambda a, i: a[:, i.long()]),
    "pad": ([_x(2, 3)], {"pads": ((0, 0), (1, 2))}, lambda a: torch.nn.functional.pad(a, (1, 2))),
    "concat_rows": ([_x(2, 3, 2), _x(4, 3, 2)], {}, lambda a, b: torch.cat([a, b], 0)),
    "slice_rows": ([_x(5, 3)], {"start": 1, "stop": 4}, lambda a: a[1:4]),
    "after": ([_x(3, 2), _x(4, 5)], {}, lambda a, b: a + 0 * b.sum()),
    "straight_through": ([_x(3, 2), _x(3, 2)], {}, lambda a, b: a + (b - b.detach())),
}


def test_every_op_has_a_case_and_every_backend_a_complete_table():
    assert set(CASES) == set(KINDS)
    from compilers.onnx_emit import ONNX_EMIT
    from compilers.tflite.emit import TFLITE_EMIT

    check_table(ONNX_EMIT, "ONNX")
    check_table(TFLITE_EMIT, "TFLite")
    with pytest.raises(RuntimeError, match=r"missing \['pad'\]"):
        check_table({k: None for k in KINDS if k != "pad"}, "toy")


def _program(kind, arrays, attrs):
    p = Program()
    names = []
    for i, a in enumerate(arrays):
        if kind == "gather" and i == 1:
            names.append(p.const(a, "idx", I32))
        elif a.dtype == np.int32:
            names.append(p.input(f"in{i}", a.shape, I32))
        else:
            names.append(p.state(f"in{i}", a, layer=1))
    out = p.op(kind, *names, **attrs)
    return p, names, out


@pytest.mark.parametrize("kind", sorted(CASES))
def test_reference_and_shape_rule_match_torch(kind):
    arrays, attrs, fn = CASES[kind]
    p, _, out = _program(kind, arrays, attrs)
    p.output("y", out)
    feeds = {v.name: a for v, a in zip(p.inputs, [a for a in arrays if a.dtype == np.int32], strict=False)}
    got = interp.run(p, feeds)[0]["y"]
    want = fn(*[torch.tensor(a) for a in arrays]).numpy()
    assert got.shape == p.shape(out) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


DIFFERENTIABLE = sorted(k for k in CASES if OPS[k].vjp is not None)


def test_differentiable_set_is_what_sp_needs():
    assert set(KINDS) - set(DIFFERENTIABLE) == {"greater", "equal", "onehot", "gather", "pad"}


def test_gradient_only_input_is_dead_code_for_the_runtimes():
    """straight_through(a, z) reads only a's value: the ops computing z are removed from the emitted program
    (ir.Program.live_ops), while autodiff still sends the gradient through them."""
    p = Program()
    a, w, u = p.state("a", _x(3, 2), 1), p.state("w", _x(4, 2), 1), p.state("u", _x(3, 4), 0)
    z = p.matmul(u, w)
    out = p.op("straight_through", a, z)
    loss = p.reduce("reduce_sum", p.mul(out, out), (0, 1), keepdims=False)
    gw = grad(p, loss, ["w"])["w"]
    p.output("g", gw)
    assert z not in {op.output for op in p.live_ops()}
    got = interp.run(p, {})[0]["g"]
    np.testing.assert_allclose(got, p.states[2].init.T @ (2 * p.states[0].init), rtol=1e-5)


@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_vjp_matches_torch_autograd(kind):
    """d⟨w, op(x)⟩/dx for a random cotangent w, through autodiff.grad, against torch.autograd."""
    arrays, attrs, fn = CASES[kind]
    p, names, out = _program(kind, arrays, attrs)
    w = _x(*p.shape(out)) if p.shape(out) else np.float32(0.7)
    loss = p.reduce("reduce_sum", p.mul(out, p.const(w, "w")), tuple(range(len(p.shape(out)))), keepdims=False)
    wrt = [n for n, a in zip(names, arrays, strict=True) if a.dtype == np.float32]
    grads = grad(p, loss, wrt)
    for name, g in grads.items():
        p.output("g_" + name, g)
    got = interp.run(p, {})[0]
    ts = [torch.tensor(a, requires_grad=a.dtype == np.float32) for a in arrays]
    (fn(*ts) * torch.tensor(w)).sum().backward()
    for name, t in zip(names, ts, strict=True):
        if t.requires_grad:
            np.testing.assert_allclose(got["g_" + name], t.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_reduce_max_gradient_goes_to_the_first_maximum_like_torch():
    p = Program()
    x = p.state("x", np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], np.float32), 1)
    loss = p.reduce("reduce_sum", p.reduce("reduce_max", x, (1,), keepdims=True), (0, 1), keepdims=False)
    p.output("g", grad(p, loss, [x])[x])
    np.testing.assert_array_equal(interp.run(p, {})[0]["g"], [[0, 1, 0], [1, 0, 0]])


def test_gradient_through_labels_is_refused():
    p = Program()
    y = p.input("y", (3,), I32)
    w = p.state("w", _x(4, 2), 1)
    h = p.matmul(p.op("onehot", y, depth=4), w)
    loss = p.reduce("reduce_sum", h, (0, 1), keepdims=False)
    assert set(grad(p, loss, [w])) == {w}  # the labels are a constant for w's gradient
    p2 = Program()
    a = p2.state("a", _x(2, 5), 1)
    g = p2.op("gather", a, p2.const(np.array([1], np.int32), "i", I32), axis=1)
    with pytest.raises(NotDifferentiable, match="gather"):
        grad(p2, p2.reduce("reduce_sum", g, (0, 1), keepdims=False), [a])


def test_shape_rules_reject_bad_programs():
    p = Program()
    a, b = p.state("a", _x(2, 3), 1), p.state("b", _x(2, 3), 1)
    with pytest.raises(ValueError, match="matmul shapes"):
        p.matmul(a, b)
    with pytest.raises(ValueError, match="reshape"):
        p.reshape(a, (4, 2))
    with pytest.raises(ValueError, match="onehot needs int32"):
        p.op("onehot", a, depth=3)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        p.op("add", a)
    with pytest.raises(KeyError, match="unknown input"):
        p.op("relu", "nope")
