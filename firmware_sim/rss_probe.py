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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
