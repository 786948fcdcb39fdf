"""What a learning rule did to a spiking sequence model's hidden features (issue 15): for each checkpoint (and, with
``--init``, the same spec at its seed-0 initial weights), run the training and test sequences through the blocks
(``edgesp.snn``, no learning) and report, for the last block, the mean firing rate, the share of neurons that never
fire / fire on more than half of the steps, the participation ratio (Σλ)²/Σλ² of the covariance of the standardised
readout features e[T] (how many directions carry their variance), and a linear probe: logistic regression
(scikit-learn, C = 1, to convergence) on the standardised e[T] of the training set, scored on both sets.

    edgesp train --data mnist1d-seq+taps8x2 --model snn --rule sp-online --out runs/sp
    .venv/bin/python bench/seq_features.py runs/sp/model.safetensors --init

Writes bench/results/seq_features.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def features(spec, params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Readout features e[T] (N × H) and each neuron's firing rate over the sequence (N × H) of the last block."""
    import torch

    from edgesp.encoding import Encoder, num_steps
    from edgesp.snn import BlockState, block_step, empty_readout, readout_decay

    p = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in params.items()}
    xt = torch.as_tensor(np.asarray(x, np.float32))
    enc, ro, decay = Encoder(spec, xt), empty_readout(spec, xt.shape[0], xt), readout_decay(spec)
    states = [BlockState() for _ in spec.blocks]
    rate = torch.zeros_like(ro.e)
    steps = num_steps(spec)
    with torch.no_grad():
        for t in range(steps):
            h = enc.step(t)
            for i in range(len(spec.blocks)):
                h, _, states[i] = block_step(spec, i, h, p, states[i])
            ro = ro.step(h, decay)
            rate += h.reshape(h.shape[0], -1)
    return ro.e.numpy(), (rate / steps).numpy()


def describe(name: str, spec, params, ds) -> dict:
    from sklearn.linear_model import LogisticRegression

    from edgesp.data import adapt_inputs

    f_tr, r_tr = features(spec, params, adapt_inputs(ds.x_train, spec.input_shape))
    f_te, _ = features(spec, params, adapt_inputs(ds.x_test, spec.input_shape))
    rate = r_tr.mean(0)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    z_tr, z_te = (f_tr - mu) / sd, (f_te - mu) / sd
    ev = np.clip(np.linalg.eigvalsh(np.cov(z_tr.T)), 0.0, None)
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(z_tr, ds.y_train)
    return {
        "model": name,
        "mean_rate": round(float(rate.mean()), 4),
        "never_fire": round(float(np.mean(rate < 0.005)), 3),
        "fire_over_half": round(float(np.mean(rate > 0.5)), 3),
        "participation_ratio": round(float(ev.sum() ** 2 / (ev**2).sum()), 2),
        "probe_train": round(float(probe.score(z_tr, ds.y_train)), 4),
        "probe_test": round(float(probe.score(z_te, ds.y_test)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default="mnist1d-seq+taps8x2")
    ap.add_argument("--init", action="store_true", help="also the first checkpoint's spec at its seed-0 init")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "seq_features.json"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from edgesp.atomic import write_text
    from edgesp.checkpoint import load_checkpoint
    from edgesp.data import load_dataset
    from edgesp.functional import init_params

    ds = load_dataset(a.data)
    rows = []
    loaded = [(c, *load_checkpoint(c)[:2]) for c in a.checkpoints]
    if a.init:
        spec0 = loaded[0][1]
        rows.append(describe("untrained (seed-0 init)", spec0, init_params(spec0, 0), ds))
    for path, spec, params in loaded:
        rows.append(describe(f"{spec.rule.name}: {path}", spec, params, ds))
    print("| model | mean rate | never fire | fire > 50 % | participation ratio | probe train | probe test |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['mean_rate']:.3f} | {100 * r['never_fire']:.0f} % "
            f"| {100 * r['fire_over_half']:.0f} % | {r['participation_ratio']:.1f} "
            f"| {100 * r['probe_train']:.1f} % | {100 * r['probe_test']:.1f} % |"
        )
    command = " ".join(["python", "bench/seq_features.py", *sys.argv[1:]])
    write_text(a.out, json.dumps({"command": command, "data": a.data, "rows": rows}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
