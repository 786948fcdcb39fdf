"""TFLite emitter: every IR primitive matches the numpy reference (compilers.interp) in both interpreters;
resource variables keep state across calls; the loader guards get-before-init and rejects bad inputs.

Tolerances: float32 kernels vs numpy float32. Exact ops (arith on the same operands, relu, masks, shape ops,
gather, pad, onehot) must agree to 1 ulp-level (rtol 1e-6); matmul/reductions sum in a different order
(rtol 1e-5, atol 1e-6 · K); transcendental kernels (exp, log, tanh, softmax) use their own polynomial
approximations (XNNPACK/Eigen): rtol 2e-6..1e-5 observed, asserted at rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from compilers import interp
from compilers.ir import Program
from compilers.tflite.emit import ModelWriter
from compilers.tflite.plan import plan_model
from compilers.tflite.runtime import TFLiteModel
from edgesp.errors import CompileError, DataError

INTERPRETERS = ("litert", "tflite_runtime")
RNG = np.random.default_rng(0)


def _prog(build, shapes=((3, 4),), int_input=None):
    """A program with float inputs a0, a1, … (and optionally int labels y) and one output 'out'."""
    p = Program("case")
    names = [p.input(f"a{i}", s) for i, s in enumerate(shapes)]
    if int_input is not None:
        names.append(p.input("y", int_input, "int32"))
    p.output("out", build(p, *names))
    return p


def _feeds(p: Program, positive: bool = False, rounded: bool = False) -> dict[str, np.ndarray]:
    feeds = {}
    for v in p.inputs:
        if v.dtype == "int32":
            feeds[v.name] = RNG.integers(0, 5, v.shape).astype(np.int32)
            continue
        a = RNG.standard_normal(v.shape).astype(np.float32)
        if positive:
            a = np.abs(a) + 0.1
        if rounded:
            a = np.round(a)
        feeds[v.name] = a
    return feeds


CASES = {
    "matmul": (lambda p, a, b: p.matmul(a, b), ((3, 4), (4, 5)), {}),
    "matmul_fc": (lambda p, a, w: p.matmul(a, p.transpose(w)), ((3, 4), (5, 4)), {}),
    "matmul_adjx": (lambda p, g, x: p.matmul(p.transpose(g), x), ((6, 3), (6, 4)), {}),
    "add": (lambda p, a, b: p.add(a, b), ((3, 4), (1, 4)), {}),
    "sub": (lambda p, a, b: p.sub(a, b), ((3, 1), (3, 4)), {}),
    "mul_scalar": (lambda p, a: p.scale(a, 0.37), ((3, 4),), {}),
    "mul": (lambda p, a, b: p.mul(a, b), ((2, 3, 4), (4,)), {}),
    "div": (lambda p, a, b: p.div(a, b), ((3, 4), (3, 1)), {"positive": True}),
    "relu": (lambda p, a: p.op("relu", a), ((3, 4),), {}),
    "leaky_relu": (lambda p, a: p.op("leaky_relu", a, alpha=0.01), ((3, 4),), {}),
    "tanh": (lambda p, a: p.op("tanh", a), ((3, 4),), {}),
    "exp": (lambda p, a: p.op("exp", a), ((3, 4),), {}),
    "log": (lambda p, a: p.op("log", a), ((3, 4),), {"positive": True}),
    "sqrt": (lambda p, a: p.op("sqrt", a), ((3, 4),), {"positive": True}),
    "greater": (lambda p, a, b: p.op("greater", a, b), ((3, 4), (3, 4)), {"rounded": True}),
    "equal": (lambda p, a, b: p.op("equal", a, b), ((3, 4), (1, 4)), {"rounded": True}),
    "transpose": (lambda p, a: p.transpose(a, (2, 0, 1)), ((2, 3, 4),), {}),
    "reshape": (lambda p, a: p.reshape(a, (4, 6)), ((2, 3, 4),), {}),
    "broadcast_to": (lambda p, a: p.broadcast_to(a, (5, 3, 4)), ((3, 1),), {}),
    "reduce_sum": (lambda p, a: p.reduce("reduce_sum", a, (0,), keepdims=True), ((3, 4),), {}),
    "reduce_mean": (lambda p, a: p.reduce("reduce_mean", a, (1, 2), keepdims=False), ((2, 3, 4),), {}),
    "reduce_max": (lambda p, a: p.reduce("reduce_max", a, (-1,), keepdims=True), ((3, 4),), {}),
    "reduce_all_scalar": (lambda p, a: p.reduce("reduce_sum", a, (0, 1), keepdims=False), ((3, 4),), {}),
    "softmax": (lambda p, a: p.op("softmax", a), ((2, 3, 4),), {}),
    "log_softmax": (lambda p, a: p.op("log_softmax", a), ((3, 7),), {}),
    "onehot": (lambda p, y: p.op("onehot", y, depth=5), (), {"int_input": (6,)}),
    "gather": (lambda p, a: p.op("gather", a, p.const(np.array([2, 0, 2, -1]), "i", "int32"), axis=0),
               ((3, 4),), {}),
    "gather_axis1": (lambda p, a: p.op("gather", a, p.const(np.array([[1, 3], [0, 0]]), "i", "int32"),
                                       axis=1), ((3, 4),), {}),
    "pad": (lambda p, a: p.op("pad", a, pads=((0, 0), (1, 2), (2, 1))), ((2, 3, 4),), {}),
    "const_output": (lambda p, a: p.const(np.arange(4, dtype=np.float32)), ((3, 4),), {}),
}
APPROX = {"exp", "log", "tanh", "softmax", "log_softmax", "sqrt", "matmul", "matmul_fc", "matmul_adjx",
          "reduce_sum", "reduce_mean", "reduce_all_scalar", "div"}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_primitive_matches_numpy_reference(case: str, interpreter: str) -> None:
    build, shapes, kw = CASES[case]
    p = _prog(build, shapes, kw.get("int_input"))
    w = ModelWriter()
    w.add_program(p, "run", assign=False)
    m = TFLiteModel(w.finish(), interpreter)
    feeds = _feeds(p, kw.get("positive", False), kw.get("rounded", False))
    ref = interp.run(p, feeds)[0]["out"]
    got = m.run("run", feeds)["out"]
    assert got.shape == ref.shape and got.dtype == np.float32
    if case in APPROX:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    if case in ("greater", "equal"):
        assert 0 < ref.sum() < ref.size  # the rounded inputs exercise both mask values


def test_fc_and_adjx_fusions_emit_no_transpose() -> None:
    """matmul(a, Wᵀ) → FULLY_CONNECTED and matmul(gᵀ, x) → BATCH_MATMUL(adj_x): no W-sized copy."""
    for case in ("matmul_fc", "matmul_adjx"):
        build, shapes, _ = CASES[case]
        w = ModelWriter()
        w.add_program(_prog(build, shapes), "run", assign=False)
        w.finish()
        assert 39 not in w.opcodes  # BuiltinOperator.TRANSPOSE


def _sgd_program(batch: int = 4) -> tuple[Program, Program]:
    """A softmax-regression SGD step: W ← W − lr·(softmax(xWᵀ) − onehot(y))ᵀx / B; loss = CE."""
    p = Program("sgd")
    x, y, lr = p.input("x", (batch, 3)), p.input("y", (batch,), "int32"), p.input("lr", ())
    w0 = RNG.standard_normal((5, 3)).astype(np.float32)
    W = p.state("W", w0, 1)
    logits = p.matmul(x, p.transpose(W))
    oh = p.op("onehot", y, depth=5)
    d = p.sub(p.op("softmax", logits), oh)
    grad = p.scale(p.matmul(p.transpose(d), x), 1.0 / batch)
    p.update_state("W", p.sub(W, p.mul(lr, grad)))
    ce = p.reduce("reduce_sum", p.mul(oh, p.op("log_softmax", logits)), (0, 1), keepdims=False)
    p.output("loss_1", p.scale(ce, -1.0 / batch))
    q = Program("infer")
    xi = q.input("x", (batch, 3))
    q.output("logits", q.matmul(xi, q.transpose(q.state("W", w0, 1))))
    return p, q


def _stateful_model(interpreter: str) -> tuple[TFLiteModel, Program, Program]:
    from compilers.tflite import build_model

    p, q = _sgd_program()
    return TFLiteModel(build_model(p, q), interpreter), p, q


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_weights_change_inside_interpreter_and_match_reference(interpreter: str) -> None:
    m, p, q = _stateful_model(interpreter)
    st = {"W": p.states[0].init}
    m.init(st)
    np.testing.assert_array_equal(m.get()["W"], st["W"])
    before = m.get()["W"]
    for _ in range(20):
        x = RNG.standard_normal((4, 3)).astype(np.float32)
        y = RNG.integers(0, 5, 4).astype(np.int32)
        out = m.step(x, y, 0.5)
        ref, st = interp.run(p, {"x": x, "y": y, "lr": np.float32(0.5)}, st)
        np.testing.assert_allclose(out["loss_1"], ref["loss_1"], rtol=1e-5, atol=1e-6)
    after = m.get()["W"]
    assert np.abs(after - before).max() > 1e-2  # the variable changed across step calls
    np.testing.assert_allclose(after, st["W"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.infer(x), interp.run(q, {"x": x}, st)[0]["logits"], rtol=1e-5, atol=1e-5)
    m.init({"W": p.states[0].init})  # re-init resets the variable
    np.testing.assert_array_equal(m.get()["W"], p.states[0].init)


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_get_before_init_is_refused(interpreter: str) -> None:
    m, _, _ = _stateful_model(interpreter)
    for call in (m.get, lambda: m.infer(np.zeros((4, 3), np.float32)),
                 lambda: m.step(np.zeros((4, 3), np.float32), np.zeros(4, np.int32), 0.1)):
        with pytest.raises(CompileError, match="before init"):
            call()


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_bad_inputs_give_one_line_errors(interpreter: str, tmp_path) -> None:
    m, p, _ = _stateful_model(interpreter)
    m.init({"W": p.states[0].init})
    with pytest.raises(DataError, match="shape") as e:
        m.step(np.zeros((4, 7), np.float32), np.zeros(4, np.int32), 0.1)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="inputs"):
        m.init({"V": p.states[0].init})
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"TFL3 this is not a flatbuffer" * 3)
    with pytest.raises(CompileError, match="not a loadable TFLite model") as e:
        TFLiteModel(bad, interpreter)
    assert "\n" not in str(e.value)
    with pytest.raises(CompileError, match="does not exist"):
        TFLiteModel(tmp_path / "missing.tflite", interpreter)


def test_plan_counts_variables_constants_and_live_activations() -> None:
    from compilers.tflite import build_model

    p, q = _sgd_program(batch=8)
    plan = plan_model(build_model(p, q))
    assert plan["step"]["variables_bytes"] == 5 * 3 * 4 and plan["get"]["variables_bytes"] == 60
    # step inputs x (8·3), y (8), lr alive at op 0 at least; logits/onehot/softmax (8·5) coexist later
    assert plan["step"]["activations_peak_bytes"] >= 4 * (8 * 3 + 8 + 1 + 3 * 8 * 5)
    assert plan["infer"]["activations_peak_bytes"] == 4 * (8 * 3 + 8 * 5 + 5 * 3)
    parts = ("variables_bytes", "constants_bytes", "activations_peak_bytes")
    assert plan["step"]["planned_peak_bytes"] == sum(plan["step"][k] for k in parts)
