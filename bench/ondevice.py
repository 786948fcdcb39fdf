"""On-device update step: SP compiled to ONNX Runtime vs backpropagation, by depth and batch.

For an MLP (784 → width × depth → 10, LayerNorm+ReLU blocks, Adam) and each (depth, batch):
* SP/ORT: the compiled update step driven through IOBinding with double-buffered state
  (firmware_sim.onnx_device.OrtDevice): samples per CPU-second; transient memory = ORT profiler's peak arena bytes in
  use during the step (state buffers are caller-owned and excluded); planned transient from the liveness plan.
* SP/torch: the eager reference trainer (samples/s).
* BP/ORT: the same compiler's BP step (``compile_model(..., on_device_rule="bp")``) in the same runtime, driven
  and profiled exactly as SP/ORT: the same-ruler comparison. SP and BP are timed in ``--repeats`` interleaved
  repeats; the median and the spread (min–max) are reported.
* BP/torch: autograd through the whole net + Adam: samples/s; transient memory = bytes autograd saves for
  backward (byte-exact, saved_tensors_hooks) + the gradients.
* TFLite columns when firmware_sim.tflite_device.bench_step is available.
Single thread everywhere (ORT intra-op 1, torch 1, TFLite 1); rates are samples per CPU-second of the
process (wall-clock rates are in the JSON). Prints a table, writes JSON and a PNG.

    .venv/bin/python bench/ondevice.py [--depths 2 4 8] [--batches 1 32] [--width 256] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compilers import compile_model  # noqa: E402
from edgesp.functional import init_params, predict_logits, to_torch  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.rules.optim import make_optimizer  # noqa: E402
from edgesp.rules.sigprop import SigpropTrainer  # noqa: E402
from firmware_sim.onnx_device import OrtDevice, ort_profile_peaks  # noqa: E402
from targets import load_target  # noqa: E402


def _rate(fn, steps: int, batch: int) -> float:
    """Samples per CPU-second of this process (single-threaded runtimes: less distorted by other load
    than wall time); the wall-clock rate is kept in ``_rate.wall``."""
    fn()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    _rate.wall = steps * batch / (time.perf_counter() - t0)
    return steps * batch / max(time.process_time() - c0, 1e-9)


def bp_torch(spec, params, x, y, steps):
    p = {k: v for k, v in to_torch(params, requires_grad=True).items() if not k.startswith("signal.")}
    opt = make_optimizer(spec.rule.optimizer, p.values())
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    saved: list[int] = []

    def step(record=False):
        opt.zero_grad(set_to_none=True)
        if record:
            with torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
            ):
                loss = torch.nn.functional.cross_entropy(predict_logits(spec, xt, p), yt)
        else:
            loss = torch.nn.functional.cross_entropy(predict_logits(spec, xt, p), yt)
        loss.backward()
        opt.step()

    step(record=True)
    grads = sum(4 * math.prod(t.shape) for t in p.values())
    return _rate(step, steps, len(x)), sum(saved) + grads


def run(depths, batches, width, steps, seed=0, optimizer="adam", repeats=3):
    torch.set_num_threads(1)
    rows = []
    try:
        from firmware_sim import tflite_device

        tfl_bench = getattr(tflite_device, "bench_step", None)
    except Exception:  # TFLite backend not available
        tfl_bench = None
    rng = np.random.default_rng(seed)
    for depth in depths:
        for batch in batches:
            from edgesp.spec import OptimizerSpec, RuleSpec

            spec = build_spec(
                "mlp",
                (784,),
                10,
                width=width,
                depth=depth,
                # v9 compares the samples of a batch and is constant at batch 1: batch-1 steps use v1
                rule=RuleSpec(loss="v1" if batch == 1 else "v9", optimizer=OptimizerSpec(name=optimizer)),
            )
            params = init_params(spec, seed)
            x = rng.standard_normal((batch, 784)).astype(np.float32)
            y = rng.integers(0, 10, batch)
            with tempfile.TemporaryDirectory() as tmp:
                manifest = compile_model(spec, params, load_target("edge-cpu"), Path(tmp), batch=batch)
                compile_model(spec, params, load_target("edge-cpu"), Path(tmp) / "bp", batch=batch, on_device_rule="bp")
                dev = OrtDevice(tmp, threads=1)
                bp_dev = OrtDevice(Path(tmp) / "bp", threads=1)
                cached_dev = None
                if batch == 1:  # the one-row cached target stream (compile --target-stream cached)
                    cached = spec.replace_rule(params={**spec.rule.params, "target_stream": "cached"})
                    compile_model(cached, params, load_target("edge-cpu"), Path(tmp) / "cached", batch=batch)
                    cached_dev = OrtDevice(Path(tmp) / "cached", threads=1)
                sp_runs, bp_runs, cached_runs = [], [], []
                for _ in range(repeats):  # interleaved: SP and BP in the same runtime share the machine's state
                    sp_runs.append(_rate(lambda dev=dev, x=x, y=y: dev.step(x, y), steps, batch))
                    sp_ort_wall = _rate.wall
                    bp_runs.append(_rate(lambda dev=bp_dev, x=x, y=y: dev.step(x, y), steps, batch))
                    if cached_dev is not None:
                        cached_runs.append(_rate(lambda dev=cached_dev, x=x, y=y: dev.step(x, y), steps, batch))
                sp_ort, bp_ort = float(np.median(sp_runs)), float(np.median(bp_runs))
                sp_mem, _ = ort_profile_peaks(Path(tmp), x, y)
                bp_ort_mem, _ = ort_profile_peaks(Path(tmp) / "bp", x, y)
                cached_mem = ort_profile_peaks(Path(tmp) / "cached", x, y)[0] if cached_dev is not None else None
                tfl = None
                if tfl_bench:
                    try:
                        compile_model(spec, params, load_target("edge-cpu-tflite"), Path(tmp) / "tfl", batch=batch)
                        tfl = tfl_bench(Path(tmp) / "tfl", steps)
                    except Exception as e:  # report, keep the ONNX columns
                        print(f"  (tflite columns skipped: {type(e).__name__}: {e})", flush=True)
            plan = manifest.planned_memory.details
            trainer = SigpropTrainer(spec, params, seed)
            sp_torch = _rate(lambda trainer=trainer, x=x, y=y: trainer.train_step(x, y), max(steps // 4, 10), batch)
            bp_rate, bp_mem = bp_torch(spec, params, x, y, steps)
            bp_wall = _rate.wall
            row = {
                "depth": depth,
                "batch": batch,
                "width": width,
                "optimizer": optimizer,
                "sp_ort_samples_per_s": sp_ort,
                "sp_ort_runs": sp_runs,
                "bp_ort_samples_per_s": bp_ort,
                "bp_ort_runs": bp_runs,
                "bp_ort_transient_bytes": bp_ort_mem,
                "sp_over_bp_ort_speed": sp_ort / bp_ort,
                "bp_ort_over_sp_memory": bp_ort_mem / max(sp_mem, 1),
                "sp_ort_wall_samples_per_s": sp_ort_wall,
                "bp_torch_wall_samples_per_s": bp_wall,
                "sp_torch_samples_per_s": sp_torch,
                "bp_torch_samples_per_s": bp_rate,
                "sp_ort_transient_bytes": sp_mem,
                "sp_planned_transient_bytes": plan["update_step"]["peak_activation_bytes"],
                "largest_layer_working_set_bytes": plan["largest_layer_working_set_bytes"],
                "bp_transient_bytes": bp_mem,
                "bp_over_sp_memory": bp_mem / max(sp_mem, 1),
                "sp_over_bp_speed": sp_ort / bp_rate,
                "sp_over_largest_layer": sp_mem / plan["largest_layer_working_set_bytes"],
                "sp_cached_ort_runs": cached_runs,
                "sp_cached_ort_samples_per_s": float(np.median(cached_runs)) if cached_runs else None,
                "sp_cached_over_bp_ort_speed": float(np.median(cached_runs)) / bp_ort if cached_runs else None,
                "sp_cached_ort_transient_bytes": cached_mem,
            }
            if tfl:
                row.update({f"tflite_{k}": v for k, v in tfl.items()})
            rows.append(row)
            print(
                f"depth {depth} batch {batch:>2}: SP/ORT {sp_ort:8.0f}/s  BP/ORT {bp_ort:8.0f}/s  "
                f"BP/torch {bp_rate:8.0f}/s  SP mem {sp_mem:>10,} B  BP/ORT mem {bp_ort_mem:>10,} B  "
                f"BP/torch mem {bp_mem:>10,} B",
                flush=True,
            )
    return rows


def table(rows) -> str:
    head = (
        "| depth | batch | SP/ORT samples/s (median, spread) | BP/ORT samples/s (median, spread) | SP÷BP same runtime "
        "| BP/ORT transient B | BP÷SP memory same profiler "
        "| SP/TFLite samples/s | SP/torch samples/s | BP/torch samples/s "
        "| SP÷BP speed "
        "| SP transient (ORT) B | SP planned B | largest layer B | SP÷layer | BP transient B | BP÷SP memory |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['depth']} | {r['batch']} | {r['sp_ort_samples_per_s']:.0f} "
            f"({min(r['sp_ort_runs']):.0f}–{max(r['sp_ort_runs']):.0f}) | {r['bp_ort_samples_per_s']:.0f} "
            f"({min(r['bp_ort_runs']):.0f}–{max(r['bp_ort_runs']):.0f}) | {r['sp_over_bp_ort_speed']:.2f} | "
            f"{r['bp_ort_transient_bytes']:,} | {r['bp_ort_over_sp_memory']:.2f} | "
            f"{r.get('tflite_samples_per_cpu_second', float('nan')):.0f} | {r['sp_torch_samples_per_s']:.0f} | "
            f"{r['bp_torch_samples_per_s']:.0f} | {r['sp_over_bp_speed']:.2f} | {r['sp_ort_transient_bytes']:,} | "
            f"{r['sp_planned_transient_bytes']:,} | {r['largest_layer_working_set_bytes']:,} | "
            f"{r['sp_over_largest_layer']:.2f} | {r['bp_transient_bytes']:,} | {r['bp_over_sp_memory']:.2f} |"
        )
    return "\n".join(lines)


def cached_table(rows) -> str:
    """Batch-1 rows: the cached one-row target stream next to the exact stream and BP, same runtime."""
    lines = [
        "| depth | SP cached samples/s (median, spread) | SP exact samples/s | BP/ORT samples/s | SP cached ÷ BP "
        "| SP exact ÷ BP | SP cached transient B | SP exact transient B | BP/ORT transient B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r.get("sp_cached_ort_runs")):
        c = r["sp_cached_ort_runs"]
        lines.append(
            f"| {r['depth']} | {r['sp_cached_ort_samples_per_s']:.0f} ({min(c):.0f}–{max(c):.0f}) | "
            f"{r['sp_ort_samples_per_s']:.0f} | {r['bp_ort_samples_per_s']:.0f} | "
            f"{r['sp_cached_over_bp_ort_speed']:.2f} | {r['sp_over_bp_ort_speed']:.2f} | "
            f"{r['sp_cached_ort_transient_bytes']:,} | {r['sp_ort_transient_bytes']:,} | "
            f"{r['bp_ort_transient_bytes']:,} |"
        )
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for batch in sorted({r["batch"] for r in rows}):
        rs = [r for r in rows if r["batch"] == batch]
        d = [r["depth"] for r in rs]
        axes[0].plot(d, [r["sp_ort_transient_bytes"] / 1024 for r in rs], "o-", label=f"SP/ORT B={batch}")
        axes[0].plot(d, [r["bp_transient_bytes"] / 1024 for r in rs], "s--", label=f"BP/torch B={batch}")
        axes[1].plot(d, [r["sp_ort_samples_per_s"] for r in rs], "o-", label=f"SP/ORT B={batch}")
        axes[1].plot(d, [r["bp_torch_samples_per_s"] for r in rs], "s--", label=f"BP/torch B={batch}")
    axes[0].set(xlabel="depth (blocks)", ylabel="transient memory of one update step (KiB)", yscale="log")
    axes[1].set(xlabel="depth (blocks)", ylabel="samples/s (1 thread)", yscale="log")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved SP/BP repeats (the median is reported)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    rows = run(a.depths, a.batches, a.width, a.steps, optimizer=a.optimizer, repeats=a.repeats)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ondevice" if a.optimizer == "adam" else f"ondevice_{a.optimizer}"
    (out / f"{stem}.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))
    plot(rows, out / f"{stem}.png")
    print(table(rows))
    if any(r.get("sp_cached_ort_runs") for r in rows):
        print(cached_table(rows))
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")


if __name__ == "__main__":
    main()
