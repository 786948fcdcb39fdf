#!/usr/bin/env bash
# Create .venv with every pinned dependency. Idempotent: a stamp file records the hash of the pins,
# so a second run with unchanged pins returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3.11}
want=$(cat requirements.txt pyproject.toml scripts/setup_venv.sh scripts/patch_lava.py | sha256sum | cut -d' ' -f1)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$want" ]; then exit 0; fi
command -v "$PY" >/dev/null || { echo "error: $PY not found; install Python 3.11 (edgesp needs exactly 3.11)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, numpy; assert torch.__version__.startswith('2.13.0'), torch.__version__"
# lava-nc 0.10.0 declares python<3.11 but is pure Python; its declared deps are pinned in requirements.txt.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python lava-nc==0.10.0 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" scripts/patch_lava.py
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
echo "$want" > "$VENV/.stamp"
echo "edgesp: .venv ready"
