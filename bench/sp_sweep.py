"""Sweep of Signal Propagation settings on the `bench/rules.py` rows (same models, data, epochs, batch).

Every configuration is a set of overrides of a base setting; each run is one forked child of
``bench/rules.run_one`` (1 torch thread, seeded: accuracies are reproducible, timings are not). Several runs
go in parallel (``--jobs``), so wall times depend on the machine's load.

Knobs (``--set key=value`` for the base, ``--grid key=v1,v2`` for one-at-a-time variations around it):

- ``loss`` (v1, v9, v14, v15, l2), ``temperature``, ``lr`` (Adam), ``schedule`` (constant, cosine;
  ``edgesp.train.lr_factor``)
- ``init_std`` (signal W_S init), ``placement`` (hidden, input), ``shape`` (full, channel; conv only),
  ``signal`` (learned, fixed)
- per-layer learning-rate multipliers (``RuleSpec.params``, honoured by the sigprop trainer):
  ``lr_signal`` (the signal generator W_S, b_S), ``lr_first`` (block 0), ``lr_deep`` (blocks ≥ 1),
  ``lr_head`` (output layer)

    .venv/bin/python bench/sp_sweep.py --rows mnist1d/cnn1d mnist1d/mlp --seeds 1 \\
        --grid loss=v1,v9 temperature=0.003,0.03 --jobs 2 --tag coarse

Prints a table; writes ``bench/results/sp_sweep_<tag>.json`` (every run) and ``..._<tag>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import rules as R  # noqa: E402

from edgesp.atomic import write_text  # noqa: E402
from edgesp.data import load_dataset  # noqa: E402
from edgesp.spec import RuleSpec, SignalSpec  # noqa: E402

LR_KEYS = ("lr_signal", "lr_first", "lr_deep", "lr_head")
ROWS = ("digits/mlp", "digits/cnn1d", "mnist1d/mlp", "mnist1d/cnn1d")


def layer_lr_scale(name: str, n_blocks: int, params: dict) -> float:
    """Multiplier of parameter ``name``'s learning rate from the ``lr_*`` keys of ``RuleSpec.params``."""
    if name.startswith("signal."):
        return float(params.get("lr_signal", 1.0))
    if name.startswith("blocks.0."):
        return float(params.get("lr_first", 1.0))
    if name.startswith("blocks."):
        return float(params.get("lr_deep", 1.0))
    return float(params.get("lr_head", 1.0))


def _patch_sigprop_layer_lr() -> None:
    """Make the sigprop trainer honour the ``lr_*`` multipliers (one param group per parameter tensor, the
    same per-layer optimizers and the same ``set_lr_scale`` schedule), without touching edgesp itself."""
    import torch

    import edgesp.rules.sigprop as S
    from edgesp.rules.optim import make_optimizer

    original = S.make

    def make(spec, params, seed=0):  # noqa: ANN001, ANN202
        tr = original(spec, params, seed)
        knobs = {k: v for k, v in spec.rule.params.items() if k in LR_KEYS}
        if not knobs:
            return tr
        names = {id(t): n for n, t in tr.p.items()}
        for layer, opt in list(tr.optims.items()):
            tensors = [t for g in opt.param_groups for t in g["params"]]
            new = make_optimizer(spec.rule.optimizer, tensors)
            lr = new.param_groups[0]["lr"]
            new.param_groups.clear()
            for t in tensors:
                scale = layer_lr_scale(names[id(t)], len(spec.blocks), knobs)
                new.add_param_group({"params": [t], "lr": lr * scale})
            assert isinstance(new, torch.optim.Optimizer)
            tr.optims[layer] = new
            tr.base_lr[layer] = [g["lr"] for g in new.param_groups]
        return tr

    S.make = make


def base_config() -> dict:
    r, s = RuleSpec(), SignalSpec()
    return {
        "loss": r.loss,
        "temperature": r.temperature,
        "lr": r.optimizer.lr,
        "schedule": "constant",
        "init_std": s.init_std,
        "placement": s.placement,
        "shape": s.shape,
        "signal": s.kind,
    }


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def label(cfg: dict, base: dict) -> str:
    diff = [f"{k}={v}" for k, v in cfg.items() if base.get(k) != v]
    return ", ".join(diff) or "base"


def namespace(cfg: dict) -> argparse.Namespace:
    params = {k: float(cfg[k]) for k in LR_KEYS if k in cfg and float(cfg[k]) != 1.0}
    return argparse.Namespace(
        sp_lr=cfg["lr"],
        lr=cfg["lr"],
        sp_loss=cfg["loss"],
        sp_temperature=cfg["temperature"],
        sp_signal=cfg["signal"],
        sp_placement=cfg["placement"],
        sp_shape=cfg["shape"],
        sp_init_std=cfg["init_std"],
        sp_params=params,
        schedule=cfg["schedule"],
        width=128,
        depth=2,
        channels=16,
        threads=1,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", default=["mnist1d/cnn1d", "mnist1d/mlp"], choices=ROWS)
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="base overrides")
    ap.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2", help="one-at-a-time variations")
    ap.add_argument(
        "--configs", nargs="*", default=[], metavar="K=V;K=V", help="extra full configurations (';'-separated)"
    )
    ap.add_argument("--no-base", action="store_true", help="do not run the base configuration itself")
    ap.add_argument("--rule", default="sigprop", help="rule to run (e.g. bp for a reference row)")
    ap.add_argument("--epochs-digits", type=int, default=20)
    ap.add_argument("--epochs-mnist1d", type=int, default=25)
    ap.add_argument("--batch-digits", type=int, default=32)
    ap.add_argument("--batch-mnist1d", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (each 1 torch thread)")
    ap.add_argument("--tag", default="sweep")
    ap.add_argument("--outdir", type=Path, default=Path("bench/results"))
    args = ap.parse_args()

    base = base_config()
    for kv in args.set:
        k, v = kv.split("=", 1)
        base[k] = _value(v)
    configs = [] if args.no_base else [dict(base)]
    for kv in args.grid:
        k, vs = kv.split("=", 1)
        for v in vs.split(","):
            cfg = {**base, k: _value(v)}
            if cfg not in configs:
                configs.append(cfg)
    for text in args.configs:
        cfg = dict(base)
        for kv in text.split(";"):
            k, v = kv.split("=", 1)
            cfg[k.strip()] = _value(v.strip())
        if cfg not in configs:
            configs.append(cfg)

    _patch_sigprop_layer_lr()
    R.warm_parent([args.rule])
    data = {d: load_dataset(d) for d in {r.split("/")[0] for r in args.rows}}
    jobs = []
    for row in args.rows:
        dname, model = row.split("/")
        for cfg in configs:
            if model == "mlp" and cfg["shape"] != "full":
                continue
            for seed in range(args.seeds):
                jobs.append((row, cfg, seed))
    print(f"{len(jobs)} runs, {args.jobs} in parallel", flush=True)
    lock = threading.Lock()
    runs: list[dict] = []
    t_start = time.perf_counter()

    def one(job: tuple) -> None:
        row, cfg, seed = job
        dname, model = row.split("/")
        epochs = args.epochs_digits if dname == "digits" else args.epochs_mnist1d
        batch = args.batch_digits if dname == "digits" else args.batch_mnist1d
        try:
            r = R.run_forked(namespace(cfg), data[dname], model, args.rule, seed, epochs, batch)
        except RuntimeError as e:
            r = {"error": str(e), "test_acc": float("nan"), "train_acc": float("nan"), "epoch_s": float("nan")}
        r.update(row=row, config=cfg, label=label(cfg, base), seed=seed)
        with lock:
            runs.append(r)
            print(
                f"{row:14s} seed {seed} {r['label']:40s} test {r['test_acc'] * 100:6.2f}  "
                f"train {r['train_acc'] * 100:5.1f}  {r['epoch_s']:.2f} s/epoch",
                flush=True,
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))

    summary = []
    for row in args.rows:
        for cfg in configs:
            rs = [r for r in runs if r["row"] == row and r["config"] == cfg]
            if not rs:
                continue
            accs = np.array([r["test_acc"] for r in sorted(rs, key=lambda r: r["seed"])]) * 100
            summary.append(
                {
                    "row": row,
                    "label": label(cfg, base),
                    "config": cfg,
                    "accs": accs.round(2).tolist(),
                    "mean": float(accs.mean()),
                    "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                    "train": float(np.mean([r["train_acc"] for r in rs]) * 100),
                    "num_params": rs[0].get("num_params"),
                }
            )
    head = ["row", "setting (vs base)", "test % per seed", "mean ± std", "train %", "params"]
    lines = [
        [
            s["row"],
            s["label"],
            " ".join(f"{a:.1f}" for a in s["accs"]),
            f"{s['mean']:.2f} ± {s['std']:.2f}",
            f"{s['train']:.1f}",
            str(s["num_params"]),
        ]
        for s in summary
    ]
    w = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)] if lines else [len(h) for h in head]
    print()
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    for c in lines:
        print("  ".join(c[i].ljust(w[i]) for i in range(len(head))))
    total = time.perf_counter() - t_start
    print(f"\nbase: {label(base, {})}\ntotal {total:.0f} s")
    args.outdir.mkdir(parents=True, exist_ok=True)
    out = {
        "command": "python " + " ".join(sys.argv),
        "rule": args.rule,
        "base": base,
        "total_s": total,
        "summary": summary,
        "runs": runs,
    }
    write_text(args.outdir / f"sp_sweep_{args.tag}.json", json.dumps(out, indent=2, default=str))
    md = [
        f"Command: `{out['command']}`; base: {label(base, {})}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    md += ["| " + " | ".join(c) + " |" for c in lines]
    write_text(args.outdir / f"sp_sweep_{args.tag}.md", "\n".join(md) + "\n")
    print(f"wrote {args.outdir}/sp_sweep_{args.tag}.json and .md")


if __name__ == "__main__":
    main()
