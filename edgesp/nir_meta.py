"""The edgesp learning extension of NIR: what learns on device, and how, recorded as NIR metadata.

NIR graphs are static; this convention (docs/nir.md) adds the learning set-up without changing any node, so
plain NIR readers (``nir.read``, snnTorch, nirtorch) load the file and ignore it. Graph metadata key
``edgesp`` (an HDF5 group):

- ``format`` = ``"edgesp-nir-learning"``, ``version`` = 1, ``dt`` (seconds per time step, float);
- ``learning``: JSON text: ``rule`` (name, loss, temperature, topk, optimizer, params), ``learns`` (one entry per
  parameter group: ``param`` (``blocks.{i}``/``head``/``signal``), ``node`` (the NIR node holding it, or null
  for the signal), ``tensors``, ``learns`` (bool), ``where``), ``signal`` (kind, placement, shape, activation,
  init_std, weight shape, the node its output drives), ``temporal`` (time steps, encoding, readout, seed),
  ``fixed_point`` (Loihi 2 format of the weights, state and third factor, per-layer weight exponents);
- ``spec``: the edgesp ModelSpec JSON (the structure is always re-derived from the nodes; the recorded spec
  supplies values NIR cannot hold exactly, used only where they agree with the nodes);
- ``signal_weight`` (D, C) and ``signal_bias`` (D,): the signal generator's weights (float32 arrays).

Each parametric node also carries ``metadata['edgesp'] = {'param': 'blocks.0', 'learns': 1, 'rule': ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesp.errors import NIRError
from edgesp.spec import ModelSpec

KEY = "edgesp"
FORMAT = "edgesp-nir-learning"
VERSION = 1


def _where(spec: ModelSpec, param: str) -> str:
    if param == "signal":
        if spec.signal.kind != "learned":
            return "fixed (signal kind 'fixed')"
        return "embedded CPU / host, float64 SGD from block 0's third factor (lava); the trainer's optimizer (torch)"
    return "synaptic learning engine (lava: third factor × pre-synaptic input); the trainer's optimizer (torch)"


def fixed_point_format(spec: ModelSpec, params: dict[str, np.ndarray]) -> dict[str, Any]:
    """Loihi 2 fixed-point format of this model as ``compile --target loihi2`` lowers it (compilers.lava)."""
    from compilers.lava import rule
    from compilers.lava.quant import weight_exponent

    exps = {}
    for prefix in [f"blocks.{i}" for i in range(len(spec.blocks))] + ["head"]:
        w = np.asarray(params[f"{prefix}.weight"], np.float64)
        b = np.asarray(params.get(f"{prefix}.bias", np.zeros(1)), np.float64)
        exps[prefix] = weight_exponent(w, b)
    return {
        "target": "loihi2 (lava fixed_pt)",
        "weights": "8-bit signed mantissa (even ints in [-256, 254]) × 2^(exponent − sigma), one exponent per layer",
        "weight_exponent": exps,
        "weight_headroom_bits": rule.WEIGHT_HEADROOM,
        "sigma": rule.SIGMA,
        "decay_bits": rule.DECAY_BITS,
        "state_bits": rule.UV_BITS,
        "act_shift": rule.ACT_SHIFT,
        "input_frac_bits": rule.INPUT_FRAC,
        "third_factor_bits": rule.DELTA_BITS,
        "third_factor_frac_bits": rule.DELTA_FRAC,
        "signal_table_frac_bits": rule.table_frac(spec.signal.hidden),
        "lr_shift": rule.lr_shift(float(spec.rule.optimizer.lr)),
        "rounding": "stochastic (weight updates)",
    }


def build(spec: ModelSpec, params: dict[str, np.ndarray], nodes: dict[str, str], dt: float) -> dict[str, Any]:
    """Graph metadata for ``spec`` (``nodes``: parameter group → NIR node name)."""
    rule = spec.rule
    learns = []
    for param in [f"blocks.{i}" for i in range(len(spec.blocks))] + ["head", "signal"]:
        tensors = sorted(k.split(".")[-1] for k in spec.param_shapes() if k.rsplit(".", 1)[0] == param)
        learns.append(
            {
                "param": param,
                "node": nodes.get(param),
                "tensors": tensors,
                "learns": param != "signal" or spec.signal.kind == "learned",
                "where": _where(spec, param),
            }
        )
    assert spec.temporal is not None
    learning = {
        "format": FORMAT,
        "version": VERSION,
        "rule": {
            "name": rule.name,
            "loss": rule.loss,
            "temperature": rule.temperature,
            "topk": rule.topk,
            "optimizer": {
                "name": rule.optimizer.name,
                "lr": rule.optimizer.lr,
                "momentum": rule.optimizer.momentum,
                "weight_decay": rule.optimizer.weight_decay,
            },
            "params": rule.params,
        },
        "learns": learns,
        "signal": {
            "kind": spec.signal.kind,
            "placement": spec.signal.placement,
            "shape": spec.signal.shape,
            "activation": spec.signal.activation,
            "init_std": spec.signal.init_std,
            "weight_shape": list(spec.param_shapes()["signal.weight"]),
            "output_shape": list(spec.signal_shape()),
            "drives": nodes.get("signal_target"),
            "math": "z_c = act(LayerNorm(W_S onehot(c) + b_S)); hidden: z is block 0's target-stream input current",
        },
        "temporal": {
            "time_steps": spec.temporal.time_steps,
            "encoding": spec.temporal.encoding,
            "readout": spec.temporal.readout,
            "seed": spec.temporal.seed,
        },
        "dt": dt,
        "fixed_point": fixed_point_format(spec, params),
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "dt": float(dt),
        "learning": json.dumps(learning, sort_keys=True),
        "spec": spec.to_json(),
        "signal_weight": np.ascontiguousarray(params["signal.weight"], np.float32),
        "signal_bias": np.ascontiguousarray(params["signal.bias"], np.float32),
    }


@dataclass(frozen=True)
class Recorded:
    """The learning set-up read back from a graph's metadata."""

    spec: ModelSpec
    learning: dict[str, Any]
    dt: float
    signal_weight: np.ndarray
    signal_bias: np.ndarray


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v.item())
    return str(v)


def parse(metadata: dict[str, Any] | None) -> Recorded | None:
    """The recorded set-up, or None for a graph without the extension. A damaged extension raises NIRError."""
    if not isinstance(metadata, dict) or KEY not in metadata:
        return None
    m = metadata[KEY]
    if not isinstance(m, dict) or _text(m.get("format", "")) != FORMAT:
        return None
    version = int(np.asarray(m.get("version", 0)).item())
    if version != VERSION:
        raise NIRError(f"NIR metadata '{KEY}' has version {version}, this edgesp reads {VERSION}")
    try:
        learning = json.loads(_text(m["learning"]))
        spec = ModelSpec.from_json(_text(m["spec"]))
        dt = float(np.asarray(m["dt"]).item())
        ws = np.asarray(m["signal_weight"], np.float32)
        bs = np.asarray(m["signal_bias"], np.float32)
    except (KeyError, ValueError) as e:
        raise NIRError(f"NIR metadata '{KEY}' is damaged ({type(e).__name__}: {e}): re-export the model") from None
    want = spec.param_shapes()
    if ws.shape != tuple(want["signal.weight"]) or bs.shape != tuple(want["signal.bias"]):
        raise NIRError(
            f"NIR metadata '{KEY}': signal weights {ws.shape}/{bs.shape} do not match the recorded spec "
            f"{want['signal.weight']}/{want['signal.bias']}: re-export the model"
        )
    return Recorded(spec, learning, dt, ws, bs)
