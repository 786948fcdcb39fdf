"""Microcontroller device (runtime ``mcu``): build a compiled int8 model's C firmware with arm-none-eabi-gcc and
run it on an emulated Cortex-M with qemu-system-arm (``-icount shift=0``: the virtual clock advances one
nanosecond per instruction, so counts are deterministic — a proxy, not cycles).

One QEMU run is one *job* (``job.bin`` → ``out.bin`` over semihosting file I/O, run in a private folder):

    job.bin  int32[8] header: magic 'ESP8', n_eval, n_train, flags (1 load parameters, 2 dump them), IN_SIZE,
             PARAM_BYTES, start step, 0; [parameter block]; n_eval × (int8 x[IN_SIZE], uint8 y);
             n_train × (int8 x[IN_SIZE], uint8 y)
    out.bin  n_eval predictions before training, n_eval after; [parameter block]
    stdout   ``STAT key value`` lines: step_ticks (SysTick, processor clock), step_stack / predict_stack (bytes,
             painted and scanned around the first step / prediction), peak_stack (painted at reset), heap

Instructions = SysTick ticks × ``INSN_PER_TICK`` (the mps2/mps3 CPU clock is 25 MHz: with -icount shift=0 one
tick = 40 ns = 40 instructions; checked by tests/firmware_sim/test_mcu_device.py against a counted loop).
A firmware that faults exits QEMU with status 1 (semihosting), a hung one is killed after ``timeout`` seconds:
both are one-line :class:`FirmwareError`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesp import int8
from edgesp.errors import CompileError, DataError, FirmwareError, RuntimeMissingError, TargetError
from edgesp.manifest import Manifest

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
APT = "sudo apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
MAGIC = 0x38505345
INSN_PER_TICK = 40
CFLAGS = ["-mthumb", "-O2", "-std=c99", "-Wall", "-ffunction-sections", "-fdata-sections"]
TIMEOUT_S = 120.0


def check_toolchain() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise RuntimeMissingError(f"{', '.join(missing)} not found: run 'make setup' as root, or '{APT}'")


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"{what} timed out") from None
    if r.returncode != 0:
        err = r.stderr.strip().splitlines()
        if any("does not fit the target's SRAM" in line or "will not fit in region" in line for line in err):
            line = next(x for x in err if "fit" in x)
            raise TargetError(f"the firmware does not fit: {line.split(': ', 1)[-1].strip()}")
        first = next((x for x in err if "error" in x.lower()), err[0] if err else f"exit {r.returncode}")
        raise FirmwareError(f"{what} failed: {first.strip()[:300]}")
    return r.stdout


def build_firmware(build_dir: Path, work: Path, cpu: str) -> Path:
    """Copy the sources into ``work`` and build ``fw.elf`` (as the build's Makefile does)."""
    check_toolchain()
    for f in ("model.h", "model.c", "main.c", "start.c", "link.ld"):
        shutil.copyfile(build_dir / f, work / f)
    cc = ["arm-none-eabi-gcc", f"-mcpu={cpu}", *CFLAGS]
    _run([*cc, "-c", "model.c", "-o", "model.o"], work, "compiling model.c")
    _run(
        [
            *cc,
            "-nostartfiles",
            "--specs=rdimon.specs",
            "-T",
            "link.ld",
            "-Wl,--gc-sections",
            "-Wl,-Map=fw.map",
            "start.c",
            "main.c",
            "model.o",
            "-o",
            "fw.elf",
        ],
        work,
        "linking the firmware",
    )
    return work / "fw.elf"


def section_sizes(path: Path) -> dict[str, int]:
    """{section: bytes} from ``arm-none-eabi-size -A``."""
    out = _run(["arm-none-eabi-size", "-A", str(path)], path.parent, "arm-none-eabi-size")
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = sizes.get(parts[0], 0) + int(parts[1])
    return sizes


def run_qemu(work: Path, machine: str, job: bytes, timeout: float = TIMEOUT_S) -> tuple[bytes, dict[str, int]]:
    """Run fw.elf on ``machine`` with ``job`` as job.bin; return (out.bin bytes, STAT values)."""
    (work / "job.bin").write_bytes(job)
    out_path = work / "out.bin"
    if out_path.exists():
        out_path.unlink()
    cmd = [
        "qemu-system-arm",
        "-M",
        machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        "shift=0",
        "-kernel",
        "fw.elf",
    ]
    proc = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise FirmwareError(f"the firmware did not finish within {timeout:.0f} s on {machine} (hung): killed") from None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if "FAULT" in stdout:
        raise FirmwareError(f"the firmware crashed on {machine} (hard fault): re-compile; if it persists, report it")
    errs = [line[6:] for line in stdout.splitlines() if line.startswith("ERROR ")]
    if errs:
        raise FirmwareError(f"the firmware reported: {errs[0]}")
    if proc.returncode != 0 or "STAT done" not in stdout:
        why = (stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        raise FirmwareError(f"the firmware failed on {machine}: {why[:200]}")
    stats: dict[str, int] = {}
    for m in re.finditer(r"^STAT (\w+)((?: \d+)+)$", stdout, re.M):
        vals = [int(v) for v in m.group(2).split()]
        stats[m.group(1)] = (vals[0] << 32) + vals[1] if len(vals) == 2 else vals[0]
    return (out_path.read_bytes() if out_path.exists() else b""), stats


def _spec_plan(m: Manifest) -> tuple[Any, int8.Plan]:
    spec = m.model_spec()
    s = m.backend.get("int8")
    if not isinstance(s, dict):
        raise CompileError(f"{m.target}: the manifest lacks backend.int8: re-run 'edgesp compile'")
    try:
        return spec, int8.plan(spec, list(s["shifts"]), int8.Int8Config(**s["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CompileError(
            f"{m.target}: the manifest's int8 settings are not this edgesp's ({e}): re-run 'edgesp compile'"
        ) from None


class MCUDevice:
    """A compiled mcu build on QEMU. Every call is one firmware run that starts from the state held here
    (parameters loaded over semihosting) and writes the learned state back. Parameters are exchanged as
    float32 arrays holding the int8 model's integers (weights in ±127, biases in ±2^24, the table in 0…127)."""

    def __init__(self, build_dir: str | Path, timeout: float = TIMEOUT_S) -> None:
        self.build_dir = Path(build_dir)
        self.manifest = Manifest.read(self.build_dir)
        if self.manifest.runtime != "mcu":
            raise CompileError(f"{self.build_dir} was compiled for {self.manifest.runtime}, not mcu")
        self.spec, self.plan = _spec_plan(self.manifest)
        self.batch = 1
        self.timeout = timeout
        self.target = self.manifest.target_description.get("mcu", {})
        with np.load(self.build_dir / self.manifest.artifacts["state"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self.step_count = int(arrays.pop("step"))
        self.net = int8.Int8Net(self.plan, arrays, self.step_count)  # holds the state (and checks its ranges)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgesp-mcu-")
        self.work = Path(self._tmp.name)
        self.elf = build_firmware(self.build_dir, self.work, str(self.target["cpu"]))
        self.last_stats: dict[str, int] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    # -- the job protocol
    def _param_block(self) -> bytes:
        st = self.net.state()
        return b"".join(
            np.ascontiguousarray(st[name].astype("<i1" if dt == "int8" else "<i4")).tobytes()
            for name, dt in self.manifest.backend["param_order"]
        )

    def _read_params(self, blob: bytes) -> None:
        st, at = {}, 0
        shapes = {k: v.shape for k, v in self.net.state().items()}
        for name, dt in self.manifest.backend["param_order"]:
            n = int(np.prod(shapes[name]))
            size = n * (1 if dt == "int8" else 4)
            st[name] = np.frombuffer(blob[at : at + size], "<i1" if dt == "int8" else "<i4").reshape(shapes[name])
            at += size
        st["signal.bias"] = np.zeros(shapes["signal.bias"], np.int32)
        self.net = int8.Int8Net(self.plan, st, self.step_count)

    def run(self, xe: np.ndarray, ye: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One firmware run: predict xe, learn from (xt, yt) one sample per step, predict xe again; the state
        here is loaded first and replaced by the learned one. Inputs are int8 samples (flat)."""
        in_size = self.plan.blocks[0].in_size
        pb = self._param_block()
        hdr = struct.pack("<8i", MAGIC, len(xe), len(xt), 3, in_size, len(pb), self.step_count & 0x7FFFFFFF, 0)

        def samples(x: np.ndarray, y: np.ndarray) -> bytes:
            rec = np.zeros((len(x), in_size + 1), np.uint8)
            rec[:, :in_size] = np.asarray(x, np.int8).reshape(len(x), in_size).view(np.uint8)
            rec[:, in_size] = np.asarray(y, np.int64)
            return rec.tobytes()

        out, stats = run_qemu(
            self.work, str(self.target["qemu_machine"]), hdr + pb + samples(xe, ye) + samples(xt, yt), self.timeout
        )
        n = len(xe)
        if len(out) != 2 * n + len(pb):
            raise FirmwareError(f"the firmware wrote {len(out)} bytes to out.bin, expected {2 * n + len(pb)}")
        self.step_count += len(xt)
        self._read_params(out[2 * n :])
        self.last_stats = stats
        return np.frombuffer(out[:n], np.uint8).astype(np.int64), np.frombuffer(out[n : 2 * n], np.uint8).astype(
            np.int64
        )

    def _q(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return int8.quantise_input(x.reshape(len(x), -1))

    def _y(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y).astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= self.spec.num_classes):
            raise DataError(f"labels must be in 0…{self.spec.num_classes - 1}")
        return y

    # -- the Device protocol
    def step(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> dict[str, float]:
        """Learn from every sample of (x, y) in order (the firmware learns one sample per step). ``lr`` must be
        None: the int8 rule's rates are compiled shifts."""
        if lr is not None:
            raise DataError("the mcu firmware's learning rates are compiled power-of-two shifts: omit --lr")
        e = np.zeros((0, self.plan.blocks[0].in_size), np.int8)
        self.run(e, np.zeros(0, np.int64), self._q(x), self._y(y))
        return {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One-hot of the firmware's prediction (the firmware reports argmax only)."""
        pred, _ = self.run(self._q(x), np.zeros(len(x), np.int64), np.zeros((0, 1), np.int8), np.zeros(0, np.int64))
        return np.eye(self.spec.num_classes, dtype=np.float32)[pred]

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x).argmax(1) == self._y(y))) if len(y) else float("nan")

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in self.net.state(self.spec.param_shapes()).items()}

    def load_parameters(self, params: dict[str, np.ndarray]) -> None:
        shapes = self.spec.param_shapes()
        cur = self.net.state(shapes)
        for name, value in params.items():
            a = np.asarray(value)
            if name not in shapes or a.shape != tuple(shapes[name]):
                raise DataError(f"parameter {name!r} of shape {a.shape} is not one of this build's {sorted(shapes)}")
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise DataError(f"parameter {name!r} must hold integers (the int8 model's units)")
            cur[name] = a.astype(np.int64)
        self.net = int8.Int8Net(self.plan, cur, self.step_count)


DEVICE = MCUDevice


def _json_stats(stats: dict[str, int], n_steps: int) -> dict[str, Any]:
    ticks = stats.get("step_ticks", 0)
    return {
        "instructions_per_step": (ticks * INSN_PER_TICK / n_steps) if n_steps else None,
        "step_stack_bytes": stats.get("step_stack"),
        "predict_stack_bytes": stats.get("predict_stack"),
        "peak_stack_bytes": stats.get("peak_stack"),
        "heap_bytes": stats.get("heap"),
    }


def simulate(
    build_dir: Path,
    dataset: Any,
    steps: int = 200,
    batch: int | None = None,
    seed: int = 0,
    out_png: Path | None = None,
    progress: bool = True,
    continual: bool = False,
    lr: float | None = None,
    save_state: Path | None = None,
    chunks: int = 4,
    **options: Any,
) -> dict[str, Any]:
    """On-device learning on QEMU: ``steps`` training samples (seeded shuffle, one per step) in ``chunks``
    firmware runs, each predicting the whole test split before and after its steps (the curve)."""
    from tqdm import tqdm

    from edgesp.atomic import check_out_file, write_bytes
    from edgesp.data import adapt_inputs
    from edgesp.train import plot_curve

    if options:
        raise DataError(f"the mcu runtime has no option {sorted(options)[0]!r}")
    if continual:
        raise DataError("continual stages are not implemented for the mcu runtime: omit --continual")
    if lr is not None:
        raise DataError("the mcu firmware's learning rates are compiled power-of-two shifts: omit --lr")
    if batch not in (None, 1):
        raise DataError(f"the mcu firmware learns one sample per step: omit --batch (got {batch})")
    if steps < 1:
        raise DataError(f"steps must be >= 1, got {steps}")
    if save_state is not None:
        check_out_file(save_state, "--save-state")
    dev = MCUDevice(build_dir)
    try:
        spec = dev.spec
        if dataset.num_classes > spec.num_classes:
            raise DataError(
                f"{dataset.name} has {dataset.num_classes} classes but the model predicts {spec.num_classes}"
            )
        xtr = dev._q(adapt_inputs(dataset.x_train, spec.input_shape))
        xte = dev._q(adapt_inputs(dataset.x_test, spec.input_shape))
        ytr, yte = np.asarray(dataset.y_train, np.int64), np.asarray(dataset.y_test, np.int64)
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(xtr)) for _ in range(steps // len(xtr) + 1)])[:steps]
        parts = np.array_split(order, min(chunks, steps))
        curve_steps, curve_acc, ticks, wall = [0], [], 0, 0.0
        bar = tqdm(total=steps, disable=not progress, unit="step", desc="mcu learning (QEMU)")
        done = 0
        for part in parts:
            t0 = time.perf_counter()
            before, after = dev.run(xte, yte, xtr[part], ytr[part])
            wall += time.perf_counter() - t0
            if not curve_acc:
                curve_acc.append(float(np.mean(before == yte)))
            done += len(part)
            curve_steps.append(done)
            curve_acc.append(float(np.mean(after == yte)))
            ticks += dev.last_stats.get("step_ticks", 0)
            bar.update(len(part))
        bar.close()
        stats = _json_stats({**dev.last_stats, "step_ticks": ticks}, steps)
        res = {
            "runtime": "mcu",
            "target": dev.manifest.target,
            "machine": dev.target.get("qemu_machine"),
            "rule": dev.manifest.on_device_rule,
            "accuracy_before": curve_acc[0],
            "accuracy_after": curve_acc[-1],
            "steps": steps,
            "batch": 1,
            "samples_per_second": steps / wall if wall else 0.0,
            "curve": {"steps": curve_steps, "accuracy": curve_acc},
            **stats,
            "note": "instructions from SysTick under -icount shift=0 (1 tick = 40 instructions); wall-clock rate is "
            "QEMU's on this host, not the device's",
        }
        if out_png is not None:
            plot_curve(
                out_png,
                curve_steps,
                {"test accuracy": curve_acc},
                "on-device steps",
                f"int8 {dev.manifest.on_device_rule} on {dev.manifest.target} (QEMU)",
            )
        if save_state is not None:
            import io

            buf = io.BytesIO()
            np.savez(buf, **dev.parameters())
            write_bytes(save_state, buf.getvalue())
        return res
    finally:
        dev.close()


def measure(build_dir: Path, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Build and run a short job (2 steps, 1 prediction) on random samples; return measured memory and time."""
    dev = MCUDevice(build_dir, timeout)
    try:
        rng = np.random.default_rng(0)
        n = dev.plan.blocks[0].in_size
        x = rng.integers(-64, 64, size=(3, n)).astype(np.int8)
        y = rng.integers(0, dev.spec.num_classes, size=3)
        dev.run(x[:1], y[:1], x[1:], y[1:])
        stats = dev.last_stats
        fw = section_sizes(dev.elf)
        mo = section_sizes(dev.work / "model.o")
        model_data = sum(v for k, v in mo.items() if k.startswith(".data"))
        model_bss = sum(v for k, v in mo.items() if k.startswith(".bss"))
        data, bss = fw.get(".data", 0), fw.get(".bss", 0)
        flash = (
            sum(
                v
                for k, v in fw.items()
                if k
                in (".isr_vector", ".text", ".ARM.exidx", ".ARM.extab", ".init_array", ".fini_array", ".preinit_array")
            )
            + data
        )
        step_stack, pred_stack = stats.get("step_stack", 0), stats.get("predict_stack", 0)
        return {
            "rule": dev.manifest.on_device_rule,
            "data_bytes": data,
            "bss_bytes": bss,
            "flash_bytes": flash,
            "peak_stack_bytes": stats.get("peak_stack", 0),
            "heap_bytes": stats.get("heap", 0),
            "sram_total_bytes": data + bss + stats.get("peak_stack", 0) + stats.get("heap", 0),
            "learning_static_bytes": model_data + model_bss,
            "learning_weights_bytes": model_data,
            "learning_buffers_bytes": model_bss,
            "step_stack_bytes": step_stack,
            "predict_stack_bytes": pred_stack,
            "learning_sram_bytes": model_data + model_bss + step_stack,
            "transient_bytes": model_bss + step_stack,
            "libc_sram_bytes": (data - model_data) + (bss - model_bss) + stats.get("heap", 0),
            "instructions_per_step": stats.get("step_ticks", 0) * INSN_PER_TICK / 2,
            "planned_learning_bytes": dev.manifest.planned_memory.update_step_peak_bytes,
        }
    finally:
        dev.close()


# RAM the emulated boards really have at ram_origin (QEMU): a model that exceeds the target's budget is measured in
# a copy of the target with this much SRAM, then reported as not fitting
BOARD_RAM = {"mps2-an385": 4 << 20, "mps2-an386": 4 << 20, "mps2-an500": 4 << 20, "mps3-an547": 512 << 10}


def compile_measurable(build_dir: Path, rule: str, out_dir: Path) -> None:
    """Compile the same int8 model with ``rule`` (sigprop/bp) into ``out_dir`` for a copy of the target whose
    SRAM is the board's (so a model over the target's budget can still be built and measured)."""
    from compilers import backend_module
    from targets import Target

    m = Manifest.read(build_dir)
    spec, plan = _spec_plan(m)
    td = dict(m.target_description)
    mcu = dict(td["mcu"])
    mcu["sram_bytes"] = max(int(mcu["sram_bytes"]), BOARD_RAM.get(str(mcu["qemu_machine"]), 0))
    target = Target(**{**td, "mcu": mcu, "name": td["name"] + "-measure"})
    with np.load(build_dir / m.artifacts["state"], allow_pickle=False) as z:
        params = {k: z[k].astype(np.float32) for k in z.files if k != "step"}
    spec8 = spec.replace_rule(params={**spec.rule.params, int8.INT8_KEY: int8.settings_dict(plan)})
    backend_module("mcu").compile_model(spec8, params, target, out_dir, 1, on_device_rule=rule, finetune=False)


def profile(build_dir: Path, batch: int | None = None, **options: Any) -> dict[str, Any]:
    """Measured SRAM and flash of this build and of the same model's other rule (SP ↔ BP), side by side."""
    if options:
        raise DataError(f"the mcu runtime has no option {sorted(options)[0]!r}")
    m = Manifest.read(build_dir)
    sram = int(m.target_description["mcu"]["sram_bytes"])
    mine = measure(build_dir)
    other_rule = "bp" if m.on_device_rule == "sigprop" else "sigprop"
    with tempfile.TemporaryDirectory(prefix="edgesp-mcu-other-") as tmp:
        compile_measurable(build_dir, other_rule, Path(tmp) / "build")
        other = measure(Path(tmp) / "build")
    for r in (mine, other):
        r["fits_target"] = r["sram_total_bytes"] <= sram
        r["measured_peak_bytes"] = r["learning_sram_bytes"]
        r["planned_peak_bytes"] = r["planned_learning_bytes"]
    sp, bp = (mine, other) if m.on_device_rule == "sigprop" else (other, mine)
    return {
        "runtime": "mcu",
        "target": m.target,
        "batch": 1,
        "sram_budget_bytes": sram,
        "flash_budget_bytes": int(m.target_description["mcu"]["flash_bytes"]),
        "inference": {
            "measured_peak_bytes": mine["learning_weights_bytes"] + mine["predict_stack_bytes"],
            "planned_peak_bytes": m.planned_memory.inference_peak_bytes,
        },
        "update_step": sp,
        "bp_baseline": bp,
        "note": "learning_sram = model.o .data (weights) + .bss (buffers) + the learning step's painted stack; "
        "sram_total = fw.elf .data + .bss + peak stack + heap (libc included); libc_sram = the rest",
    }
