"""On-device loop on Lava: compile -> simulate -> profile for both lava targets (tiny nets, few runs)."""

from __future__ import annotations

import pytest

from compilers import compile_model
from edgesp.data import Dataset
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.spec import RuleSpec, TemporalSpec
from firmware_sim import lava_device, simulator_module
from targets import load_target


@pytest.fixture(scope="module")
def small_digits(digits):
    return Dataset(
        "digits-small",
        digits.x_train[:60],
        digits.y_train[:60],
        digits.x_test[:20],
        digits.y_test[:20],
        digits.num_classes,
    )


def _build(tmp_path, target: str):
    spec = build_spec(
        "snn",
        (1, 8, 8),
        10,
        width=16,
        depth=1,
        rule=RuleSpec(name="sp-voltage"),
        temporal=TemporalSpec(time_steps=4, encoding="direct"),
    )
    compile_model(spec, init_params(spec, 0), load_target(target), tmp_path, 1)
    return tmp_path


@pytest.mark.parametrize("target", ["lava-cpu", "loihi2"])
def test_simulate_streams_samples_and_learns_on_device(tmp_path, small_digits, target):
    build = _build(tmp_path, target)
    assert simulator_module("lava") is lava_device
    png = tmp_path / "curve.png"
    r = lava_device.simulate(build, small_digits, 40, None, 0, png, False, curve_points=2, curve_eval=10)
    for k in ("accuracy_before", "accuracy_after", "steps", "samples_per_second", "curve", "timesteps_per_second"):
        assert k in r
    assert 0.0 <= r["accuracy_before"] <= 1.0 and 0.0 <= r["accuracy_after"] <= 1.0
    assert r["steps"] == 40
    # eval 20 + train 40 + curve 10 + eval 20 samples, T=4 steps each, + 2 steps of pipeline latency
    assert r["timesteps"] == (20 + 40 + 10 + 20) * 4 + 2
    assert r["weights_changed"] and r["samples_per_second"] > 0
    # default spec: hidden placement, learned signal -> the injected table moved during the run
    assert r["signal_placement"] == "hidden" and r["signal_learned"] and r["signal_changed"]
    assert [p["train_samples"] for p in r["curve"]] == [0, 20, 40]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_simulate_without_learning_keeps_accuracy_and_weights(tmp_path, small_digits):
    build = _build(tmp_path, "lava-cpu")
    r = lava_device.simulate(build, small_digits, 20, None, 0, None, False, curve_points=1, learning=False)
    assert not r["weights_changed"] and not r["signal_changed"]
    assert r["accuracy_before"] == r["accuracy_after"]  # same network, same test samples, no learning


def test_profile_reports_per_core_memory_and_measured_peak(tmp_path):
    build = _build(tmp_path, "loihi2")
    p = lava_device.profile(build, None, samples=3)
    assert p["cores_used"] == 2 and len(p["per_core"]) == 2
    assert p["per_core"][0]["synapses"] == 65 * 16 and p["per_core"][0]["compartments"] == 16 * 11
    for key in ("inference", "update_step"):
        assert p[key]["measured_peak_bytes"] > 10 * 2**20  # Python worker processes, tens of MiB each
        assert p[key]["planned_peak_bytes"] == p["planned_memory"]["total_bytes"]
        assert p[key]["worker_processes"] >= 5
    assert "bp_baseline" in p


def test_ctrl_c_to_the_process_group_stops_the_runtime(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to every process of the group (host and Lava workers): the host must
    get KeyboardInterrupt, stop the runtime and leave no worker behind (Lava 0.10 hangs if a worker dies)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    build = _build(tmp_path, "lava-cpu")
    code = (
        "import sys\n"
        "from firmware_sim.lava.network import LavaSession, prepare_inputs\n"
        "from compilers.lava.network_desc import load_netdesc\n"
        "from edgesp.manifest import Manifest\n"
        "import numpy as np\n"
        f"b = {str(build)!r}\n"
        "desc = load_netdesc(b, Manifest.read(b))\n"
        "x = prepare_inputs(desc, np.zeros((5000, 64)))\n"
        "def tick(s):\n"
        "    print('running', flush=True)\n"
        "with LavaSession(desc, x, np.zeros(5000, int), np.ones(5000, bool)) as s:\n"
        "    s.run_all(40, tick)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=root,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "running"
        group = os.getpgid(proc.pid)
        os.killpg(group, signal.SIGINT)
        proc.wait(timeout=30)
        err = proc.stderr.read()
        assert "KeyboardInterrupt" in err, f"exit code {proc.returncode}, stderr {err!r}"
        for _ in range(50):  # multiprocessing's resource tracker exits shortly after its parent
            left = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
            if not left:
                break
            time.sleep(0.2)
        assert left == []
    finally:
        if proc.poll() is None:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)


def test_sigterm_to_edgesp_simulate_stops_the_lava_workers(tmp_path):
    """``kill -TERM`` on the host process of ``edgesp simulate`` (not its group): the CLI turns SIGTERM into an
    exception, the runtime is stopped in ``finally``, no Lava worker is left behind, exit code 143 (issue 12)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    build = _build(tmp_path, "lava-cpu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesp", "simulate", str(build), "--steps", "100000", "--quiet"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    group = os.getpgid(proc.pid)
    try:
        for _ in range(300):  # wait until the runtime's worker processes exist
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            if len(kids) >= 3:
                break
            time.sleep(0.1)
        assert len(kids) >= 3, "the Lava runtime did not start"
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        err = proc.stderr.read()
        assert proc.returncode == 143 and "terminated" in err, (proc.returncode, err[-2000:])
        for _ in range(50):
            left = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
            if not left:
                break
            time.sleep(0.2)
        assert left == []
    finally:
        if proc.poll() is None or subprocess.run(["pgrep", "-g", str(group)], capture_output=True).stdout:
            os.killpg(group, signal.SIGKILL)


def test_divergence_on_lava_is_one_line_and_writes_nothing(tmp_path, digits):
    """The divergence policy of every runtime (issue 12): lr 1000 drives the float weights to inf; simulate stops
    with one line naming the fix and writes no curve and no state."""
    from edgesp.errors import DataError
    from firmware_sim.lava_device import simulate

    spec = build_spec("snn", (64,), 10, width=16, depth=2, rule=RuleSpec(name="sp-voltage"), temporal=TemporalSpec())
    build = tmp_path / "b"
    compile_model(spec, init_params(spec, 0), load_target("lava-cpu"), build, 1)
    with pytest.raises(DataError, match=r"diverged on Lava .* lower the learning rate") as e:
        simulate(build, digits, steps=100, lr=1e3, out_png=tmp_path / "c.png", save_state=tmp_path / "s.npz")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "s.npz").exists()


def test_recurrent_model_from_the_cli_learns_both_weight_sets_on_device(tmp_path, small_digits):
    """`edgesp compile --fresh --model snn --recurrent --target loihi2` then `edgesp simulate --save-state`: the
    recurrent weights change on chip and come back in the saved state (dequantised, the spec's shape); a
    LavaDevice step moves W_rec too, and load_parameters re-quantises a given W_rec exactly."""
    import json

    import numpy as np

    from compilers.lava import rule
    from edgesp.cli import main

    build = tmp_path / "b"
    argv = ["compile", "--fresh", "--data", "digits", "--model", "snn", "--recurrent", "--width", "16"]
    argv += ["--depth", "1", "--time-steps", "3", "--rule", "sp-voltage", "--target", "loihi2", "--out", str(build)]
    assert main(argv) == 0
    state = tmp_path / "s.npz"
    out = tmp_path / "r.json"
    assert (
        main(["simulate", str(build), "--steps", "10", "--save-state", str(state), "--json", str(out), "--quiet"]) == 0
    )
    r = json.loads(out.read_text())
    assert r["recurrent_blocks"] == [0] and r["recurrent_changed"] and r["weights_changed"]
    with np.load(state) as z:
        assert z["blocks.0.rec_weight"].shape == (16, 16)
    dev = lava_device.LavaDevice(build, seed=1)
    before = dev.parameters()["blocks.0.rec_weight"]
    dev.step(small_digits.x_train[:3], small_digits.y_train[:3])
    after = dev.parameters()["blocks.0.rec_weight"]
    assert np.any(after != before)
    e = dev.desc.layers[0].rec_exp
    new = np.ascontiguousarray(before[::-1])  # other values, still on the grid of 2^(e + 1 − SIGMA)
    assert np.all(np.mod(new / 2.0 ** (e + 1 - rule.SIGMA), 1) == 0)
    dev.load_parameters({"blocks.0.rec_weight": new})
    np.testing.assert_array_equal(dev.parameters()["blocks.0.rec_weight"], new)
    assert dev.desc.layers[0].rec_exp == e


def test_simulate_refuses_a_bad_head_learning_rate_in_one_line(tmp_path, small_digits):
    from edgesp.errors import DataError

    build = _build(tmp_path, "lava-cpu")
    with pytest.raises(DataError, match=r"head learning rate must be > 0, got -1") as e:
        lava_device.simulate(build, small_digits, 4, lr_head=-1.0)
    assert "\n" not in str(e.value)
