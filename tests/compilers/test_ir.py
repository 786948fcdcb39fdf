"""The program IR itself: declarations, dead-code elimination, freezing states, and the numpy interpreter."""

import numpy as np
import pytest

from compilers import interp
from compilers.ir import I32, Program, freeze_states


def _tiny() -> tuple[Program, str]:
    p = Program("tiny")
    x = p.input("x", (2, 3))
    w = p.state("w", np.arange(6, dtype=np.float32).reshape(3, 2), layer=1)
    y = p.matmul(x, w)
    p.op("exp", y)  # dead: used by nothing
    p.output("y", y)
    return p, w


def test_live_ops_drop_dead_code_and_keep_order():
    p, _ = _tiny()
    assert [op.kind for op in p.ops] == ["matmul", "exp"]
    assert [op.kind for op in p.live_ops()] == ["matmul"]


def test_interp_runs_states_and_updates():
    p, w = _tiny()
    p.update_state(w, p.scale(w, 2.0))
    x = np.ones((2, 3), np.float32)
    out, new = interp.run(p, {"x": x})
    np.testing.assert_array_equal(out["y"], x @ np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(new["w"], 2 * np.arange(6, dtype=np.float32).reshape(3, 2))
    out2, _ = interp.run(p, {"x": x}, {"w": np.zeros((3, 2), np.float32)})  # states fed override the init
    assert not out2["y"].any()
    with pytest.raises(KeyError, match="missing input x"):
        interp.run(p, {})
    with pytest.raises(ValueError, match="update of w: shape"):
        p.update_state(w, p.input("z", (2, 2)))


def test_freeze_states_bakes_values_in():
    p, _ = _tiny()
    frozen = freeze_states(p, {"w": np.ones((3, 2), np.float32)})
    assert frozen.states == [] and "w" in frozen.consts and p.states  # the original is untouched
    np.testing.assert_array_equal(interp.run(frozen, {"x": np.ones((2, 3), np.float32)})[0]["y"], 3.0)
    with pytest.raises(ValueError, match="shape"):
        freeze_states(p, {"w": np.ones((2, 2), np.float32)})
    p.update_state("w", p.scale("w", 1.0))
    with pytest.raises(ValueError, match="without state updates"):
        freeze_states(p, {"w": np.ones((3, 2), np.float32)})


def test_small_constants_are_shared_and_int_inputs_keep_their_dtype():
    p = Program()
    assert p.const(1.0) == p.const(1.0) and p.const(1.0) != p.const(2.0)
    y = p.input("y", (3,), I32)
    oh = p.op("onehot", y, depth=3)
    p.output("oh", oh)
    out = interp.run(p, {"y": np.array([2, 0, 1])})[0]["oh"]
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0, 1]])
