"""The training loop's divergence policy: a non-finite loss or weight stops training with a one-line error."""

import numpy as np
import pytest

from edgesp.errors import DataError, DivergedError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.train import fit


class _Faulty:
    """A real trainer whose loss (or one weight) turns NaN from the ``at``-th step on (the injected fault)."""

    def __init__(self, trainer, at, weights=False):
        self.t, self.at, self.n, self.weights = trainer, at, 0, weights

    def train_step(self, x, y):
        self.n += 1
        out = self.t.train_step(x, y)
        if self.n >= self.at and not self.weights:
            out = {k: float("nan") for k in out}
        return out

    def predict(self, x):
        return self.t.predict(x)

    def params(self):
        p = self.t.params()
        if self.weights and self.n >= self.at:
            p = dict(p)
            p["head.weight"] = np.full_like(p["head.weight"], np.inf)
        return p


@pytest.fixture
def small(digits):
    spec = build_spec("mlp", digits.input_shape, 10, width=16)
    return spec, make_trainer(spec, init_params(spec, 0), 0)


def test_nan_loss_names_epoch_and_batch(small, digits):
    spec, trainer = small
    n_batches = -(-len(digits.x_train) // 32)
    with pytest.raises(DivergedError) as e:
        fit(_Faulty(trainer, n_batches + 14), digits, spec.input_shape, epochs=3, batch=32, progress=False)
    msg = str(e.value)
    assert "training diverged at epoch 2, batch 14" in msg and "nan" in msg and "--lr" in msg and "\n" not in msg


def test_non_finite_weight_stops_training(small, digits):
    spec, trainer = small
    with pytest.raises(DivergedError, match=r"training diverged in epoch 1 \(weight head.weight holds NaN or inf\)"):
        fit(_Faulty(trainer, 1, weights=True), digits, spec.input_shape, epochs=2, progress=False)


@pytest.mark.parametrize("n", [0, -5])
def test_max_train_below_one_is_refused_not_ignored(small, digits, n):
    spec, trainer = small
    with pytest.raises(DataError, match="max_train must be >= 1"):
        fit(trainer, digits, spec.input_shape, epochs=1, progress=False, max_train=n)
