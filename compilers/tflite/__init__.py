"""TFLite backend: lowers the SP update step and inference (:mod:`compilers.ir` programs) to one ``.tflite``
flatbuffer written directly (no TensorFlow), with the weights in resource variables; see
:mod:`compilers.tflite.compile` for the signatures and :mod:`compilers.tflite.runtime` for the loader."""

from compilers.tflite.compile import build_model, compile_model

__all__ = ["build_model", "compile_model"]
