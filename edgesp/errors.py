"""Error types. Every user-facing failure is an :class:`EdgespError` subclass whose message is one line
naming the problem and the fix; the CLI prints it as ``error: <message>`` and exits with code 2."""


class EdgespError(Exception):
    """Base class for errors the CLI reports as one line."""


class SpecError(EdgespError, ValueError):
    """The model description is invalid."""


class DataError(EdgespError, ValueError):
    """A dataset is missing, malformed or does not match the model."""


class CheckpointError(EdgespError, ValueError):
    """A checkpoint is missing, corrupt or of an unsupported version."""


class TargetError(EdgespError, ValueError):
    """A target description is unknown or invalid, or a model does not fit it."""


class CompileError(EdgespError, RuntimeError):
    """A model cannot be lowered to the requested runtime."""


class RuntimeMissingError(EdgespError, RuntimeError):
    """A runtime package (onnxruntime, tflite, lava) is not installed."""


class NIRError(EdgespError, ValueError):
    """A NIR graph cannot be mapped to an edgesp model (or a model to NIR), or a NIR file cannot be read."""


class DivergedError(EdgespError, FloatingPointError):
    """Training or on-device learning produced a non-finite loss or weight; nothing was written."""


def check_finite_losses(losses: dict[str, float], what: str, at: str, fix: str) -> None:
    """Raise :class:`DivergedError` (``<what> diverged <at> (<loss name> <value>): <fix>``) if a loss is NaN
    or ±inf, e.g. ``training diverged at epoch 2, batch 14 (loss_1 nan): lower --lr``."""
    import math

    for name, value in losses.items():
        try:
            ok = math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DivergedError(f"{what} diverged {at} ({name} {value}): {fix}")


def check_finite_weights(weights: dict[str, object], what: str, at: str, fix: str) -> None:
    """Raise :class:`DivergedError` naming the first weight that holds a NaN or ±inf."""
    import numpy as np

    for name, value in weights.items():
        arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise DivergedError(f"{what} diverged {at} (weight {name} holds NaN or inf): {fix}")


class FirmwareError(EdgespError, RuntimeError):
    """A microcontroller firmware failed to build, crashed (fault), hung (timeout) or reported an error."""
