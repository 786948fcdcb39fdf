"""The static liveness plan on hand-made graphs whose peak is known."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from compilers.memory_plan import plan


def _model(nodes, inputs, outputs, inits=()):
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, f, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, f, s) for n, s in outputs],
        initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_chain_frees_intermediates_after_their_last_use():
    # x (100 floats) → a → b → c → y: at most two intermediates are alive at once (producer + consumer)
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    r = plan(_model(nodes, [("x", [100])], [("y", [100])]))
    assert r["resident_bytes"] == 800  # x and y
    assert r["peak_activation_bytes"] == 800  # b while a is still being read, etc.
    assert r["peak_bytes"] == 1600
    assert r["largest_node_bytes"] == 800


def test_fan_out_keeps_a_value_alive_and_initializers_count_once():
    w = numpy_helper.from_array(np.ones((10,), np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),  # a lives until here
        helper.make_node("Add", ["c", "w"], ["y"]),
    ]
    r = plan(_model(nodes, [("x", [10])], [("y", [10])], [w]))
    assert r["resident_bytes"] == 40 + 40 + 40  # x, y, the constant w
    assert r["peak_activation_bytes"] == 120  # a, b and c at the Add
    # an initializer that is also a graph input (an overridable default) is counted once, as an input
    r2 = plan(_model(nodes, [("x", [10]), ("w", [10])], [("y", [10])], [w]))
    assert r2["resident_bytes"] == 120
