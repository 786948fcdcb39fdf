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
