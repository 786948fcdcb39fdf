"""Benchmark: a spiking model brought from snnTorch through NIR learns with SP on Lava as well as the same model
built natively in edgesp (issue 17's target: within 2 points on digits).

Both models: digits, (Linear → LIF) × depth → Linear head with a membrane readout, width W, LIF β = 0.8
(dv = 0.2), threshold 1, reset to zero, T = 10, direct encoding; the same learning set-up (sp-voltage, loss v1,
τ 0.1, SGD lr 1e-3, hidden signal placement with a learned W_S) and the same budget: one epoch of the 1,437
training digits streamed one sample at a time (batch 1) on lava-cpu (floating_pt), as bench/lava.py.

- imported: ``torch.nn.Sequential(Linear, snn.Leaky, ..., Linear, snn.Leaky(threshold=inf))`` initialised by
  torch (seed s), exported by snnTorch's own ``export_to_nir``, written with ``nir.write``, imported by
  ``edgesp.nir_io.import_nir`` (the code behind ``edgesp import-nir``) into a checkpoint;
- native: ``build_spec('snn', ...)`` + ``init_params(spec, s)`` (torch's default init distribution, numpy RNG).

The signal generator W_S is drawn by edgesp for both (the NIR file has none), so the models differ only in the
initial draws of their weights. Per model: the Lava run (seed 0: accuracy before/after, learning curve), the
numpy reference of the same rule for seeds 0..N−1 (equal to the Lava floating_pt run to 1e-9, tested in
tests/compilers/test_lava.py), and the way back: the imported model's learned weights exported with
``edgesp.nir_io.export_nir`` and run by snnTorch's ``import_from_nir`` on the test set (its accuracy must equal
the Lava run's).

    .venv/bin/python bench/nir_lava.py [--width 128] [--depth 2] [--epochs 1] [--seeds 3]

Prints a table, writes bench/results/nir_lava.json and bench/results/nir_lava_<model>.png (learning curves).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds a lava.py: drop this folder from the path so 'import lava' finds the lava-nc package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from compilers import compile_model  # noqa: E402
from edgesp.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from edgesp.data import load_dataset  # noqa: E402
from edgesp.functional import init_params  # noqa: E402
from edgesp.nir_io import export_nir, import_nir  # noqa: E402
from edgesp.presets import build_spec  # noqa: E402
from edgesp.spec import LIF, OptimizerSpec, RuleSpec, TemporalSpec  # noqa: E402
from firmware_sim import lava_device  # noqa: E402
from firmware_sim.learning import read_state  # noqa: E402
from targets import load_target  # noqa: E402

BETA = 0.8  # snnTorch β = 1 − dv with edgesp's default dv = 0.2


def snntorch_model(width: int, depth: int, n_in: int, n_out: int, seed: int):
    import snntorch as snn
    import torch

    def leaky(n: int, thr: float):
        return snn.Leaky(
            beta=torch.full((n,), BETA),
            threshold=torch.full((n,), thr),
            init_hidden=True,
            reset_mechanism="zero",
            reset_delay=False,
        )

    torch.manual_seed(seed)
    layers: list = []
    for i in range(depth):
        layers += [torch.nn.Linear(n_in if i == 0 else width, width), leaky(width, 1.0)]
    layers += [torch.nn.Linear(width, n_out), leaky(n_out, float("inf"))]  # never fires: the membrane readout
    return torch.nn.Sequential(*layers)


def rule(lr: float) -> RuleSpec:
    return RuleSpec(name="sp-voltage", loss="v1", temperature=0.1, optimizer=OptimizerSpec(name="sgd", lr=lr))


def imported_checkpoint(args, ds, seed: int, tmp: Path) -> tuple[Path, list[str]]:
    import nir
    import torch
    from snntorch.export_nir import export_to_nir

    net = snntorch_model(args.width, args.depth, int(np.prod(ds.input_shape)), ds.num_classes, seed)
    graph = export_to_nir(net, torch.zeros(1, int(np.prod(ds.input_shape))), ignore_dims=[0])
    nir_path = tmp / f"snntorch_seed{seed}.nir"
    nir.write(str(nir_path), graph)
    ckpt = tmp / f"imported_seed{seed}.safetensors"
    imp = import_nir(
        nir_path, ckpt, time_steps=args.time_steps, encoding="direct", rule=rule(args.lr), seed=seed, name="snntorch"
    )
    return ckpt, imp.notes


def native_checkpoint(args, ds, seed: int, tmp: Path) -> Path:
    spec = build_spec(
        "snn",
        ds.input_shape,
        ds.num_classes,
        width=args.width,
        depth=args.depth,
        rule=rule(args.lr),
        temporal=TemporalSpec(time_steps=args.time_steps, encoding="direct", seed=seed),
        lif=LIF(),  # du = 1, dv = 0.2 = 1 − β
    )
    ckpt = tmp / f"native_seed{seed}.safetensors"
    save_checkpoint(ckpt, spec, init_params(spec, seed))
    return ckpt


def reference_accuracy(build: Path, ds, n_train: int, seed: int) -> float:
    from compilers.lava.network_desc import load_netdesc
    from edgesp.manifest import Manifest
    from firmware_sim.lava.network import prepare_inputs
    from firmware_sim.lava.reference import ReferenceNet

    desc = load_netdesc(build, Manifest.read(build))
    ref = ReferenceNet(desc, seed=seed)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(ds.y_train)) for _ in range(-(-n_train // len(ds.y_train)))])
    order = order[:n_train]
    ref.run(prepare_inputs(desc, ds.x_train[order]), ds.y_train[order], np.ones(n_train, bool))
    xte = prepare_inputs(desc, ds.x_test)
    return float((ref.run(xte, ds.y_test, np.zeros(len(xte), bool)).argmax(1) == ds.y_test).mean())


def snntorch_accuracy(nir_path: Path, ds, steps: int) -> float:
    """The graph run by snnTorch's own importer: direct input every step, argmax of the readout's membrane."""
    import nir
    import snntorch as snn
    import torch
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(nir.read(str(nir_path)))
    x = torch.tensor(ds.x_test.reshape(len(ds.x_test), -1), dtype=torch.float32)
    with torch.no_grad():
        for _ in range(steps):
            net(x)
    readout = [m for m in net.modules() if isinstance(m, snn.Leaky)][-1]
    return float((readout.mem.argmax(1).numpy() == ds.y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--time-steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=3, help="seeds for the numpy-reference rows (the Lava run: seed 0)")
    ap.add_argument("--target", default="lava-cpu")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("digits")
    n_train = int(round(args.epochs * len(ds.y_train)))
    target = load_target(args.target)
    rows: dict[str, dict] = {"imported": {"reference": {}}, "native": {"reference": {}}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for seed in range(args.seeds):
            ck_imp, notes = imported_checkpoint(args, ds, seed, tmp)
            ck_nat = native_checkpoint(args, ds, seed, tmp)
            spec_i, params_i, _ = load_checkpoint(ck_imp)
            spec_n, params_n, _ = load_checkpoint(ck_nat)
            same = spec_i.to_dict() | {"name": ""} == spec_n.to_dict() | {"name": ""}
            rows["imported"].setdefault("same_spec_as_native", same)
            rows["imported"].setdefault("import_notes", notes)
            for model, (spec, params) in {"imported": (spec_i, params_i), "native": (spec_n, params_n)}.items():
                build = tmp / f"build_{model}_{seed}"
                compile_model(spec, params, target, build, 1)
                if seed == 0:
                    state = tmp / f"state_{model}.npz"
                    t0 = time.perf_counter()
                    sim = lava_device.simulate(
                        build, ds, n_train, None, 0, out / f"nir_lava_{model}.png", True,
                        curve_points=4, curve_eval=100, save_state=state,
                    )  # fmt: skip
                    rows[model]["lava"] = {
                        k: sim[k]
                        for k in ("accuracy_before", "accuracy_after", "timesteps", "timesteps_per_second", "curve")
                    }
                    rows[model]["lava"]["wall_seconds"] = time.perf_counter() - t0
                    if model == "imported":  # the way back: learned weights → NIR → snnTorch
                        learned = tmp / "learned.safetensors"
                        save_checkpoint(learned, spec, read_state(state))
                        back = tmp / "learned.nir"
                        export_nir(learned, back)
                        rows[model]["snntorch_accuracy_of_learned_export"] = snntorch_accuracy(
                            back, ds, args.time_steps
                        )
                acc = reference_accuracy(build, ds, n_train, seed)
                rows[model]["reference"][str(seed)] = acc
                print(f"seed {seed} {model}: numpy reference after {args.epochs:g} epoch(s) {acc:.3f}", flush=True)
    for r in rows.values():
        accs = list(r["reference"].values())
        r["reference_mean"], r["reference_std"] = float(np.mean(accs)), float(np.std(accs))
    gap_lava = rows["imported"]["lava"]["accuracy_after"] - rows["native"]["lava"]["accuracy_after"]
    gap_ref = rows["imported"]["reference_mean"] - rows["native"]["reference_mean"]
    result = {
        "config": {
            "dataset": "digits",
            "target": args.target,
            "width": args.width,
            "depth": args.depth,
            "time_steps": args.time_steps,
            "encoding": "direct",
            "lif": {"beta": BETA, "dv": LIF().dv, "threshold": 1.0, "reset": "zero"},
            "rule": "sp-voltage, loss v1, temperature 0.1, SGD",
            "lr": args.lr,
            "epochs": args.epochs,
            "train_samples": n_train,
            "batch": 1,
            "seeds_reference": args.seeds,
            "command": "python " + " ".join(sys.argv),
        },
        "results": rows,
        "gap_points_lava_seed0": 100 * gap_lava,
        "gap_points_reference_mean": 100 * gap_ref,
        "target_met": abs(gap_lava) <= 0.02 and abs(gap_ref) <= 0.02,
    }
    (out / "nir_lava.json").write_text(json.dumps(result, indent=2))
    print("model | Lava acc before | Lava acc after (seed 0) | numpy ref after (mean ± std, seeds) | Lava ts/s")
    for model, r in rows.items():
        lv = r["lava"]
        print(
            f"{model} | {lv['accuracy_before']:.3f} | {lv['accuracy_after']:.3f} | "
            f"{r['reference_mean']:.3f} ± {r['reference_std']:.3f} ({len(r['reference'])}) | "
            f"{lv['timesteps_per_second']:.0f}"
        )
    print(
        f"gap imported − native: {100 * gap_lava:+.1f} points (Lava, seed 0), {100 * gap_ref:+.1f} points "
        f"(reference mean); snnTorch accuracy of the learned model sent back: "
        f"{rows['imported']['snntorch_accuracy_of_learned_export']:.3f}; same spec: "
        f"{rows['imported']['same_spec_as_native']}; target within 2 points: {result['target_met']}"
    )


if __name__ == "__main__":
    main()
