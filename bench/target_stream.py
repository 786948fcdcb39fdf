"""Benchmark: what the cached batch-1 target stream costs in accuracy against the exact step.

At batch 1 with loss v1 the compiled SP step (``compilers.lower.target_stream``) runs either the *exact* target
stream (every class's targets through every block: C = 10 rows) or the *cached* one (only the sample's class row;
the other classes' targets are read from per-layer device tables that refresh a row each time its class comes).
For each (dataset, model) row, seed and scenario, the same build is compiled both ways for ORT (``edge-cpu``),
the same samples are streamed through both (``firmware_sim`` simulator, the loop of ``edgesp simulate``), and the
test accuracies after the run are compared:

* ``continue``: a host-trained SP model (``--epochs`` epochs at batch 32), then ``--steps`` on-device steps at
  the fine-tuning learning rate (``compilers.finetune_spec``: host lr × 0.1), as ``edgesp compile CHECKPOINT``.
* ``fresh``: initial weights, ``--fresh-steps`` on-device steps at the spec's learning rate.

Target (issue 13): the cached step loses ≤ 0.5 point against the exact step (mean over seeds).

    .venv/bin/python bench/target_stream.py [--seeds 3] [--epochs 5] [--steps 200] [--fresh-steps 2000]

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
from edgesp.train import fit  # noqa: E402
from firmware_sim import simulator_module  # noqa: E402
from targets import load_target  # noqa: E402

ROWS = (("digits", "mlp"), ("mnist1d", "mlp"), ("mnist1d", "cnn1d"))
STREAMS = ("exact", "cached")


def _with_stream(spec, stream: str):
    return spec.replace_rule(params={**spec.rule.params, "target_stream": stream})


def run_row(dname: str, model: str, seed: int, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(seed)
    ds = load_dataset(dname)
    shape = ds.input_shape
    if model == "cnn1d" and len(shape) != 2:
        shape = (1, math.prod(shape))
    spec = build_spec(model, shape, ds.num_classes)
    init = init_params(spec, seed)
    trainer = make_trainer(spec, init, seed)
    fit(trainer, ds, spec.input_shape, epochs=args.epochs, batch=32, seed=seed, progress=False)
    scenarios = {
        "continue": (finetune_spec(spec), trainer.params(), args.steps),
        "fresh": (spec, init, args.fresh_steps),
    }
    out = []
    for scenario, (s, params, steps) in scenarios.items():
        acc = {}
        for stream in STREAMS:
            with tempfile.TemporaryDirectory() as tmp:
                compile_model(_with_stream(s, stream), params, load_target("edge-cpu"), Path(tmp) / "b", batch=1)
                res = simulator_module("onnxruntime").simulate(
                    Path(tmp) / "b", ds, steps=steps, seed=seed, progress=False
                )
            acc[stream] = (res["accuracy_before"], res["accuracy_after"])
        row = {
            "dataset": dname,
            "model": spec.name,
            "seed": seed,
            "scenario": scenario,
            "steps": steps,
            "lr": s.rule.optimizer.lr,
            "before": acc["exact"][0],
            "exact_after": acc["exact"][1],
            "cached_after": acc["cached"][1],
            "cached_minus_exact_points": 100 * (acc["cached"][1] - acc["exact"][1]),
        }
        print(
            f"{dname:8s} {spec.name:14s} seed {seed} {scenario:8s} before {row['before']:.4f}  exact "
            f"{row['exact_after']:.4f}  cached {row['cached_after']:.4f}  "
            f"({row['cached_minus_exact_points']:+.2f} pts)",
            flush=True,
        )
        out.append(row)
    return out


def table(runs: list[dict]) -> str:
    lines = [
        "| dataset | model | scenario | steps | before % | exact after % | cached after % | cached − exact, points "
        "(mean; worst seed) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["dataset"], r["model"], r["scenario"]) for r in runs})
    for d, m, sc in keys:
        rs = [r for r in runs if (r["dataset"], r["model"], r["scenario"]) == (d, m, sc)]
        diff = [r["cached_minus_exact_points"] for r in rs]
        lines.append(
            f"| {d} | {m} | {sc} | {rs[0]['steps']} | {100 * np.mean([r['before'] for r in rs]):.2f} | "
            f"{100 * np.mean([r['exact_after'] for r in rs]):.2f} | "
            f"{100 * np.mean([r['cached_after'] for r in rs]):.2f} | {np.mean(diff):+.2f}; {min(diff):+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="host training epochs (continue scenario)")
    ap.add_argument("--steps", type=int, default=200, help="on-device steps after host training")
    ap.add_argument("--fresh-steps", type=int, default=2000, help="on-device steps from initial weights")
    ap.add_argument("--rows", nargs="+", default=[f"{d}:{m}" for d, m in ROWS], help="dataset:model pairs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/target_stream.json")
    ap.add_argument("--md", type=Path, default=ROOT / "bench/results/target_stream.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [tuple(r.split(":", 1)) for r in args.rows]
    runs = [r for d, m in rows for seed in range(args.seeds) for r in run_row(d, m, seed, args)]
    md = table(runs)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps({"command": " ".join(sys.argv), "runs": runs}, indent=1))
    write_text(args.md, md)


if __name__ == "__main__":
    main()
