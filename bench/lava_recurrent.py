"""Benchmark: a recurrent SNN learns a sequence task on chip in Lava's simulation of Loihi 2 (issue 15).

For each lava target (lava-cpu: floating_pt, loihi2: fixed_pt) a fresh recurrent ``snn`` model (one block of
``--width`` recurrent LIF neurons, W_rec H×H, one input step per time step) streams through one Lava run
(:func:`firmware_sim.lava_device.simulate`): test samples with the rule off (accuracy before), training
samples with the on-chip SP rule on (W, b, W_rec, the head and W_S learn at every time step, batch 1) with
short test evaluations in between, then the test samples again (accuracy after). Reported beside it:

- chance (1 / classes) and the majority class share of the evaluated test samples;
- whether W_rec changed on chip, and by how much (relative RMS);
- exactness: the numpy reference (:class:`firmware_sim.lava.reference.ReferenceNet`) replays the same schedule;
  fixed_pt: the final W, b, W_rec of every layer are compared byte for byte (as integer mantissas), and the
  accuracies must be equal; floating_pt: max |Δ| of the weights;
- ablation (numpy reference, same schedule, same precision): the same model without recurrence;
- throughput (time steps/s of the whole run, start-up excluded).

Data: ``spike-recall`` (default; edgesp.data's delayed-recall task with spikes: the label is the first of two
patterns, 4 classes, 16 channels × 40 steps) or ``mnist1d-seq`` (1 value × 40 steps, 10 classes); subsets of
``--train`` training samples (cycled ``--epochs`` times) and ``--test`` test samples.

    nice -n 10 .venv/bin/python bench/lava_recurrent.py [--data spike-recall] [--train 1600] [--test 200] \
        [--lr 1e-4] [--lr-head 1e-3] [--seed 0]

Prints a table, writes bench/results/lava_recurrent.json and bench/results/lava_recurrent_<target>.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# a sibling file is named lava.py: drop this folder from the path so 'import lava' finds the lava-nc package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from compilers import compile_model  # noqa: E402
from compilers.lava.network_desc import load_netdesc  # noqa: E402
from compilers.lava.quant import dequantise  # noqa: E402
from edgesp.data import Dataset, load_dataset  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.manifest import Manifest  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.spec import LIF, ModelSpec, OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec  # noqa: E402
from firmware_sim import lava_device  # noqa: E402
from firmware_sim.lava.network import prepare_inputs  # noqa: E402
from firmware_sim.lava.reference import ReferenceNet  # noqa: E402
from targets import load_target  # noqa: E402


def subset(ds: Dataset, n_train: int, n_test: int) -> Dataset:
    return Dataset(
        f"{ds.name}[:{n_train}/{n_test}]",
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        ds.x_test[:n_test],
        ds.y_test[:n_test],
        ds.num_classes,
        sequence=True,
    )


def spec_for(args: argparse.Namespace, ds: Dataset, recurrent: bool = True) -> ModelSpec:
    spec = build_spec(
        "snn",
        ds.input_shape,
        ds.num_classes,
        width=args.width,
        depth=1,
        recurrent=recurrent,
        signal=SignalSpec(kind="learned", placement="hidden", init_std=0.05),
        rule=RuleSpec(
            name="sp-online", loss="v1", temperature=args.temperature, optimizer=OptimizerSpec(name="sgd", lr=args.lr)
        ),
        temporal=TemporalSpec(encoding="sequence", readout=args.readout),
    )
    lif = LIF(du=args.du, dv=args.dv, threshold=args.threshold, recurrent=recurrent)
    return dataclasses.replace(spec, blocks=tuple((b[0], lif) for b in spec.blocks))


def weights_of(desc) -> dict[str, np.ndarray]:
    """Spec-unit float32 parameters of a (reference) network description."""
    out = {}
    for i, la in enumerate(desc.layers):
        name = "head" if la.kind == "readout" else f"blocks.{i}"
        for key, arr, e in (("weight", la.weight, la.weight_exp), ("bias", la.bias, la.weight_exp)):
            out[f"{name}.{key}"] = np.asarray(dequantise(np.asarray(arr), e) if desc.fixed else arr, np.float32)
        if la.rec_weight is not None:
            w = dequantise(np.asarray(la.rec_weight), la.rec_exp) if desc.fixed else la.rec_weight
            out[f"{name}.rec_weight"] = np.asarray(w, np.float32)
    if desc.signal_weight is not None:  # learned on the embedded CPU (float64 in both precisions)
        out["signal.weight"] = np.asarray(desc.signal_weight, np.float32)
        out["signal.bias"] = np.asarray(desc.signal_bias, np.float32)
    return out


def replay(build: Path, ds: Dataset, spec: ModelSpec, args, lr_head: float | None) -> dict:
    """The numpy reference on simulate's exact schedule: accuracies before/after and final weights."""
    desc = load_netdesc(build, Manifest.read(build))
    if lr_head is not None:
        desc.lr_head = lr_head
    x, y, learn, segs = lava_device._schedule(ds, spec, args.n_train, args.test, 4, args.curve_eval, args.seed)
    ref = ReferenceNet(desc, seed=args.seed)
    t0 = time.perf_counter()
    logits = ref.run(prepare_inputs(desc, x), y, learn)
    dt = time.perf_counter() - t0
    correct = logits.argmax(1) == y
    acc = {k: float(correct[a:b].mean()) for k, a, b, _ in segs if k in ("before", "after")}
    return {"acc": acc, "weights": weights_of(ref.d), "seconds": dt, "timesteps": len(y) * desc.time_steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="spike-recall", choices=["spike-recall", "mnist1d-seq"])
    ap.add_argument("--train", type=int, default=1600, help="training samples of the subset")
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the training subset")
    ap.add_argument("--test", type=int, default=200, help="test samples (before/after)")
    ap.add_argument("--curve-eval", type=int, default=100, help="test samples per intermediate curve point")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--du", type=float, default=0.5)
    ap.add_argument("--dv", type=float, default=0.05)
    ap.add_argument("--threshold", type=float, default=1.0)
    ap.add_argument("--readout", default="spike_count", choices=["spike_count", "membrane"])
    ap.add_argument("--lr", type=float, default=1e-4, help="on-chip learning rate of W, b, W_rec and W_S")
    ap.add_argument("--lr-head", type=float, default=1e-3, help="learning rate of the head")
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--targets", default="lava-cpu,loihi2")
    ap.add_argument("--no-ablation", action="store_true", help="skip the feed-forward ablation (reference)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = subset(load_dataset(args.data), args.train, args.test)
    args.n_train = int(round(args.epochs * args.train))
    spec = spec_for(args, ds)
    params = init_params(spec, args.seed)
    y_eval = ds.y_test[: args.test]
    chance = 1.0 / ds.num_classes
    majority = float(np.bincount(y_eval, minlength=ds.num_classes).max() / len(y_eval))
    sim_opts = {"eval_samples": args.test, "curve_points": 4, "curve_eval": args.curve_eval}
    if args.lr_head is not None:
        sim_opts["lr_head"] = args.lr_head
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tname in args.targets.split(","):
            build = Path(tmp) / tname
            manifest = compile_model(spec, params, load_target(tname), build, 1)
            state = Path(tmp) / f"{tname}_state.npz"
            t0 = time.perf_counter()
            sim = lava_device.simulate(
                build,
                ds,
                args.n_train,
                None,
                args.seed,
                out / f"lava_recurrent_{tname}.png",
                True,
                save_state=state,
                **sim_opts,
            )
            wall = time.perf_counter() - t0
            with np.load(state) as z:
                lava_w = {k: z[k] for k in z.files}
            ref = replay(build, ds, spec, args, args.lr_head)
            keys = sorted(ref["weights"])
            diff = max(float(np.max(np.abs(lava_w[k] - ref["weights"][k]))) for k in keys)
            bit_exact = all(lava_w[k].tobytes() == ref["weights"][k].tobytes() for k in keys)
            w0 = params["blocks.0.rec_weight"]
            if manifest.backend["precision"] == "fixed_pt":  # the compiled (quantised) start, in spec units
                la0 = load_netdesc(build, manifest).layers[0]
                w0 = dequantise(la0.rec_weight, la0.rec_exp)
            w1 = lava_w["blocks.0.rec_weight"]
            row = {
                "target": tname,
                "precision": manifest.backend["precision"],
                "cores_used": manifest.backend["cores_used"],
                "accuracy_before": sim["accuracy_before"],
                "accuracy_after": sim["accuracy_after"],
                "chance": chance,
                "majority_share": majority,
                "curve": sim["curve"],
                "online_train_accuracy": sim["online_train_accuracy"],
                "train_samples": args.n_train,
                "rec_weight_changed": sim["recurrent_changed"],
                "rec_weight_rel_change": float(np.sqrt(np.mean((w1 - w0) ** 2)) / np.sqrt(np.mean(w0**2))),
                "reference_accuracy_before": ref["acc"]["before"],
                "reference_accuracy_after": ref["acc"]["after"],
                "reference_weights_bit_exact": bit_exact,
                "reference_weights_max_abs_diff": diff,
                "timesteps": sim["timesteps"],
                "timesteps_per_second": sim["timesteps_per_second"],
                "startup_seconds": sim["startup_seconds"],
                "wall_seconds": wall,
                "reference_timesteps_per_second": ref["timesteps"] / ref["seconds"],
            }
            if not args.no_ablation:
                plain = spec_for(args, ds, recurrent=False)
                pp = {k: v for k, v in params.items() if k in plain.param_shapes()}
                b2 = Path(tmp) / f"{tname}_ff"
                compile_model(plain, pp, load_target(tname), b2, 1)
                row["feedforward_reference_accuracy_after"] = replay(b2, ds, plain, args, args.lr_head)["acc"]["after"]
            rows.append(row)
            print(f"done {tname} in {wall:.0f} s", flush=True)
    config = {
        "dataset": args.data,
        "train_subset": args.train,
        "epochs": args.epochs,
        "test_subset": args.test,
        "model": spec.name,
        "width": args.width,
        "lif": {"du": args.du, "dv": args.dv, "threshold": args.threshold, "recurrent": True},
        "readout": args.readout,
        "rule": "on-chip SP (sp-voltage online, loss v1, batch 1, plain SGD, update every time step)",
        "temperature": args.temperature,
        "lr": args.lr,
        "lr_head": args.lr_head if args.lr_head is not None else args.lr,
        "seed": args.seed,
        "command": "python " + " ".join(sys.argv),
    }
    (out / "lava_recurrent.json").write_text(json.dumps({"config": config, "results": rows}, indent=2))
    hdr = (
        "target",
        "prec",
        "chance",
        "acc before",
        "acc after",
        "ref after",
        "ff ref after",
        "W_rec Δ rel",
        "bit-exact vs ref",
        "ts/s",
    )
    print(" | ".join(hdr))
    for r in rows:
        exact = "yes" if r["reference_weights_bit_exact"] else f"max|Δ| {r['reference_weights_max_abs_diff']:.1e}"
        print(
            " | ".join(
                [
                    r["target"],
                    r["precision"],
                    f"{r['chance']:.3f}",
                    f"{r['accuracy_before']:.3f}",
                    f"{r['accuracy_after']:.3f}",
                    f"{r['reference_accuracy_after']:.3f}",
                    f"{r.get('feedforward_reference_accuracy_after', float('nan')):.3f}",
                    f"{r['rec_weight_rel_change']:.3f}",
                    exact,
                    f"{r['timesteps_per_second']:.0f}",
                ]
            )
        )


if __name__ == "__main__":
    main()
