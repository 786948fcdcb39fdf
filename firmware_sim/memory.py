"""Process-level memory measurement (Linux) and the backpropagation baseline.

``peak_rss_increase(fn)``: resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` ← 5), runs ``fn``
and returns VmHWM − VmRSS(before) in bytes (resolution ≈ a page; allocator noise ≈ ±0.3 MiB, so small
models need the runtime's own byte counts too). ``bp_training_memory`` measures one torch-autograd BP
training step of the same model: RSS increase of a steady-state step, and byte-exact counts of the
tensors autograd saves for the backward pass and of the gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def release_freed_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so a measured step's allocations raise the
    RSS again instead of silently reusing pages freed earlier (which made small BP steps read 0 bytes)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_increase(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(bytes of peak RSS above the RSS before ``fn``, fn's result)."""
    import gc

    gc.collect()
    before = _status_kib("VmRSS")
    if not reset_peak():
        raise RuntimeError("cannot reset the peak RSS mark (/proc/self/clear_refs not writable)")
    result = fn()
    peak = _status_kib("VmHWM")
    return max(0, (peak - before) * 1024), result


def bp_training_memory(
    spec: Any, params: dict[str, np.ndarray], batch: int, seed: int = 0, before: Callable[[], None] | None = None
) -> dict[str, int]:
    """One BP step (autograd through the whole network, CE on the head, the spec's optimizer)."""
    import torch
    import torch.nn.functional as F

    from edgesp.functional import predict_logits, to_torch
    from edgesp.rules.optim import make_optimizer

    torch.manual_seed(seed)
    p = {k: v for k, v in to_torch(params, requires_grad=True).items() if not k.startswith("signal.")}
    opt = make_optimizer(spec.rule.optimizer, p.values())
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal((batch, *spec.input_shape)).astype(np.float32))
    y = torch.as_tensor(rng.integers(0, spec.num_classes, batch))
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(predict_logits(spec, x, p), y)
        loss.backward()
        opt.step()

    step()  # warm-up: optimizer state exists from now on, as in the SP step's resident state
    saved.clear()
    if before:
        before()
    rss, _ = peak_rss_increase(step)
    grads = sum(math.prod(t.shape) * 4 for t in p.values())
    return annotate_peak(
        {
            "measured_peak_bytes": int(rss),
            "saved_activation_bytes": int(sum(saved)),
            "gradient_bytes": int(grads),
            "batch": batch,
        }
    )


PEAK_NOTE = (
    "not measurable: the step's peak RSS increase is below the resolution of the measurement (pages; the "
    "allocator reuses freed memory); saved_activation_bytes + gradient_bytes are exact"
)


def annotate_peak(r: dict[str, Any]) -> dict[str, Any]:
    """A measured peak of 0 bytes is not a measurement: report it as ``None`` with the reason, never as 0."""
    v = r.get("measured_peak_bytes")
    if not v:
        r["measured_peak_bytes"] = None
        r["measured_peak_note"] = PEAK_NOTE
    return r
