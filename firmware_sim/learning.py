"""The on-device learning loop shared by every runtime: stream batches of the training split through a
device's update step, evaluate on the test split along the way, optionally in continual stages (classes
arrive two at a time), and report the curve (JSON-ready dict, PNG).

A device is anything with ``step(x, y, lr) -> dict[str, float]`` (one update on a batch; returns the
per-layer losses) and ``accuracy(x, y) -> float``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.data import Dataset, adapt_inputs
from edgesp.errors import DataError
from edgesp.spec import ModelSpec


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
) -> dict[str, Any]:
    """Stream ``steps`` batches through ``device.step`` (any runtime with step/accuracy) and report."""
    from tqdm import tqdm

    from edgesp.train import plot_curve

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
                bar.update(1)
                if done % eval_every == 0 or done == steps_per_stage * len(stages):
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


def _stages(num_classes: int, per_stage: int = 2) -> list[list[int]]:
    return [list(range(i, min(i + per_stage, num_classes))) for i in range(0, num_classes, per_stage)]
