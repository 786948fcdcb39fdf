"""Make lava-nc 0.10.0 importable on Python 3.11 (idempotent).

Python 3.11's dataclasses reject unhashable dataclass instances as field defaults
(``x: ByteEncoder = ByteEncoder()`` in ``lava/magma/compiler/var_model.py``). We rewrite
those defaults to ``field(default_factory=ByteEncoder)``, which is what Lava's own later
sources do. Nothing else in Lava is touched.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys


def main() -> int:
    spec = importlib.util.find_spec("lava")
    if spec is None or not spec.submodule_search_locations:
        print("error: lava-nc is not installed in this environment", file=sys.stderr)
        return 1
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "magma/compiler/var_model.py"
    text = path.read_text()
    new = text.replace(": ByteEncoder = ByteEncoder()", ": ByteEncoder = field(default_factory=ByteEncoder)")
    new = new.replace(
        "from dataclasses import dataclass, InitVar\n", "from dataclasses import dataclass, InitVar, field\n"
    )
    if new != text:
        path.write_text(new)
        print(f"patched {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
