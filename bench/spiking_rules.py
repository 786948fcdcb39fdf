"""Spiking digits: SP rules against surrogate-gradient BPTT on the same model, over seeds.

Same model (``snn`` preset, (Linear → LIF) × depth → Linear head, membrane readout), same data (digits 8×8,
rate-coded for T steps; the fixed train/test split of ``load_digits(0)``), same epochs and batch size for every
rule; seed s sets the initial weights, the batch order and the rate code. Each rule may have its own
learning rate (``--lr rule=value``); the SP settings (loss, temperature, signal placement/init, rule params)
are arguments here with explicit defaults (loss v9, temperature 0.1, hidden placement, init_std 0.05), so the
results do not follow later changes of the spec defaults. Results: docs/benchmarks/spiking.md.

    .venv/bin/python bench/spiking_rules.py --rules sp-voltage bptt --seeds 0 1 2 --tag default

Prints one line per run and a summary (mean ± std over seeds, gap to bptt); writes
``bench/results/spiking_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_LR = {"sp-voltage": 3e-3, "sp-surrogate": 3e-3, "sp-online": 1e-3, "bptt": 3e-3, "rtrl": 3e-3}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def build(a: argparse.Namespace, rule: str, input_shape, classes: int):
    from edgesp.presets import build_spec
    from edgesp.spec import LIF, OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec

    lr = a.lr.get(rule, DEFAULT_LR[rule])
    rule_kw = {"loss": a.loss, "temperature": a.temperature}
    params = dict(a.param) if rule.startswith("sp-") else {}
    sig_kw = {"placement": a.placement, "kind": a.signal_kind, "init_std": a.init_std}
    return build_spec(
        "snn",
        input_shape,
        classes,
        width=a.width,
        depth=a.depth,
        signal=SignalSpec(**sig_kw),
        lif=LIF(**a.lif) if a.lif else None,
        temporal=TemporalSpec(time_steps=a.time_steps, encoding="rate", readout="membrane"),
        rule=RuleSpec(name=rule, optimizer=OptimizerSpec(lr=lr), params=params, **rule_kw),
    )


def run_one(a: argparse.Namespace, ds, rule: str, seed: int) -> dict:
    import torch

    from edgesp.data import adapt_inputs
    from edgesp.functional import init_params
    from edgesp.rules import make_trainer

    torch.manual_seed(seed)
    spec = build(a, rule, ds.input_shape, ds.num_classes)
    tr = make_trainer(spec, init_params(spec, seed), seed)
    x, y = adapt_inputs(ds.x_train, spec.input_shape), ds.y_train
    xte = adapt_inputs(ds.x_test, spec.input_shape)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    curve = []
    for _ in range(a.epochs):
        perm = rng.permutation(len(x))
        for b in range(0, len(perm), a.batch_size):
            idx = perm[b : b + a.batch_size]
            tr.train_step(x[idx], y[idx])
        if a.curve:
            curve.append(float((tr.predict(xte).argmax(1) == ds.y_test).mean()))
    train_s = time.perf_counter() - t0
    acc = float((tr.predict(xte).argmax(1) == ds.y_test).mean())
    out = {
        "rule": rule,
        "seed": seed,
        "lr": spec.rule.optimizer.lr,
        "test_accuracy": acc,
        "train_seconds": round(train_s, 1),
    }
    if curve:
        out["curve"] = curve
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", nargs="+", default=["sp-voltage", "bptt"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--time-steps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", nargs="*", default=[], metavar="RULE=LR", help="per-rule Adam learning rate")
    # SP settings are explicit (not the spec defaults, which are tuned for continuous networks)
    ap.add_argument("--loss", default="v9", help="SP loss (RuleSpec.loss)")
    ap.add_argument("--temperature", type=float, default=0.1, help="SP logit temperature (RuleSpec)")
    ap.add_argument("--placement", default="hidden", choices=["hidden", "input"])
    ap.add_argument("--signal-kind", default="learned", choices=["learned", "fixed"])
    ap.add_argument("--init-std", type=float, default=0.05, help="signal W_S init std (SignalSpec.init_std)")
    ap.add_argument("--param", nargs="*", default=[], metavar="KEY=VALUE", help="SP rule params (RuleSpec.params)")
    ap.add_argument("--lif", nargs="*", default=[], metavar="KEY=VALUE", help="LIF settings (default preset LIF())")
    ap.add_argument("--curve", action="store_true", help="also record test accuracy after every epoch")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.lr = {k: float(v) for k, v in (s.split("=", 1) for s in a.lr)}
    a.param = {k: _value(v) for k, v in (s.split("=", 1) for s in a.param)}
    a.lif = {k: _value(v) for k, v in (s.split("=", 1) for s in a.lif)}
    import torch

    torch.set_num_threads(1)
    from edgesp.atomic import write_text
    from edgesp.data import load_dataset

    ds = load_dataset("digits")
    command = " ".join([".venv/bin/python", "bench/spiking_rules.py", *sys.argv[1:]])
    runs = []
    for rule in a.rules:
        for seed in a.seeds:
            r = run_one(a, ds, rule, seed)
            runs.append(r)
            extra = " curve=" + ",".join(f"{c:.3f}" for c in r["curve"]) if "curve" in r else ""
            print(
                f"{rule:12s} seed={seed} lr={r['lr']:g} acc={r['test_accuracy']:.4f} ({r['train_seconds']} s){extra}",
                flush=True,
            )
    summary = {}
    for rule in a.rules:
        accs = [r["test_accuracy"] for r in runs if r["rule"] == rule]
        summary[rule] = {
            "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "n": len(accs),
        }
    base = summary.get("bptt")
    for rule, s in summary.items():
        gap = f"  gap to bptt {100 * (base['mean'] - s['mean']):+.2f} points" if base and rule != "bptt" else ""
        print(f"{rule:12s} {100 * s['mean']:.2f} ± {100 * s['std']:.2f} % (n={s['n']}){gap}")
    settings = {k: v for k, v in vars(a).items() if k not in ("tag", "out")}
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"spiking_{a.tag}.json"
    write_text(
        out,
        json.dumps(
            {"command": command, "settings": settings, "runs": runs, "summary": summary, "torch_threads": 1}, indent=2
        ),
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
