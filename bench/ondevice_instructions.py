"""On-device update step, SP vs BP from the same compiler in ONNX Runtime, counted in instructions.

Timings on a shared 2-core machine move by tens of percent between runs; instruction counts do not: valgrind's
callgrind counts the instructions a process executes, the same for the same binary, inputs and environment
whatever else the machine runs. For each (optimizer, depth, batch) both builds (``compile_model(...,
on_device_rule="sigprop" | "bp")``, MLP 784 → 256 × depth → 10, one thread) run ``--short`` and ``--long`` update
steps through ``firmware_sim.onnx_device.OrtDevice`` under callgrind; the difference / (long − short) is the
instructions of one step, set-up (Python start, ORT session, hashing) cancelled (100 steps apart by default: the
set-up itself varies by a few tens of millions of instructions between runs). A proxy for time, not a time:
it weighs a cache miss like an add, so memory-bound work (batch 1) counts lighter than it runs.

    .venv/bin/python bench/ondevice_instructions.py [--depths 8] [--batches 1 32] [--optimizers sgd adam]

Prints a table, writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compilers import compile_model  # noqa: E402
from edgesp.atomic import write_text  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.spec import OptimizerSpec, RuleSpec  # noqa: E402
from targets import load_target  # noqa: E402

STEPS_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
from firmware_sim.onnx_device import OrtDevice
dev = OrtDevice({build!r}, threads=1)
rng = np.random.default_rng(0)
x = rng.standard_normal((dev.batch, *dev.spec.input_shape)).astype(np.float32)
y = rng.integers(0, 10, dev.batch)
for _ in range({n}):
    dev.step(x, y)
"""


def instructions(build: Path, n: int) -> int:
    """Instructions of a whole process running ``n`` update steps of ``build`` under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "steps.py"
        script.write_text(STEPS_SCRIPT.format(root=str(ROOT), build=str(build), n=n))
        r = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=3600,
            env={**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"},
        )
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"callgrind run failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[8])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--short", type=int, default=5)
    ap.add_argument("--long", type=int, default=105)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/ondevice_instructions.json")
    a = ap.parse_args()
    rows = []
    for opt in a.optimizers:
        for depth in a.depths:
            for batch in a.batches:
                loss = "v1" if batch == 1 else "v9"
                rule = RuleSpec(loss=loss, optimizer=OptimizerSpec(name=opt))
                spec = build_spec("mlp", (784,), 10, width=a.width, depth=depth, rule=rule)
                params = init_params(spec, 0)
                per = {}
                builds = [("sigprop", spec, "sigprop"), ("bp", spec, "bp")]
                if batch == 1:  # the cached one-row target stream (compile --target-stream cached)
                    builds.append(("cached", spec.replace_rule(params={"target_stream": "cached"}), "sigprop"))
                with tempfile.TemporaryDirectory() as tmp:
                    for key, s, on_device in builds:
                        b = Path(tmp) / key
                        compile_model(s, params, load_target("edge-cpu"), b, batch=batch, on_device_rule=on_device)
                        counts = [instructions(b, n) for n in (a.short, a.long)]
                        per[key] = (counts[1] - counts[0]) / (a.long - a.short)
                row = {
                    "optimizer": opt,
                    "depth": depth,
                    "batch": batch,
                    "width": a.width,
                    "sp_loss": loss,
                    "sp_instructions_per_step": per["sigprop"],
                    "bp_instructions_per_step": per["bp"],
                    "sp_speedup_over_bp": per["bp"] / per["sigprop"],
                    "sp_cached_instructions_per_step": per.get("cached"),
                    "sp_cached_speedup_over_bp": per["bp"] / per["cached"] if "cached" in per else None,
                }
                rows.append(row)
                print(
                    f"{opt:4s} depth {depth} batch {batch:>2}: SP {per['sigprop'] / 1e6:7.2f} M/step  "
                    f"BP {per['bp'] / 1e6:7.2f} M/step  BP÷SP {row['sp_speedup_over_bp']:.2f}"
                    + (f"  SP cached {per['cached'] / 1e6:7.2f} M/step" if "cached" in per else ""),
                    flush=True,
                )
    lines = [
        "| optimizer | depth | batch | SP instructions/step | BP instructions/step | BP÷SP (SP speed-up) "
        "| SP cached stream instructions/step | BP÷SP cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cached = r["sp_cached_instructions_per_step"]
        lines.append(
            f"| {r['optimizer']} | {r['depth']} | {r['batch']} | {r['sp_instructions_per_step'] / 1e6:.2f} M | "
            f"{r['bp_instructions_per_step'] / 1e6:.2f} M | {r['sp_speedup_over_bp']:.2f} | "
            + (f"{cached / 1e6:.2f} M | {r['sp_cached_speedup_over_bp']:.2f} |" if cached else "— | — |")
        )
    print("\n".join(lines))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
