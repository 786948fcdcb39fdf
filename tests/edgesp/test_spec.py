import json

import pytest

from edgesp.errors import SpecError
from edgesp.presets import PRESETS, build_spec
from edgesp.spec import (
    LAYER_TYPES,
    LIF,
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Dropout,
    Flatten,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ModelSpec,
    ReLU,
    RuleSpec,
    SignalSpec,
    Tanh,
    TemporalSpec,
    layer_from_dict,
    layer_to_dict,
)

EVERY_LAYER = [
    Linear(4, 3),
    Conv1d(1, 2, 3, stride=2, padding=1),
    Conv2d(3, 4, 3, padding=1),
    Flatten(),
    MaxPool1d(2),
    AvgPool1d(2),
    MaxPool2d(2),
    AvgPool2d(2),
    ReLU(),
    LeakyReLU(0.2),
    Tanh(),
    LayerNorm(1e-4),
    Dropout(0.3),
    LIF(du=0.5, dv=0.1, threshold=2.0, reset="subtract"),
]


def test_every_layer_type_round_trips():
    assert {type(la) for la in EVERY_LAYER} == set(LAYER_TYPES.values())
    for layer in EVERY_LAYER:
        d = json.loads(json.dumps(layer_to_dict(layer)))
        assert layer_from_dict(d) == layer


@pytest.mark.parametrize(
    "preset,shape", [("mlp", (1, 8, 8)), ("cnn1d", (1, 40)), ("cnn2d", (1, 8, 8)), ("vgg8", (3, 8, 8)), ("snn", (64,))]
)
def test_presets_round_trip_through_json(preset, shape):
    spec = build_spec(preset, shape, 10)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.shapes() == spec.shapes()
    assert set(spec.param_shapes()) >= {"signal.weight", "blocks.0.weight", "head.weight"}


def test_all_presets_listed():
    assert set(PRESETS) == {"mlp", "cnn1d", "cnn2d", "vgg8", "snn"}


def test_shape_inference_conv_and_pool():
    spec = ModelSpec(
        (3, 16), 4, blocks=((Conv1d(3, 8, 3, padding=1), ReLU(), MaxPool1d(2), Flatten()),), head=Linear(64, 4)
    )
    assert spec.shapes()[0] == [(8, 16), (8, 16), (8, 8), (64,)]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ModelSpec((64,), 10, ((Linear(63, 8),),), Linear(8, 10)), "in_features=63"),
        (lambda: ModelSpec((1, 8, 8), 10, ((Linear(64, 8),),), Linear(8, 10)), "Flatten"),
        (lambda: ModelSpec((3, 10), 10, ((Conv1d(1, 4, 3),),), Linear(32, 10)), "in_channels=1"),
        (lambda: ModelSpec((64,), 10, ((Linear(64, 8),),), Linear(8, 9)), "num_classes"),
        (lambda: ModelSpec((64,), 10, ((ReLU(), Linear(64, 8)),), Linear(8, 10)), "parametric"),
        (lambda: ModelSpec((64,), 10, ((Linear(64, 8), Linear(8, 8)),), Linear(8, 10)), "parametric"),
        (lambda: ModelSpec((64,), 10, (), Linear(8, 10)), "at least one block"),
        (lambda: ModelSpec((64,), 10, ((Linear(64, 8), LIF()),), Linear(8, 10)), "temporal"),
        (lambda: ModelSpec((1, 7), 10, ((Conv1d(1, 2, 3), MaxPool1d(2)),), Linear(5, 10)), "divisible"),
        (lambda: Linear(0, 3), "positive"),
        (lambda: LIF(dv=1.5), "dv"),
        (lambda: Dropout(1.0), "Dropout.p"),
        (lambda: RuleSpec(name="nope"), "unknown rule"),
        (lambda: RuleSpec(loss="v99"), "unknown sigprop loss"),
        (lambda: TemporalSpec(encoding="morse"), "unknown encoding"),
    ],
)
def test_invalid_specs_raise_clear_errors(make, match):
    with pytest.raises(SpecError, match=match):
        make()


def test_from_dict_errors_are_one_line():
    good = build_spec("mlp", (64,), 10).to_dict()
    for broken, match in [
        ({**good, "version": 99}, "version"),
        ({k: v for k, v in good.items() if k != "head"}, "head"),
        ({**good, "blocks": [[{"type": "warp"}]]}, "unknown layer type"),
    ]:
        with pytest.raises(SpecError, match=match) as e:
            ModelSpec.from_dict(broken)
        assert "\n" not in str(e.value)
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")


def test_param_layer_index_is_forward_order():
    spec = build_spec("mlp", (64,), 10, depth=3)
    layers = [spec.param_layer_index(n) for n in spec.param_shapes()]
    assert layers == sorted(layers)
    # hidden placement (default): the signal is layer 1, trained with block 0
    assert layers[0] == 1 and spec.param_layer_index("blocks.0.weight") == 1 and layers[-1] == 4
    legacy = build_spec("mlp", (64,), 10, depth=3, signal=SignalSpec(placement="input"))
    assert [legacy.param_layer_index(n) for n in legacy.param_shapes()][0] == 0


def test_signal_shapes_follow_placement():
    mlp = build_spec("mlp", (64,), 10, width=32)
    assert mlp.signal_shape() == (32,) and mlp.param_shapes()["signal.weight"] == (32, 10)
    cnn = build_spec("cnn1d", (1, 40), 10, channels=4)
    assert cnn.signal_shape() == (4, 20) and cnn.param_shapes()["signal.weight"] == (80, 10)
    chan = build_spec("cnn1d", (1, 40), 10, channels=4, signal=SignalSpec(shape="channel"))
    assert chan.signal_shape() == (4, 20) and chan.param_shapes()["signal.weight"] == (4, 10)
    inp = build_spec("cnn1d", (1, 40), 10, channels=4, signal=SignalSpec(placement="input"))
    assert inp.signal_shape() == (1, 40) and inp.param_shapes()["signal.weight"] == (40, 10)
    with pytest.raises(SpecError, match="needs a convolutional block 0"):
        build_spec("mlp", (64,), 10, signal=SignalSpec(shape="channel"))
    with pytest.raises(SpecError, match="needs placement 'hidden'"):
        SignalSpec(placement="input", shape="channel")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SpecError, match="init_std"):
            SignalSpec(init_std=bad)
    with pytest.raises(SpecError, match="placement"):
        SignalSpec(placement="output")


def test_signal_fields_round_trip_and_legacy_specs_load_as_input_placement():
    spec = build_spec("cnn1d", (1, 40), 10, channels=4, signal=SignalSpec(shape="channel", init_std=0.2))
    assert ModelSpec.from_json(spec.to_json()) == spec
    d = spec.to_dict()
    d["signal"] = {"kind": "learned", "activation": "relu"}  # written before placement existed
    old = ModelSpec.from_dict(d)
    assert old.signal.placement == "input" and old.signal.init_std == 1.0
    assert old.param_shapes()["signal.weight"] == (40, 10)


def test_temperature_default_resolves_per_rule():
    from edgesp.spec import RuleSpec

    assert RuleSpec().temperature == 0.01  # continuous SP (docs/benchmarks/rules.md)
    for name in ("sp-voltage", "sp-surrogate", "sp-online"):
        assert RuleSpec(name=name).temperature == 0.1  # spiking SP collapses at 0.01 (docs/benchmarks/spiking.md)
    assert RuleSpec(name="sp-voltage", temperature=0.03).temperature == 0.03
    spec = build_spec("mlp", (4,), 3, rule=RuleSpec(name="sp-online"))
    assert ModelSpec.from_json(spec.to_json()).rule.temperature == 0.1
    with pytest.raises(SpecError, match="temperature must be > 0"):
        RuleSpec(temperature=0.0)


def test_recurrent_lif_owns_rec_weight_after_its_block_params_and_round_trips():
    spec = build_spec("snn", (64,), 10, width=16, depth=2, recurrent=True, temporal=TemporalSpec())
    names = list(spec.param_shapes())
    for i in (0, 1):
        k = names.index(f"blocks.{i}.rec_weight")
        assert names[k - 2 : k] == [f"blocks.{i}.weight", f"blocks.{i}.bias"]
        assert spec.param_shapes()[f"blocks.{i}.rec_weight"] == (16, 16)
    assert spec.recurrent_blocks == (0, 1) and spec.is_recurrent and spec.name == "rsnn2x16"
    assert spec.param_layer_index("blocks.1.rec_weight") == 2
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.blocks[0][1].recurrent
    assert json.loads(spec.to_json())["blocks"][0][1]["recurrent"] is True


def test_non_recurrent_specs_are_unchanged_and_old_lif_dicts_load_as_non_recurrent():
    spec = build_spec("snn", (64,), 10, width=16, temporal=TemporalSpec())
    assert not spec.is_recurrent and not any(n.endswith("rec_weight") for n in spec.param_shapes())
    d = spec.to_dict()
    for b in d["blocks"]:
        b[1].pop("recurrent")  # a spec written before the field existed
    assert ModelSpec.from_dict(d) == spec


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: ModelSpec(
                (1, 8),
                3,
                ((Conv1d(1, 2, 3), LIF(recurrent=True), Flatten()),),
                Linear(12, 3),
                temporal=TemporalSpec(),
            ),
            "Linear block with a flat output",
        ),
        (
            lambda: ModelSpec(
                (4,),
                3,
                ((Linear(4, 5), LIF(recurrent=True), LIF(recurrent=True)),),
                Linear(5, 3),
                temporal=TemporalSpec(),
            ),
            "at most one",
        ),
        (lambda: LIF(recurrent=True, spiking=False), "spiking=True"),
        (lambda: LIF(recurrent=1), "true or false"),
        (lambda: build_spec("mlp", (64,), 10, recurrent=True), "--model snn"),
    ],
)
def test_bad_recurrent_specs_raise_one_line(make, match):
    with pytest.raises(SpecError, match=match) as e:
        make()
    assert "\n" not in str(e.value)
