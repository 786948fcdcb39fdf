"""The training loop shared by every rule: epochs of shuffled mini-batches, a progress bar
(loss, accuracy, samples/s, ETA), evaluation after each epoch, and the learning-curve plot.

Learning-rate schedule (host side, the same for every rule): before training step k of K (0-based) every
layer's learning rate is ``base_lr · lr_factor(schedule, k, K)``:

- ``'constant'``: 1.
- ``'cosine'``: ½·(1 + cos(π·k/K)) — 1 at the first step, → 0 at the last (no restarts, no warm-up).

It is applied through :func:`set_lr_scale`, which works for any rule's trainer (it calls the trainer's own
``set_lr_scale`` if it has one, else rescales every torch optimizer the trainer holds). Compiled on-device
update steps use a fixed learning rate: the schedule is a host-side training option, not part of the spec.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.data import Dataset, adapt_inputs
from edgesp.errors import DataError, check_finite_losses, check_finite_weights
from edgesp.rules import Trainer

DIVERGED_FIX = "lower the learning rate (--lr) or the momentum (--momentum)"


@dataclass
class History:
    epochs: list[int] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


SCHEDULES = ("constant", "cosine")
SPIKING_FAST_RULES = ("sp-voltage", "sp-surrogate", "bptt", "rtrl")


def default_lr(rule: str, spiking: bool = False) -> float:
    """Default Adam learning rate of a rule: 2e-3 for sigprop (bench/sp_sweep.py, docs/benchmarks/rules.md),
    3e-3 for sp-voltage, sp-surrogate, bptt and rtrl on spiking models (bench/temporal.py), else 1e-3."""
    if spiking and rule in SPIKING_FAST_RULES:
        return 3e-3
    if rule == "sigprop" and not spiking:
        return 2e-3
    return 1e-3


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate before step ``step`` of ``total`` (see the module docstring)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def _optimizers(obj: Any) -> list[Any]:
    """Every torch optimizer held by a trainer (attributes, lists, tuples, dict values), each once."""
    import torch

    found: list[Any] = []

    def visit(v: Any) -> None:
        if isinstance(v, torch.optim.Optimizer):
            if not any(v is f for f in found):
                found.append(v)
        elif isinstance(v, (list, tuple)):
            for u in v:
                visit(u)
        elif isinstance(v, dict):
            for u in v.values():
                visit(u)

    for v in vars(obj).values():
        visit(v)
    return found


def set_lr_scale(trainer: Trainer, scale: float) -> None:
    """Set every layer's learning rate to ``scale`` × its learning rate when the schedule first touched it
    (the trainer's base rate). Uses ``trainer.set_lr_scale`` when the rule defines one."""
    own = getattr(trainer, "set_lr_scale", None)
    if callable(own):
        own(scale)
        return
    for opt in _optimizers(trainer):
        for g in opt.param_groups:
            g.setdefault("edgesp_base_lr", g["lr"])
            g["lr"] = g["edgesp_base_lr"] * scale


def accuracy(trainer: Trainer, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        logits = trainer.predict(x[i : i + batch])
        correct += int((np.argmax(logits, axis=1) == y[i : i + batch]).sum())
    return correct / max(len(x), 1)


def fit(
    trainer: Trainer,
    data: Dataset,
    input_shape: tuple[int, ...],
    epochs: int,
    batch: int = 32,
    seed: int = 0,
    progress: bool = True,
    max_train: int | None = None,
    schedule: str = "constant",
) -> History:
    """Train ``epochs`` epochs of shuffled mini-batches; ``schedule`` sets the learning rate per step
    (``'constant'`` or ``'cosine'`` over all ``epochs · ceil(n / batch)`` steps)."""
    from tqdm import tqdm

    xtr = adapt_inputs(data.x_train, input_shape)
    xte = adapt_inputs(data.x_test, input_shape)
    ytr, yte = data.y_train, data.y_test
    if max_train is not None:
        if max_train < 1:
            raise DataError(f"max_train must be >= 1 (the number of training samples to use), got {max_train}")
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    rng = np.random.default_rng(seed)
    hist = History()
    n_batches = (len(xtr) + batch - 1) // batch
    total = epochs * n_batches
    lr_factor(schedule, 0, total)  # validates the name before any training
    bar = tqdm(total=epochs * n_batches, disable=not progress, unit="batch", dynamic_ncols=True, desc="train")
    try:
        for ep in range(1, epochs + 1):
            t0 = time.perf_counter()
            order = rng.permutation(len(xtr))
            losses = []
            for b in range(n_batches):
                idx = order[b * batch : (b + 1) * batch]
                if schedule != "constant":
                    set_lr_scale(trainer, lr_factor(schedule, (ep - 1) * n_batches + b, total))
                out = trainer.train_step(xtr[idx], ytr[idx])
                check_finite_losses(out, "training", f"at epoch {ep}, batch {b + 1}", DIVERGED_FIX)
                losses.append(sum(out.values()))
                bar.update(1)
                if b % 10 == 0:
                    bar.set_postfix(epoch=ep, loss=f"{np.mean(losses[-10:]):.3f}")
            dt = time.perf_counter() - t0
            hist.epochs.append(ep)
            hist.loss.append(float(np.mean(losses)))
            hist.seconds.append(dt)
            check_finite_weights(trainer.params(), "training", f"in epoch {ep}", DIVERGED_FIX)
            hist.train_accuracy.append(accuracy(trainer, xtr, ytr))
            hist.test_accuracy.append(accuracy(trainer, xte, yte))
            bar.set_postfix(
                epoch=ep,
                loss=f"{hist.loss[-1]:.3f}",
                train=f"{hist.train_accuracy[-1]:.3f}",
                test=f"{hist.test_accuracy[-1]:.3f}",
                rate=f"{len(xtr) / dt:.0f}/s",
            )
    finally:
        bar.close()
    return hist


def plot_curve(path: str | Path, xs: list[float], series: dict[str, list[float]], xlabel: str, title: str) -> None:
    """Write a line plot atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgesp.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in series.items():
        ax.plot(xs[: len(ys)], ys, marker="o" if len(xs) < 30 else None, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy" if all("acc" in k for k in series) else "value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_bars(path: str | Path, groups: dict[str, dict[str, float]], ylabel: str, title: str) -> None:
    """Grouped bar chart (PNG, written atomically): ``groups[group][series] = value``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgesp.atomic import atomic_path

    names = list(groups)
    series = sorted({k for g in groups.values() for k in g})
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, sname in enumerate(series):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [groups[n].get(sname, 0) for n in names], width, label=sname)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
