"""Model presets: build a :class:`ModelSpec` from a preset name, the data's input shape and class count.

Presets (sizes are options):
- ``mlp``:   [Flatten] → (Linear → LayerNorm → ReLU) × depth → head
- ``cnn1d``: (Conv1d k=5 pad=2 → LayerNorm → ReLU → MaxPool1d 2) × depth → Flatten → head
- ``cnn2d``: (Conv2d k=3 pad=1 → LayerNorm → ReLU → MaxPool2d 2) × depth → Flatten → head
- ``vgg8``:  cnn2d-like with two convs per stage (VGG8b-style, scaled to the input)
- ``snn``:   (Linear → LIF) × depth → head on spike counts / membrane (needs temporal settings); ``lif``
  sets the neuron (default LIF(du=1, dv=0.2); slower decays suit long sequences); ``recurrent=True`` makes
  every hidden LIF recurrent (each block gets ``blocks.{i}.rec_weight``, see :class:`edgesp.spec.LIF`)
"""

from __future__ import annotations

import math
from dataclasses import replace

from edgesp.errors import SpecError
from edgesp.spec import (
    LIF,
    Conv1d,
    Conv2d,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ModelSpec,
    ReLU,
    RuleSpec,
    SignalSpec,
    TemporalSpec,
)

PRESETS = ("mlp", "cnn1d", "cnn2d", "vgg8", "snn")

# Defaults of the snn preset on sequence data (the CLI's, and bench/temporal.py's model), measured on
# mnist1d-seq (docs/benchmarks/temporal.md): one recurrent layer of LIF neurons (du 0.5, dv 0.05: with the
# delay-line input mnist1d-seq+taps8x2 these gave every rule more than du 0.2, dv 0.02); the SP rules with
# eligibility traces through the neuron's dynamics and later steps weighted more (edgesp.rules.spiking_rules).
# (the SP rules at 1e-3: their traces scale the gradient by up to 1/(du·dv); sp-online at 3e-3 was worse)
SEQUENCE_LR = {"sp-online": 1e-3, "sp-voltage": 1e-3, "sp-surrogate": 1e-3, "eprop": 3e-3, "bptt": 3e-3, "rtrl": 3e-3}
SEQUENCE_SP_PARAMS = {"trace": "filter", "step_weight": "ramp"}
# sp-online updates every 10 steps (4 updates per MNIST-1D sequence): updating every step collapsed one seed of three
# to chance (10.6 %) and was 7–18 points worse with the settings below; the loss reads max(v, −θ) (without the floor
# the similarity is dominated by how far below threshold silent neurons sit) and the head learns from the readout at
# step T only (the one the prediction uses): together 34 % vs 23–29 % after 5–10 epochs (1 seed, no taps)
# The SP loss is formed at every 5th step (loss_every; the state and traces still advance every step): a training
# step then costs 1.8x an inference step in CPU time instead of 2.6x (T >= 40, the fused step), with no measurable
# accuracy cost on mnist1d-seq+taps8x2 (3 seeds: 50.8 +- 1.0 % vs 49.3 +- 2.1 % at every step) and spike-recall
# solved after 3 epochs (99.7 %); it learns spike-recall slower in the first epoch (86.6 % vs 93.8 %). Round 4 of
# docs/benchmarks/temporal.md.
SEQUENCE_ONLINE_PARAMS = {"update_every": 10, "v_floor": -1.0, "head_steps": "last", "loss_every": 5}
SEQUENCE_LIF = {"du": 0.5, "dv": 0.05}
SEQUENCE_EPOCHS = 10
# cosine learning-rate decay over the run (edgesp.train): 10 epochs, mnist1d-seq+taps8x2, 1 seed: BPTT 61.3 % (vs
# 54–59 % constant), the untrained-layer baseline 49.8 % (46.8 %), sp-online 45.2 % (46.1 % at 8 epochs)
SEQUENCE_SCHEDULE = "cosine"
# every spiking rule but rtrl trains its head at Adam lr 1e-2 (the blocks keep the rule's lr): mnist1d-seq+taps8x2,
# 10 epochs, cosine, 3 seeds: sp-online 44.5 -> 49.0 %, bptt 60.9 -> 65.2 %, e-prop 53.5 -> 59.4 %, the untrained
# layer's head 48.9 -> 52.9 %. The standardised head (head_norm=ema, edgesp.rules.head_norm) on top moved
# sp-online / bptt / untrained by +0.3 to +0.8 (noise) and cost e-prop 5 points, so it is an option, not a default
# (docs/benchmarks/temporal.md).
SEQUENCE_HEAD_PARAMS = {"head_lr": 1e-2}


def sequence_defaults(rule: str) -> dict:
    """Model and rule defaults for a spiking model on sequence data: width, depth, LIF du/dv, recurrent,
    SP loss and temperature, Adam lr, rule parameters (the SP rules' traces and online settings; every rule but
    rtrl: the head's lr), the benchmark's epochs and the learning-rate schedule (the CLI's when
    --schedule is not given)."""
    return {
        "width": 128,
        "depth": 1,
        **SEQUENCE_LIF,
        "recurrent": True,
        "loss": "v9",
        "temperature": 0.1,
        "lr": SEQUENCE_LR.get(rule, 1e-3),
        "rule_params": {
            **(SEQUENCE_SP_PARAMS if rule.startswith("sp-") else {}),
            **(SEQUENCE_ONLINE_PARAMS if rule == "sp-online" else {}),
            **(SEQUENCE_HEAD_PARAMS if rule != "rtrl" else {}),
        },
        "epochs": SEQUENCE_EPOCHS,
        "schedule": SEQUENCE_SCHEDULE,
    }


def build_spec(
    preset: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 128,
    depth: int = 2,
    channels: int = 16,
    rule: RuleSpec | None = None,
    signal: SignalSpec | None = None,
    temporal: TemporalSpec | None = None,
    lif: LIF | None = None,
    recurrent: bool = False,
) -> ModelSpec:
    rule = rule or RuleSpec()
    signal = signal or SignalSpec()
    if preset not in PRESETS:
        raise SpecError(f"unknown model {preset!r}; choose one of {', '.join(PRESETS)}")
    if recurrent and preset != "snn":
        raise SpecError(f"recurrent layers are spiking (LIF) layers: use --model snn, not {preset!r}")
    if depth < 1:
        raise SpecError("depth must be >= 1")
    blocks: list[tuple] = []
    shape = tuple(input_shape)
    if preset == "mlp":
        d = math.prod(shape)
        first_in = d
        for i in range(depth):
            blocks.append((Linear(first_in if i == 0 else width, width), LayerNorm(), ReLU()))
        feat = width
        input_shape = (d,) if len(shape) > 1 else shape
        return ModelSpec(
            input_shape=input_shape,
            num_classes=num_classes,
            blocks=tuple(blocks),
            head=Linear(feat, num_classes),
            signal=signal,
            rule=rule,
            name=f"mlp{depth}x{width}",
        )
    if preset == "cnn1d":
        if len(shape) == 1:
            shape = (1, shape[0])
        if len(shape) != 2:
            raise SpecError(f"cnn1d needs 1-D inputs (length or channels×length), got {tuple(input_shape)}")
        c_in, length = shape
        for i in range(depth):
            c_out = channels * (2**i)
            blocks.append((Conv1d(c_in, c_out, 5, padding=2), LayerNorm(), ReLU(), MaxPool1d(2)))
            if length % 2:
                raise SpecError(f"cnn1d depth {depth} needs the length divisible by 2**depth, got {shape[1]}")
            c_in, length = c_out, length // 2
        blocks[-1] = (*blocks[-1], Flatten())
        return ModelSpec(
            input_shape=shape,
            num_classes=num_classes,
            blocks=tuple(blocks),
            head=Linear(c_in * length, num_classes),
            signal=signal,
            rule=rule,
            name=f"cnn1d{depth}x{channels}",
        )
    if preset in ("cnn2d", "vgg8"):
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise SpecError(f"{preset} needs image inputs (channels×height×width), got {tuple(input_shape)}")
        c_in, h, w = shape
        per_stage = 2 if preset == "vgg8" else 1
        for i in range(depth):
            c_out = channels * (2**i)
            for j in range(per_stage):
                block = [Conv2d(c_in, c_out, 3, padding=1), LayerNorm(), ReLU()]
                if j == per_stage - 1:
                    if h % 2 or w % 2:
                        raise SpecError(f"{preset} depth {depth} needs sizes divisible by 2**depth, got {shape[1:]}")
                    block.append(MaxPool2d(2))
                    h, w = h // 2, w // 2
                blocks.append(tuple(block))
                c_in = c_out
        blocks[-1] = (*blocks[-1], Flatten())
        return ModelSpec(
            input_shape=shape,
            num_classes=num_classes,
            blocks=tuple(blocks),
            head=Linear(c_in * h * w, num_classes),
            signal=signal,
            rule=rule,
            name=f"{preset}{depth}x{channels}",
        )
    # snn
    temporal = temporal or TemporalSpec()
    if temporal.encoding == "sequence":
        d = math.prod(shape[:-1]) if len(shape) > 1 else 1
        if len(shape) == 1:
            shape = (1, shape[0])
    else:
        d = math.prod(shape)
        shape = (d,)
    neuron = lif or LIF()
    if recurrent:
        neuron = replace(neuron, recurrent=True)
    for i in range(depth):
        blocks.append((Linear(d if i == 0 else width, width), neuron))
    return ModelSpec(
        input_shape=shape,
        num_classes=num_classes,
        blocks=tuple(blocks),
        head=Linear(width, num_classes),
        signal=signal,
        rule=rule,
        temporal=temporal,
        name=f"{'rsnn' if neuron.recurrent else 'snn'}{depth}x{width}",
    )
