"""Microcontroller backend (runtime ``mcu``): an int8 SP (or BP baseline) model as portable C99 firmware for a
Cortex-M, learning on the device with the integer rule of :mod:`edgesp.int8` (its numpy code is the spec).

``compile_model`` takes an int8-trained checkpoint (``edgesp train --precision int8``) as is, or quantises a float
one (:func:`edgesp.int8.quantise`: power-of-two scales, LayerNorm dropped), checks that the learning loop fits the
target's SRAM and flash (one line naming need vs budget), and writes:

- ``model.h`` / ``model.c``: sizes and settings; the weights as initialised arrays (.data: they are learned, so
  they live in SRAM, their load image in flash); the static buffers of the memory plan; the integer kernels.
  No malloc, no libc in the learning path.
- ``main.c`` (semihosting driver: samples from job.bin, predictions and weights to out.bin, SysTick instruction
  counts and stack painting printed as ``STAT`` lines), ``start.c`` (vector table, Reset_Handler), ``link.ld``
  (RAM LENGTH = the target's SRAM: what does not fit fails to link), ``Makefile``;
- ``state.npz`` (the integer state: int8 weights and table, int32 biases, the step counter) and
  ``manifest.json`` (last). The whole build folder is swapped in atomically by :func:`compilers.compile_model`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from compilers.mcu import emit
from edgesp import int8
from edgesp.atomic import write_bytes
from edgesp.errors import CompileError, SpecError, TargetError
from edgesp.manifest import Manifest, ParameterEntry, PlannedMemory, sha256
from edgesp.spec import ModelSpec
from targets import Target

STATE_FILE = "state.npz"
# a trained int8 model keeps learning on the device 2^-3 ≈ 0.125× as fast as the host's base rate (the float
# backends' FINETUNE_LR_SCALE is 0.1: batch-1 updates are noisier than the host's late training)
FINETUNE_SHIFT = 3
RULES = ("sigprop", "bp")


def check_fit(mp: emit.MemoryPlan, target: Target) -> None:
    """One-line TargetError when the learning loop's planned SRAM or flash exceeds the target's."""
    sram, flash = int(target.mcu["sram_bytes"]), int(target.mcu["flash_bytes"])
    need, fneed = mp.sram_needed(), mp.flash_needed()
    if need > sram or fneed > flash:
        raise TargetError(
            f"the {'BP' if mp.rule == 'bp' else 'SP'} firmware does not fit {target.name}: SRAM needs {need:,} B "
            f"(weights {mp.weights:,} + buffers {mp.buffers:,} + libc/stack {need - mp.learning:,}) of {sram:,} B, "
            f"flash needs {fneed:,} B of {flash:,} B: use a smaller model (--width/--channels/--depth) or a larger "
            "target"
        )


def compile_model(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    target: Target,
    out_dir: Path,
    batch: int = 1,
    on_device_rule: str = "sigprop",
    finetune: bool = True,
) -> Manifest:
    """``finetune``: a trained int8 checkpoint learns FINETUNE_SHIFT slower on the device (see above)."""
    if target.runtime != "mcu":
        raise TargetError(f"target {target.name!r} runs {target.runtime}, not mcu")
    if on_device_rule not in RULES:
        raise CompileError(f"the mcu backend learns with sigprop or bp, not {on_device_rule!r}")
    for name, shape in spec.param_shapes().items():
        if name not in params or tuple(np.shape(params[name])) != tuple(shape):
            raise CompileError(f"weights lack {name!r} of shape {shape}: use a checkpoint of this model or --fresh")
    try:
        plan, state, was_int8 = int8.from_checkpoint(spec, params)
    except SpecError as e:
        raise CompileError(f"cannot lower to int8: {e}") from None
    if was_int8 and finetune:
        plan = plan.slower(FINETUNE_SHIFT)
    mp = emit.memory_plan(plan, on_device_rule)
    check_fit(mp, target)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {k: v.encode() for k, v in emit.sources(plan, state, on_device_rule, target.mcu).items()}
    buf = io.BytesIO()
    np.savez(buf, step=np.array(0, np.int64), **state)
    files[STATE_FILE] = buf.getvalue()
    for fname, data in files.items():
        write_bytes(out_dir / fname, data)
    parameters = []
    for i, q in enumerate(plan.layers):
        for kind, arr in (("weight", f"W{i}"), ("bias", f"B{i}")):
            name = f"{q.name}.{kind}"
            if name in spec.param_shapes():
                parameters.append(
                    ParameterEntry(
                        name, spec.param_layer_index(name), spec.param_shapes()[name], "parameter", f"model.c:{arr}"
                    )
                )
    for name in ("signal.weight", "signal.bias"):
        learned = name == "signal.weight" and plan.signal_learned
        parameters.append(
            ParameterEntry(
                name,
                spec.param_layer_index(name),
                spec.param_shapes()[name],
                "parameter",
                "model.c:Z" if learned else None,
            )
        )
    parameters.sort(key=lambda e: e.layer)
    infer_buffers = mp.max_in + mp.max_out + 4 * mp.kmax + 8 * plan.num_classes + plan.blocks[0].in_size
    manifest = Manifest(
        target=target.name,
        target_description=target.to_dict(),
        runtime="mcu",
        batch=1,
        on_device_rule=on_device_rule,
        sp_loss="int8-hinge (one sampled negative class)" if on_device_rule == "sigprop" else None,
        trained_with=spec.rule.name + (" (int8)" if was_int8 else " (float, quantised at compile time)"),
        learning_rate=float(2.0 ** -plan.layers[0].lr_shift),
        artifacts={
            "inference": "model.c",
            "update": "model.c",
            "state": STATE_FILE,
            "header": "model.h",
            "driver": "main.c",
            "startup": "start.c",
            "linker": "link.ld",
            "makefile": "Makefile",
        },
        hashes={f: sha256(d) for f, d in files.items()},
        parameters=tuple(parameters),
        planned_memory=PlannedMemory(
            mp.learning,
            mp.weights + infer_buffers,
            {
                "weights_bytes": mp.weights,
                "buffers_bytes": mp.buffers,
                "sram_needed_bytes": mp.sram_needed(),
                "flash_needed_bytes": mp.flash_needed(),
                "libc_reserve_bytes": emit.LIBC_RESERVE,
                "max_in": mp.max_in,
                "max_out": mp.max_out,
                "kmax": mp.kmax,
            },
        ),
        spec=spec.to_dict(),
        backend={
            "precision": "int8",
            "requested_batch": batch,
            "notes": "learns online, one sample per step (batch 1)",
            "int8": int8.settings_dict(plan),
            "plan": plan.to_dict(),
            "param_order": emit.param_order(plan),
            "input_frac_bits": int8.INPUT_FRAC,
            "quantised_from_float": not was_int8,
            "cpu": target.mcu["cpu"],
            "qemu_machine": target.mcu["qemu_machine"],
            "build": "arm-none-eabi-gcc -mcpu=CPU -mthumb -O2 (see Makefile)",
            "learning_rate_note": f"stochastic-rounded shifts 2^-k, k per layer {[q.lr_shift for q in plan.layers]}",
        },
    )
    manifest.write(out_dir)
    return manifest


def export_inference(spec: ModelSpec, params: dict[str, np.ndarray], out_dir: Path, batch: int) -> dict[str, str]:
    """Standalone C99 inference sources with ``params`` baked in (``model.h``, ``model.c``: call
    ``net_predict(x)`` on an int8 sample). ``batch`` is unused (one sample per call). {file: sha256}."""
    plan, state, _ = int8.from_checkpoint(spec, params)
    src = emit.sources(
        plan,
        state,
        "sigprop",
        {
            "cpu": "cortex-m7",
            "flash_origin": 0,
            "ram_origin": 0x20000000,
            "flash_bytes": 1 << 20,
            "sram_bytes": 1 << 20,
        },
    )
    out = {}
    for fname in ("model.h", "model.c"):
        data = src[fname].encode()
        write_bytes(Path(out_dir) / fname, data)
        out[fname] = sha256(data)
    return out


def int8_state_from_build(state_path: Path) -> tuple[dict[str, np.ndarray], int]:
    with np.load(state_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    step = int(arrays.pop("step"))
    return arrays, step
