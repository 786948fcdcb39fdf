"""The cortex-m targets and the [mcu] table's checks."""

import pytest

from edgesp.errors import TargetError
from targets import Target, builtin_targets, load_target


def test_builtin_cortex_targets():
    t = builtin_targets()
    assert {n: t[n].mcu["qemu_machine"] for n in ("cortex-m7", "cortex-m4", "cortex-m55")} == {
        "cortex-m7": "mps2-an500",
        "cortex-m4": "mps2-an386",
        "cortex-m55": "mps3-an547",
    }
    m7 = load_target("cortex-m7")
    assert m7.runtime == "mcu" and m7.mcu["sram_bytes"] == 320 * 1024 and m7.mcu["flash_bytes"] == 1 << 20
    assert load_target("cortex-m4").mcu["sram_bytes"] == 256 * 1024


@pytest.mark.parametrize(
    "runtime,mcu,match",
    [
        ("mcu", {}, "lacks cpu"),
        ("onnxruntime", {"cpu": "cortex-m7"}, 'needs runtime = "mcu"'),
        ("mcu", {**load_target("cortex-m7").mcu, "ram": 1}, "unknown \\[mcu\\] key 'ram'"),
        ("mcu", {**load_target("cortex-m7").mcu, "sram_bytes": True}, "sram_bytes must be an integer"),
        ("mcu", {**load_target("cortex-m7").mcu, "cpu": "m7; rm -rf /"}, "plain name"),
    ],
)
def test_bad_mcu_tables_are_one_line_errors(runtime, mcu, match):
    with pytest.raises(TargetError, match=match):
        Target(name="x", runtime=runtime, mcu=mcu)
