"""On-device SP learning on Lava's simulation of a Loihi-style chip.

``simulate`` builds the compiled process network once and streams one schedule of samples through it (T time
steps each; one sample after another, no per-sample restarts): the test samples (learning off) for accuracy
before, then the training samples (on-chip learning on) interleaved with short test evaluations for the
learning curve, then the test samples again for accuracy after. ``steps`` counts training samples (each one
is T time steps with an on-chip weight update at every step). The runtime is stopped in ``finally``.
Hidden signal placement (the default) injects the label's table as block 0's target current; with a learned
signal, W_S and b_S are updated on the host / embedded CPU in the same run (``signal_changed`` in the result).

``profile`` reports the planned per-core synapse/neuron memory and measures the peak RSS of the runtime's
worker processes for an inference run (learning off) and an update run (learning on).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from compilers.lava.network_desc import NetDesc, load_netdesc
from edgesp.atomic import atomic_path
from edgesp.data import Dataset, adapt_inputs
from edgesp.errors import DataError
from edgesp.manifest import Manifest
from edgesp.spec import ModelSpec
from firmware_sim.lava.network import LavaSession, import_lava, prepare_inputs


def _load(build_dir: Path) -> tuple[Manifest, NetDesc, ModelSpec]:
    """The verified build (schema and every artifact's sha256: a swapped ``network.npz`` is refused)."""
    manifest = Manifest.read(build_dir)
    if manifest.runtime != "lava":
        raise DataError(f"{build_dir} was compiled for {manifest.runtime}, not lava")
    return manifest, load_netdesc(build_dir, manifest), manifest.model_spec()


def learned_params(
    manifest: Manifest,
    build_dir: Path,
    weights: list[tuple[np.ndarray, np.ndarray]],
    signal: dict[str, np.ndarray],
    weight_exps: list[int] | None = None,
    rec: dict[int, np.ndarray] | None = None,
    rec_exps: dict[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The model's parameters in the spec's float32 units from a Lava run's final state: each layer's (W, b)
    (fixed_pt: int32 mantissas × 2^(weight_exp − SIGMA), :func:`compilers.lava.quant.dequantise`), each recurrent
    block's W_rec from ``rec`` (layer index -> W_rec; fixed_pt: × 2^(rec_exp − SIGMA), ``rec_exps`` or the
    compiled exponents), W_S and b_S as learned
    on the embedded CPU, or (signal not learned on Lava) as compiled."""
    from compilers.lava.quant import dequantise

    spec = manifest.model_spec()
    layers = manifest.backend["network"]["layers"]
    fixed = manifest.backend["network"]["precision"] == "fixed_pt"
    names = [f"blocks.{i}" for i in range(len(spec.blocks))] + ["head"]
    out: dict[str, np.ndarray] = {}
    exps = weight_exps if weight_exps is not None else [ld["weight_exp"] for ld in layers]
    for name, (w, b), e in zip(names, weights, exps, strict=True):
        if fixed:
            w, b = dequantise(np.asarray(w), e), dequantise(np.asarray(b), e)
        out[f"{name}.weight"] = np.asarray(w, np.float32)
        if f"{name}.bias" in spec.param_shapes():
            out[f"{name}.bias"] = np.asarray(b, np.float32).reshape(-1)
    for i, w in (rec or {}).items():
        e = (rec_exps or {}).get(i, layers[i].get("rec_exp", 0))
        w = dequantise(np.asarray(w), e) if fixed else w
        out[f"blocks.{i}.rec_weight"] = np.asarray(w, np.float32)
    missing = sorted(set(spec.param_shapes()) - set(out) - {"signal.weight", "signal.bias"})
    if missing:
        raise DataError(f"the Lava run returned no value for {missing}: re-run 'edgesp compile' for this model")
    if "signal_weight" in signal:
        out["signal.weight"] = np.asarray(signal["signal_weight"], np.float32)
        out["signal.bias"] = np.asarray(signal["signal_bias"], np.float32)
    else:
        with np.load(build_dir / manifest.artifacts["inference"], allow_pickle=False) as z:
            key = "spec.signal.weight" if "spec.signal.weight" in z.files else "signal.weight"
            out["signal.weight"] = z[key].astype(np.float32)
            out["signal.bias"] = z[key.replace("weight", "bias")].astype(np.float32)
    return out


class LavaDevice:
    """A Lava build as a :class:`firmware_sim.Device`: each ``step``/``predict`` call builds the process network
    from the current weights, runs its samples (T time steps each; ``step`` with the on-chip rule on, one sample
    after another: the rule is online, batch 1) and reads the weights back. A Lava runtime costs about a second
    to start, so streaming many samples goes through :func:`simulate` (one run for the whole schedule); this class
    is the per-call contract (and what tests and users drive interactively). ``step`` returns no losses: the
    on-chip rule does not report them. fixed_pt's stochastic rounding is reseeded per call (``seed`` + call index)."""

    def __init__(self, build_dir: str | Path, seed: int = 0) -> None:
        self.build_dir = Path(build_dir)
        self.manifest, self.desc, self.spec = _load(self.build_dir)
        self.batch = 1
        self.seed = seed
        self.calls = 0
        self.signal: dict[str, np.ndarray] = {}

    def _run(self, x: np.ndarray, y: np.ndarray, learn: bool) -> np.ndarray:
        import_lava()
        x = adapt_inputs(np.asarray(x, np.float32), self.spec.input_shape)
        y = np.asarray(y, np.int64)
        sess = LavaSession(
            self.desc, prepare_inputs(self.desc, x), y, np.full(len(y), learn), seed=self.seed + self.calls
        )
        self.calls += 1
        try:
            sess.run_all()
            logits = sess.logits()
            if learn:
                for la, (w, b) in zip(self.desc.layers, sess.weights(), strict=True):
                    la.weight, la.bias = np.asarray(w).copy(), np.asarray(b).copy()
                for i, w in sess.rec_weights().items():
                    self.desc.layers[i].rec_weight = np.asarray(w).copy()
                self.signal = sess.signal()
                self.desc.table = np.asarray(self.signal["table"]).copy()
                if "signal_weight" in self.signal:
                    self.desc.signal_weight = np.asarray(self.signal["signal_weight"], np.float64).copy()
                    self.desc.signal_bias = np.asarray(self.signal["signal_bias"], np.float64).copy()
        finally:
            sess.stop()
        return logits

    def step(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> dict[str, float]:
        if lr is not None:
            self.desc.lr = self.desc.lr_head = float(lr)
        self._run(x, y, learn=True)
        return {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, np.zeros(len(x), np.int64), learn=False)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x).argmax(1) == np.asarray(y)).mean()) if len(x) else 0.0

    def parameters(self) -> dict[str, np.ndarray]:
        weights = [(la.weight, la.bias) for la in self.desc.layers]
        signal = self.signal if "signal_weight" in self.signal else {}
        if not signal and self.desc.signal_weight is not None:
            signal = {"signal_weight": self.desc.signal_weight, "signal_bias": self.desc.signal_bias}
        exps = [la.weight_exp for la in self.desc.layers]
        rec = {i: la.rec_weight for i, la in enumerate(self.desc.layers) if la.rec_weight is not None}
        rec_exps = {i: la.rec_exp for i, la in enumerate(self.desc.layers)}
        return learned_params(self.manifest, self.build_dir, weights, signal, exps, rec, rec_exps)

    def load_parameters(self, params: dict[str, np.ndarray]) -> None:
        """Write parameters (spec units; fixed_pt re-quantised with the compiler's own lowering)."""
        from compilers.lava.quant import lower

        full = {**self.parameters(), **{k: np.asarray(v, np.float32) for k, v in params.items()}}
        for name, value in params.items():
            want = self.spec.param_shapes().get(name)
            if want is None or tuple(np.shape(value)) != tuple(want):
                raise DataError(f"parameter {name!r} of shape {np.shape(value)} is not one of this build's")
        fresh, _ = lower(self.spec, full, self.desc.precision)
        for la, new in zip(self.desc.layers, fresh.layers, strict=True):
            la.weight, la.bias, la.weight_exp = new.weight, new.bias, new.weight_exp
            la.rec_weight, la.rec_exp = new.rec_weight, new.rec_exp
        self.desc.table = fresh.table
        self.desc.signal_weight, self.desc.signal_bias = fresh.signal_weight, fresh.signal_bias
        self.signal = {}


DEVICE = LavaDevice


def _schedule(
    ds: Dataset, spec: ModelSpec, n_train: int, eval_n: int, curve_points: int, curve_eval: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, int, int, int]]]:
    """Concatenated stream (x, y, learn) and its segments (kind, start, stop, trained-so-far)."""
    if ds.num_classes > spec.num_classes:
        raise DataError(f"{ds.name} has {ds.num_classes} classes, the model {spec.num_classes}")
    xtr = adapt_inputs(ds.x_train, spec.input_shape)
    xte = adapt_inputs(ds.x_test, spec.input_shape)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(xtr)) for _ in range(-(-n_train // len(xtr)))])[:n_train]
    eval_n = min(eval_n, len(xte)) if eval_n > 0 else len(xte)
    curve_eval = min(curve_eval, eval_n)
    parts: list[tuple[np.ndarray, np.ndarray, bool, str, int]] = [
        (xte[:eval_n], ds.y_test[:eval_n], False, "before", 0)
    ]
    bounds = np.linspace(0, n_train, curve_points + 1).astype(int)
    for j in range(curve_points):
        idx = order[bounds[j] : bounds[j + 1]]
        parts.append((xtr[idx], ds.y_train[idx], True, "train", int(bounds[j + 1])))
        if j < curve_points - 1:
            parts.append((xte[:curve_eval], ds.y_test[:curve_eval], False, "curve", int(bounds[j + 1])))
    parts.append((xte[:eval_n], ds.y_test[:eval_n], False, "after", n_train))
    xs, ys, ls, segs, pos = [], [], [], [], 0
    for x, y, learn, kind, trained in parts:
        xs.append(x)
        ys.append(y)
        ls.append(np.full(len(y), learn))
        segs.append((kind, pos, pos + len(y), trained))
        pos += len(y)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ls), segs


def simulate(
    build_dir: str | Path,
    dataset: Dataset,
    steps: int,
    batch: int | None = None,
    seed: int = 0,
    out_png: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Options: eval_samples (test samples for before/after, default all), curve_points (default 4),
    curve_eval (test samples per intermediate point, default 100), chunk_samples (samples per Lava run call,
    default 50), learning (default True; False streams the same schedule with the rule switched off),
    lr (overrides the compiled learning rate of every layer; fixed_pt rounds it to a power of two), lr_head
    (overrides the head's alone, after ``lr``; Python only).
    ``batch`` must be None or 1: the on-chip rule is online (one sample at a time)."""
    build_dir = Path(build_dir)
    manifest, desc, spec = _load(build_dir)
    if options.get("save_state") is not None:
        from edgesp.atomic import check_out_file

        check_out_file(options["save_state"], "--save-state")
    if batch not in (None, 1):
        raise DataError(f"lava builds learn one sample at a time: use --batch 1 (or omit it), not {batch}")
    if options.get("continual"):
        raise DataError("--continual is not supported on lava targets yet: run without it")
    if options.get("lr") is not None:
        lr = float(options["lr"])
        if not lr > 0:
            raise DataError(f"learning rate must be > 0, got {lr}")
        desc.lr = desc.lr_head = lr
    if options.get("lr_head") is not None:
        lr_head = float(options["lr_head"])
        if not lr_head > 0:
            raise DataError(f"head learning rate must be > 0, got {lr_head}")
        desc.lr_head = lr_head
    import_lava()
    n_train = int(steps) if steps and steps > 0 else len(dataset.x_train)
    x, y, learn, segs = _schedule(
        dataset,
        spec,
        n_train,
        int(options.get("eval_samples", 0)),
        max(1, int(options.get("curve_points", 4))),
        int(options.get("curve_eval", 100)),
        seed,
    )
    if not options.get("learning", True):
        learn[:] = False
    T = desc.time_steps
    chunk = max(1, int(options.get("chunk_samples", 50))) * T
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(y), unit="sample", desc=f"lava {desc.precision}")
    t_wall = time.perf_counter()
    sess = LavaSession(desc, prepare_inputs(desc, x), y, learn, seed=seed)
    try:

        def tick(s: LavaSession) -> None:
            if bar is not None:
                bar.n = min(len(y), max(0, (s.steps_done - len(desc.layers)) // T))
                bar.refresh()

        sess.run_all(chunk, tick)
        logits = sess.logits()
        final = sess.weights()
        final_rec = sess.rec_weights()
        signal = sess.signal()
    finally:
        sess.stop()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_wall
    finite = all(np.all(np.isfinite(np.asarray(a, np.float64))) for wb in final for a in wb)
    finite = finite and all(np.all(np.isfinite(np.asarray(a, np.float64))) for a in signal.values())
    finite = finite and all(np.all(np.isfinite(np.asarray(a, np.float64))) for a in final_rec.values())
    if not finite or not np.all(np.isfinite(logits)):
        raise DataError(
            f"on-device learning diverged on Lava (weights or readout became NaN/inf within {n_train} training "
            f"samples at lr {desc.lr:g}): lower the learning rate (--lr); nothing was written"
        )
    correct = logits.argmax(1) == y
    acc = {}
    curve = []
    train_acc = []
    for kind, a, b, trained in segs:
        value = float(correct[a:b].mean()) if b > a else float("nan")
        if kind in ("before", "after"):
            acc[kind] = value
        if kind in ("before", "curve", "after"):
            curve.append({"train_samples": trained, "accuracy": value, "eval_samples": b - a})
        if kind == "train":
            train_acc.append({"train_samples": trained, "online_accuracy": value})
    steady = max(sess.run_seconds - sess.first_run_seconds, 1e-9)  # excludes compile + start-up (first step)
    steady_steps = sess.total_steps - 1
    result = {
        "accuracy_before": acc["before"],
        "accuracy_after": acc["after"],
        "steps": n_train,
        "timesteps": sess.total_steps,
        "time_steps_per_sample": T,
        "samples_per_second": len(y) * steady_steps / sess.total_steps / steady,
        "timesteps_per_second": steady_steps / steady,
        "timesteps_per_second_incl_startup": sess.total_steps / sess.run_seconds,
        "startup_seconds": sess.first_run_seconds,
        "wall_seconds": wall,
        "curve": curve,
        "online_train_accuracy": train_acc,
        "target": manifest.target,
        "precision": desc.precision,
        "cores_used": manifest.backend.get("cores_used"),
        "learning": bool(options.get("learning", True)),
        "lr": desc.lr,
        "lr_head": desc.lr_head,
        "weights_changed": bool(any(np.any(w != la.weight) for (w, _), la in zip(final, desc.layers, strict=True))),
        "recurrent_blocks": sorted(final_rec),
        "recurrent_changed": bool(any(np.any(w != desc.layers[i].rec_weight) for i, w in final_rec.items())),
        "eval_samples": segs[0][2] - segs[0][1],
        "signal_placement": desc.placement,
        "signal_learned": desc.signal_learn,
        "signal_changed": bool(np.any(signal["table"] != desc.table)),
    }
    if options.get("save_state") is not None:
        from firmware_sim.learning import write_state

        write_state(Path(options["save_state"]), learned_params(manifest, build_dir, final, signal, rec=final_rec))
        result["state"] = str(options["save_state"])
    if out_png is not None:
        _plot(result, Path(out_png))
        result["png"] = str(out_png)
    return result


def _plot(result: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    c = result["curve"]
    ax.plot([p["train_samples"] for p in c], [p["accuracy"] for p in c], "o-", label="test accuracy")
    tr = result["online_train_accuracy"]
    ax.plot(
        [p["train_samples"] for p in tr],
        [p["online_accuracy"] for p in tr],
        "s--",
        label="online train accuracy (during learning)",
    )
    ax.set_xlabel("training samples streamed (T time steps each)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"on-chip SP learning, Lava {result['precision']} ({result['target']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- profile
def _status_bytes(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _measure(desc: NetDesc, learn: bool, samples: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, desc.input_dim)).astype(np.float32)
    y = rng.integers(0, desc.num_classes, samples)
    sess = LavaSession(desc, prepare_inputs(desc, x), y, np.full(samples, learn), seed=seed)
    try:
        sess.run_all()
        pids = sess.worker_pids()
        hwm = {p: _status_bytes(p, "VmHWM") for p in pids}
        pss = sum(_pss_bytes(p) for p in pids)
    finally:
        sess.stop()
    return {
        "measured_peak_bytes": int(pss),
        "measured_rss_peak_sum_bytes": int(sum(hwm.values())),
        "worker_processes": len(pids),
        "largest_worker_peak_bytes": int(max(hwm.values(), default=0)),
        "timesteps": sess.total_steps,
        "timesteps_per_second": sess.total_steps / sess.run_seconds,
    }


def profile(build_dir: str | Path, batch: int | None = None, **options: Any) -> dict[str, Any]:
    """Options: samples (per measured run, default 20), seed."""
    build_dir = Path(build_dir)
    manifest, desc, _ = _load(build_dir)
    import_lava()
    samples = int(options.get("samples", 20))
    seed = int(options.get("seed", 0))
    pm = manifest.planned_memory.details
    planned_inf = pm["synapse_bytes"] + pm["neuron_bytes"]
    inference = _measure(desc, False, samples, seed)
    update = _measure(desc, True, samples, seed)
    inference["planned_peak_bytes"] = planned_inf
    update["planned_peak_bytes"] = planned_inf
    note = (
        "measured_peak_bytes = sum of the proportional set size (PSS) of the Lava runtime's worker processes "
        "(one OS process per Lava process) at the end of the run, when the network is in steady state: pages "
        "shared with the forked host (Python, numpy, torch) are divided among the sharers; "
        "measured_rss_peak_sum_bytes = sum of their peak RSS (VmHWM), an upper bound that counts those "
        "shared pages in every worker; planned = synapse + neuron memory on the chip's cores"
    )
    return {
        "target": manifest.target,
        "precision": desc.precision,
        "batch": 1,
        "cores_used": manifest.backend.get("cores_used"),
        "per_core": pm["per_core"],
        "planned_memory": pm,
        "inference": inference,
        "update_step": update,
        "bp_baseline": {
            "measured_peak_bytes": None,
            "note": "no backprop baseline on a neuromorphic target (BPTT is not an on-chip rule)",
        },
        "main_process_peak_bytes": _status_bytes(__import__("os").getpid(), "VmHWM"),
        "note": note,
    }
