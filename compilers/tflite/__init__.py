"""TFLite backend: lowers the SP update step and inference (:mod:`compilers.ir` programs) to one ``.tflite``
flatbuffer written directly (no TensorFlow), with the weights in resource variables; see
:mod:`compilers.tflite.compile` for the signatures; the loader is device-side, :mod:`firmware_sim.tflite_runtime`.

The compiler half is imported lazily so that loading a build on a device needs only an interpreter."""

from __future__ import annotations

from typing import Any


def compile_model(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`compilers.tflite.compile.compile_model`."""
    from compilers.tflite.compile import compile_model as _compile

    return _compile(*args, **kwargs)


def build_model(*args: Any, **kwargs: Any) -> bytes:
    """See :func:`compilers.tflite.compile.build_model`."""
    from compilers.tflite.compile import build_model as _build

    return _build(*args, **kwargs)


def export_inference(*args: Any, **kwargs: Any) -> dict[str, str]:
    """See :func:`compilers.tflite.compile.export_inference`."""
    from compilers.tflite.compile import export_inference as _export

    return _export(*args, **kwargs)


__all__ = ["build_model", "compile_model", "export_inference"]
