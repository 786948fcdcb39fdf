"""The shared on-device learning loop's divergence policy (ORT and TFLite): a non-finite loss or weight stops the
run with a one-line error naming the step and the fix; nothing (curve PNG) is written; lr must be finite > 0."""

import numpy as np
import pytest

from compilers import compile_model
from edgesp.errors import DataError, DivergedError
from firmware_sim.learning import run_learning
from targets import load_target
from tests.compilers.helpers import make


class _Fake:
    """A device whose loss turns NaN at step ``at`` (the injected fault)."""

    def __init__(self, at, weight=False):
        self.n, self.at, self.weight = 0, at, weight

    def step(self, x, y, lr=None):
        self.n += 1
        return {"loss_1": float("nan") if self.n >= self.at and not self.weight else 0.5}

    def accuracy(self, x, y):
        return 0.5

    def weights(self):
        return {"blocks.0.weight": np.full((2, 2), np.nan if self.weight and self.n >= self.at else 0.0)}


@pytest.fixture(scope="module")
def spec():
    return make("mlp", (64,), "v9", "adam", lr=1e-3, width=16)[0]


def test_nan_loss_names_the_step_and_writes_no_plot(spec, digits, tmp_path):
    with pytest.raises(DivergedError) as e:
        run_learning(_Fake(7), spec, digits, 20, 8, 0, tmp_path / "c.png", False)
    assert str(e.value).startswith("on-device learning diverged at step 7 (loss_1 nan): lower the on-device")
    assert not (tmp_path / "c.png").exists()


def test_nan_weight_is_caught_at_the_next_evaluation(spec, digits, tmp_path):
    with pytest.raises(DivergedError, match=r"diverged by step 4 \(weight blocks.0.weight holds NaN or inf\)"):
        run_learning(_Fake(3, weight=True), spec, digits, 20, 8, 0, tmp_path / "c.png", False)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0, 0.0])
def test_bad_learning_rate_refused(spec, digits, lr):
    with pytest.raises(DataError, match="on-device learning rate must be a finite number > 0"):
        run_learning(_Fake(99), spec, digits, 5, 8, 0, None, False, lr=lr)


@pytest.mark.parametrize("target", ["edge-cpu", "edge-cpu-tflite"])
def test_real_runtimes_stop_on_non_finite_state(target, digits, tmp_path):
    """The fault injected into the runtime's own state: one weight NaN -> the step's loss is NaN -> stop."""
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=16)
    compile_model(spec, params, load_target(target), tmp_path / "b", batch=8)
    if target == "edge-cpu":
        import onnxruntime as ort

        from firmware_sim.onnx_device import OrtDevice, simulate

        dev = OrtDevice(tmp_path / "b")
        w = dev.weights()["blocks.0.weight"]
        w[0, 0] = np.nan
        dev.state["blocks.0.weight"] = ort.OrtValue.ortvalue_from_numpy(w)
    else:
        from firmware_sim.tflite_device import TFLiteDevice, simulate

        dev = TFLiteDevice(tmp_path / "b")
        with np.load(tmp_path / "b" / "state.npz") as z:
            state = {k: z[k] for k in z.files}
        state["blocks.0.weight"][0, 0] = np.nan
        dev.model.init(state)
    with pytest.raises(DivergedError, match="on-device learning diverged at step 1"):
        run_learning(dev, dev.spec, digits, 5, 8, 0, tmp_path / "c.png", False)
    with pytest.raises(DataError, match="finite number > 0"):
        simulate(tmp_path / "b", digits, steps=2, progress=False, lr=float("nan"))
