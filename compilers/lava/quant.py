"""Lowering of a spiking ModelSpec + float weights to a :class:`NetDesc`, with Loihi fixed-point quantisation.

fixed_pt (see :mod:`compilers.lava.rule`): per layer one weight exponent e (3-bit signed range −8..7) chosen
as the smallest with max|W, b|·S/2^e ≤ 254, plus rule.WEIGHT_HEADROOM (1) bit of room for the weights to grow;
W_int = 2·round(W·S/2^(e+1)) (even ints, 8-bit signed mantissa);
threshold θ_int = round(θ·S) (17-bit); decays du_int = round(du·4096) − 1, dv_int = round(dv·4096) (12-bit);
graded inputs with INPUT_FRAC fractional bits; a recurrent block's W_rec (H, H) like W (8-bit even mantissa) with
its own exponent e_rec (the smallest with max|W_rec|·S/2^e ≤ 254, plus the headroom; no bias); the target-signal
table with SIGMA fractional bits (hidden placement: it is block 0's target current, in the units of a) or
INPUT_FRAC (input placement: it is an input).
The report gives, per tensor, max |error| and relative RMS error of the dequantised value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compilers.lava import rule
from compilers.lava.network_desc import LayerDesc, NetDesc
from edgesp.errors import CompileError
from edgesp.spec import LIF, Linear, ModelSpec

WEIGHT_EXP_RANGE = (-8, 7)
VTH_MAX = 2**17 - 1


def signal_table(spec: ModelSpec, params: dict[str, np.ndarray]) -> np.ndarray:
    """z_c = act(LayerNorm(W_S e_c + b_S)) for every class c: (C, D), D = ``spec.signal_dim`` (block 0's width
    for hidden placement, the input size for input placement); float64, as edgesp.functional.signal_forward."""
    z = np.asarray(params["signal.weight"], np.float64).T + np.asarray(params["signal.bias"], np.float64)
    z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-5)
    if spec.signal.activation == "relu":
        z = np.maximum(z, 0.0)
    return z


def check_spec(spec: ModelSpec) -> None:
    """Only Linear → LIF blocks (recurrent or not) and a Linear head lower to Lava synapses + compartments."""
    if not spec.is_spiking:
        raise CompileError(
            f"model {spec.name!r} is not spiking: lava targets need --model snn "
            "(blocks Linear → LIF with temporal settings)"
        )
    for i, block in enumerate(spec.blocks):
        kinds = [type(la).__name__ for la in block]
        if len(block) != 2 or not isinstance(block[0], Linear) or not isinstance(block[1], LIF):
            raise CompileError(f"block {i} is {kinds}: lava targets support only Linear → LIF blocks (--model snn)")
        if not block[1].spiking:
            raise CompileError(f"block {i}: non-spiking LIF is not supported on lava targets")


def _rel_rms(q: np.ndarray, x: np.ndarray) -> float:
    den = float(np.sqrt(np.mean(x**2))) or 1.0
    return float(np.sqrt(np.mean((q - x) ** 2)) / den)


def _err(q: np.ndarray, x: np.ndarray) -> dict[str, float]:
    return {"max_abs": float(np.max(np.abs(q - x))) if x.size else 0.0, "rel_rms": _rel_rms(q, x)}


def weight_exponent(w: np.ndarray, b: np.ndarray) -> int:
    m = max(float(np.max(np.abs(w))), float(np.max(np.abs(b))) if b.size else 0.0, 1e-12)
    e = math.ceil(math.log2(m * 2**rule.SIGMA / rule.W_MAX)) + rule.WEIGHT_HEADROOM
    return int(min(max(e, WEIGHT_EXP_RANGE[0]), WEIGHT_EXP_RANGE[1]))


def quantise_weights(w: np.ndarray, e: int) -> np.ndarray:
    q = 2 * np.rint(w * 2 ** (rule.SIGMA - e - 1))
    return np.clip(q, rule.W_MIN, rule.W_MAX).astype(np.int32)


def dequantise(q: np.ndarray, e: int) -> np.ndarray:
    return q.astype(np.float64) * 2.0 ** (e - rule.SIGMA)


def lower(spec: ModelSpec, params: dict[str, np.ndarray], precision: str) -> tuple[NetDesc, dict[str, Any]]:
    """Spec + weights -> network description and quantisation report (empty for floating_pt)."""
    check_spec(spec)
    temporal = spec.temporal
    assert temporal is not None
    loss = "l2" if spec.rule.loss == "l2" else "v1"
    input_dim = math.prod(spec.block_input_shape())
    if not spec.signal.hidden and input_dim < spec.num_classes:
        raise CompileError(
            f"input signal placement: one input step has {input_dim} features, fewer than the "
            f"{spec.num_classes} classes, so the target table LayerNorm(W_S onehot) cannot tell them "
            "apart: train or create the model with --signal-placement hidden"
        )
    table = signal_table(spec, params)
    layers: list[LayerDesc] = []
    names = [(f"blocks.{i}", spec.blocks[i][0], spec.blocks[i][1]) for i in range(len(spec.blocks))]
    names.append(("head", spec.head, None))
    for prefix, lin, lif in names:
        w = np.asarray(params[f"{prefix}.weight"], np.float64)
        b = np.asarray(params.get(f"{prefix}.bias", np.zeros(lin.out_features)), np.float64)
        kw: dict[str, Any] = {
            "kind": "readout" if lif is None else "lif",
            "n_in": lin.in_features,
            "n_out": lin.out_features,
            "weight": w.astype(np.float32),
            "bias": b.astype(np.float32),
        }
        if lif is not None and lif.recurrent:
            kw.update(recurrent=True, rec_weight=np.asarray(params[f"{prefix}.rec_weight"], np.float32))
        if lif is not None:
            kw.update(
                du=float(lif.du),
                dv=float(lif.dv),
                threshold=float(lif.threshold),
                reset=lif.reset,
                lif_bias=float(lif.bias),
                spiking=True,
            )
        else:  # readout as edgesp.snn: membrane decays by the dv of the last block's LIF
            kw.update(readout=temporal.readout, dv=float(spec.blocks[-1][1].dv), spiking=False)
        layers.append(LayerDesc(**kw))
    lr = float(spec.rule.optimizer.lr)
    steps = spec.input_shape[-1] if temporal.encoding == "sequence" else temporal.time_steps
    desc = NetDesc(
        precision=precision,
        time_steps=steps,
        encoding=temporal.encoding,
        encoding_seed=temporal.seed,
        loss=loss,
        temperature=float(spec.rule.temperature),
        lr=lr,
        lr_head=lr,
        num_classes=spec.num_classes,
        input_dim=input_dim,
        table=table.astype(np.float32),
        layers=layers,
        placement=spec.signal.placement,
        signal_act=spec.signal.activation,
    )
    if spec.signal.hidden and spec.signal.kind == "learned":
        desc.signal_learn = True
        desc.signal_weight = np.asarray(params["signal.weight"], np.float64).copy()
        desc.signal_bias = np.asarray(params["signal.bias"], np.float64).copy()
    if precision == "floating_pt":
        return desc, {}
    return _to_fixed(desc)


def _to_fixed(desc: NetDesc) -> tuple[NetDesc, dict[str, Any]]:
    S = 2.0**rule.SIGMA
    report: dict[str, Any] = {
        "scale_S": S,
        "weight_bits": 8,
        "state_bits": rule.UV_BITS,
        "decay_bits": rule.DECAY_BITS,
        "tensors": {},
    }
    for i, la in enumerate(desc.layers):
        w, b = la.weight.astype(np.float64), la.bias.astype(np.float64)
        e = weight_exponent(w, b)
        wq, bq = quantise_weights(w, e), quantise_weights(b, e)
        report["tensors"][f"layer{i}.weight"] = {"exponent": e, **_err(dequantise(wq, e), w)}
        report["tensors"][f"layer{i}.bias"] = {"exponent": e, **_err(dequantise(bq, e), b)}
        la.weight, la.bias, la.weight_exp = wq, bq, e
        if la.rec_weight is not None:
            wr = la.rec_weight.astype(np.float64)
            er = weight_exponent(wr, np.zeros(0))
            la.rec_weight, la.rec_exp = quantise_weights(wr, er), er
            report["tensors"][f"layer{i}.rec_weight"] = {"exponent": er, **_err(dequantise(la.rec_weight, er), wr)}
        if la.kind == "lif":
            la.du_int = int(np.clip(round(la.du * 4096) - 1, 0, 4095))
            la.dv_int = int(np.clip(round(la.dv * 4096), 0, 4095))
            la.vth_int = int(round(la.threshold * S))
            if not 0 < la.vth_int <= VTH_MAX:
                raise CompileError(
                    f"layer {i}: threshold {la.threshold} does not fit Loihi's 17-bit threshold "
                    f"at scale {S:g}: use a threshold in (0, {VTH_MAX / S:g}]"
                )
            la.lif_bias_int = int(round(la.lif_bias * S * 2**rule.ACT_SHIFT))
            report["tensors"][f"layer{i}.du"] = {"value": la.du, "quantised": (la.du_int + 1) / 4096}
            report["tensors"][f"layer{i}.dv"] = {"value": la.dv, "quantised": la.dv_int / 4096}
            report["tensors"][f"layer{i}.threshold"] = {"value": la.threshold, "quantised": la.vth_int / S}
        else:
            la.dv_int = int(np.clip(round(la.dv * 4096), 0, 4095))
            report["tensors"][f"layer{i}.readout_dv"] = {"value": la.dv, "quantised": la.dv_int / 4096}
    frac = rule.table_frac(desc.hidden)
    tq = rule.quantise_table(desc.table.astype(np.float64), desc.hidden)
    report["tensors"]["signal.table"] = {"frac_bits": frac, **_err(tq / 2**frac, desc.table.astype(np.float64))}
    desc.table = tq.astype(np.int32)
    k = rule.lr_shift(desc.lr)
    report["lr"] = {"value": desc.lr, "quantised": 2.0**-k, "shift": k}
    errs = [v["rel_rms"] for n, v in report["tensors"].items() if n.endswith((".weight", ".rec_weight"))]
    report["weight_rel_rms_max"] = max(errs)
    return desc, report
