"""``edgesp`` command line: train, evaluate, targets, compile, simulate, profile, demo, import-nir, export-nir.

Every user error is reported as one line ``error: <problem>: <fix>`` on stderr with exit code 2
(no traceback); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from edgesp.atomic import check_out_dir, check_out_file, probe_folder
from edgesp.errors import DataError, EdgespError, SpecError


# ---------------------------------------------------------------------------- shared helpers
def _write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (no bare NaN/Infinity): a non-finite float is written as null."""
    from edgesp.atomic import write_text

    write_text(path, json.dumps(_finite_or_null(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite_or_null(o: Any) -> Any:
    import math

    o = _json_default(o) if not isinstance(o, (dict, list, tuple, str, int, float, bool, type(None))) else o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _finite_or_null(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_null(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from edgesp.presets import PRESETS
    from edgesp.spec import OPTIMIZERS, RULES, SIGNAL_PLACEMENTS, SIGNAL_SHAPES, SP_LOSSES, RuleSpec, SignalSpec

    g = p.add_argument_group("model and rule")
    g.add_argument("--model", default="mlp", help=f"preset: {', '.join(PRESETS)} (default mlp)")
    g.add_argument("--rule", default="sigprop", help=f"learning rule: {', '.join(RULES)} (default sigprop)")
    g.add_argument("--width", type=int, default=None, help="hidden width of mlp/snn (default 128)")
    g.add_argument(
        "--depth", type=int, default=None, help="number of blocks/stages (default 2; 1 for snn on sequence data)"
    )
    g.add_argument("--channels", type=int, default=16, help="first conv stage channels (default 16)")
    g.add_argument(
        "--loss",
        default=None,
        help=f"sigprop local loss: {', '.join(SP_LOSSES)} (default {RuleSpec().loss}; v9 for spiking SP rules; "
        "with 'compile CHECKPOINT' it "
        "overrides the checkpoint's loss for the on-device step)",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"sigprop logit temperature: Y = h·tᵀ/(τ·d) (default {RuleSpec().temperature}; 0.1 for spiking SP rules)",
    )
    g.add_argument("--signal", default="learned", help="signal generator: learned or fixed (default learned)")
    g.add_argument(
        "--signal-placement",
        default=SignalSpec().placement,
        help=f"where the label enters: {' or '.join(SIGNAL_PLACEMENTS)} (default {SignalSpec().placement}: "
        "projected to block 0's output and learned with block 0)",
    )
    g.add_argument(
        "--signal-shape",
        default=SignalSpec().shape,
        help=f"hidden signal of a conv block 0: {' or '.join(SIGNAL_SHAPES)} (default {SignalSpec().shape}; "
        "channel = one value per channel, broadcast over positions)",
    )
    g.add_argument(
        "--signal-init-std",
        type=float,
        default=SignalSpec().init_std,
        help=f"std of the signal's initial weights (default {SignalSpec().init_std})",
    )
    g.add_argument("--optimizer", default="adam", help=f"{', '.join(OPTIMIZERS)} (default adam)")
    g.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default 1e-3; 2e-3 for sigprop; 3e-3 for sp-voltage, sp-surrogate, bptt and rtrl on "
        "spiking models); "
        "with 'compile CHECKPOINT': the on-device learning rate (default: the checkpoint's × 0.1)",
    )
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument(
        "--rule-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a rule parameter (repeatable; VALUE is a JSON number, true/false or text), e.g. kp_decay=1e-3, "
        "dfc_q_scale=0.1, surrogate_slope=5, update_every=4; each rule rejects keys it does not know",
    )
    g.add_argument("--time-steps", type=int, default=None, help="spiking models: time steps per sample")
    g.add_argument("--encoding", default=None, help="spiking models: direct, rate or sequence")
    g.add_argument("--readout", default="membrane", help="spiking models: membrane or spike_count")
    g.add_argument(
        "--du", type=float, default=None, help="spiking models: LIF current decay (default 1; 0.5 for sequences)"
    )
    g.add_argument(
        "--dv", type=float, default=None, help="spiking models: LIF voltage decay (default 0.2; 0.05 for sequences)"
    )
    g.add_argument(
        "--recurrent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="spiking models: every hidden LIF layer gets recurrent weights W_rec (H×H) on its own spikes "
        "(default: on for sequence data, off otherwise; --no-recurrent turns it off)",
    )


SPIKING_SP_RULES = ("sp-voltage", "sp-surrogate", "sp-online")


def _rule_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings → {key: value}; VALUE parsed as JSON (number, true/false, null) or kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--rule-param {item!r} is not KEY=VALUE: write e.g. --rule-param kp_decay=1e-3")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"--rule-param {key}: {raw!r} is not a finite number")
        out[key.strip()] = value
    return out


def _spec_from_args(args: argparse.Namespace, data: Any) -> Any:
    from edgesp.presets import build_spec, sequence_defaults
    from edgesp.spec import OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec
    from edgesp.train import default_lr

    # a spiking model on sequence data gets the sequence defaults (edgesp.presets.sequence_defaults, measured in
    # docs/benchmarks/temporal.md); every flag given explicitly wins
    seq = args.model == "snn" and (args.encoding or ("sequence" if data.sequence else "rate")) == "sequence"
    sd = sequence_defaults(args.rule) if seq else None
    lr = args.lr
    if lr is None:  # measured: bench/sp_sweep.py (docs/benchmarks/rules.md), bench/temporal.py (temporal.md)
        lr = sd["lr"] if sd else default_lr(args.rule, spiking=args.model == "snn")
    # spiking SP rules: loss v9 (bench/spiking_rules.py, docs/benchmarks/spiking.md: best at the 4-epoch budget);
    # the temperature default (None) resolves per rule in RuleSpec (0.1 for spiking SP, 0.01 otherwise)
    spiking_sp = args.model == "snn" and args.rule in SPIKING_SP_RULES
    rule = RuleSpec(
        name=args.rule,
        loss=args.loss or ("v9" if spiking_sp else RuleSpec().loss),
        temperature=args.temperature,
        optimizer=OptimizerSpec(name=args.optimizer, lr=lr, momentum=args.momentum),
        params={**(sd["rule_params"] if sd else {}), **_rule_params(args.rule_param)},
    )
    temporal = None
    lif = None
    if args.model == "snn":
        encoding = args.encoding or ("sequence" if data.sequence else "rate")
        steps = args.time_steps or (data.input_shape[-1] if encoding == "sequence" else 10)
        if encoding == "sequence" and steps != data.input_shape[-1]:
            raise SpecError(
                f"a sequence input of length {data.input_shape[-1]} needs --time-steps "
                f"{data.input_shape[-1]} (got {steps})"
            )
        temporal = TemporalSpec(time_steps=steps, encoding=encoding, readout=args.readout, seed=args.seed)
        du = args.du if args.du is not None else (sd["du"] if sd else 1.0)
        dv = args.dv if args.dv is not None else (sd["dv"] if sd else 0.2)
        from edgesp.spec import LIF

        lif = LIF(du=du, dv=dv)
    elif args.time_steps or args.encoding or args.du is not None or args.dv is not None or args.recurrent:
        raise SpecError("--time-steps/--encoding/--du/--dv/--recurrent apply to spiking models only: add --model snn")
    shape = data.input_shape
    if args.model == "cnn1d" and len(shape) > 2:
        import math

        shape = (1, math.prod(shape))
    return build_spec(
        args.model,
        shape,
        data.num_classes,
        width=args.width or (sd["width"] if sd else 128),
        depth=args.depth or (sd["depth"] if sd else 2),
        channels=args.channels,
        rule=rule,
        signal=SignalSpec(
            kind=args.signal,
            placement=args.signal_placement,
            shape=args.signal_shape,
            init_std=args.signal_init_std,
        ),
        temporal=temporal,
        lif=lif,
        recurrent=args.recurrent if args.recurrent is not None else bool(sd and sd["recurrent"]),
    )


def _check_names(args: argparse.Namespace) -> None:
    """Fail fast on unknown names, before any data is loaded."""
    from edgesp.presets import PRESETS
    from edgesp.spec import OPTIMIZERS, RULES, SIGNAL_KINDS, SIGNAL_PLACEMENTS, SIGNAL_SHAPES, SP_LOSSES, RuleSpec

    for flag, value, known in (
        ("--model", args.model, PRESETS),
        ("--rule", args.rule, RULES),
        ("--loss", args.loss or RuleSpec().loss, SP_LOSSES),
        ("--optimizer", args.optimizer, OPTIMIZERS),
        ("--signal", args.signal, SIGNAL_KINDS),
        ("--signal-placement", args.signal_placement, SIGNAL_PLACEMENTS),
        ("--signal-shape", args.signal_shape, SIGNAL_SHAPES),
    ):
        if value not in known:
            what = {
                "--model": "model",
                "--rule": "rule",
                "--loss": "sigprop loss",
                "--optimizer": "optimizer",
                "--signal": "signal kind",
                "--signal-placement": "signal placement",
                "--signal-shape": "signal shape",
            }[flag]
            raise SpecError(f"unknown {what} {value!r} ({flag}); choose one of {', '.join(known)}")


# every numeric option of every command: dest -> (integer?, low, low inclusive?, high, high inclusive?, example)
_NUMBERS: dict[str, tuple[bool, float | None, bool, float | None, bool, str]] = {
    "epochs": (True, 1, True, None, False, "10"),
    "batch": (True, 1, True, 1 << 20, True, "32"),
    "steps": (True, 1, True, None, False, "200"),
    "max_train": (True, 1, True, None, False, "1000"),
    "width": (True, 1, True, None, False, "128"),
    "depth": (True, 1, True, None, False, "2"),
    "channels": (True, 1, True, None, False, "16"),
    "time_steps": (True, 1, True, None, False, "10"),
    "seed": (True, 0, True, 2**32 - 1, True, "0"),
    "threads": (True, 1, True, 1024, True, "1"),
    "lr": (False, 0, False, 1000, True, "1e-3"),  # above 1e3 torch's Adam overflows float32 in its step size
    "momentum": (False, 0, True, 1, False, "0.9"),
    "temperature": (False, 0, False, None, False, "0.1"),
    "signal_init_std": (False, 0, False, None, False, "0.1"),
    "du": (False, 0, True, 1, True, "1"),
    "dv": (False, 0, True, 1, True, "0.2"),
    "dt": (False, 0, False, None, False, "1e-4"),
}


def check_numbers(args: argparse.Namespace) -> None:
    """The one range check for every numeric option (given ones only): finite, integer where it counts, in range.
    Raises SpecError ``--flag must be <range>, got <v>: pass e.g. --flag <example>``."""
    import math

    for dest, (integer, lo, lo_incl, hi, hi_incl, example) in _NUMBERS.items():
        v = getattr(args, dest, None)
        if v is None:
            continue
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        ok = ok and (lo is None or (v >= lo if lo_incl else v > lo))
        ok = ok and (hi is None or (v <= hi if hi_incl else v < hi))
        if not ok:
            kind = "an integer" if integer else "a finite number"
            if lo is not None and hi is not None:
                rng = f"in {'[' if lo_incl else '('}{lo}, {hi}{']' if hi_incl else ')'}"
            else:
                rng = f"{'>=' if lo_incl else '>'} {lo}"
            flag = "--" + dest.replace("_", "-")
            raise SpecError(f"{flag} must be {kind} {rng}, got {v}: pass e.g. {flag} {example}")


# rules whose hidden layers learn from the SP loss, and the losses that compare the samples of a batch
SP_LOSS_RULES = ("sigprop", "sp-voltage", "sp-surrogate", "sp-online")


def _check_batch_loss(rule: str, loss: str, batch: int, n_train: int) -> None:
    """v9/v14/v15 are constant at batch 1 (no hidden layer would learn): refuse as 'compile --batch 1' does."""
    from compilers.lower import BATCH_LOSSES

    b = min(batch, n_train)
    if b == 1 and rule in SP_LOSS_RULES and loss in BATCH_LOSSES:
        raise SpecError(
            f"sigprop loss {loss} compares the samples of a batch and is constant at batch 1 (no hidden layer would "
            "learn): train with --loss v1 (direct label), or a batch >= 2 (and --max-train >= 2)"
        )


# ---------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from edgesp.checkpoint import save_checkpoint
    from edgesp.data import load_dataset
    from edgesp.functional import init_params
    from edgesp.rules import make_trainer
    from edgesp.train import fit, plot_curve

    _check_names(args)
    check_out_dir(args.out, "--out")  # before the work, not after it
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset(args.data, seed=args.seed)
    spec = _spec_from_args(args, data)
    n_train = len(data.x_train) if args.max_train is None else min(args.max_train, len(data.x_train))
    _check_batch_loss(spec.rule.name, spec.rule.loss, args.batch, n_train)
    params = init_params(spec, args.seed)
    if args.precision == "int8":  # integer SP (edgesp.int8): the rule the mcu firmware runs, bit for bit
        from edgesp.rules.int8_rule import to_int8_spec

        spec, params = to_int8_spec(spec, params)
    trainer = make_trainer(spec, params, args.seed)
    if args.schedule is None:  # spiking models on sequences: the sequence defaults' schedule (cosine), else constant
        from edgesp.presets import sequence_defaults

        seq = spec.temporal is not None and spec.temporal.encoding == "sequence"
        args.schedule = sequence_defaults(args.rule)["schedule"] if seq else "constant"
    t0 = time.perf_counter()
    hist = fit(
        trainer,
        data,
        spec.input_shape,
        args.epochs,
        args.batch,
        args.seed,
        progress=not args.quiet,
        max_train=args.max_train,
        schedule=args.schedule,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "data": args.data,
        "model": args.model,
        "rule": args.rule,
        "precision": args.precision,
        "epochs": args.epochs,
        "batch": args.batch,
        "seed": args.seed,
        "schedule": args.schedule,
        "num_params": spec.num_params(),
        "train_accuracy": hist.train_accuracy[-1],
        "test_accuracy": hist.test_accuracy[-1],
        "seconds": time.perf_counter() - t0,
        "history": hist.to_dict(),
    }
    save_checkpoint(
        out / "model.safetensors",
        spec,
        trainer.params(),
        extra={"metrics": {k: metrics[k] for k in ("data", "train_accuracy", "test_accuracy", "epochs")}},
    )
    _write_json(out / "metrics.json", metrics)
    plot_curve(
        out / "learning_curve.png",
        hist.epochs,
        {"train accuracy": hist.train_accuracy, "test accuracy": hist.test_accuracy},
        "epoch",
        f"{args.rule} · {spec.name} · {args.data}",
    )
    print(
        f"{args.rule} on {args.data}: train accuracy {hist.train_accuracy[-1]:.4f}, "
        f"test accuracy {hist.test_accuracy[-1]:.4f}  ->  {out}/model.safetensors, metrics.json, "
        "learning_curve.png"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edgesp.checkpoint import load_checkpoint
    from edgesp.data import adapt_inputs, load_dataset
    from edgesp.rules import make_trainer
    from edgesp.train import accuracy

    if args.json:
        check_out_file(args.json, "--json")
    spec, params, _ = load_checkpoint(args.checkpoint)
    data = load_dataset(args.data, seed=args.seed)
    if data.num_classes > spec.num_classes:
        raise DataError(f"{args.data} has {data.num_classes} classes but the model predicts {spec.num_classes}")
    trainer = make_trainer(spec, params, args.seed)
    x = adapt_inputs(data.x_test, spec.input_shape)
    res = {
        "data": args.data,
        "checkpoint": str(args.checkpoint),
        "test_accuracy": accuracy(trainer, x, data.y_test),
        "n_test": int(len(x)),
    }
    print(f"test accuracy {res['test_accuracy']:.4f} on {res['n_test']} samples of {args.data}")
    if args.json:
        _write_json(args.json, res)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from targets import builtin_targets

    ts = builtin_targets()
    if args.json:
        print(json.dumps({k: t.to_dict() for k, t in ts.items()}, indent=2))
        return 0
    print(f"{'target':<18}{'runtime':<13}{'precision':<12}{'memory budget':>16}  description")
    for t in ts.values():
        budget = f"{t.memory_budget_bytes:,} B" if t.memory_budget_bytes else "unlimited"
        print(f"{t.name:<18}{t.runtime:<13}{t.precision:<12}{budget:>16}  {t.description}")
    return 0


def _load_model_for_compile(args: argparse.Namespace) -> tuple[Any, Any]:
    from edgesp.checkpoint import load_checkpoint
    from edgesp.data import load_dataset
    from edgesp.functional import init_params
    from edgesp.spec import SP_LOSSES

    if args.fresh:
        if args.checkpoint:
            raise SpecError("give either a CHECKPOINT or --fresh, not both")
        _check_names(args)
        data = load_dataset(args.data, seed=args.seed)
        spec = _spec_from_args(args, data)
        return spec, init_params(spec, args.seed)
    if not args.checkpoint:
        raise SpecError("compile needs a CHECKPOINT (from 'edgesp train') or --fresh --data D --model M --rule R")
    from compilers import finetune_spec

    spec, params, _ = load_checkpoint(args.checkpoint)
    if args.loss:
        if args.loss not in SP_LOSSES:
            raise SpecError(f"unknown sigprop loss {args.loss!r} (--loss); choose one of {', '.join(SP_LOSSES)}")
        spec = spec.replace_rule(loss=args.loss)
    return finetune_spec(spec, args.lr), params


def cmd_compile(args: argparse.Namespace) -> int:
    from compilers import compile_model
    from targets import load_target

    target = load_target(args.target)
    check_out_dir(args.out, "--out")
    probe_folder(Path(args.out).absolute().parent, f"--out {args.out}")  # the new build is made beside it
    spec, params = _load_model_for_compile(args)
    if args.target_stream:
        spec = spec.replace_rule(params={**spec.rule.params, "target_stream": args.target_stream})
    manifest = compile_model(spec, params, target, Path(args.out), batch=args.batch, on_device_rule=args.on_device)
    print(
        f"compiled {spec.name} for {target.name} ({target.runtime}) -> {args.out}: "
        + ", ".join(f"{k}={v}" for k, v in manifest.artifacts.items())
        + f"; planned update-step peak {manifest.planned_memory.update_step_peak_bytes:,} B"
    )
    note = manifest.backend.get("rule_note")
    if note:
        print(f"note: {note}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edgesp.export import export_build

    info = export_build(args.build, args.state, args.out, batch=args.batch)
    print(
        f"exported {args.build} ({info['runtime']}) -> {args.out}: {info['checkpoint']}, "
        + ", ".join(info["inference"])
        + f" (batch {info['batch']})"
    )
    return 0


def cmd_import_nir(args: argparse.Namespace) -> int:
    from edgesp.nir_io import import_nir

    check_out_file(args.out, "--out")
    given = {"name": args.rule, "loss": args.loss, "temperature": args.temperature, "optimizer": args.optimizer}
    changes = {k: v for k, v in {**given, "lr": args.lr}.items() if v is not None}
    imp = import_nir(
        args.model,
        args.out,
        dt=args.dt,
        time_steps=args.time_steps,
        encoding=args.encoding,
        rule_changes=changes,
        spiking_output=args.spiking_output,
        seed=args.seed,
    )
    s = imp.spec
    layers = " | ".join(" → ".join(type(la).__name__ for la in b) for b in s.blocks)
    print(
        f"imported {args.model} -> {args.out}: {s.name}, blocks [{layers}], head {s.head.in_features}→"
        f"{s.head.out_features}, readout {s.temporal.readout}, T={s.temporal.time_steps} ({s.temporal.encoding}), "
        f"rule {s.rule.name} ({'recorded learning set-up' if imp.recorded else 'defaults: no edgesp metadata'})"
    )
    for note in imp.notes:
        print(f"  note: {note}")
    return 0


def cmd_export_nir(args: argparse.Namespace) -> int:
    from edgesp.nir_io import export_nir

    check_out_file(args.out, "OUT")
    info = export_nir(args.checkpoint, args.out, dt=args.dt, readout_node=args.readout_node, learning=not args.plain)
    print(
        f"exported {args.checkpoint} -> {args.out}: {len(info['nodes'])} NIR nodes "
        f"({', '.join(f'{k}:{v}' for k, v in info['nodes'].items())}); dt={info['dt']:g} s"
        + ("; learning set-up in metadata 'edgesp'" if info["learning_metadata"] else "")
    )
    return 0


def _runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """Runtime-specific options given on the command line (e.g. the TFLite interpreter)."""
    return {k: getattr(args, k) for k in ("interpreter", "resolver") if getattr(args, k, None)}


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime options (TFLite builds)")
    g.add_argument("--interpreter", default=None, help="litert (ai-edge-litert, default) or tflite_runtime")
    g.add_argument("--resolver", default=None, help="TFLite kernels: auto (default), builtin or reference")


def cmd_simulate(args: argparse.Namespace) -> int:
    from edgesp.data import load_dataset
    from firmware_sim import read_manifest, simulator_module

    manifest = read_manifest(args.build)
    sim = simulator_module(manifest.runtime)
    check_out_file(args.png or Path(args.build) / "simulate_curve.png", "--png")
    if args.json:
        check_out_file(args.json, "--json")
    data = load_dataset(args.data, seed=args.seed)
    res = sim.simulate(
        Path(args.build),
        data,
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        out_png=Path(args.png) if args.png else Path(args.build) / "simulate_curve.png",
        progress=not args.quiet,
        continual=args.continual,
        lr=args.lr,
        **_runtime_options(args),
        **({"save_state": Path(args.save_state)} if args.save_state else {}),
    )
    print(
        f"on-device learning ({manifest.runtime}): accuracy {res['accuracy_before']:.4f} -> "
        f"{res['accuracy_after']:.4f} after {res['steps']} steps, {res['samples_per_second']:.0f} samples/s"
    )
    if res.get("continual"):
        for stage in res["continual"]["stages"]:
            print(
                f"  stage {stage['stage']} classes {stage['classes']}: accuracy on classes seen so far "
                f"{stage['accuracy_seen']:.4f}, on first-stage classes {stage['accuracy_first']:.4f}"
            )
    if args.json:
        _write_json(args.json, res)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from firmware_sim import read_manifest, simulator_module

    manifest = read_manifest(args.build)
    sim = simulator_module(manifest.runtime)
    check_out_file(args.png or Path(args.build) / "memory_profile.png", "--png")
    if args.json:
        check_out_file(args.json, "--json")
    res = sim.profile(Path(args.build), batch=args.batch, **_runtime_options(args))
    print(f"memory profile ({manifest.runtime}, batch {res.get('batch')}):")
    for key in ("inference", "update_step", "bp_baseline"):
        if key in res:
            r = res[key]
            parts = [
                f"{k}={v:,}" if isinstance(v, int) else f"{k}=n/a (see JSON note)"
                for k, v in r.items()
                if isinstance(v, int) or (v is None and k.endswith("_bytes"))
            ]
            print(f"  {key:<12} " + "  ".join(parts))
    png = Path(args.png) if args.png else Path(args.build) / "memory_profile.png"
    _plot_profile(png, res, manifest.runtime)
    print(f"  plot: {png}")
    if args.json:
        _write_json(args.json, res)
    return 0


def _plot_profile(png: Path, res: dict[str, Any], runtime: str) -> None:
    """Bars in KiB: the runtime's measured peak, the plan's transient part, and BP's exact saved bytes."""
    from edgesp.train import plot_bars

    groups: dict[str, dict[str, float]] = {}
    for key, label in (("inference", "inference"), ("update_step", "SP update step")):
        r = res.get(key, {})
        vals: dict[str, float] = {}
        if isinstance(r.get("measured_peak_bytes"), int):
            vals["measured peak (runtime)"] = r["measured_peak_bytes"] / 1024
        planned = r.get("planned_activation_bytes", r.get("planned_peak_bytes"))
        if isinstance(planned, int):
            vals["planned transient (BP: exact saved + grads)"] = planned / 1024
        if vals:
            groups[label] = vals
    bp = res.get("bp_baseline", {})
    if isinstance(bp.get("saved_activation_bytes"), int):
        groups["BP training step (torch)"] = {
            "measured peak (runtime)": (bp.get("measured_peak_bytes") or 0) / 1024,  # None: not measurable
            "planned transient (BP: exact saved + grads)": (bp["saved_activation_bytes"] + bp.get("gradient_bytes", 0))
            / 1024,
        }
    if groups:
        plot_bars(
            png,
            groups,
            "KiB",
            f"memory profile ({runtime}, batch {res.get('batch')}); BP 'planned' = saved activations + gradients",
        )


def cmd_demo(args: argparse.Namespace) -> int:
    from edgesp.demo import run_demo

    return run_demo(Path(args.out), cli=main, target=args.target, quick=args.quick)


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgesp", description="Forward-only learning (Signal Propagation) for edge CPUs and neuromorphic chips."
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on a dataset and write a checkpoint + metrics")
    t.add_argument(
        "--data",
        default="digits",
        help="digits, mnist1d, mnist1d-seq, spike-recall, idx:DIR, npz:FILE; a sequence through a K-tap delay line "
        "of stride S: NAME+tapsKxS (e.g. mnist1d-seq+taps8x2)",
    )
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-train", type=int, default=None, help="use only the first N training samples")
    t.add_argument(
        "--schedule",
        default=None,
        choices=("constant", "cosine"),
        help="learning-rate schedule over the run, any rule (default constant, cosine for a spiking model on "
        "sequence data; cosine: lr·½(1+cos(π·step/steps)))",
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8"),
        help="fp32 (default) or int8: integer-only SP (edgesp/int8.py; one sample per update), the rule the "
        "cortex-m* firmware runs; with --rule bp the int8 BP baseline",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the small edge models train fastest on one thread, and torch's "
        "own default, every core, ran 9x slower on a shared 2-core machine)",
    )
    _add_model_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data", default="digits")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", default=None)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("targets", help="list the built-in targets and their budgets")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_targets)

    c = sub.add_parser("compile", help="compile a checkpoint (or --fresh model) for a target")
    c.add_argument("checkpoint", nargs="?", default=None)
    c.add_argument("--target", required=True, help="built-in target name (see 'edgesp targets') or a .toml file")
    c.add_argument("--out", required=True, help="build folder")
    c.add_argument("--batch", type=int, default=32, help="on-device batch size (fixed in the artifact)")
    c.add_argument("--fresh", action="store_true", help="compile an untrained model built from --data/--model")
    c.add_argument(
        "--on-device",
        default="sigprop",
        choices=("sigprop", "bp"),
        help="rule of the compiled update step: sigprop (default) or bp, a backprop baseline from the same compiler "
        "(MLPs on ONNX and TFLite; MLPs and CNNs on the cortex-m* targets, int8) for measuring SP against in the "
        "same runtime",
    )
    c.add_argument(
        "--target-stream",
        default=None,
        choices=("auto", "exact", "cached"),
        help="SP target stream of the update step: exact (default; every class's targets, or the samples' own with "
        "v9/l2 at batch < classes) or cached (batch 1 + loss v1: one target row through each block's GEMM, the other "
        "classes' targets from per-layer device tables of their pre-activations, gradients kept; same accuracy as "
        "exact in bench/target_stream.py, but not faster on ONNX Runtime at width 256)",
    )
    c.add_argument("--data", default="digits")
    c.add_argument("--seed", type=int, default=0)
    _add_model_args(c)
    c.set_defaults(func=cmd_compile)

    s = sub.add_parser("simulate", help="on-device learning: stream samples through the compiled update step")
    s.add_argument("build")
    s.add_argument("--data", default="digits")
    s.add_argument("--steps", type=int, default=200, help="update steps (batches)")
    s.add_argument("--batch", type=int, default=None, help="must equal the compiled batch (default: it)")
    s.add_argument("--lr", type=float, default=None, help="on-device learning rate (default: the spec's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--continual", action="store_true", help="classes arrive in stages; report what is kept")
    s.add_argument("--json", default=None)
    s.add_argument("--png", default=None, help="learning-curve PNG (default BUILD/simulate_curve.png)")
    s.add_argument(
        "--save-state", default=None, help="write the weights learned on the device to this .npz (see 'export')"
    )
    s.add_argument("--quiet", action="store_true")
    _add_runtime_args(s)
    s.set_defaults(func=cmd_simulate)

    x = sub.add_parser(
        "export", help="learned weights back out: a checkpoint + standalone inference artifacts for the runtime"
    )
    x.add_argument("build")
    x.add_argument("--state", required=True, help="state file from 'simulate BUILD --save-state FILE'")
    x.add_argument("--out", required=True, help="output folder (replaced as a whole)")
    x.add_argument("--batch", type=int, default=1, help="batch of the standalone inference artifacts (default 1)")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("profile", help="measure and plan memory of inference and the update step")
    m.add_argument("build")
    m.add_argument("--batch", type=int, default=None)
    m.add_argument("--json", default=None)
    m.add_argument("--png", default=None, help="bar chart (default BUILD/memory_profile.png)")
    _add_runtime_args(m)
    m.set_defaults(func=cmd_profile)

    ni = sub.add_parser("import-nir", help="a NIR graph (snnTorch, Norse, ... export) -> an edgesp checkpoint")
    ni.add_argument("model", help="NIR file (.nir, HDF5)")
    ni.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    ni.add_argument(
        "--dt", type=float, default=None, help="seconds per time step (default: recorded, else 1e-4 as snnTorch)"
    )
    ni.add_argument("--time-steps", type=int, default=None, help="time steps per sample (default: recorded, else 10)")
    ni.add_argument("--encoding", default=None, help="direct, rate or sequence (default: recorded, else rate)")
    ni.add_argument("--rule", default=None, help="learning rule (default: recorded, else sp-voltage)")
    ni.add_argument("--loss", default=None, help="SP loss (default: recorded, else v1)")
    ni.add_argument("--temperature", type=float, default=None, help="SP temperature (default: the rule's)")
    ni.add_argument("--optimizer", default=None, help="sgd or adam (default: recorded, else sgd)")
    ni.add_argument("--lr", type=float, default=None, help="learning rate (default: recorded, else 1e-3)")
    ni.add_argument(
        "--spiking-output",
        default="refuse",
        choices=("refuse", "membrane"),
        help="an output layer that fires: refuse (default) or read its membrane without spikes/resets",
    )
    ni.add_argument("--seed", type=int, default=0, help="seed of a fresh signal generator (no recorded one)")
    ni.set_defaults(func=cmd_import_nir)

    ne = sub.add_parser("export-nir", help="an edgesp spiking checkpoint -> a NIR graph with its learning set-up")
    ne.add_argument("checkpoint")
    ne.add_argument("out", help="NIR file to write (.nir)")
    ne.add_argument("--dt", type=float, default=1e-4, help="seconds per time step (default 1e-4, snnTorch's)")
    ne.add_argument(
        "--readout-node",
        default="lif",
        choices=("lif", "li"),
        help="membrane readout as a never-firing LIF (default: loads in snnTorch) or as NIR's LI node",
    )
    ne.add_argument("--plain", action="store_true", help="no edgesp learning metadata")
    ne.set_defaults(func=cmd_export_nir)

    d = sub.add_parser("demo", help="train -> compile -> simulate -> profile on the embedded digits set")
    d.add_argument("--out", default="build/demo")
    d.add_argument("--target", default="edge-cpu")
    d.add_argument("--quick", action="store_true", help="fewer epochs/steps (for tests)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    _stop_on_sigterm()
    try:
        check_numbers(args)
        return int(args.func(args) or 0)
    except EdgespError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that every ``finally`` runs (a Lava runtime is stopped and its
    worker processes end, a temporary build folder is removed) before the process exits with 143."""


def _stop_on_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
