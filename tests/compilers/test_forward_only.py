import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compilers.forward_only import ForwardOnlyError, check_onnx, check_program
from compilers.ir import Program
from compilers.lower import lower_update
from compilers.onnx import manifest_parameters
from compilers.onnx_emit import to_onnx
from edgesp.spec import SignalSpec
from tests.compilers.helpers import make

SIGNALS = {
    "hidden": SignalSpec(),
    "channel": SignalSpec(shape="channel"),
    "input": SignalSpec(placement="input"),
}


CASES = [
    (preset, shape, signal)
    for preset, shape in [("mlp", (64,)), ("cnn1d", (1, 40)), ("cnn2d", (1, 8, 8))]
    for signal in sorted(SIGNALS)
    if not (signal == "channel" and preset == "mlp")  # channel signals need a conv block 0 (see test_spec)
]


@pytest.mark.parametrize("preset,shape,signal", CASES)
def test_compiled_update_steps_are_forward_only(preset, shape, signal):
    spec, params = make(preset, shape, depth=3 if preset == "mlp" else 2, signal=SIGNALS[signal])
    prog = lower_update(spec, params, 8)
    check_program(prog)
    check_onnx(to_onnx(prog), manifest_parameters(spec, prog))


def test_hidden_signal_updates_with_block_0_and_never_sees_later_layers():
    """Hidden placement: the signal's new weights depend on block 0's weights (one joint loss, layer 1) and
    on no later layer's state. Tagged layer 0 instead, the same update reads block 0 (a later layer) and the
    checker refuses it: the layer tag is what the property is checked against."""
    spec, params = make("mlp", (64,), depth=3)
    prog = lower_update(spec, params, 8)
    check_program(prog)
    sig = next(s for s in prog.states if s.value.name == "signal.weight")
    assert sig.layer == 1
    sig.layer = 0  # pretend the signal were layer 0: its update reads block 0's weights (layer 1)
    with pytest.raises(ForwardOnlyError, match="signal.weight .layer 0. depends on later-layer state blocks.0"):
        check_program(prog)


def _violating_program() -> Program:
    """Layer 1's new weight uses layer 2's weight: what BP/FA-style feedback would need."""
    p = Program()
    x = p.input("x", (4, 3))
    w1 = p.state("w1", np.ones((3, 3)), layer=1)
    w2 = p.state("w2", np.ones((3, 3)), layer=2)
    h1 = p.matmul(x, w1)
    h2 = p.matmul(h1, w2)
    feedback = p.matmul(p.transpose(h2), x)  # error from layer 2 sent back to layer 1
    p.update_state(w1, p.sub(w1, p.transpose(feedback)))
    p.update_state(w2, p.sub(w2, p.matmul(p.transpose(h1), h2)))
    return p


def test_violating_program_is_rejected():
    with pytest.raises(ForwardOnlyError, match="w1 .layer 1. depends on later-layer state w2"):
        check_program(_violating_program())


def test_violating_onnx_graph_is_rejected():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "w2"], ["h2"]),
        helper.make_node("Sub", ["w1", "h2"], ["w1_new"]),
        helper.make_node("Sub", ["w2", "h1"], ["w2_new"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info(n, f, [3, 3]) for n in ("x", "w1", "w2")],
        [helper.make_tensor_value_info(n, f, [3, 3]) for n in ("w1_new", "w2_new")],
    )
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    layout = [
        {"name": "w1", "layer": 1, "update_output": "w1_new"},
        {"name": "w2", "layer": 2, "update_output": "w2_new"},
    ]
    with pytest.raises(ForwardOnlyError, match="w1"):
        check_onnx(model, layout)
    # the same graph where layer 1 uses only its own input is accepted
    nodes[2] = helper.make_node("Sub", ["w1", "h1"], ["w1_new"])
    nodes[3] = helper.make_node("Sub", ["w2", "h2"], ["w2_new"])
    graph = helper.make_graph(nodes, "ok", graph.input, graph.output)
    check_onnx(helper.make_model(graph), layout)
