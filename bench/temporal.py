"""Sequence / temporal benchmark (issue 15): learning through time on recurrent spiking models.

Part 1 (accuracy, ``--seeds`` seeds, default 3): on ``mnist1d-seq+taps8x2`` (MNIST-1D one value per step through
an 8-tap delay line, :func:`edgesp.encoding.delay_taps`; plain ``mnist1d-seq`` with ``--datasets``) and
``spike-recall``, the *same* recurrent spiking model (the CLI's sequence defaults,
:func:`edgesp.presets.sequence_defaults`) and the same epochs for sp-online, sp-voltage, e-prop and BPTT, plus
``head-only`` (the model's recurrent layer frozen at its initial weights, only the head trained with CE at step T:
what the learning of the hidden layer adds) and the non-spiking GRU ceiling (same hidden size, BPTT, same input);
``RULE-slowlif`` runs a rule on the previous defaults' slow neurons (du 0.2, dv 0.02). RTRL beside BPTT at a small
size (1×16, 1,000 samples), where it must give the same numbers. Part 2 (cost): for T = 10 … 1000
on rate-coded digits-shaped input (64 features, batch 32, the recurrent default model), peak training memory
(VmHWM − VmRSS before the step, fresh subprocess per point, after a warm-up step at T=2), CPU time per training
step and per inference step (``edgesp.snn.run``, no labels) of the same model, and their ratio.
Writes bench/results/temporal.json and bench/results/temporal.png.

    nice -n 10 .venv/bin/python bench/temporal.py               # default: 3 seeds + cost
    nice -n 10 .venv/bin/python bench/temporal.py --quick       # smoke run (1 seed, 512 samples, 1 epoch, T ≤ 100)
    nice -n 10 .venv/bin/python bench/temporal.py --skip-cost   # accuracy only (keeps the cost rows of --out)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BPTT_FAST = "bptt-fastlif"
FAST_LIF = {"du": 0.5, "dv": 0.05}
SLOW_LIF = {"du": 0.2, "dv": 0.02}
HEAD_ONLY = "head-only"  # the same model with its recurrent layer frozen at init: only the head learns (CE at T)
GRU_LR = 1e-2
ACC_RULES = ("sp-online", "sp-voltage", "eprop", "bptt", "gru", HEAD_ONLY)
DATASETS = "mnist1d-seq+taps8x2,spike-recall"
SCHEDULE = "cosine"
COST_RULES = ("sp-online", "sp-voltage", "eprop", "bptt")
SP_AUTOGRAD = "sp-online-autograd"  # sp-online (its defaults) on the autograd path: the fused step switched off
LOSS_EVERY = "sp-online-le"  # sp-online-leN: rule parameter loss_every = N (the SP loss formed every N steps)


def _online_variant(rule: str) -> tuple[str, dict]:
    """sp-online-autograd / sp-online-leN → ("sp-online", extra rule parameters); any other rule unchanged."""
    if rule.startswith(LOSS_EVERY):
        return "sp-online", {"loss_every": int(rule.removeprefix(LOSS_EVERY))}
    return ("sp-online", {}) if rule == SP_AUTOGRAD else (rule, {})


RULE_FIELDS = {"lr": float, "loss": str, "temperature": float}


def _overrides(rule: str) -> tuple[str, dict, dict]:
    """``RULE@key=value+key=value`` → (RULE, rule-spec fields (lr, loss, temperature), extra rule parameters): one
    setting changed against the sequence defaults, e.g. ``sp-online@lr=3e-4`` or ``sp-online@update_every=1``."""
    base, _, rest = rule.partition("@")
    fields: dict = {}
    params: dict = {}
    for item in filter(None, rest.split("+")):
        key, _, value = item.partition("=")
        if key in RULE_FIELDS:
            fields[key] = RULE_FIELDS[key](value)
        else:
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    return base, fields, params


def _spec(rule: str, ds_shape, classes: int, sequence: bool, *, width=None, depth=None, t: int = 10, lr=None):
    """The CLI's model for this data (sequence defaults when ``sequence``), with the rule's default lr; a rule
    written ``RULE@key=value+…`` changes those settings (:func:`_overrides`)."""
    from edgesp.presets import build_spec, sequence_defaults
    from edgesp.spec import LIF, OptimizerSpec, RuleSpec, TemporalSpec

    rule, fields, over = _overrides(rule)
    name = "bptt" if rule in ("gru", BPTT_FAST, HEAD_ONLY) else rule.removesuffix("-slowlif")
    name, extra = _online_variant(name)
    extra = {**extra, **over}
    d = sequence_defaults(name)
    d.update({k: v for k, v in fields.items() if k != "lr"})
    lr = lr or fields.get("lr")
    if rule == BPTT_FAST:  # BPTT on faster neurons (an extra reference when the defaults are slower)
        d.update(FAST_LIF)
    if rule.endswith("-slowlif"):  # a rule on the previous defaults' slow neurons (du 0.2, dv 0.02)
        d.update(SLOW_LIF)
    rule_spec = RuleSpec(
        name=name,
        loss=d["loss"],
        temperature=d["temperature"] if name.startswith("sp-") else None,
        optimizer=OptimizerSpec(lr=lr or d["lr"]),
        params={**d["rule_params"], **extra},
    )
    temporal = TemporalSpec(time_steps=t, encoding="sequence" if sequence else "rate")
    return build_spec(
        "snn",
        ds_shape,
        classes,
        width=width or d["width"],
        depth=depth or d["depth"],
        rule=rule_spec,
        temporal=temporal,
        lif=LIF(du=d["du"], dv=d["dv"]),
        recurrent=d["recurrent"],
    )


def _trainer(rule: str, spec, seed: int):
    from edgesp.functional import init_params
    from edgesp.rules import make_trainer
    from edgesp.rules.gru import GRUBaseline

    if rule == "gru":
        return GRUBaseline(spec, seed)
    tr = make_trainer(spec, init_params(spec, seed), seed)
    if rule == SP_AUTOGRAD:
        tr.fused = None
    return tr


def step_macs(spec, batch: int) -> dict:
    """Analytic multiply-adds per time step of sp-online's fused step (edgesp.rules.sp_fused) and of inference
    (edgesp.snn.run) for Linear → LIF blocks; a matrix product m×k·k×n counts m·k·n, an elementwise a·x + y one per
    element. Per block (I inputs, H neurons, B samples, C classes, recurrent R = 1 or 0, rows = B + C: the fused
    step stacks both streams and, for block 0 with hidden placement, gives the target rows a zero input x):
    inference  B·(I·H + R·H²) + 2·B·H (LIF u, v) + B·H (readout trace) + B·H·C/T (head, once per sequence);
    training   rows·(I + R·H)·H + 2·rows·H (forward [x | s] [W | W_rec]ᵀ, LIF) + 2·rows·(I + R·H) (traces)
               + [3·B·C·H + rows·H (Y, ∂q_h, ∂q_t, floor mask)] / n + [H·rows·(I + R·H) + rows·H] / n
               (gradient products, n = loss_every) + B·H + 2·B·H·C/T (head CE and its gradient at T)
               + 6·P/k (Adam, P parameters, every k steps)."""
    from edgesp.spec import Linear

    b, c, t = batch, spec.num_classes, spec.temporal.time_steps
    rp = spec.rule.params
    n, k = int(rp.get("loss_every", 1)), int(rp.get("update_every", 1))
    infer = train = 0.0
    for i, block in enumerate(spec.blocks):
        lin = block[0]
        assert isinstance(lin, Linear)
        fi, h = lin.in_features, lin.out_features
        r = 1 if spec.recurrent_layer(i) is not None else 0
        rows, cols = b + c, fi + r * h
        infer += b * (fi * h + r * h * h) + 2 * b * h
        train += rows * cols * h + 2 * rows * h + 2 * rows * cols
        train += (3 * b * c * h + rows * h) / n + (h * rows * cols + rows * h) / n
    hf = spec.head.in_features
    infer += b * hf + b * hf * c / t
    n_params = sum(int(np.prod(s)) for s in spec.param_shapes().values())
    train += b * hf + 2 * b * hf * c / t + 6 * n_params / k
    return {
        "train_macs_per_step": round(train),
        "infer_macs_per_step": round(infer),
        "mac_ratio": round(train / infer, 2),
    }


def accuracy_run(
    ds, rule: str, seed: int, epochs: int, limit: int | None, width=None, depth=None, schedule: str = "constant"
) -> dict:
    import torch

    from edgesp.data import adapt_inputs
    from edgesp.train import lr_factor, set_lr_scale

    torch.manual_seed(seed)
    spec = _spec(rule, ds.input_shape, ds.num_classes, True, width=width, depth=depth)
    full, rule = rule, rule.partition("@")[0]  # RULE@settings: the base rule decides gru / head-only below
    if rule == "gru":  # the GRU's own Adam lr (1e-2: spike-recall solved in 3 epochs, tests/edgesp/rules/test_gru.py)
        spec = spec.replace_rule(optimizer=dataclasses.replace(spec.rule.optimizer, lr=GRU_LR))
    tr = _trainer(rule, spec, seed)
    if rule == HEAD_ONLY:  # freeze every block (and the unused signal): the untrained recurrent layer's baseline
        head = spec.param_layer_index("head.weight")
        for i, opt in tr.opts.items():
            for g in opt.param_groups:
                g["lr"] = g["lr"] if i == head else 0.0
    model = "gru" if rule == "gru" else f"{spec.name}(du={spec.blocks[0][1].du:g},dv={spec.blocks[0][1].dv:g})"
    x, y = adapt_inputs(ds.x_train, spec.input_shape), ds.y_train
    if limit:
        x, y = x[:limit], y[:limit]
    xte = adapt_inputs(ds.x_test, spec.input_shape)
    rng = np.random.default_rng(seed)
    c0 = time.process_time()
    total, k = epochs * ((len(x) + 31) // 32), 0
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for b in range(0, len(perm), 32):
            idx = perm[b : b + 32]
            if schedule != "constant":  # the CLI's host-side schedule (edgesp.train), the same for every rule
                set_lr_scale(tr, lr_factor(schedule, k, total))
            tr.train_step(x[idx], y[idx])
            k += 1
    cpu = time.process_time() - c0
    acc = float((tr.predict(xte).argmax(1) == ds.y_test).mean())
    return {
        "dataset": ds.name,
        "rule": full,
        "seed": seed,
        "model": model,
        "width": spec.block_output_shape(0)[0],
        "depth": len(spec.blocks),
        "T": ds.input_shape[-1],
        "epochs": epochs,
        "train_samples": len(x),
        "lr": spec.rule.optimizer.lr,
        "schedule": schedule,
        "test_accuracy": acc,
        "train_cpu_s": round(cpu, 1),
    }


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def cost_point(rule: str, t: int, batch: int) -> dict:
    """One (rule, T) point, run inside a fresh process: memory and CPU time of one training step and of
    inference on the same batch."""
    import torch

    from edgesp.snn import run

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 64)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    warm = _trainer(rule, _spec(rule, (64,), 10, False, t=2), 0)
    warm.train_step(x, y)
    spec = _spec(rule, (64,), 10, False, t=t)
    tr = _trainer(rule, spec, 0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status("VmRSS")
    c0 = time.process_time()
    tr.train_step(x, y)
    dc = time.process_time() - c0
    peak = _status("VmHWM")
    if dc < 2.0:  # cheap points: best of 3 (CPU time is robust to a shared machine)
        for _ in range(2):
            c0 = time.process_time()
            tr.train_step(x, y)
            dc = min(dc, time.process_time() - c0)
    xt = torch.as_tensor(x)
    inf = float("inf")
    with torch.no_grad():
        for _ in range(3):
            c0 = time.process_time()
            run(spec, xt, tr.p)
            inf = min(inf, time.process_time() - c0)
    out = {
        "rule": rule,
        "T": t,
        "model": spec.name,
        "batch": batch,
        "peak_train_mib": round((peak - base) / 2**20, 2),
        "train_cpu_ms_per_step": round(1e3 * dc / t, 3),
        "infer_cpu_ms_per_step": round(1e3 * inf / t, 3),
        "train_over_infer": round(dc / inf, 2),
    }
    if _online_variant(rule)[0] == "sp-online" and rule != SP_AUTOGRAD:
        out.update(step_macs(spec, batch))
    return out


def run_cost(rule: str, t: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--cost-point", rule, str(t), str(batch)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"cost point {rule} T={t} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (dataset, rule, model, epochs, samples)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        key = (r["dataset"], r["rule"], r["model"], r["epochs"], r["train_samples"])
        groups.setdefault(key, []).append(r["test_accuracy"])
    return [
        {
            "dataset": k[0],
            "rule": k[1],
            "model": k[2],
            "epochs": k[3],
            "train_samples": k[4],
            "seeds": len(v),
            "mean": round(float(np.mean(v)), 4),
            "std": round(float(np.std(v)), 4),
            "accs": v,
        }
        for k, v in groups.items()
    ]


def plot(cost: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict]] = {}
    for r in cost:
        series.setdefault(f"{r['rule']} ({r['model']})", []).append(r)
    for label, rows in series.items():
        rows = sorted(rows, key=lambda r: r["T"])
        ts = [r["T"] for r in rows]
        axes[0].plot(ts, [max(r["peak_train_mib"], 0.05) for r in rows], marker="o", label=label)
        axes[1].plot(ts, [r["train_over_infer"] for r in rows], marker="o", label=label)
    axes[0].set_ylabel("peak training memory (MiB, RSS)")
    axes[1].set_ylabel("training step CPU / inference CPU")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("time steps T")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("Recurrent spiking training cost vs sequence length (batch 32, 1 thread)")
    fig.tight_layout()
    from edgesp.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_accuracy(summary: list[dict], path: Path) -> None:
    """One panel per dataset: test accuracy of every rule, the mean as a bar and each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    rows = [[s for s in summary if s["dataset"] == d] for d in datasets]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 0.9 + 0.32 * max(map(len, rows))))
    for ax, name, group in zip(np.atleast_1d(axes), datasets, rows, strict=True):
        group = sorted(group, key=lambda s: s["mean"])
        ys = np.arange(len(group))
        ax.barh(ys, [100 * s["mean"] for s in group], color="#9db4d0")
        for y, s in zip(ys, group, strict=True):
            ax.plot([100 * a for a in s["accs"]], [y] * len(s["accs"]), "k.", ms=4)
        ax.set_yticks(ys, [f"{s['rule']} ({s['epochs']} ep)" for s in group], fontsize=7)
        ax.set_xlabel("test accuracy (%): bar = mean, dots = seeds")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 100)
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    from edgesp.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the CLI's sequence default)")
    ap.add_argument("--datasets", default=DATASETS, help="e.g. mnist1d-seq (one value per step) or mnist1d-seq+taps8x2")
    ap.add_argument("--rules", default=",".join(ACC_RULES))
    ap.add_argument("--schedule", default=SCHEDULE, help="learning-rate schedule of every rule: constant or cosine")
    ap.add_argument("--skip-accuracy", action="store_true", help="cost part only (keeps accuracy rows of --out)")
    ap.add_argument("--skip-cost", action="store_true", help="accuracy part only (keeps cost rows of --out)")
    ap.add_argument("--skip-rtrl", action="store_true")
    ap.add_argument("--max-train", type=int, default=None, help="use only the first N training samples")
    ap.add_argument("--ts", default="10,40,100,400,1000", help="sequence lengths of the cost part")
    ap.add_argument("--cost-rules", default=",".join(COST_RULES))
    ap.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in --out, except those of the datasets/rules run now (replaced)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "temporal.json"))
    ap.add_argument("--cost-point", nargs=3, metavar=("RULE", "T", "BATCH"))
    a = ap.parse_args()
    if a.cost_point:
        r, t, b = a.cost_point
        print(json.dumps(cost_point(r, int(t), int(b))))
        return
    import torch

    torch.set_num_threads(1)
    from edgesp.atomic import write_text
    from edgesp.data import load_dataset
    from edgesp.presets import sequence_defaults

    out = Path(a.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    command = " ".join(["python", "bench/temporal.py", *sys.argv[1:]])
    keep = a.append or a.skip_accuracy
    results: dict = {"commands": [*old.get("commands", []), command] if keep else [command], "torch_threads": 1}
    if a.skip_accuracy:
        results["summary"] = old.get("summary", [])
    runs = {(d, r) for d in a.datasets.split(",") for r in a.rules.split(",")}
    if a.append and not a.skip_rtrl:
        runs |= {(d, r) for d in a.datasets.split(",") if d.startswith("mnist1d-seq") for r in ("rtrl", "bptt")}
    kept = [r for r in old.get("accuracy", []) if a.skip_accuracy or (r["dataset"], r["rule"]) not in runs]
    results["accuracy"] = kept if a.skip_accuracy or a.append else []
    cost_rules = set(a.cost_rules.split(","))
    results["cost"] = [r for r in old.get("cost", []) if a.skip_cost or (a.append and r["rule"] not in cost_rules)]
    epochs = 1 if a.quick else (a.epochs or sequence_defaults("sp-online")["epochs"])
    seeds = 1 if a.quick else a.seeds
    limit = 512 if a.quick else a.max_train
    if not a.skip_accuracy:
        for name in a.datasets.split(","):
            ds = load_dataset(name)
            for seed in range(seeds):
                for rule in a.rules.split(","):
                    r = accuracy_run(ds, rule, seed, epochs, limit, schedule=a.schedule)
                    results["accuracy"].append(r)
                    print(
                        f"{r['dataset']:12s} {rule:10s} {r['model']:9s} seed={seed} ep={epochs} "
                        f"acc={r['test_accuracy']:.3f}  ({r['train_cpu_s']} s CPU)",
                        flush=True,
                    )
            if name.startswith("mnist1d-seq") and not a.skip_rtrl:  # RTRL = BPTT at a small size
                for seed in range(seeds):
                    for rule in ("bptt", "rtrl"):
                        r = accuracy_run(ds, rule, seed, 1, 256 if a.quick else 1000, width=16, depth=1)
                        results["accuracy"].append(r)
                        print(f"{r['dataset']:12s} {rule:10s} {r['model']:9s} seed={seed} acc={r['test_accuracy']:.3f}")
        results["summary"] = summarise(results["accuracy"])
        for s in results["summary"]:
            print(
                f"{s['dataset']:12s} {s['rule']:10s} {s['model']:9s} ep={s['epochs']} n={s['train_samples']} "
                f"{s['mean']:.3f} ± {s['std']:.3f} over {s['seeds']} seeds"
            )
    if not a.skip_cost:
        ts = (10, 40, 100) if a.quick else tuple(int(t) for t in a.ts.split(","))
        for rule in a.cost_rules.split(","):
            for t in ts:
                r = run_cost(rule, t, 32)
                results["cost"].append(r)
                macs = f"  MACs {r['mac_ratio']:.2f}x" if "mac_ratio" in r else ""
                print(
                    f"cost {rule:10s} {r['model']:9s} T={t:<5d} peak={r['peak_train_mib']:8.2f} MiB  "
                    f"train {r['train_cpu_ms_per_step']:8.3f} ms/step  inference {r['infer_cpu_ms_per_step']:7.3f} "
                    f"ms/step  ratio {r['train_over_infer']:.2f}{macs}",
                    flush=True,
                )
    write_text(out, json.dumps(results, indent=2))
    if results["cost"]:
        plot(results["cost"], out.with_suffix(".png"))
    if results.get("summary"):
        plot_accuracy(results["summary"], out.with_name(out.stem + "_accuracy.png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
