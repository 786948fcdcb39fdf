"""The on-device learning loop shared by every runtime: stream batches of the training split through a
device's update step, evaluate on the test split along the way, optionally in continual stages (classes
arrive two at a time), and report the curve (JSON-ready dict, PNG).

A device is anything with ``step(x, y, lr) -> dict[str, float]`` (one update on a batch; returns the
per-layer losses), ``accuracy(x, y) -> float`` and ``parameters() -> dict[str, np.ndarray]`` (the model's
current weights, named as the spec's parameters). ``save_state`` writes those weights after the run as a
``.npz`` (float32, no pickles) that ``edgesp export`` turns into a checkpoint and standalone artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.data import Dataset, adapt_inputs
from edgesp.errors import DataError, check_finite_losses, check_finite_weights
from edgesp.spec import ModelSpec

# Divergence policy (the same as host training): a non-finite loss after any step, or a non-finite weight at an
# evaluation point, stops the run with DivergedError naming the step and the fix; no curve, PNG or state is written.
DIVERGED_FIX = "lower the on-device learning rate (simulate --lr, or compile --lr)"


def check_lr(lr: float | None) -> None:
    """An on-device learning rate must be None (the build's) or a finite number > 0."""
    if lr is not None and not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise DataError(f"the on-device learning rate must be a finite number > 0, got {lr}: pass e.g. --lr 1e-4")


def prepare_data(spec: ModelSpec, data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if data.num_classes > spec.num_classes:
        raise DataError(f"{data.name} has {data.num_classes} classes but the model predicts {spec.num_classes}")
    return (
        adapt_inputs(data.x_train, spec.input_shape),
        data.y_train,
        adapt_inputs(data.x_test, spec.input_shape),
        data.y_test,
    )


def run_learning(
    device: Any,
    spec: ModelSpec,
    data: Dataset,
    steps: int,
    batch: int,
    seed: int,
    out_png: Path | None,
    progress: bool,
    continual: bool = False,
    lr: float | None = None,
    runtime: str = "onnxruntime",
    save_state: Path | None = None,
) -> dict[str, Any]:
    """Stream ``steps`` batches through ``device.step`` (any runtime with step/accuracy) and report."""
    if save_state is not None:
        from edgesp.atomic import check_out_file

        check_out_file(save_state, "--save-state")
    from tqdm import tqdm

    from edgesp.train import plot_curve

    check_lr(lr)
    if steps < 1:
        raise DataError(f"steps must be >= 1, got {steps}")
    xtr, ytr, xte, yte = prepare_data(spec, data)
    rng = np.random.default_rng(seed)
    n_eval = min(10, steps)
    eval_every = max(1, steps // n_eval)
    stages = _stages(spec.num_classes) if continual else [list(range(spec.num_classes))]
    steps_per_stage = max(1, steps // len(stages))
    curve_steps, curve_acc = [0], [device.accuracy(xte, yte)]
    acc_before = curve_acc[0]
    stage_reports = []
    step_time = 0.0
    done = 0
    bar = tqdm(total=steps_per_stage * len(stages), disable=not progress, unit="step", desc=f"{runtime} learning")
    try:
        for s_idx, classes in enumerate(stages):
            pool = np.flatnonzero(np.isin(ytr, classes)) if continual else np.arange(len(ytr))
            order = rng.permutation(pool)
            pos = 0
            for _ in range(steps_per_stage):
                if pos + batch > len(order):
                    order, pos = rng.permutation(pool), 0
                idx = order[pos : pos + batch] if len(order) >= batch else rng.choice(pool, batch)
                pos += batch
                t0 = time.perf_counter()
                losses = device.step(xtr[idx], ytr[idx], lr)
                step_time += time.perf_counter() - t0
                done += 1
                check_finite_losses(losses, "on-device learning", f"at step {done}", DIVERGED_FIX)
                bar.update(1)
                if done % eval_every == 0 or done == steps_per_stage * len(stages):
                    if hasattr(device, "weights"):
                        check_finite_weights(device.weights(), "on-device learning", f"by step {done}", DIVERGED_FIX)
                    curve_steps.append(done)
                    curve_acc.append(device.accuracy(xte, yte))
                    bar.set_postfix(
                        acc=f"{curve_acc[-1]:.3f}",
                        loss=f"{sum(losses.values()):.3f}",
                        rate=f"{done * batch / max(step_time, 1e-9):.0f} samples/s",
                    )
            if continual:
                seen = [c for st in stages[: s_idx + 1] for c in st]
                m_seen, m_first = np.isin(yte, seen), np.isin(yte, stages[0])
                stage_reports.append(
                    {
                        "stage": s_idx,
                        "classes": classes,
                        "steps": done,
                        "accuracy_seen": device.accuracy(xte[m_seen], yte[m_seen]),
                        "accuracy_first": device.accuracy(xte[m_first], yte[m_first]),
                    }
                )
    finally:
        bar.close()
    result: dict[str, Any] = {
        "runtime": runtime,
        "steps": done,
        "batch": batch,
        "samples": done * batch,
        "accuracy_before": acc_before,
        "accuracy_after": curve_acc[-1],
        "samples_per_second": done * batch / max(step_time, 1e-9),
        "steps_per_second": done / max(step_time, 1e-9),
        "curve": {"steps": curve_steps, "test_accuracy": curve_acc},
    }
    if continual:
        result["continual"] = {"stages": stage_reports}
    if save_state is not None:
        write_state(Path(save_state), device.parameters())
        result["state"] = str(save_state)
    if out_png:
        plot_curve(
            out_png,
            curve_steps,
            {"test accuracy": curve_acc},
            "update step",
            f"on-device SP learning ({runtime}, batch {batch})" + (" · continual" if continual else ""),
        )
        result["plot"] = str(out_png)
    return result


def write_state(path: Path, params: dict[str, np.ndarray]) -> None:
    """The learned parameters as an ``.npz`` (float32; written atomically)."""
    import io

    from edgesp.atomic import write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, np.float32) for k, v in params.items()})
    write_bytes(path, buf.getvalue())


def read_state(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a state file written by :func:`write_state` (refuses pickles and non-float data)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"state file {path} not found: write it with 'simulate BUILD --save-state FILE'") from None
    except (OSError, ValueError) as e:
        raise DataError(f"state file {path} is not a readable .npz ({e}): re-create it with --save-state") from None
    for k, v in arrays.items():
        if v.dtype.kind != "f" or not np.all(np.isfinite(v)):
            raise DataError(f"state file {path}: {k} is not finite float data: re-create it with --save-state")
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def _stages(num_classes: int, per_stage: int = 2) -> list[list[int]]:
    return [list(range(i, min(i + per_stage, num_classes))) for i in range(0, num_classes, per_stage)]
