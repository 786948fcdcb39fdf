import gzip
import struct

import numpy as np
import pytest

from edgesp.data import adapt_inputs, load_dataset
from edgesp.errors import DataError


def test_digits_split_is_fixed_and_standardised(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert abs(float(digits.x_train.mean())) < 1e-4 and abs(float(digits.x_train.std()) - 1) < 1e-3
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def _idx(path, arr, gz):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader(tmp_path, gz, rng):
    suffix = ".gz" if gz else ""
    _idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 255, (20, 28, 28)), gz)
    _idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(20) % 10, gz)
    _idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 255, (5, 28, 28)), gz)
    _idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(5), gz)
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28) and ds.num_classes == 10


def test_idx_errors(tmp_path, rng):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"idx:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="train-images"):
        load_dataset(f"idx:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 10, 28, 28) + b"12")
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(10), False)
    _idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (5, 28, 28)), False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5), False)
    with pytest.raises(DataError, match="truncated"):
        load_dataset(f"idx:{tmp_path}")


def test_npz_loader_and_errors(tmp_path, rng):
    f = tmp_path / "d.npz"
    np.savez(f, x=rng.standard_normal((50, 6)).astype(np.float32), y=np.arange(50) % 3)
    ds = load_dataset(f"npz:{f}")
    assert ds.num_classes == 3 and len(ds.x_train) + len(ds.x_test) == 50
    np.savez(f, x=np.zeros((5, 2)))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_dataset(f"npz:{f}")
    f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{f}")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


def test_adapt_inputs(digits):
    assert adapt_inputs(digits.x_test, (64,)).shape == (len(digits.x_test), 64)
    with pytest.raises(DataError, match="expects"):
        adapt_inputs(digits.x_test, (40,))


def test_mnist1d_generated_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESP_CACHE", str(tmp_path))
    a = load_dataset("mnist1d")
    assert a.x_train.shape == (4000, 1, 40) and a.x_test.shape == (1000, 1, 40) and a.num_classes == 10
    assert list(tmp_path.iterdir())  # cached
    b = load_dataset("mnist1d-seq")
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert b.sequence and not a.sequence


# ---------------------------------------------------------------------------- issue 12, defect 3: labels
@pytest.mark.parametrize(
    "arrays,needle",
    [
        (dict(y=np.r_[np.arange(49) % 3, 1_000_000]), "label 1000000 is out of range: labels must be integers 0...C-1"),
        (dict(y=np.r_[np.arange(49) % 3, 1000]), "at most 1,000 classes"),
        (dict(y=np.r_[np.arange(49) % 3, -1]), "label -1 is out of range"),
        (dict(y=np.r_[np.arange(49) % 3, 2.5]), "label 2.5 is out of range"),
        (dict(y=np.r_[np.arange(49) % 3, np.nan]), "label nan is out of range"),
        (dict(y=np.array(["a", "b"] * 25)), "array 'y' must be numeric"),
        (dict(x=np.array([["a", "b"]] * 50)), "array 'x' must be numeric, got dtype <U1"),
        (dict(x=np.zeros((0, 6), np.float32), y=np.zeros(0, np.int64)), "'x' has 0 samples"),
        (dict(x_test=np.zeros((5, 6), np.float32), y_test=np.array([0, 1, 2, 0, 50])), "test label 50 is not among"),
        (dict(x_test=np.zeros((5, 6), np.float32)), "only one of 'x_test' and 'y_test'"),
        (dict(x_test=np.zeros((0, 6), np.float32), y_test=np.zeros(0, np.int64)), "the test split is empty"),
    ],
)
def test_npz_bad_labels_and_arrays_are_one_line_errors(tmp_path, rng, arrays, needle):
    f = tmp_path / "d.npz"
    base = dict(x=rng.standard_normal((50, 6)).astype(np.float32), y=np.arange(50) % 3)
    np.savez(f, **{**base, **arrays})
    with pytest.raises(DataError) as e:
        load_dataset(f"npz:{f}")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_idx_label_bound_and_empty_split(tmp_path, rng):
    _idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 255, (0, 28, 28)), False)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(0), False)
    _idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (5, 28, 28)), False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5), False)
    with pytest.raises(DataError, match="the train split is empty"):
        load_dataset(f"idx:{tmp_path}")
    _idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)), False)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(20) % 10, False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 3, 11]), False)  # 11: never trained on
    with pytest.raises(DataError, match="test label 11 is not among the training labels"):
        load_dataset(f"idx:{tmp_path}")


def test_digits_test_split_size_matches_readme(digits):
    """Issue 12 defect 8: the README and the loader's docstring state the real split (1,438 train / 359 test)."""
    from pathlib import Path

    import edgesp.data

    assert (len(digits.x_train), len(digits.x_test)) == (1438, 359)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "1,438 train / 359 test" in readme and "1,438 train / 359 test" in edgesp.data.__doc__
    assert "360" not in edgesp.data.__doc__


def test_spike_recall_is_seeded_balanced_and_has_cue_then_distractor():
    """The generator's contract: deterministic per seed, balanced labels, 0/1 spikes; the label's channels are
    dense during the cue window, another class's during the distractor window, sparse noise elsewhere."""
    from edgesp.data import make_spike_recall

    x, y = make_spike_recall(400, 7)
    x2, y2 = make_spike_recall(400, 7)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(make_spike_recall(400, 8)[0], x)
    assert x.shape == (400, 16, 40) and x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0}
    assert np.bincount(y).tolist() == [100] * 4
    groups = x.reshape(400, 4, 4, 40).mean(axis=2)  # sample × class group × step
    rows = np.arange(400)
    cue = groups[rows, y, 0:5].mean()
    assert 0.55 < cue < 0.7  # rate 0.6 (+ noise)
    dist = groups[:, :, 20:25].mean(axis=2)  # which group fires in the distractor window
    winner = dist.argmax(axis=1)
    assert np.all(winner != y) and dist.max(axis=1).mean() > 0.5
    quiet = np.concatenate([x[:, :, 5:20], x[:, :, 25:]], axis=2).mean()
    assert 0.02 < quiet < 0.04  # noise rate 0.03
    ds = load_dataset("spike-recall")
    assert ds.sequence and ds.num_classes == 4 and ds.input_shape == (16, 40)
    assert len(ds.x_train) == 4000 and len(ds.x_test) == 1000


def test_delay_taps_is_a_causal_tapped_delay_line():
    """out[n, c·K + j, t] = x[n, c, t − j·S] (0 before the start), checked against a direct loop; changing the
    input from step 5 on leaves every output before step 5 unchanged (causal); bad arguments are refused."""
    from edgesp.encoding import delay_taps

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 11)).astype(np.float32)
    out = delay_taps(x, 4, 3)
    assert out.shape == (3, 8, 11) and out.dtype == np.float32
    for c in range(2):
        for j in range(4):
            for t in range(11):
                want = x[:, c, t - 3 * j] if t - 3 * j >= 0 else 0.0
                np.testing.assert_array_equal(out[:, c * 4 + j, t], want)
    y = x.copy()
    y[..., 5:] += 1.0
    np.testing.assert_array_equal(delay_taps(y, 4, 3)[..., :5], out[..., :5])
    assert not np.array_equal(delay_taps(y, 4, 3)[..., 5:], out[..., 5:])
    np.testing.assert_array_equal(delay_taps(x, 1, 1), x)
    with pytest.raises(DataError, match="taps >= 1"):
        delay_taps(x, 0, 1)
    with pytest.raises(DataError, match="channels, T"):
        delay_taps(x[0], 2, 1)


def test_taps_dataset_suffix_and_its_errors():
    """``spike-recall+taps3x2`` is spike-recall through the delay line (same labels, 16·3 channels); a bad suffix
    or a non-sequence base is one DataError naming the fix."""
    from edgesp.encoding import delay_taps

    base, taps = load_dataset("spike-recall"), load_dataset("spike-recall+taps3x2")
    assert taps.name == "spike-recall+taps3x2" and taps.sequence and taps.input_shape == (48, 40)
    np.testing.assert_array_equal(taps.x_test, delay_taps(base.x_test, 3, 2))
    np.testing.assert_array_equal(taps.y_train, base.y_train)
    with pytest.raises(DataError, match=r"NAME\+tapsKxS"):
        load_dataset("spike-recall+taps3")
    with pytest.raises(DataError, match="not a sequence dataset"):
        load_dataset("digits+taps2x1")
