"""Benchmark: SP update-step throughput and memory in the TFLite interpreters (1 thread).

MLPs 784-256×depth-10 (depth 2/4/8) at batch 1 and 32, compiled with compilers.tflite, each run in
ai-edge-litert and tflite-runtime; the ONNX backend's artifact of the same program in ONNX Runtime is
timed alongside (same process, interleaved) as a reference that shares the machine's load. Prints a
table, writes JSON (with the load average) and a PNG of samples/s.

    .venv/bin/python bench/tflite_step.py [--steps 300] [--out bench/results/tflite_step.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compilers.onnx import compile_model as compile_onnx  # noqa: E402
from compilers.tflite import compile_model  # noqa: E402
from edgesp.atomic import write_text  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from firmware_sim.onnx_device import OrtDevice  # noqa: E402
from firmware_sim.tflite_device import bench_step  # noqa: E402
from targets import load_target  # noqa: E402

INTERPRETERS = ("litert", "tflite_runtime")


def ort_step_rate(build: Path, steps: int, warmup: int = 10) -> tuple[float, float]:
    """ONNX Runtime update-step samples per wall second and per CPU second of the same program."""
    import time

    import numpy as np

    dev = OrtDevice(build, threads=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((dev.batch, *dev.spec.input_shape)).astype(np.float32)
    y = rng.integers(0, dev.spec.num_classes, dev.batch).astype(np.int32)
    for _ in range(warmup):
        dev.step(x, y)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        dev.step(x, y)
    return steps * dev.batch / (time.perf_counter() - t0), steps * dev.batch / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--resolver", default="auto", choices=("auto", "builtin", "reference"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/tflite_step.json"))
    args = ap.parse_args()
    target = load_target("edge-cpu-tflite")
    rows = []
    print(
        f"{'depth':>5} {'batch':>5} {'interpreter':>15} {'samples/s':>10} {'samples/cpu-s':>13} "
        f"{'peak RSS MiB':>12} {'planned MiB':>11} {'ORT samples/s':>13} {'ORT samples/cpu-s':>17}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            spec = build_spec("mlp", (784,), 10, width=args.width, depth=depth)
            params = init_params(spec, 0)
            for batch in args.batches:
                build = Path(tmp) / f"d{depth}b{batch}"
                # v9 compares the samples of a batch and is constant at batch 1: batch-1 steps use v1
                compile_model(spec.replace_rule(loss="v1") if batch == 1 else spec, params, target, build, batch)
                compile_onnx(spec, params, load_target("edge-cpu"), build / "onnx", batch)
                for interp in INTERPRETERS:
                    r = bench_step(build, args.steps, interp, args.resolver)
                    ort, ort_cpu = ort_step_rate(build / "onnx", args.steps)
                    row = {
                        "depth": depth,
                        "width": args.width,
                        "batch": batch,
                        "interpreter": interp,
                        "resolver": args.resolver,
                        "optimizer": spec.rule.optimizer.name,
                        **r,
                        "onnxruntime_samples_per_second": ort,
                        "onnxruntime_samples_per_cpu_second": ort_cpu,
                    }
                    rows.append(row)
                    print(
                        f"{depth:>5} {batch:>5} {interp:>15} {r['samples_per_second']:>10.0f} "
                        f"{r['samples_per_cpu_second']:>13.0f} {r['peak_rss_bytes'] / 2**20:>12.2f} "
                        f"{r['planned_peak_bytes'] / 2**20:>11.2f} {ort:>13.0f} {ort_cpu:>17.0f}",
                        flush=True,
                    )
    import os

    load = os.getloadavg()
    print(
        f"load average during the run (1/5/15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores"
    )
    write_text(args.out, json.dumps({"steps": args.steps, "load_average": load, "rows": rows}, indent=2))
    _plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgesp.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for interp in INTERPRETERS:
        for batch in sorted({r["batch"] for r in rows}):
            sel = [r for r in rows if r["interpreter"] == interp and r["batch"] == batch]
            ax.plot(
                [r["depth"] for r in sel],
                [r["samples_per_cpu_second"] for r in sel],
                marker="o",
                label=f"{interp}, batch {batch}",
            )
    ax.set_xlabel("MLP depth (blocks)")
    ax.set_ylabel("update-step samples per CPU-second (1 thread)")
    ax.set_yscale("log")
    ax.set_title("SP update step in the TFLite interpreter")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
