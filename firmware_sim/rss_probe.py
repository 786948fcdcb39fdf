"""Peak-RSS probe run in a fresh process, so earlier allocations of the caller cannot hide growth.

    python -m firmware_sim.rss_probe BUILD {update|inference|bp}

Prints one JSON object: ``rss_increase_bytes`` = VmHWM − VmRSS(before) around the measured call, after
releasing freed heap pages to the OS (``malloc_trim``) and resetting the peak mark. ``update``/``inference``:
the first run after loading (ORT's arena grows to the step's working set); ``bp``: a steady-state torch BP
step (after a warm-up step that allocates Adam's state).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    build, mode = Path(argv[0]), argv[1]
    from firmware_sim.memory import bp_training_memory, peak_rss_increase
    from firmware_sim.memory import release_freed_heap as _trim
    from firmware_sim.onnx_device import OrtDevice

    dev = OrtDevice(build)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((dev.batch, *dev.spec.input_shape)).astype(np.float32)
    y = rng.integers(0, dev.spec.num_classes, dev.batch)
    if mode == "bp":
        params = dev.parameters()
        spec = dev.spec
        del dev
        res = bp_training_memory(spec, params, len(x), before=_trim)
        out = {"rss_increase_bytes": res["measured_peak_bytes"]}
    else:
        _trim()
        fn = (lambda: dev.step(x, y)) if mode == "update" else (lambda: dev.predict(x))
        rss, _ = peak_rss_increase(fn)
        out = {"rss_increase_bytes": rss}
    print(json.dumps(out))
    return 0


def measure(build: Path, mode: str) -> int | None:
    """Run the probe in a fresh process (this installation's module, never a ``firmware_sim/rss_probe.py`` of
    the current directory: :func:`firmware_sim.module_command`); returns the RSS increase in bytes."""
    import subprocess

    from edgesp.errors import CompileError
    from firmware_sim import module_command

    cmd = module_command("firmware_sim.rss_probe", str(Path(build).resolve()), mode)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit code {r.returncode}"
        raise CompileError(f"memory measurement '{mode}' failed ({tail[:200]}): re-run 'edgesp profile'")
    v = json.loads(r.stdout.strip().splitlines()[-1])["rss_increase_bytes"]
    return None if v is None else int(v)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
