# edgesp: two commands on a fresh machine.
#   make demo   set up .venv, then train -> compile -> simulate -> profile on the embedded digits set
#   make test   set up .venv, then run the test suite
PY := .venv/bin/python
.PHONY: setup demo demo-tflite demo-lava test lint bench bench-ort-training clean

setup:
	@bash scripts/setup_venv.sh
	@bash scripts/setup_mcu_toolchain.sh

demo: setup
	$(PY) -m edgesp demo --out build/demo

demo-tflite: setup
	$(PY) -m edgesp demo --out build/demo-tflite --target edge-cpu-tflite

demo-lava: setup
	$(PY) -m edgesp demo --out build/demo-lava --target lava-cpu

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2 tests

bench: setup
	$(PY) bench/ondevice.py
	$(PY) bench/ondevice.py --optimizer sgd

bench-ort-training:
	bash bench/ort_training_setup.sh
	.venv-ort-training/bin/python bench/ort_training_bp.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build .pytest_cache
