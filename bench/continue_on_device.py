"""Benchmark: a host-trained SP model keeps its accuracy while it learns on on the device.

For each (dataset, model) row and seed: train on the host with sigprop (the spec defaults, ``--epochs``
epochs, batch ``--host-batch``), record its test accuracy, compile it for ORT (``edge-cpu``) and TFLite
(``edge-cpu-tflite``) at ``--batch`` (default 1: v1 is the batch-1 loss), then stream ``--steps`` update
steps of the training split through the compiled step (``firmware_sim`` simulators, the same loop as
``edgesp simulate``) and report the test accuracy after them. The target (issue 10): after 200 steps the
on-device accuracy stays within 1 point of the host's. The on-device optimizer starts with fresh state
(Adam moments zero), as a freshly flashed device would; ``--device-lr`` sets its learning rate (default:
``compilers.finetune_spec``'s, the host lr × 0.1, as ``edgesp compile CHECKPOINT`` does).

    .venv/bin/python bench/continue_on_device.py [--seeds 3] [--steps 200] [--batch 1] [--device-lr 1e-4]

Prints a table, writes JSON (``--out``) and a markdown table (``--md``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compilers import compile_model, finetune_spec  # noqa: E402
from edgesp.atomic import write_text  # noqa: E402
from edgesp.data import load_dataset  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.rules import make_trainer  # noqa: E402
from edgesp.spec import RuleSpec  # noqa: E402
from edgesp.train import accuracy, fit  # noqa: E402
from firmware_sim import simulator_module  # noqa: E402
from targets import load_target  # noqa: E402

ROWS = (("digits", "mlp"), ("mnist1d", "cnn1d"))
TARGETS = {"onnxruntime": "edge-cpu", "tflite": "edge-cpu-tflite"}


def run_row(dname: str, model: str, seed: int, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(seed)
    ds = load_dataset(dname)
    shape = ds.input_shape
    if model == "cnn1d" and len(shape) != 2:
        shape = (1, math.prod(shape))
    rule = RuleSpec(loss=args.loss) if args.loss else RuleSpec()
    spec = build_spec(model, shape, ds.num_classes, rule=rule)
    trainer = make_trainer(spec, init_params(spec, seed), seed)
    fit(trainer, ds, spec.input_shape, epochs=args.epochs, batch=args.host_batch, seed=seed, progress=False)
    from edgesp.data import adapt_inputs

    host_acc = accuracy(trainer, adapt_inputs(ds.x_test, spec.input_shape), ds.y_test)
    params = trainer.params()
    device_spec = finetune_spec(spec, args.device_lr)
    out = []
    for runtime, target in TARGETS.items():
        with tempfile.TemporaryDirectory() as tmp:
            compile_model(device_spec, params, load_target(target), Path(tmp) / "b", batch=args.batch)
            res = simulator_module(runtime).simulate(Path(tmp) / "b", ds, steps=args.steps, seed=seed, progress=False)
        row = {
            "dataset": dname,
            "model": spec.name,
            "seed": seed,
            "runtime": runtime,
            "host_acc": host_acc,
            "device_before": res["accuracy_before"],
            "device_after": res["accuracy_after"],
            "delta_points": 100 * (res["accuracy_after"] - host_acc),
            "steps": args.steps,
            "batch": args.batch,
            "loss": spec.rule.loss,
            "device_lr": device_spec.rule.optimizer.lr,
        }
        print(
            f"{dname:8s} {spec.name:12s} seed {seed} {runtime:12s} host {host_acc:.4f} "
            f"device {row['device_before']:.4f} -> {row['device_after']:.4f} ({row['delta_points']:+.2f} pts)",
            flush=True,
        )
        out.append(row)
    return out


def table(runs: list[dict]) -> str:
    lines = [
        "| dataset | model | runtime | host acc % | on-device after % | Δ points (mean, worst) | steps | batch | lr |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["dataset"], r["model"], r["runtime"]) for r in runs})
    for d, m, rt in keys:
        rs = [r for r in runs if (r["dataset"], r["model"], r["runtime"]) == (d, m, rt)]
        deltas = [r["delta_points"] for r in rs]
        lines.append(
            f"| {d} | {m} | {rt} | {100 * np.mean([r['host_acc'] for r in rs]):.2f} | "
            f"{100 * np.mean([r['device_after'] for r in rs]):.2f} | {np.mean(deltas):+.2f}, {min(deltas):+.2f} | "
            f"{rs[0]['steps']} | {rs[0]['batch']} | {rs[0]['device_lr']:g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10, help="host training epochs")
    ap.add_argument("--host-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200, help="on-device update steps")
    ap.add_argument("--batch", type=int, default=1, help="on-device batch")
    ap.add_argument("--loss", default=None, help="sigprop loss (default: the spec's)")
    ap.add_argument("--device-lr", type=float, default=None, help="on-device learning rate (default: host lr × 0.1)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/continue_on_device.json"))
    ap.add_argument("--md", type=Path, default=Path("bench/results/continue_on_device.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = [r for d, m in ROWS for seed in range(args.seeds) for r in run_row(d, m, seed, args)]
    md = table(runs)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1))
    write_text(args.md, md)


if __name__ == "__main__":
    main()
