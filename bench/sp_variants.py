"""Benchmark: opt-in Signal Propagation variants (``RuleSpec.variant``, :class:`edgesp.spec.SPVariant`) against
plain SP, on the rows of ``bench/rules.py`` (digits and MNIST-1D, MLP and 1-D CNN), same budget.

Every run is ``bench.rules.run_one`` in a forked child (``bench.rules.run_forked``): a fresh model (init
seed = run seed), a seeded shuffle, N epochs, test accuracy of the final weights. The only change is the
spec: ``bench.rules.build`` is wrapped so that the sigprop spec gets the variant. The base SP settings are
explicit options (defaults: loss v1, temperature 0.01, Adam 1e-3, constant lr, learned hidden signal).

Cost columns are computed, not timed: *extra params* = spec.num_params() − the plain spec's (full signal);
*extra state bytes* = 4 bytes × 3 (weight + Adam m, v) × extra params; *extra FLOPs/step* = the matmul/conv
FLOPs of one torch ``train_step`` (forward + backward, counted by ``torch.utils.flop_counter``) minus the
plain step's, at the row's batch size (element-wise ops such as LayerNorm are not counted).

    .venv/bin/python bench/sp_variants.py --variants plain codes4 free aux [--seeds 3] [--jobs 2]
        [--datasets mnist1d] [--models cnn1d] [--out bench/results/sp_variants.json]
    .venv/bin/python bench/sp_variants.py --from-json A.json [B.json ...]   # markdown tables of saved runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench.rules as rules  # noqa: E402
from edgesp.atomic import write_text  # noqa: E402
from edgesp.data import load_dataset  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.rules import make_trainer  # noqa: E402
from edgesp.spec import ModelSpec, SPVariant  # noqa: E402

# name -> (variant, signal overrides (conv-only keys such as shape are dropped for the MLP))
VARIANTS: dict[str, tuple[SPVariant, dict]] = {
    "plain": (SPVariant(), {}),
    "plain-ch": (SPVariant(), {"shape": "channel"}),
    "plain-lin": (SPVariant(), {"activation": "none"}),
    "plain-ch-lin": (SPVariant(), {"shape": "channel", "activation": "none"}),
    "codes4": (SPVariant(codes=4), {}),
    "codes8": (SPVariant(codes=8), {}),
    "codes8-ch": (SPVariant(codes=8), {"shape": "channel"}),
    "codes8-ch-lin": (SPVariant(codes=8), {"shape": "channel", "activation": "none"}),
    "codes16-ch": (SPVariant(codes=16), {"shape": "channel"}),
    "free": (SPVariant(free_targets=True), {}),
    "free-lin": (SPVariant(free_targets=True), {"activation": "none"}),
    "free-codes4": (SPVariant(free_targets=True, codes=4), {}),
    "free-codes8": (SPVariant(free_targets=True, codes=8), {}),
    "aux": (SPVariant(aux=1.0), {}),
    "aux-lin": (SPVariant(aux=1.0), {"activation": "none"}),
    "aux-ch": (SPVariant(aux=1.0, aux_pool="channel"), {}),
    "aux0.3": (SPVariant(aux=0.3), {}),
    "aux3": (SPVariant(aux=3.0), {}),
    "aux-codes8-ch": (SPVariant(aux=1.0, codes=8), {"shape": "channel"}),
    "aux-free-lin": (SPVariant(aux=1.0, free_targets=True), {"activation": "none"}),
    "aux3-free-lin": (SPVariant(aux=3.0, free_targets=True), {"activation": "none"}),
    "free-codes4-lin": (SPVariant(free_targets=True, codes=4), {"activation": "none"}),
    "free-ch-lin": (SPVariant(free_targets=True), {"shape": "channel", "activation": "none"}),
    "aux-free-ch-lin": (SPVariant(aux=1.0, free_targets=True), {"shape": "channel", "activation": "none"}),
}

_orig_build = rules.build
_orig_init = rules.init_params
TARGETS_INIT_STD: float | None = None


def init_variant(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """init_params; with --targets-init-std, free targets are redrawn N(0, std²) (bias 0) like the signal."""
    p = _orig_init(spec, seed)
    if TARGETS_INIT_STD is not None:
        rng = np.random.default_rng([seed, 0x7A])
        for k in p:
            if k.startswith("targets."):
                w = k.endswith(".weight")
                p[k] = (TARGETS_INIT_STD * rng.standard_normal(p[k].shape) * w).astype(np.float32)
    return p


rules.init_params = init_variant


def build_variant(args: argparse.Namespace, ds, model: str, rule: str) -> ModelSpec:  # noqa: ANN001
    spec = _orig_build(args, ds, model, rule)
    variant, sig = VARIANTS[args.variant]
    # the signal is set explicitly (not from SignalSpec's defaults, which may change): learned, hidden, full,
    # relu, init std --sp-init-std; then the variant's overrides (shape only on conv models)
    base = dict(kind="learned", placement="hidden", shape="full", activation="relu", init_std=args.sp_init_std)
    sig = {k: v for k, v in {**base, **sig}.items() if model != "mlp" or k != "shape"}
    spec = replace(spec, signal=replace(spec.signal, **sig))
    spec = spec.replace_rule(variant=variant)
    return replace(spec, name=f"{spec.name}[{args.variant}]")


rules.build = build_variant  # run_one looks build up at call time (also in the forked children)
_orig_run_one, _orig_make_trainer = rules.run_one, rules.make_trainer


def run_one_both(args: argparse.Namespace, ds, model: str, rule: str, seed: int, epochs: int, batch: int) -> dict:  # noqa: ANN001
    """``bench.rules.run_one``, then also the test accuracy of nearest-target prediction of the same weights
    (``nearest_acc``; the variant's ``predict`` setting decides ``test_acc``)."""
    trainers = []

    def make(spec, params, seed):  # noqa: ANN001, ANN202
        trainers.append(_orig_make_trainer(spec, params, seed))
        return trainers[-1]

    rules.make_trainer = make
    r = _orig_run_one(args, ds, model, rule, seed, epochs, batch)
    tr = trainers[-1]
    xte = torch.as_tensor(ds.x_test.reshape(len(ds.x_test), *tr.spec.input_shape), dtype=torch.float32)
    with torch.no_grad():
        head = tr.predict_head(xte).argmax(1).numpy()
        near = tr.nearest_logits(xte).argmax(1).numpy()
    r["head_acc"] = float((head == ds.y_test).mean())
    r["nearest_acc"] = float((near == ds.y_test).mean())
    return r


rules.run_one = run_one_both  # run_forked's child calls rules.run_one


def step_flops(spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    tr = make_trainer(spec, init_params(spec, 0), 0)
    tr.train_step(x, y)
    with FlopCounterMode(display=False) as fc:
        tr.train_step(x, y)
    return int(fc.get_total_flops())


def cost(args: argparse.Namespace, ds, model: str, batch: int) -> dict:  # noqa: ANN001
    torch.set_num_threads(1)
    spec = rules.build(args, ds, model, "sigprop")
    plain = build_variant(argparse.Namespace(**{**vars(args), "variant": "plain"}), ds, model, "sigprop")
    x = ds.x_train[:batch].reshape(batch, *spec.input_shape)
    y = ds.y_train[:batch]
    extra = spec.num_params() - plain.num_params()
    return {
        "num_params": spec.num_params(),
        "extra_params": extra,
        "extra_state_bytes": 12 * extra,
        "step_flops": step_flops(spec, x, y),
        "extra_flops": step_flops(spec, x, y) - step_flops(plain, x, y),
        "pure_sp": spec.rule.variant.pure_sp,
    }


def namespace(a: argparse.Namespace, variant: str) -> argparse.Namespace:
    return argparse.Namespace(
        variant=variant,
        threads=1,
        lr=a.sp_lr,
        sp_lr=a.sp_lr,
        sp_loss=a.sp_loss,
        sp_temperature=a.sp_temperature,
        sp_signal="learned",
        sp_placement="hidden",
        sp_init_std=a.sp_init_std,
        schedule=a.schedule,
        width=a.width,
        depth=a.depth,
        channels=a.channels,
    )


def fmt_int(n: int) -> str:
    return f"{n / 1e6:.2f} M" if abs(n) >= 1e6 else (f"{n / 1e3:.1f} k" if abs(n) >= 1e3 else str(n))


ROW_NAMES = {
    ("digits", "mlp"): "digits MLP",
    ("digits", "cnn1d"): "digits CNN",
    ("mnist1d", "mlp"): "MNIST-1D MLP",
    ("mnist1d", "cnn1d"): "MNIST-1D CNN",
}


def markdown(rows: list[dict]) -> str:
    """Two tables: accuracy (test %, mean ± std over seeds; head and nearest-target prediction of the same
    runs) and cost (extra parameters, extra state bytes, extra FLOPs per training step), per row."""
    keys = [k for k in ROW_NAMES if any((r["dataset"], r["model"]) == k for r in rows)]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    get = {(r["dataset"], r["model"], r["variant"]): r for r in rows}
    out = ["| variant | pure SP | " + " | ".join(ROW_NAMES[k] for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for v in variants:
        cells = []
        for k in keys:
            r = get.get((*k, v))
            cells.append(
                "–"
                if r is None
                else f"**{r['head_mean']:.1f} ± {r['head_std']:.1f}** "
                f"({r['nearest_mean']:.1f} ± {r['nearest_std']:.1f})"
            )
        pure = next(get[(*k, v)]["pure_sp"] for k in keys if (*k, v) in get)
        out.append(f"| {v} | {'yes' if pure else 'no'} | " + " | ".join(cells) + " |")
    out += ["", "| variant | " + " | ".join(ROW_NAMES[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for v in variants:
        cells = []
        for k in keys:
            r = get.get((*k, v))
            cells.append(
                "–"
                if r is None
                else f"{r['num_params']} ({r['extra_params']:+d}); {fmt_int(r['step_flops'])} "
                f"({'+' if r['extra_flops'] >= 0 else '−'}{fmt_int(abs(r['extra_flops']))})"
            )
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["plain"], choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed0", type=int, default=0, help="first seed")
    ap.add_argument("--datasets", nargs="+", default=list(rules.DATASETS), choices=rules.DATASETS)
    ap.add_argument("--models", nargs="+", default=list(rules.MODELS), choices=rules.MODELS)
    ap.add_argument("--epochs-digits", type=int, default=20)
    ap.add_argument("--epochs-mnist1d", type=int, default=25)
    ap.add_argument("--batch-digits", type=int, default=32)
    ap.add_argument("--batch-mnist1d", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--sp-lr", type=float, default=1e-3)
    ap.add_argument("--sp-loss", default="v1")
    ap.add_argument("--sp-temperature", type=float, default=0.01)
    ap.add_argument("--sp-init-std", type=float, default=0.05)
    ap.add_argument("--schedule", default="constant")
    ap.add_argument("--jobs", type=int, default=1, help="forked runs at a time (1 torch thread each)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sp_variants.json"))
    ap.add_argument("--targets-init-std", type=float, help="free targets N(0, std²) instead of init_params'")
    ap.add_argument("--from-json", type=Path, nargs="+", help="print the markdown tables of results JSONs and exit")
    a = ap.parse_args()
    if a.from_json:
        print(markdown([r for f in a.from_json for r in json.loads(f.read_text())["summary"]]))
        return
    global TARGETS_INIT_STD
    TARGETS_INIT_STD = a.targets_init_std

    t_start = time.perf_counter()
    torch.set_num_threads(1)
    rules.warm_parent(["sigprop"])
    jobs, costs = [], {}
    for dname in a.datasets:
        ds = load_dataset(dname)
        epochs = a.epochs_digits if dname == "digits" else a.epochs_mnist1d
        batch = a.batch_digits if dname == "digits" else a.batch_mnist1d
        for model in a.models:
            for v in a.variants:
                ns = namespace(a, v)
                costs[(dname, model, v)] = cost(ns, ds, model, batch)
                for seed in range(a.seed0, a.seed0 + a.seeds):
                    jobs.append((ns, ds, model, seed, epochs, batch))

    def run(job: tuple) -> dict:
        ns, ds, model, seed, epochs, batch = job
        r = rules.run_forked(ns, ds, model, "sigprop", seed, epochs, batch)
        r["variant"] = ns.variant
        print(
            f"{ds.name:8s} {model:6s} {ns.variant:18s} seed {seed}: acc {r['test_acc'] * 100:6.2f}%  "
            f"(head {r['head_acc'] * 100:5.2f}, nearest {r['nearest_acc'] * 100:5.2f})  "
            f"train {r['train_acc'] * 100:5.1f}%  {r['epoch_s']:.2f} s/epoch",
            flush=True,
        )
        return r

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        runs = list(pool.map(run, jobs))

    rows = []
    for (dname, model, v), c in costs.items():
        rs = [r for r in runs if (r["dataset"], r["model"], r["variant"]) == (dname, model, v)]
        accs = np.array([r["test_acc"] for r in rs]) * 100
        rows.append(
            {
                "dataset": dname,
                "model": model,
                "variant": v,
                "n": len(rs),
                "acc_mean": float(accs.mean()),
                "acc_std": float(accs.std(ddof=1)) if len(rs) > 1 else 0.0,
                "accs": accs.tolist(),
                "head_mean": float(np.mean([r["head_acc"] for r in rs]) * 100),
                "head_std": float(np.std([r["head_acc"] * 100 for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
                "nearest_mean": float(np.mean([r["nearest_acc"] for r in rs]) * 100),
                "nearest_std": float(np.std([r["nearest_acc"] * 100 for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
                "train_acc_mean": float(np.mean([r["train_acc"] for r in rs]) * 100),
                "epoch_s": float(np.mean([r["epoch_s"] for r in rs])),
                **c,
            }
        )
    print()
    for r in rows:
        print(
            f"{r['dataset']:8s} {r['model']:6s} {r['variant']:18s} {r['acc_mean']:6.2f} ± {r['acc_std']:.2f}  "
            f"[head {r['head_mean']:.2f} ± {r['head_std']:.2f}, "
            f"nearest {r['nearest_mean']:.2f} ± {r['nearest_std']:.2f}]  "
            f"(n={r['n']}, train {r['train_acc_mean']:.1f})  params {r['num_params']} (+{r['extra_params']})  "
            f"+{fmt_int(r['extra_flops'])} FLOPs/step  pure={r['pure_sp']}"
        )
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    result = {
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "torch": torch.__version__,
        "total_s": total,
        "summary": rows,
        "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
