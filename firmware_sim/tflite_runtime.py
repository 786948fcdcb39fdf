"""Load a compiled ``.tflite`` (signatures ``init``/``step``/``get``/``infer``) in either interpreter.

Interpreters: ``"litert"`` (ai-edge-litert 2.3, the maintained one; works with numpy 1 and 2) and
``"tflite_runtime"`` (tflite-runtime 2.14; needs numpy < 2). Kernel sets (``resolver``): ``"auto"``
(builtin kernels + the default XNNPACK delegate), ``"builtin"`` (builtin optimized kernels, no delegate),
``"reference"`` (reference kernels). The weights live in the interpreter's resource variables between
calls; ``get``/``step``/``infer`` before ``init`` raise instead of reading uninitialised memory
(ai-edge-litert returns garbage silently there, tflite-runtime fails with "READ_VARIABLE failed").
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.errors import CompileError, DataError, RuntimeMissingError

INTERPRETERS = {"litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}
RESOLVERS = {"auto": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}
DEFAULT_INTERPRETER = "litert"


def interpreter_module(name: str) -> Any:
    if name not in INTERPRETERS:
        raise CompileError(f"unknown TFLite interpreter {name!r}; choose one of {', '.join(INTERPRETERS)}")
    if name == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:
        raise RuntimeMissingError(
            f"tflite-runtime 2.14 does not work with numpy {np.__version__} (needs numpy < 2): "
            "use the litert interpreter (ai-edge-litert)"
        )
    try:
        return importlib.import_module(INTERPRETERS[name])
    except ImportError as e:
        raise RuntimeMissingError(f"the {name} interpreter cannot be imported ({e}): run 'make setup'") from None


class TFLiteModel:
    """One interpreter over one model file; the signatures present become methods."""

    def __init__(
        self,
        model: str | Path | bytes,
        interpreter: str = DEFAULT_INTERPRETER,
        threads: int = 1,
        resolver: str = "auto",
    ) -> None:
        mod = interpreter_module(interpreter)
        if resolver not in RESOLVERS:
            raise CompileError(f"unknown TFLite kernel set {resolver!r}; choose one of {', '.join(RESOLVERS)}")
        kind = getattr(mod.OpResolverType, RESOLVERS[resolver])
        kwargs: dict[str, Any] = {"num_threads": threads, "experimental_op_resolver_type": kind}
        if isinstance(model, bytes):
            kwargs["model_content"] = model
            where = "<bytes>"
        else:
            path = Path(model)
            if not path.exists():
                raise CompileError(f"{path} does not exist: re-run 'edgesp compile'")
            kwargs["model_path"] = str(path)
            where = str(path)
        try:
            self.interpreter = mod.Interpreter(**kwargs)
            self.signatures = self.interpreter.get_signature_list()
            self._runners = {k: self.interpreter.get_signature_runner(k) for k in self.signatures}
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CompileError(f"{where} is not a loadable TFLite model ({msg}): re-run 'edgesp compile'") from None
        self.name = interpreter
        self.initialised = "init" not in self.signatures
        self._input_details = {k: r.get_input_details() for k, r in self._runners.items()}

    # ------------------------------------------------------------------ calls
    def run(self, key: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if key not in self._runners:
            raise CompileError(f"the model has no '{key}' signature (has {', '.join(self.signatures)})")
        details = self._input_details[key]
        if set(feeds) != set(details):
            raise DataError(f"{key}() takes inputs {sorted(details)}, got {sorted(feeds)}")
        args = {}
        for name, d in details.items():
            a = np.asarray(feeds[name])
            want = tuple(int(s) for s in d["shape"])
            if a.shape != want:
                raise DataError(f"{key}(): input '{name}' has shape {a.shape}, the model was compiled for {want}")
            args[name] = np.ascontiguousarray(a, dtype=d["dtype"])
        try:
            out = self._runners[key](**args)
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CompileError(f"the TFLite interpreter failed in {key}(): {msg}") from None
        return {k: np.array(v, copy=True) for k, v in out.items()}

    def _guard(self, key: str) -> None:
        if not self.initialised:
            raise CompileError(
                f"{key}() before init(): the variables hold uninitialised memory; call init() "
                "with the initial state (state.npz) first"
            )

    def init(self, states: Mapping[str, np.ndarray]) -> None:
        """Assign every resource variable (the ``init`` signature)."""
        self.run("init", {k: np.asarray(v, np.float32) for k, v in states.items()})
        self.initialised = True

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, np.ndarray]:
        """One on-device update: reads the variables, returns the losses and writes the new states."""
        self._guard("step")
        return self.run("step", {"x": x, "y": np.asarray(y, np.int32), "lr": np.asarray(lr, np.float32)})

    def get(self) -> dict[str, np.ndarray]:
        """Every state variable's current value."""
        self._guard("get")
        return self.run("get", {})

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits for one batch (the variables' current parameters)."""
        self._guard("infer")
        return self.run("infer", {"x": x})["logits"]

    def input_shape(self, key: str, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self._input_details[key][name]["shape"])
