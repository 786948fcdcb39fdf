"""Benchmark: learning rules (BP, FA, DFA, local, sigprop) on digits and MNIST-1D, MLP and 1-D CNN.

For every (dataset, model, rule, seed): a fresh model (init seed = run seed), a seeded shuffle, N epochs of
mini-batch training through the rule's Trainer (``edgesp.rules.make_trainer``), then test accuracy of the
final weights. Each run is a forked child process so that its memory figure is its own: the peak resident
set (VmHWM, reset with ``/proc/self/clear_refs`` = 5 right before training) minus the resident set at
that moment. Time per epoch is the mean wall time of the training epochs (evaluation excluded), 1 torch
thread by default. Digits (1×8×8) are flattened to 64 features for the MLP and to (1, 64) for the CNN.

    .venv/bin/python bench/rules.py [--seeds 3] [--epochs-digits 20] [--epochs-mnist1d 25]
                                    [--batch-digits 32] [--batch-mnist1d 64]
                                    [--sp-lr/--sp-loss/--sp-temperature/--sp-signal]

Prints a table, writes JSON (``--out``), a markdown table (``--md``) and a PNG of the accuracies.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgesp.atomic import write_text  # noqa: E402
from edgesp.data import Dataset, load_dataset  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.rules import make_trainer  # noqa: E402
from edgesp.spec import ModelSpec, OptimizerSpec, RuleSpec, SignalSpec  # noqa: E402
from edgesp.train import SCHEDULES, _optimizers, default_lr, lr_factor, set_lr_scale  # noqa: E402

RULES = ("bp", "fa", "dfa", "local", "sigprop", "ifa", "bdfa", "kp", "wm", "tp", "dtp", "dfc")
DATASETS = ("digits", "mnist1d")
MODELS = ("mlp", "cnn1d")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build(args: argparse.Namespace, ds: Dataset, model: str, rule: str) -> ModelSpec:
    shape = ds.input_shape
    if model == "cnn1d" and len(shape) == 3:
        shape = (1, math.prod(shape))
    lr = args.sp_lr if rule == "sigprop" else args.lr
    d_sig = SignalSpec()
    rule_spec = RuleSpec(
        name=rule,
        loss=args.sp_loss,
        temperature=args.sp_temperature,
        optimizer=OptimizerSpec(name="adam", lr=lr),
        params=dict(getattr(args, "sp_params", None) or {}) if rule == "sigprop" else {},
    )
    signal = SignalSpec(
        kind=args.sp_signal,
        placement=getattr(args, "sp_placement", d_sig.placement),
        shape=getattr(args, "sp_shape", d_sig.shape) if model != "mlp" else "full",
        init_std=getattr(args, "sp_init_std", d_sig.init_std),
    )
    return build_spec(
        model,
        shape,
        ds.num_classes,
        width=args.width,
        depth=args.depth,
        channels=args.channels,
        rule=rule_spec,
        signal=signal,
    )


def param_counts(trainer: object) -> tuple[int, int]:
    """(trained, fixed) parameter counts of a rule's trainer: trained = every tensor an optimizer updates
    (blocks, head, and the rule's own extras: sigprop's signal, local's auxiliary classifiers); fixed =
    tensors the rule stores but never updates (FA/DFA feedback matrices, a fixed sigprop signal)."""
    seen: set[int] = set()
    trained = 0
    for opt in _optimizers(trainer):
        for g in opt.param_groups:
            for t in g["params"]:
                if id(t) not in seen:
                    seen.add(id(t))
                    trained += t.numel()
    fixed = sum(t.numel() for t in getattr(trainer, "feedback", {}).values())
    held = getattr(trainer, "p", {}).values()
    fixed += sum(t.numel() for t in held if id(t) not in seen and not t.requires_grad)
    return trained, fixed


def run_one(args: argparse.Namespace, ds: Dataset, model: str, rule: str, seed: int, epochs: int, batch: int) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    spec = build(args, ds, model, rule)
    xtr = ds.x_train.reshape(len(ds.x_train), *spec.input_shape)
    xte = ds.x_test.reshape(len(ds.x_test), *spec.input_shape)
    rng = np.random.default_rng(seed)
    # warm-up on a throw-away trainer: torch's one-off lazy initialisation (kernels, thread pool) is not
    # the rule's memory
    warm = make_trainer(spec, init_params(spec, seed), seed)
    for _ in range(2):
        warm.train_step(xtr[:batch], ds.y_train[:batch])
    warm.predict(xte[:batch])
    del warm
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    rss0 = _status_kib("VmRSS")
    trainer = make_trainer(spec, init_params(spec, seed), seed)
    schedule = getattr(args, "schedule", "constant")
    n_batches = -(-len(xtr) // batch)
    epoch_times, losses = [], []
    for ep in range(epochs):
        idx = rng.permutation(len(xtr))
        t0 = time.perf_counter()
        ep_losses = []
        for k, s in enumerate(range(0, len(idx), batch)):
            b = idx[s : s + batch]
            if schedule != "constant":
                set_lr_scale(trainer, lr_factor(schedule, ep * n_batches + k, epochs * n_batches))
            ep_losses.append(trainer.train_step(xtr[b], ds.y_train[b]))
        epoch_times.append(time.perf_counter() - t0)
        losses.append({k: float(np.mean([d[k] for d in ep_losses])) for k in ep_losses[0]})
    peak_kib = _status_kib("VmHWM") - rss0
    trained, fixed = param_counts(trainer)
    acc = float((trainer.predict(xte).argmax(1) == ds.y_test).mean())
    train_acc = float((trainer.predict(xtr).argmax(1) == ds.y_train).mean())
    return {
        "dataset": ds.name,
        "model": model,
        "rule": rule,
        "seed": seed,
        "epochs": epochs,
        "batch": batch,
        "test_acc": acc,
        "train_acc": train_acc,
        "epoch_s": float(np.mean(epoch_times)),
        "peak_rss_mib": peak_kib / 1024,
        "final_losses": losses[-1],
        "num_params": spec.num_params(),
        "trained_params": trained,
        "fixed_params": fixed,
        "spec_name": spec.name,
        "schedule": schedule,
        "lr": spec.rule.optimizer.lr,
    }


def warm_parent(rules: list[str]) -> None:
    """Import-time and lazy-initialisation costs (torch.optim pulls in heavy modules on first use) are paid
    once here, before forking, instead of in every run."""
    for rule in rules:
        spec = build_spec("mlp", (4,), 2, width=4, rule=RuleSpec(name=rule))
        trainer = make_trainer(spec, init_params(spec, 0), 0)
        trainer.train_step(np.zeros((2, 4), np.float32), np.array([0, 1]))


def _child(conn, *a) -> None:  # noqa: ANN001
    try:
        conn.send(run_one(*a))
    except Exception as e:  # report, do not hang the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})
    conn.close()


def run_forked(*a) -> dict:  # noqa: ANN002
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, *a))
    p.start()
    child.close()
    out = parent.recv()
    p.join()
    if "error" in out:
        raise RuntimeError(out["error"])
    return out


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    keys = sorted(
        {(r["dataset"], r["model"], r["rule"]) for r in runs},
        key=lambda k: (DATASETS.index(k[0]), MODELS.index(k[1]), RULES.index(k[2])),
    )
    for d, m, rule in keys:
        rs = [r for r in runs if (r["dataset"], r["model"], r["rule"]) == (d, m, rule)]
        accs = np.array([r["test_acc"] for r in rs]) * 100
        std = float(accs.std(ddof=1)) if len(rs) > 1 else 0.0
        rows.append(
            {
                "dataset": d,
                "model": m,
                "rule": rule,
                "n": len(rs),
                "epochs": rs[0]["epochs"],
                "batch": rs[0]["batch"],
                "acc_mean": float(accs.mean()),
                "acc_std": std,
                "train_acc_mean": float(np.mean([r["train_acc"] for r in rs]) * 100),
                "epoch_s": float(np.mean([r["epoch_s"] for r in rs])),
                "peak_rss_mib": float(np.mean([r["peak_rss_mib"] for r in rs])),
                "num_params": rs[0]["num_params"],
                "trained_params": rs[0].get("trained_params"),
                "fixed_params": rs[0].get("fixed_params", 0),
                "spec_name": rs[0]["spec_name"],
            }
        )
    return rows


def _params_cell(r: dict) -> str:
    if r.get("trained_params") is None:  # results written before the count existed
        return str(r["num_params"])
    return f"{r['trained_params']}" + (f" (+{r['fixed_params']})" if r.get("fixed_params") else "")


def table(rows: list[dict], md: bool = False) -> str:
    head = [
        "dataset",
        "model",
        "rule",
        "test acc % (mean ± std)",
        "trained params (+fixed)",
        "train acc %",
        "s/epoch",
        "peak RSS MiB",
        "epochs",
        "batch",
    ]
    lines = []
    for r in rows:
        lines.append(
            [
                r["dataset"],
                r["spec_name"],
                r["rule"],
                f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}",
                _params_cell(r),
                f"{r['train_acc_mean']:.1f}",
                f"{r['epoch_s']:.3f}",
                f"{r['peak_rss_mib']:.1f}",
                str(r["epochs"]),
                str(r["batch"]),
            ]
        )
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    w = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w[i]) for i, h in enumerate(head))]
    out += ["  ".join(c[i].rjust(w[i]) for i in range(len(head))) for c in lines]
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(
        {(r["dataset"], r["model"]) for r in rows}, key=lambda k: (DATASETS.index(k[0]), MODELS.index(k[1]))
    )
    rules = [r for r in RULES if any(x["rule"] == r for x in rows)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(rules))
    for j, rule in enumerate(rules):
        means, stds = [], []
        for g in groups:
            r = next((x for x in rows if (x["dataset"], x["model"], x["rule"]) == (*g, rule)), None)
            means.append(r["acc_mean"] if r else 0)
            stds.append(r["acc_std"] if r else 0)
        ax.bar(np.arange(len(groups)) + j * width, means, width, yerr=stds, label=rule, capsize=2)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{d}\n{m}" for d, m in groups])
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(40, 100)
    ax.legend(ncol=len(rules), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="runs per configuration (seeds 0..N-1)")
    ap.add_argument("--epochs-digits", type=int, default=20)
    ap.add_argument("--epochs-mnist1d", type=int, default=25)
    ap.add_argument("--batch-digits", type=int, default=32)
    ap.add_argument("--batch-mnist1d", type=int, default=64)
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--width", type=int, default=128, help="MLP width")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--channels", type=int, default=16, help="CNN channels of the first block")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam lr of bp/fa/dfa/local")
    ap.add_argument("--sp-lr", type=float, default=default_lr("sigprop"), help="Adam lr of sigprop")
    ap.add_argument("--sp-loss", default=RuleSpec().loss)
    ap.add_argument("--sp-temperature", type=float, default=RuleSpec().temperature)
    ap.add_argument("--sp-signal", default=SignalSpec().kind, choices=("learned", "fixed"), help="sigprop signal")
    ap.add_argument("--sp-placement", default=SignalSpec().placement, choices=("hidden", "input"))
    ap.add_argument("--sp-shape", default=SignalSpec().shape, choices=("full", "channel"), help="conv models only")
    ap.add_argument("--sp-init-std", type=float, default=SignalSpec().init_std, help="sigprop signal init std")
    ap.add_argument(
        "--schedule",
        default="constant",
        choices=SCHEDULES,
        help="learning-rate schedule of every rule (edgesp.train.lr_factor), per step over the whole run",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel (accuracies unchanged; s/epoch then includes contention)"
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/rules.json"))
    ap.add_argument("--md", type=Path, default=Path("bench/results/rules_table.md"))
    ap.add_argument("--png", type=Path, default=Path("bench/results/rules.png"))
    ap.add_argument("--from-json", type=Path, help="re-render table, markdown and PNG from a results JSON")
    args = ap.parse_args()
    if args.from_json:
        rows = json.loads(args.from_json.read_text())["summary"]
        print(table(rows))
        write_text(args.md, table(rows, md=True) + "\n")
        plot(rows, args.png)
        return

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    warm_parent(args.rules)
    jobs = []
    for dname in args.datasets:
        ds = load_dataset(dname)
        epochs = args.epochs_digits if dname == "digits" else args.epochs_mnist1d
        batch = args.batch_digits if dname == "digits" else args.batch_mnist1d
        for model in args.models:
            for rule in args.rules:
                for seed in range(args.seeds):
                    jobs.append((ds, model, rule, seed, epochs, batch))

    def one(job: tuple) -> dict:
        ds, model, rule, seed, epochs, batch = job
        r = run_forked(args, ds, model, rule, seed, epochs, batch)
        print(
            f"{ds.name:8s} {model:6s} {rule:8s} seed {seed}: acc {r['test_acc'] * 100:6.2f}%  "
            f"{r['epoch_s']:.3f} s/epoch  peak +{r['peak_rss_mib']:.1f} MiB  "
            f"losses {', '.join(f'{k}={v:.3f}' for k, v in r['final_losses'].items())}",
            flush=True,
        )
        return r

    if args.jobs > 1:  # forked runs in parallel (each still 1 torch thread); timings then include contention
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(one, jobs))
    else:
        runs = [one(j) for j in jobs]
    rows = summarise(runs)
    print()
    print(table(rows))
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {
        "config": cfg,
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "total_s": total,
        "summary": rows,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2))
    args.md.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.md, table(rows, md=True) + "\n")
    plot(rows, args.png)
    print(f"wrote {args.out}, {args.md}, {args.png}")


if __name__ == "__main__":
    main()
