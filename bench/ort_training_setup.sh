#!/usr/bin/env bash
# Create .venv-ort-training/ for bench/ort_training_bp.py (the BP baseline in onnxruntime-training).
# Separate from .venv: onnxruntime-training-cpu ships its own `onnxruntime/` package and would overwrite
# onnxruntime 1.32; it needs onnx 1.16.2 (newer onnx writes IR versions that ORT 1.19 rejects).
# Idempotent: a stamp file records the hash of the pins below, so a second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-ort-training
PY=${PYTHON:-python3.11}
PINS=(
  torch==2.13.0 numpy==1.26.4 onnx==1.16.2 onnxruntime-training-cpu==1.19.2
  # transitive dependencies, pinned to the versions resolved on 2026-11-28
  protobuf==7.36.2 flatbuffers==25.12.19 packaging==26.4 sympy==1.14.0 mpmath==1.3.0
  Cerberus==1.3.8 h5py==3.16.0 filelock==4.3.1 fsspec==2026.9.0 Jinja2==3.1.6 MarkupSafe==3.0.4
  networkx==3.6.1 typing_extensions==4.16.0
)
want=$(printf '%s\n' "${PINS[@]}" | cat - bench/ort_training_setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$want" ]; then exit 0; fi
command -v "$PY" >/dev/null || { echo "error: $PY not found; install Python 3.11 (the cp311 wheel needs it)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}" 2>&1 \
  | grep -v "^WARNING: Location" || true
"$VENV/bin/python" - <<'PY'
import onnx, onnxruntime, torch, numpy
from onnxruntime.training import artifacts  # noqa: F401
from onnxruntime.training.api import CheckpointState, Module, Optimizer  # noqa: F401
assert onnxruntime.__version__ == "1.19.2", onnxruntime.__version__
assert onnx.__version__ == "1.16.2", onnx.__version__
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert numpy.__version__ == "1.26.4", numpy.__version__
PY
echo "$want" > "$VENV/.stamp"
echo "ort-training: $VENV ready (onnxruntime-training 1.19.2, onnx 1.16.2, torch 2.13.0)"
