"""Parity drift of on-device SP learning in TFLite over many steps.

The same compiled update step runs for N steps on the same batches in: ai-edge-litert (default kernels
with XNNPACK, and reference kernels), tflite-runtime, the numpy IR interpreter (compilers.interp, same
program), ONNX Runtime (the ONNX backend's artifact of the same program) and the torch reference trainer
(edgesp.rules.sigprop, autograd). Prints the max |Δ| over all parameters against torch and against the
numpy interpreter at checkpoints and writes JSON.

    .venv/bin/python bench/tflite_drift.py [--steps 2000] [--optimizer adam|sgd]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compilers import interp  # noqa: E402
from compilers.lower import lower_update  # noqa: E402
from compilers.onnx import compile_model as compile_onnx  # noqa: E402
from compilers.tflite import compile_model as compile_tflite  # noqa: E402
from edgesp.atomic import write_text  # noqa: E402
from edgesp.data import adapt_inputs, load_dataset  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.rules.sigprop import SigpropTrainer  # noqa: E402
from edgesp.spec import OptimizerSpec  # noqa: E402
from firmware_sim.onnx_device import OrtDevice  # noqa: E402
from firmware_sim.tflite_device import TFLiteDevice  # noqa: E402
from targets import load_target  # noqa: E402


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names: list[str]) -> float:
    return max(float(np.abs(a[n] - b[n]).max()) for n in names)


def run(steps: int, batch: int, optimizer: str, lr: float, width: int, depth: int, checkpoints: list[int]) -> dict:
    ds = load_dataset("digits")
    opt = OptimizerSpec(name=optimizer, lr=lr)
    spec = build_spec("mlp", ds.input_shape, ds.num_classes, width=width, depth=depth)
    spec = spec.replace_rule(optimizer=opt)
    params = init_params(spec, 0)
    names = list(spec.param_shapes())
    prog = lower_update(spec, params, batch)
    with tempfile.TemporaryDirectory() as tmp:
        compile_tflite(spec, params, load_target("edge-cpu-tflite"), Path(tmp) / "tfl", batch)
        compile_onnx(spec, params, load_target("edge-cpu"), Path(tmp) / "onnx", batch)
        runs = {
            "litert": TFLiteDevice(Path(tmp) / "tfl", "litert"),
            "litert_reference": TFLiteDevice(Path(tmp) / "tfl", "litert", "reference"),
            "tflite_runtime": TFLiteDevice(Path(tmp) / "tfl", "tflite_runtime"),
            "onnxruntime": OrtDevice(Path(tmp) / "onnx"),
        }
        torch_ref = SigpropTrainer(spec, params, 0)
        state = {s.value.name: s.init for s in prog.states}
        x_all = adapt_inputs(ds.x_train, spec.input_shape).astype(np.float32)
        rng = np.random.default_rng(0)
        rows = []
        for k in range(1, steps + 1):
            idx = rng.choice(len(x_all), batch, replace=False)
            x, y = x_all[idx], ds.y_train[idx].astype(np.int32)
            for dev in runs.values():
                dev.step(x, y, lr)
            _, state = interp.run(prog, {"x": x, "y": y, "lr": np.float32(lr)}, state)
            torch_ref.train_step(x, y)
            if k in checkpoints:
                ref = torch_ref.params()
                w = {n: d.weights() for n, d in runs.items()}
                row = {"step": k, "max_abs_weight": max(float(np.abs(ref[n]).max()) for n in names)}
                for n, ws in w.items():
                    row[f"{n}_vs_torch"] = max_diff(ws, ref, names)
                    row[f"{n}_vs_numpy"] = max_diff(ws, state, names)
                row["numpy_vs_torch"] = max_diff(state, ref, names)
                row["litert_vs_onnxruntime"] = max_diff(w["litert"], w["onnxruntime"], names)
                row["litert_vs_tflite_runtime"] = max_diff(w["litert"], w["tflite_runtime"], names)
                rows.append(row)
                print(
                    " ".join(f"{k2}={v:.2e}" if isinstance(v, float) else f"{k2}={v}" for k2, v in row.items()),
                    flush=True,
                )
    return {
        "steps": steps,
        "batch": batch,
        "optimizer": optimizer,
        "lr": lr,
        "width": width,
        "depth": depth,
        "dataset": "digits",
        "rows": rows,
    }


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-3 for adam, 1e-2 for sgd")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lr = args.lr or (1e-3 if args.optimizer == "adam" else 1e-2)
    cps = sorted({c for c in (1, 10, 100, 500, 1000, 2000, args.steps) if c <= args.steps})
    res = run(args.steps, args.batch, args.optimizer, lr, args.width, args.depth, cps)
    out = args.out or Path(f"bench/results/tflite_drift_{args.optimizer}.json")
    write_text(out, json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
