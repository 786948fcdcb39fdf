"""Lava backend: lower a spiking SP model (preset ``snn``: (Linear → LIF) × depth → Linear head) to a network of
Lava processes that learns on-chip with the SP-voltage rule (see :mod:`compilers.lava.rule`).

``compile_model`` checks the spec, lowers the weights (fixed_pt: Loihi quantisation with its error reported),
maps layers to cores and checks the target's per-core limits (:mod:`compilers.lava.plan`), and writes:

- ``network.npz`` (artifact ``inference``): weights, biases, the target-signal table (and W_S, b_S when the
  signal learns) — numpy arrays, no pickles;
- ``learning.json`` (artifact ``update``): the on-chip rule (loss, learning rates, fixed-point shifts);
- ``manifest.json`` (:class:`edgesp.manifest.Manifest`): target, runtime "lava", artifacts with their sha256,
  parameters, spec, batch 1, planned memory; under ``backend``: precision, cores used, core map, where each
  parameter learns, the quantisation report, ``network`` (the scalars :class:`NetDesc` is rebuilt from) and
  how to run inference without edgesp.

Recurrent blocks (spec ``LIF(recurrent=True)``): ``blocks.{i}.rec_weight`` lowers to a second synapse group on the
block's own cores, from its spikes back to its compartments with one step of delay (a[t] += W_rec s[t−1]),
quantised like W with its own exponent, learning on chip from the same third factor
(ΔW_rec = −lr Σ_r δ[r][t]ᵀ s[r][t−1], :mod:`compilers.lava.rule`); the fit check counts its H×H synapses and
R·H input axons per core.

Signal placement (``spec.signal.placement``):

- ``'hidden'`` (default): the table z (C, H_0) = act(LayerNorm(W_S e_c + b_S)) is block 0's target current:
  block 0's target compartments receive a^t_0[t] = z every step (in place of W_0 t_0 + b_0); W_0 learns from
  the sample row only. ``signal.kind='learned'``: W_S, b_S learn from the same block-0 loss, from the third
  factor of the target rows (∂L/∂z = δ_t), back through act and LayerNorm, plain SGD with the layer's lr
  (fixed_pt: the same 2^−k), in float64 on the host / embedded CPU (Loihi 2's embedded cores: LayerNorm's
  backward needs a reduction and a division, which the synaptic learning engine does not compute); the
  table is recomputed after each update (fixed_pt: re-quantised to SIGMA fractional bits). ``'fixed'``: the
  table is constant.
- ``'input'`` (checkpoints written before placement existed): the table (C, D_in) is the target stream's
  input t_0, a fixed table on the host (W_S is not learned on Lava: its gradient would cross W_0).

Lava processes cannot be serialised: :mod:`firmware_sim.lava.network` builds them from these files at simulate
time. This module does not import Lava, so compiling works without the runtime.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from compilers.lava import rule
from compilers.lava.plan import plan
from compilers.lava.quant import lower
from edgesp.atomic import write_bytes
from edgesp.errors import CompileError, TargetError
from edgesp.manifest import Manifest, ParameterEntry, PlannedMemory, sha256
from edgesp.spec import ModelSpec
from targets import Target

PRECISIONS = ("floating_pt", "fixed_pt")
INFERENCE_FILE = "network.npz"
UPDATE_FILE = "learning.json"


def _check_params(spec: ModelSpec, params: dict[str, np.ndarray]) -> None:
    for name, shape in spec.param_shapes().items():
        if name not in params:
            raise CompileError(f"weights lack {name!r}: use a checkpoint of this model or --fresh")
        if tuple(np.shape(params[name])) != tuple(shape):
            raise CompileError(f"weight {name!r} has shape {tuple(np.shape(params[name]))}, the spec needs {shape}")


def compile_model(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    target: Target,
    out_dir: Path,
    batch: int = 1,
    on_device_rule: str = "sigprop",
) -> Manifest:
    if on_device_rule != "sigprop":
        raise CompileError(f"lava targets learn with SP on chip; there is no {on_device_rule!r} update step for Lava")
    if target.runtime != "lava":
        raise TargetError(f"target {target.name!r} runs {target.runtime}, not lava")
    if target.precision not in PRECISIONS:
        raise TargetError(
            f"target {target.name!r}: lava precision must be one of {', '.join(PRECISIONS)}, got {target.precision!r}"
        )
    _check_params(spec, params)
    desc, qreport = lower(spec, params, target.precision)
    mapping = plan(desc, target)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = desc.arrays()
    if not desc.signal_learn:  # the compiled signal weights, kept for exporting the learned model as a checkpoint
        arrays["spec.signal.weight"] = np.asarray(params["signal.weight"], np.float32)
        arrays["spec.signal.bias"] = np.asarray(params["signal.bias"], np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(out_dir / INFERENCE_FILE, buf.getvalue())
    learning = {
        "rule": "sp-voltage (on-chip, online, batch 1)",
        "loss": desc.loss,
        "temperature": desc.temperature,
        "lr": desc.lr,
        "lr_head": desc.lr_head,
        "update": "W -= lr * sum_r delta[r]^T s_in[r]; b -= lr * sum_r delta[r] (third factor delta = dL/dv)",
        "signal": _signal_note(desc),
        "head": "per-step cross-entropy on z_t = W s_in + b",
        "recurrent": (
            "recurrent blocks: a[t] += W_rec s[t-1]; W_rec -= lr * sum_r delta[r][t]^T s[r][t-1] "
            "(the block's own spikes of the previous step)"
            if any(la.recurrent for la in desc.layers)
            else None
        ),
        "fixed_pt": (
            {
                "lr_shift": rule.lr_shift(desc.lr),
                "delta_bits": rule.DELTA_BITS,
                "delta_frac_bits": rule.DELTA_FRAC,
                "rounding": "stochastic",
                "recurrent_rounding_rng": "numpy.random.default_rng([seed, layer, 1])",
            }
            if desc.fixed
            else None
        ),
    }
    learning_bytes = json.dumps(learning, indent=2).encode()
    write_bytes(out_dir / UPDATE_FILE, learning_bytes)
    n_layers = len(desc.layers)
    parameters, placement = [], {}
    for name, shape in spec.param_shapes().items():
        layer = spec.param_layer_index(name)
        kind = "weights" if name.endswith("weight") else "bias"
        if name.endswith(".rec_weight"):  # the recurrent synapse group of block layer-1 (process rec{i})
            update_output = f"rec{layer - 1}.weights"
            placement[name] = {"on_chip": True, "learned": True, "where": "synaptic learning engine (recurrent)"}
        elif name.startswith("signal."):  # never in the synaptic memory: a table on the host / embedded CPU
            learned = desc.signal_learn
            update_output = f"dense0.{name.replace('.', '_')}" if learned else None
            placement[name] = {
                "on_chip": False,
                "learned": learned,
                "where": "embedded CPU (float64)" if learned else "fixed table",
            }
        else:
            update_output = f"dense{layer - 1}.{kind}"
            placement[name] = {"on_chip": True, "learned": True, "where": "synaptic learning engine"}
        parameters.append(ParameterEntry(name, layer, tuple(shape), "parameter", update_output))
    parameters.sort(key=lambda p: p.layer)
    net_bytes = buf.getvalue()
    pm = mapping["planned_memory"]
    manifest = Manifest(
        target=target.name,
        target_description=target.to_dict(),
        runtime="lava",
        batch=1,
        on_device_rule="sp-voltage (on-chip, online, batch 1)",
        sp_loss=desc.loss,
        trained_with=spec.rule.name,
        learning_rate=float(desc.lr),
        artifacts={"inference": INFERENCE_FILE, "update": UPDATE_FILE},
        hashes={INFERENCE_FILE: sha256(net_bytes), UPDATE_FILE: sha256(learning_bytes)},
        parameters=tuple(parameters),
        # synapses + neurons of the mapped cores; learning adds no memory on chip (the rule's traces live in
        # the compartments already counted)
        planned_memory=PlannedMemory(int(pm["total_bytes"]), int(pm["synapse_bytes"] + pm["neuron_bytes"]), pm),
        spec=spec.to_dict(),
        backend=json.loads(
            json.dumps(
                {
                    "precision": target.precision,
                    "requested_batch": batch,
                    "rule_note": on_chip_rule_note(spec),
                    "cores_used": mapping["cores_used"],
                    "cores_available": mapping["cores_available"],
                    "core_map": [
                        {k: d[k] for k in ("layer", "kind", "n_in", "n_out", "rows", "recurrent", "cores")}
                        for d in mapping["layers"]
                    ],
                    "parameter_placement": placement,
                    "quantisation": qreport or None,
                    "network": desc.scalars(),
                    "notes": (
                        f"streams one sample at a time (T steps); {_signal_note(desc)}; {n_layers - 1} SP blocks + "
                        "readout"
                    ),
                    "inference_without_edgesp": (
                        "network.npz holds each layer's weight/bias (floating_pt: float32; fixed_pt: int32 mantissas "
                        "× 2^weight_exp) and manifest backend.network the LIF constants (du, dv, threshold, reset) and "
                        "the readout: per time step t, u = (1-du) u + W s_in + b (+ W_rec s[t-1] for recurrent layers: "
                        "layer{i}.rec_weight, exponent rec_exp), v = (1-dv) v + u, spikes where "
                        "v > threshold (then reset); the head integrates W s + b; prediction = argmax of the readout "
                        "after T steps. No label or signal table is needed for inference."
                    ),
                },
                default=_json_default,
            )
        ),
    )
    manifest.write(out_dir)  # last: marks a complete build
    return manifest


# rule parameters of the host trainer that the on-chip rule has no counterpart for
HOST_ONLY_RULE_PARAMS = (
    "trace",
    "step_weight",
    "update_every",
    "loss_every",
    "online_loss",
    "spike",
    "v_floor",
    "head_steps",
    "head_norm",
    "head_lr",
    "head_norm_momentum",
)


def on_chip_rule_note(spec: ModelSpec) -> str | None:
    """Lava learns with one rule on chip: SP on the membrane voltage at every step (online, batch 1, no eligibility
    traces). When the spec names another rule, or host-trainer settings the chip cannot follow, say so (the build
    still compiles: the weights are the spec's, the on-chip learning is this rule). None when they agree."""
    r = spec.rule
    host_only = {k: r.params[k] for k in HOST_ONLY_RULE_PARAMS if k in r.params}
    if r.name in ("sp-voltage", "sp-online") and not host_only:
        return None
    settings = f" with {', '.join(f'{k}={v}' for k, v in host_only.items())}" if host_only else ""
    return (
        f"the spec's rule is {r.name}{settings} (host trainer); on chip Lava learns with per-step SP on the membrane "
        "voltage (online, batch 1, no eligibility traces)"
    )


def _signal_note(desc: Any) -> str:
    c, d = desc.table.shape
    if not desc.hidden:
        return (
            f"input signal placement (legacy): the target table ({c}, {d}) enters as the target stream's input; "
            "W_S is a fixed table on the host (not learned on Lava)"
        )
    where = (
        "W_S, b_S learn on the embedded CPU (float64 SGD from block 0's target-row third factor, back "
        "through LayerNorm; table recomputed after each update)"
        if desc.signal_learn
        else "W_S is fixed (signal kind 'fixed'): constant table"
    )
    return f"hidden signal placement: the target table ({c}, {d}) is injected as block 0's target current; {where}"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def export_inference(spec: ModelSpec, params: dict[str, np.ndarray], out_dir: Path, batch: int) -> dict[str, str]:
    """Standalone inference description of a spiking model, runnable by any LIF simulator without edgesp:
    ``snn_inference.npz`` (float32 ``layer{i}.weight``/``layer{i}.bias``, blocks then the readout, and
    ``layer{i}.rec_weight`` for recurrent blocks: a[t] += W_rec s[t−1], s[−1] = 0) and
    ``snn_inference.json`` (per layer: du, dv, threshold, reset, the readout kind; T, encoding). Per step t:
    u = (1−du)·u + W·s_in + b, v = (1−dv)·v + u + lif_bias, s = 1[v > threshold], v reset where s; the readout
    integrates W·s + b (membrane: decays by its dv); prediction = argmax after T steps. ``batch`` is unused (the
    description has no batch dimension). Returns {file name: sha256}."""
    from edgesp.manifest import sha256

    desc, _ = lower(spec, params, "floating_pt")
    arrays = {}
    for i, la in enumerate(desc.layers):
        arrays[f"layer{i}.weight"] = np.asarray(la.weight, np.float32)
        arrays[f"layer{i}.bias"] = np.asarray(la.bias, np.float32)
        if la.rec_weight is not None:
            arrays[f"layer{i}.rec_weight"] = np.asarray(la.rec_weight, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    info = {
        "time_steps": desc.time_steps,
        "encoding": desc.encoding,
        "encoding_seed": desc.encoding_seed,
        "layers": [
            {
                k: v
                for k, v in la.__dict__.items()
                if k
                in (
                    "kind",
                    "n_in",
                    "n_out",
                    "du",
                    "dv",
                    "threshold",
                    "reset",
                    "lif_bias",
                    "spiking",
                    "readout",
                    "recurrent",
                )
            }
            for la in desc.layers
        ],
        "update": (
            "u = (1-du) u + W s_in + b (+ W_rec s[t-1] if recurrent, s[-1] = 0); v = (1-dv) v + u + lif_bias; "
            "s = [v > threshold]; reset v where s"
        ),
        "prediction": "argmax of the readout after time_steps steps",
    }
    text = json.dumps(info, indent=2, default=_json_default).encode()
    out_dir = Path(out_dir)
    write_bytes(out_dir / "snn_inference.npz", buf.getvalue())
    write_bytes(out_dir / "snn_inference.json", text)
    return {"snn_inference.npz": sha256(buf.getvalue()), "snn_inference.json": sha256(text)}
