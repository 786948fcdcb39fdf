import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from edgesp.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
