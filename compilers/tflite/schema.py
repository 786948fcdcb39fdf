"""Access to the TFLite flatbuffer schema (generated Python object API) without TensorFlow.

The generated schema ships inside ``ai_edge_litert`` (``schema_py_generated.py``, the official
``schema.fbs`` compiled by flatc). It is loaded as a plain module file so that importing it does not
load the LiteRT runtime; only the ``flatbuffers`` package is needed at compile time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from edgesp.errors import RuntimeMissingError

_MODULE = "edgesp_tflite_schema"


def load_schema() -> ModuleType:
    """The generated TFLite schema module (cached)."""
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeMissingError("the TFLite schema needs the ai-edge-litert package: run 'make setup'")
    path = Path(next(iter(spec.submodule_search_locations))) / "schema_py_generated.py"
    if not path.exists():
        raise RuntimeMissingError(f"{path} is missing (ai-edge-litert without its schema): reinstall ai-edge-litert")
    mspec = importlib.util.spec_from_file_location(_MODULE, path)
    assert mspec is not None and mspec.loader is not None
    module = importlib.util.module_from_spec(mspec)
    sys.modules[_MODULE] = module
    mspec.loader.exec_module(module)
    return module
