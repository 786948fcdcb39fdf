"""The mcu runtime on QEMU: the firmware matches the numpy reference (edgesp/int8.py) bit for bit, the Device
protocol, instruction counting, and one-line errors (does not fit, missing toolchain, crash, hang)."""

import shutil
import subprocess

import numpy as np
import pytest

from compilers import compile_model
from edgesp import int8
from edgesp.errors import FirmwareError, RuntimeMissingError, TargetError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from firmware_sim import Device
from firmware_sim import mcu_device as md
from targets import load_target


def _build(tmp_path, model, rule, digits, target="cortex-m7", **kw):
    shape = {"mlp": (64,), "cnn1d": (1, 64), "cnn2d": (1, 8, 8)}[model]
    spec = build_spec(model, shape, 10, **kw)
    out = tmp_path / f"{model}-{rule}"
    compile_model(spec, init_params(spec, 0), load_target(target), out, batch=1, on_device_rule=rule)
    return out


@pytest.mark.parametrize(
    "model,rule,kw,target",
    [
        ("mlp", "sigprop", {"width": 24}, "cortex-m7"),
        ("mlp", "bp", {"width": 24}, "cortex-m7"),
        ("cnn1d", "sigprop", {"channels": 4}, "cortex-m7"),
        ("cnn2d", "bp", {"channels": 4}, "cortex-m7"),
        ("mlp", "sigprop", {"width": 24}, "cortex-m55"),  # another core and board (mps3-an547): the same integers
    ],
)
def test_firmware_weights_equal_the_numpy_reference_byte_for_byte(tmp_path, digits, model, rule, kw, target):
    """N = 12 learning steps on QEMU vs edgesp.int8 on the host: every weight, bias and table entry identical
    (tolerance 0: both are integer programs), and the predictions before/after too."""
    dev = md.MCUDevice(_build(tmp_path, model, rule, digits, target, **kw))
    try:
        ref = int8.Int8Net(dev.plan, dev.net.state(), dev.step_count)
        n = 12
        x = dev._q(digits.x_train[:n].reshape(n, -1))
        y = digits.y_train[:n]
        xe = dev._q(digits.x_test[:40].reshape(40, -1))
        before, after = dev.run(xe, digits.y_test[:40], x, y)
        assert np.array_equal(before, ref.predict(xe))
        for i in range(n):
            (ref.sp_step if rule == "sigprop" else ref.bp_step)(x[i], y[i])
        got, want = dev.net.state(), ref.state()
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes(), k
        assert np.array_equal(after, ref.predict(xe))
        assert ref.step == dev.step_count == n
        with np.load(dev.build_dir / "state.npz") as z:
            # learning happened (the comparison above is not of two untouched copies)
            assert any(not np.array_equal(z[k], want[k].reshape(z[k].shape)) for k in want if k != "signal.bias")
        assert dev.last_stats["step_ticks"] > 0 and dev.last_stats["step_stack"] > 0
    finally:
        dev.close()


def test_device_protocol_and_parameter_round_trip(tmp_path, digits):
    dev = md.MCUDevice(_build(tmp_path, "mlp", "sigprop", digits, width=16))
    try:
        assert isinstance(dev, Device) and dev.batch == 1
        x, y = digits.x_train[:3].reshape(3, -1), digits.y_train[:3]
        p0 = dev.parameters()
        assert all(v.dtype == np.float32 for v in p0.values())
        dev.load_parameters({k: np.zeros_like(v) for k, v in p0.items()})
        assert np.array_equal(dev.predict(x).argmax(1), [0, 0, 0])  # all-zero logits: the first class
        dev.load_parameters(p0)
        dev.step(x, y)
        assert any(not np.array_equal(dev.parameters()[k], p0[k]) for k in p0)
        with pytest.raises(Exception, match="must hold integers"):
            dev.load_parameters({"head.bias": np.full(10, 0.5, np.float32)})
        with pytest.raises(Exception, match="not one of this build's"):
            dev.load_parameters({"head.weight": np.zeros((3, 3), np.float32)})
    finally:
        dev.close()


def _build_firmware(work):
    """Compile work/main.c with the build's start.c and link.ld into work/fw.elf (Cortex-M7, semihosting)."""
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m7", "-mthumb", "-O2", "-nostartfiles", "--specs=rdimon.specs"]
    subprocess.run(
        [*cmd, "-T", "link.ld", "start.c", "main.c", "-o", "fw.elf"], cwd=work, check=True, capture_output=True
    )


def _tiny_firmware(tmp_path, body: str):
    """fw.elf from a build's start.c/link.ld and a main of our own."""
    build = _build(tmp_path, "mlp", "sigprop", None, width=8)
    work = tmp_path / "fw"
    work.mkdir()
    for f in ("start.c", "link.ld"):
        shutil.copyfile(build / f, work / f)
    (work / "main.c").write_text("#include <stdint.h>\n#include <stdio.h>\n" + body)
    _build_firmware(work)
    return work


def test_instructions_per_systick_tick_is_40_under_icount(tmp_path):
    """A loop of exactly 10,000 × (98 nop + subs + bne) = 1,000,000 instructions reads 25,000 SysTick ticks."""
    work = _tiny_firmware(
        tmp_path,
        "#define CVR (*(volatile uint32_t *)0xE000E018u)\n"
        "int main(void) { *(volatile uint32_t *)0xE000E014u = 0xFFFFFFu; CVR = 0; "
        "*(volatile uint32_t *)0xE000E010u = 5u; uint32_t t0 = CVR;\n"
        '__asm volatile("mov r4, #10000\\n1:\\n.rept 98\\nnop\\n.endr\\nsubs r4, r4, #1\\nbne 1b\\n" ::: "r4", "cc");\n'
        'uint32_t t1 = CVR;\nprintf("STAT ticks %lu\\nSTAT done\\n", (unsigned long)((t0 - t1) & 0xFFFFFFu));\n'
        "return 0; }\n",
    )
    _, stats = md.run_qemu(work, "mps2-an500", b"", timeout=30)
    assert abs(stats["ticks"] * md.INSN_PER_TICK - 1_000_000) <= 2 * md.INSN_PER_TICK


def test_crashing_and_hanging_firmware_give_one_line_errors(tmp_path):
    work = _tiny_firmware(
        tmp_path, "int main(void) { void (*f)(void) = (void (*)(void))0xFFFFFFF1u; f(); return 0; }\n"
    )
    with pytest.raises(FirmwareError, match="hard fault") as e:
        md.run_qemu(work, "mps2-an500", b"", timeout=30)
    assert "\n" not in str(e.value)
    (work / "main.c").write_text('int main(void) { for (;;) { __asm volatile("nop"); } }\n')
    _build_firmware(work)
    with pytest.raises(FirmwareError, match="did not finish within 2 s"):
        md.run_qemu(work, "mps2-an500", b"", timeout=2)


def test_missing_toolchain_names_the_command(monkeypatch):
    monkeypatch.setattr(md.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeMissingError, match="apt-get install -y gcc-arm-none-eabi"):
        md.check_toolchain()


def test_a_model_over_the_sram_budget_is_refused_before_anything_is_written(tmp_path):
    spec = build_spec("mlp", (64,), 10, width=512, depth=2)  # ~300 KB of int8 weights
    out = tmp_path / "big"
    with pytest.raises(TargetError, match=r"SRAM needs [\d,]+ B .* of 262,144 B, flash needs") as e:
        compile_model(spec, init_params(spec, 0), load_target("cortex-m4"), out, batch=1)
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_linker_refuses_what_the_plan_let_through(tmp_path):
    """RAM LENGTH is the target's SRAM: shrink it below .data + .bss and the link fails with a one-line TargetError."""
    build = _build(tmp_path, "mlp", "sigprop", None, width=64)
    work = tmp_path / "w"
    work.mkdir()
    ld = (build / "link.ld").read_text()
    assert "LENGTH = 327680" in ld
    for f in ("model.h", "model.c", "main.c", "start.c"):
        shutil.copyfile(build / f, work / f)
    small = tmp_path / "small"
    small.mkdir()
    for f in ("model.h", "model.c", "main.c", "start.c"):
        shutil.copyfile(build / f, small / f)
    (small / "link.ld").write_text(ld.replace("LENGTH = 327680", "LENGTH = 16384"))
    with pytest.raises(TargetError, match="does not fit"):
        md.build_firmware(small, work, "cortex-m7")
