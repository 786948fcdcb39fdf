"""BP baseline in ONNX Runtime training (onnxruntime-training 1.19.2): train-step speed and memory.

Same models as bench/ondevice.py: MLP 784 → width × depth → 10, blocks Linear → LayerNorm (per sample,
no affine, eps 1e-5) → ReLU, Linear head, mean cross-entropy; same initial weights (edgesp.init_params).
For each (depth, batch) the torch module is exported with the legacy exporter in training mode, turned into
training artifacts (training/eval/optimizer graphs + checkpoint) by ``generate_artifacts``, and driven through
``onnxruntime.training.api`` (Module/Optimizer/CheckpointState), one intra-op thread:

* one train step = ``module(x, y)`` (forward + loss + backward, gradients accumulate in ORT's buffers),
  ``optimizer.step()``, ``module.lazy_reset_grad()``; x, y are pre-made OrtValues.
* samples/s over ``--steps`` steps after ``--warmup`` steps.
* memory, in a fresh subprocess per configuration: peak-RSS increase (VmHWM after − VmRSS before) around
  the FIRST train step after loading, with the peak reset (``/proc/self/clear_refs`` ← 5) and freed heap
  returned (``malloc_trim(0)``) just before; the same for the second step. ORT 1.19's profiler has no
  ``mem_*`` fields, so this is process-level (resolution ~±0.3 MiB), not byte-exact.

Optimizer: ``adam`` (default, as bench/ondevice.py) = ORT's AdamWOptimizer kernel with weight_decay 0, betas
(0.9, 0.999), eps 1e-8, bias correction, switched to adam_mode 0 (torch rule W ← W − lr·m̂/(√v̂ + ε), i.e. exactly
torch.optim.Adam); onnxblock's AdamW block writes adam_mode 1 (HF: W ← W − lr·√(1−β2^k)/(1−β1^k)·m/(√v + ε)),
which moves ε and visibly changes the updates of weights with gradients ≲ 1e-7. Same cost either way.
``sgd`` = ORT's SGDOptimizerV2, plain W ← W − lr·g (no momentum, unlike edgesp's sgd).
``--check N`` compares against torch (autograd + torch.optim.Adam/SGD): gradients of step 1, weights after 1 and N
steps (Adam trajectories drift apart from rounding noise; SGD stays at ~1e-8).

Run with the separate venv (bench/ort_training_setup.sh creates it):

    bash bench/ort_training_setup.sh
    .venv-ort-training/bin/python bench/ort_training_bp.py [--depths 2 4 8] [--batches 1 32] [--steps 200]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")


# --------------------------------------------------------------------------------------------- model + export
def build_module(depth: int, width: int, seed: int):
    """torch MLP with the weights of edgesp.init_params(build_spec('mlp', ...), seed)."""
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT))
    from edgesp.functional import init_params
    from edgesp.presets import build_spec

    spec = build_spec("mlp", (784,), 10, width=width, depth=depth)
    params = init_params(spec, seed)

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(
                    nn.Linear(784 if i == 0 else width, width),
                    nn.LayerNorm(width, eps=1e-5, elementwise_affine=False),
                    nn.ReLU(),
                )
                for i in range(depth)
            )
            self.head = nn.Linear(width, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    model = MLP()
    with torch.no_grad():
        for i, b in enumerate(model.blocks):
            b[0].weight.copy_(torch.from_numpy(params[f"blocks.{i}.weight"]))
            b[0].bias.copy_(torch.from_numpy(params[f"blocks.{i}.bias"]))
        model.head.weight.copy_(torch.from_numpy(params["head.weight"]))
        model.head.bias.copy_(torch.from_numpy(params["head.bias"]))
    return model, spec, params


@contextlib.contextmanager
def _quiet_stderr():
    """Send fd 2 to a temporary file; replay its tail if the body raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read()[-4000:].decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def make_artifacts(model, batch: int, optimizer: str, out: Path) -> dict:
    """Export (legacy exporter, training mode, static batch) and generate ORT training artifacts in out."""
    import warnings

    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.training import artifacts, onnxblock

    ort.set_default_logger_severity(3)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "forward.onnx"
    model.train()
    torch.onnx.export(
        model,
        (torch.zeros(batch, 784),),
        str(onnx_path),
        input_names=["input"],
        output_names=["logits"],
        training=torch.onnx.TrainingMode.TRAINING,
        do_constant_folding=False,
        export_params=True,
        dynamo=False,
    )
    fwd = onnx.load(str(onnx_path))
    # ORT's LayerNormalization gradient reads the node's optional Mean / InvStdDev outputs, which the torch
    # exporter leaves out ("i < node_->OutputDefs().size() was false"): name them so the backward can use them.
    for k, node in enumerate(n for n in fwd.graph.node if n.op_type == "LayerNormalization"):
        while len(node.output) < 3:
            node.output.append(f"ln{k}_{('mean', 'inv_std')[len(node.output) - 1]}")
    trainable = [n for n, _ in model.named_parameters()]
    frozen = [i.name for i in fwd.graph.initializer if i.name not in trainable]
    optim = (
        onnxblock.optim.AdamW(bias_correction=True, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        if optimizer == "adam"
        else onnxblock.optim.SGD()
    )
    with _quiet_stderr():  # the gradient builder logs every graph transformer at INFO level
        artifacts.generate_artifacts(
            fwd,
            requires_grad=trainable,
            frozen_params=frozen,
            loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=optim,
            artifact_directory=str(out),
        )
    if optimizer == "adam":  # onnxblock hard-codes adam_mode 1 (HF); mode 0 is torch's update rule
        opt_path = out / "optimizer_model.onnx"
        om = onnx.load(str(opt_path))
        for node in om.graph.node:
            if node.op_type == "AdamWOptimizer":
                for attr in node.attribute:
                    if attr.name == "adam_mode":
                        attr.i = 0
        onnx.save(om, str(opt_path))
    return {
        "opset": fwd.opset_import[0].version,
        "ir_version": fwd.ir_version,
        "frozen_initializers": frozen,
        "artifact_bytes": {f: (out / f).stat().st_size for f in ARTIFACT_FILES if (out / f).exists()},
    }


# --------------------------------------------------------------------------------------------- ORT side
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def load_session(art: Path, lr: float, stages: dict | None = None):
    """CheckpointState + Module (training graph only) + Optimizer, 1 intra-op / 1 inter-op thread.
    stages, if given, receives VmRSS (KiB) after each of the three loads."""
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    ort.set_default_logger_severity(3)
    stages = {} if stages is None else stages
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    state = CheckpointState.load_checkpoint(str(art / "checkpoint"))
    stages["checkpoint"] = _status_kib("VmRSS")
    module = Module(str(art / "training_model.onnx"), state, None, session_options=so)
    stages["module"] = _status_kib("VmRSS")
    opt = Optimizer(str(art / "optimizer_model.onnx"), module)
    stages["optimizer"] = _status_kib("VmRSS")
    opt.set_learning_rate(lr)
    module.train()
    return state, module, opt


def make_data(batch: int, seed: int):
    rng = np.random.default_rng(seed + 1000 * batch)
    return rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int64)


def _torch_bp_step(depth: int, width: int, seed: int, optimizer: str, lr: float, x, y):
    """The same BP step in eager torch (autograd + torch.optim), as an in-process speed reference."""
    import torch

    torch.set_num_threads(1)
    model, _, _ = build_module(depth, width, seed)
    opt = (
        torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=lr)
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()

    return step


def child(
    art: Path,
    depth: int,
    width: int,
    batch: int,
    steps: int,
    warmup: int,
    repeats: int,
    optimizer: str,
    lr: float,
    seed: int,
) -> dict:
    """Runs in a fresh process: memory of train steps 1 and 2, then speed (ORT and eager torch interleaved,
    `repeats` blocks of `steps` steps each, so both see the same machine load; wall clock and process CPU time).
    Returns a JSON-able dict."""
    import onnxruntime as ort

    libc = ctypes.CDLL("libc.so.6")
    t0 = time.perf_counter()
    stages = {"import": _status_kib("VmRSS")}
    state, module, opt = load_session(art, lr, stages)
    load_s = time.perf_counter() - t0
    x, y = make_data(batch, seed)
    xv, yv = ort.OrtValue.ortvalue_from_numpy(x), ort.OrtValue.ortvalue_from_numpy(y)

    def step():
        loss = module(xv, yv)
        opt.step()
        module.lazy_reset_grad()
        return loss

    mem = {}
    for k in (1, 2):
        gc.collect()
        libc.malloc_trim(0)
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        step()
        mem[k] = {"rss_before_kib": before, "hwm_kib": _status_kib("VmHWM"), "rss_after_kib": _status_kib("VmRSS")}

    torch_step = _torch_bp_step(depth, width, seed, optimizer, lr, x, y)
    for _ in range(warmup):
        step()
        torch_step()
    wall: dict[str, list[float]] = {"ort": [], "torch": []}
    cpu: dict[str, list[float]] = {"ort": [], "torch": []}
    for _ in range(repeats):
        for name, fn in (("ort", step), ("torch", torch_step)):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                fn()
            wall[name].append(steps * batch / (time.perf_counter() - t0))
            cpu[name].append(steps * batch / (time.process_time() - c0))
    final_loss = float(np.asarray(step().numpy()).reshape(-1)[0])
    best = max(wall["ort"])
    return {
        "samples_per_s": best,
        "steps_per_s": best / batch,
        "samples_per_s_median": float(np.median(wall["ort"])),
        "samples_per_s_all": wall["ort"],
        "torch_bp_samples_per_s": max(wall["torch"]),
        "torch_bp_samples_per_s_all": wall["torch"],
        "ort_over_torch_speed": best / max(wall["torch"]),
        "samples_per_cpu_s": max(cpu["ort"]),
        "torch_bp_samples_per_cpu_s": max(cpu["torch"]),
        "cpu_over_wall": float(np.median([w / c for w, c in zip(wall["ort"], cpu["ort"], strict=True)])),
        "timed_steps": steps,
        "repeats": repeats,
        "warmup_steps": warmup,
        "load_s": load_s,
        "rss_kib_after": stages,
        "load_increase_bytes": 1024 * (stages["optimizer"] - stages["import"]),
        "step1_peak_increase_bytes": 1024 * (mem[1]["hwm_kib"] - mem[1]["rss_before_kib"]),
        "step1_retained_bytes": 1024 * (mem[1]["rss_after_kib"] - mem[1]["rss_before_kib"]),
        "step2_peak_increase_bytes": 1024 * (mem[2]["hwm_kib"] - mem[2]["rss_before_kib"]),
        "final_loss": final_loss,
        "ort_threads": {"intra_op": 1, "inter_op": 1},
        "torch_threads": 1,
    }


# --------------------------------------------------------------------------------------------- parity check
def check(model, art: Path, batch: int, steps: int, optimizer: str, lr: float, seed: int) -> dict:
    """ORT vs an independent torch run (autograd + torch.optim) from the same weights on the same batches.

    * step 1: max relative gradient error (ORT's gradient buffers vs autograd) and max |ΔW| after one update;
    * after `steps` steps: max |ΔW| and max |Δloss|. With SGD this stays at float rounding; with Adam it does not
      need to: m̂/(√v̂+ε) turns rounding-level differences in near-zero gradients into ±lr steps, and the two
      trajectories drift apart (informational, not a correctness test).
    * the exported module's logits vs edgesp.functional.predict_logits (same architecture and weights)."""
    import copy

    import onnxruntime as ort
    import torch

    sys.path.insert(0, str(ROOT))
    from edgesp.functional import predict_logits, to_torch

    ref = copy.deepcopy(model)
    topt = (
        torch.optim.Adam(ref.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        if optimizer == "adam"
        else torch.optim.SGD(ref.parameters(), lr=lr)
    )
    state, module, opt = load_session(art, lr)
    rng = np.random.default_rng(seed + 7)
    out: dict = {"check_steps": steps}
    dloss = 0.0
    for k in range(steps):
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        loss = float(
            np.asarray(
                module(ort.OrtValue.ortvalue_from_numpy(x), ort.OrtValue.ortvalue_from_numpy(y)).numpy()
            ).reshape(-1)[0]
        )
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y))
        tl.backward()
        if k == 0:
            out["step1_max_rel_grad_err"] = max(
                float(np.max(np.abs(state.parameters[n].grad - p.grad.numpy())) / (p.grad.abs().max().item() + 1e-30))
                for n, p in ref.named_parameters()
            )
        opt.step()
        module.lazy_reset_grad()
        topt.step()
        dloss = max(dloss, abs(loss - tl.item()))
        if k == 0:
            out["step1_max_abs_dW"] = max(
                float(np.max(np.abs(state.parameters[n].data - p.detach().numpy()))) for n, p in ref.named_parameters()
            )
    out["max_abs_dW_vs_torch"] = max(
        float(np.max(np.abs(state.parameters[n].data - p.detach().numpy()))) for n, p in ref.named_parameters()
    )
    out["max_abs_dloss_vs_torch"] = dloss
    _, spec, params = build_module(len(model.blocks), model.head.in_features, seed)
    xs = torch.from_numpy(make_data(batch, seed)[0])
    with torch.no_grad():
        out["max_abs_dlogits_vs_edgesp"] = float((model(xs) - predict_logits(spec, xs, to_torch(params))).abs().max())
    return out


# --------------------------------------------------------------------------------------------- driver
def run(depths, batches, width, steps, warmup, repeats, optimizer, lr, seed, check_steps) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    rows = []
    for depth in depths:
        for batch in batches:
            model, spec, params = build_module(depth, width, seed)
            n_params = sum(p.numel() for p in model.parameters())
            with tempfile.TemporaryDirectory() as tmp:
                art = Path(tmp)
                t0 = time.perf_counter()
                info = make_artifacts(model, batch, optimizer, art)
                gen_s = time.perf_counter() - t0
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    str(art),
                    "--depths",
                    str(depth),
                    "--batches",
                    str(batch),
                    "--width",
                    str(width),
                    "--steps",
                    str(steps),
                    "--warmup",
                    str(warmup),
                    "--repeats",
                    str(repeats),
                    "--optimizer",
                    optimizer,
                    "--lr",
                    str(lr),
                    "--seed",
                    str(seed),
                ]
                env = dict(os.environ, OMP_NUM_THREADS="1")
                res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if res.returncode != 0:
                    raise SystemExit(f"error: child failed for depth {depth} batch {batch}:\n{res.stderr[-3000:]}")
                meas = json.loads(res.stdout.strip().splitlines()[-1])
                chk = check(model, art, batch, check_steps, optimizer, lr, seed) if check_steps else {}
            row = {
                "depth": depth,
                "batch": batch,
                "width": width,
                "optimizer": optimizer,
                "ort_optimizer": "AdamW(weight_decay=0, eps=1e-8)" if optimizer == "adam" else "SGD (no momentum)",
                "lr": lr,
                "trainable_params": n_params,
                "param_bytes": 4 * n_params,
                "state_bytes": 4 * n_params * (4 if optimizer == "adam" else 2),
                "artifact_gen_s": gen_s,
                **info,
                **meas,
                **chk,
            }
            rows.append(row)
            print(
                f"depth {depth} batch {batch:>2}: BP/ORT-training {row['samples_per_s']:8.0f} samples/s  "
                f"BP/torch {row['torch_bp_samples_per_s']:8.0f} samples/s  "
                f"step-1 peak +{row['step1_peak_increase_bytes'] / 2**20:6.2f} MiB  "
                f"step-2 peak +{row['step2_peak_increase_bytes'] / 2**20:6.2f} MiB"
                + (f"  grad rel err {row['step1_max_rel_grad_err']:.1e}" if chk else ""),
                flush=True,
            )
    return rows


def table(rows) -> str:
    mib = 2**20
    head = (
        "| depth | batch | BP/ORT-training samples/s | BP/torch samples/s | ORT÷torch | ORT samples/CPU-s "
        "| torch samples/CPU-s | CPU÷wall | load +MiB | step-1 peak +MiB | step-2 peak +MiB | params MiB "
        "| params+grads(+Adam moments) MiB | grad rel. err vs torch | ΔW after 1 step | ΔW after N steps |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        dw = " | ".join(
            f"{r[k]:.1e}" if k in r else "–"
            for k in ("step1_max_rel_grad_err", "step1_max_abs_dW", "max_abs_dW_vs_torch")
        )
        lines.append(
            f"| {r['depth']} | {r['batch']} | {r['samples_per_s']:.0f} | {r['torch_bp_samples_per_s']:.0f} | "
            f"{r['ort_over_torch_speed']:.2f} | {r['samples_per_cpu_s']:.0f} | "
            f"{r['torch_bp_samples_per_cpu_s']:.0f} | {r['cpu_over_wall']:.2f} | "
            f"{r['load_increase_bytes'] / mib:.2f} | {r['step1_peak_increase_bytes'] / mib:.2f} | "
            f"{r['step2_peak_increase_bytes'] / mib:.2f} | {r['param_bytes'] / mib:.2f} | "
            f"{r['state_bytes'] / mib:.2f} | {dw} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200, help="timed train steps (after warm-up)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="timed blocks of --steps steps; the best is reported")
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=20, metavar="N", help="steps of the torch comparison (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(
            json.dumps(
                child(
                    Path(a.child),
                    a.depths[0],
                    a.width,
                    a.batches[0],
                    a.steps,
                    a.warmup,
                    a.repeats,
                    a.optimizer,
                    a.lr,
                    a.seed,
                )
            )
        )
        return
    import onnx
    import onnxruntime
    import torch

    load0 = os.getloadavg()
    rows = run(a.depths, a.batches, a.width, a.steps, a.warmup, a.repeats, a.optimizer, a.lr, a.seed, a.check)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ort_training_bp" if a.optimizer == "adam" else f"ort_training_bp_{a.optimizer}"
    doc = {
        "command": " ".join([".venv-ort-training/bin/python", *sys.argv]),
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "onnx": onnx.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "loadavg_1_5_15_at_start": load0,
        "loadavg_1_5_15_at_end": os.getloadavg(),
        "rows": rows,
    }
    tmp = out / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out / f"{stem}.json")
    print(table(rows))
    print(f"wrote {out / (stem + '.json')}")
    if any(not r.get("step1_max_rel_grad_err", 0.0) <= 1e-4 for r in rows):
        print(
            "warning: ORT gradients differ from torch autograd by > 1e-4 (relative); check the export", file=sys.stderr
        )


if __name__ == "__main__":
    main()
