"""Datasets, all offline. ``load_dataset(name)`` understands:

- ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), shape (1, 8, 8), pixel/16
  standardised; fixed split 1,438 train / 359 test (seed 0, stratified).
- ``mnist1d``: the ``mnist1d`` package's ``make_dataset`` run offline with its default arguments
  (4,000 train / 1,000 test, length 40), shape (1, 40), standardised. The generated arrays are cached in
  ``$EDGESP_CACHE`` (default ``~/.cache/edgesp``) because generation takes a few seconds.
- ``mnist1d-seq``: the same data as a length-40 sequence, shape (1, 40), fed one value per time step.
- ``spike-recall``: a seeded, generated delayed-recall task with spikes, where memory over time matters
  (:func:`make_spike_recall`): shape (16, 40), 0/1 spikes, 4 classes, 4,000 train / 1,000 test; a cue (the
  label's channels) at the start, a distractor (another class's channels) in the middle, noise throughout.
- ``NAME+tapsKxS`` (a sequence dataset NAME, e.g. ``mnist1d-seq+taps8x2``): the same sequences through a tapped
  delay line (:func:`edgesp.encoding.delay_taps`): channel c·K + j at step t is channel c at step t − j·S (0
  before the start), shape (C·K, T). Causal (an online device keeps the last (K−1)·S + 1 values per channel); the
  model then sees a window of the recent input at every step instead of one value.
- ``idx:DIR``: MNIST-style IDX files in DIR (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-…``), shape (1, 28, 28), pixels /255 standardised.
- ``npz:FILE``: arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``; otherwise a seeded 80/20 split).

Standardisation uses the training split's mean and std (one scalar each). Inputs are float32,
labels int64 in [0, C) with C <= ``MAX_CLASSES`` (1,000): C is the largest training label + 1 (at least the
dataset's own class count), and every test label must be one of the training labels. Non-numeric inputs,
non-integer or out-of-range labels and empty splits are refused with one line.
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesp.errors import DataError

DATASETS = ("digits", "mnist1d", "mnist1d-seq", "spike-recall", "idx:DIR", "npz:FILE", "SEQ+tapsKxS")
MAX_CLASSES = 1000  # labels must be 0 ... MAX_CLASSES - 1: one stray label must not silently inflate the model


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    sequence: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _split(x: np.ndarray, y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):  # stratified
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_frac))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return x[tr], y[tr], x[te], y[te]


def _standardise(ds: Dataset) -> Dataset:
    mean, std = float(ds.x_train.mean()), float(ds.x_train.std()) or 1.0
    ds.x_train = ((ds.x_train - mean) / std).astype(np.float32)
    ds.x_test = ((ds.x_test - mean) / std).astype(np.float32)
    return ds


def _check(ds: Dataset) -> Dataset:
    for part in ("train", "test"):
        x, y = getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}")
        if len(x) != len(y):
            raise DataError(f"{ds.name}: {len(x)} {part} inputs but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{ds.name}: the {part} split is empty")
        if not np.all(np.isfinite(x)):
            raise DataError(f"{ds.name}: {part} inputs contain NaN or inf")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DataError(f"{ds.name}: train inputs {ds.x_train.shape[1:]} and test inputs {ds.x_test.shape[1:]} differ")
    _check_labels(ds.name, ds.y_train, "train")
    _check_labels(ds.name, ds.y_test, "test")
    ds.y_train = ds.y_train.astype(np.int64)
    ds.y_test = ds.y_test.astype(np.int64)
    unseen = np.setdiff1d(ds.y_test, ds.y_train)
    if len(unseen):
        raise DataError(
            f"{ds.name}: test label {int(unseen[0])} is not among the training labels "
            f"({len(unseen)} test label value(s) unseen in training): fix y_test or add those classes to y"
        )
    ds.num_classes = max(ds.num_classes, int(ds.y_train.max()) + 1)
    if ds.num_classes < 2:
        raise DataError(f"{ds.name}: needs at least 2 classes")
    return ds


def _check_labels(name: str, y: np.ndarray, part: str) -> None:
    """Labels must be integers 0 ... MAX_CLASSES - 1 (``part``: 'train', 'test' or '' before a split)."""
    part = f"{part} " if part else ""
    if y.dtype.kind not in "iuf":
        raise DataError(f"{name}: {part}labels must be integers 0...C-1, got dtype {y.dtype}")
    bad = y[~np.isfinite(y) | (y != np.round(y)) | (y < 0) | (y >= MAX_CLASSES)] if len(y) else y
    if len(bad):
        raise DataError(
            f"{name}: {part}label {bad[0].item()!r} is out of range: labels must be integers 0...C-1 with at most "
            f"{MAX_CLASSES:,} classes (0...{MAX_CLASSES - 1}); relabel the classes 0...C-1"
        )


def _numeric(file: Path, key: str, a: np.ndarray) -> np.ndarray:
    """Refuse strings/objects/bools before any conversion (one line, not a numpy traceback)."""
    if a.dtype.kind not in "iuf":
        raise DataError(f"{file}: array '{key}' must be numeric, got dtype {a.dtype}: save numbers with numpy.savez")
    return a


def load_digits(seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (d.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    xtr, ytr, xte, yte = _split(x, d.target, 0.2, seed)
    return _standardise(_check(Dataset("digits", xtr, ytr, xte, yte, 10)))


def _cache_dir() -> Path:
    import os

    return Path(os.environ.get("EDGESP_CACHE", Path.home() / ".cache" / "edgesp"))


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Best effort (a read-only home just means no cache); written atomically."""
    import io

    from edgesp.atomic import write_bytes

    try:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes(path, buf.getvalue())
    except OSError:
        pass


def load_mnist1d(sequence: bool = False, seed: int = 0) -> Dataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("the mnist1d package is not installed: run 'make setup'") from None
    cache = _cache_dir() / f"mnist1d-seed{42 + seed}.npz"
    d = _read_cache(cache)
    if d is None:
        args = get_dataset_args()
        args.seed = 42 + seed
        made = make_dataset(args)  # generated offline from templates shipped in the package; no download
        d = {k: np.asarray(made[k]) for k in ("x", "y", "x_test", "y_test")}
        _write_cache(cache, d)
    xtr = np.asarray(d["x"], np.float32)[:, None, :]
    xte = np.asarray(d["x_test"], np.float32)[:, None, :]
    name = "mnist1d-seq" if sequence else "mnist1d"
    ds = Dataset(name, xtr, np.asarray(d["y"]), xte, np.asarray(d["y_test"]), 10, sequence=sequence)
    return _standardise(_check(ds))


def make_spike_recall(
    n: int,
    seed: int,
    *,
    classes: int = 4,
    per_class: int = 4,
    steps: int = 40,
    cue: tuple[int, int] = (0, 5),
    distractor: tuple[int, int] = (20, 25),
    rate: float = 0.6,
    noise: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Delayed recall with spikes: ``n`` samples (x (n, classes·per_class, steps) float32 0/1, y (n,) int64).
    Sample with label c: channels c·per_class … c·per_class + per_class − 1 fire Bernoulli(``rate``) during
    steps [cue[0], cue[1]); the channels of a uniformly drawn *other* class d ≠ c fire the same way during
    [distractor[0], distractor[1]); every channel fires Bernoulli(``noise``) at every step. The label is the
    *first* pattern, so the answer is read ``steps − cue[1]`` steps after it and after a distractor of the
    same form: a model that only sums or low-passes its input cannot tell cue from distractor (both are
    present, the later one stronger); it must remember which came first. Balanced classes (i mod classes),
    shuffled; deterministic for a given seed (numpy PCG64)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    d = (y + rng.integers(1, classes, n)) % classes
    x = (rng.random((n, classes * per_class, steps)) < noise).astype(np.float32)
    for lab, (t0, t1) in ((y, cue), (d, distractor)):
        ch = lab[:, None] * per_class + np.arange(per_class)[None, :]  # n × per_class
        fire = rng.random((n, per_class, t1 - t0)) < rate
        rows = np.arange(n)[:, None]
        x[rows, ch, t0:t1] = np.maximum(x[rows, ch, t0:t1], fire.astype(np.float32))
    return x, y


def load_spike_recall(seed: int = 0) -> Dataset:
    """The ``spike-recall`` dataset: :func:`make_spike_recall` with 4,000 train (seed 1000 + seed) and 1,000
    test samples (seed 2000 + seed); spikes are kept as 0/1 (not standardised)."""
    xtr, ytr = make_spike_recall(4000, 1000 + seed)
    xte, yte = make_spike_recall(1000, 2000 + seed)
    return _check(Dataset("spike-recall", xtr, ytr, xte, yte, 4, sequence=True))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported (type code {dtype_code:#x})")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(f"{path}: IDX header says {math.prod(dims)} bytes of data, file has {len(body)} (truncated?)")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / cand).exists():
            return folder / cand
    raise DataError(f"IDX folder {folder} has no {stem}[.gz]: expected MNIST-style file names")


def load_idx(folder: str | Path) -> Dataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"IDX folder {folder} does not exist: pass idx:DIR with the MNIST-style files")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(f"{folder}: {split} images must be 3-D and labels 1-D, got {x.ndim}-D and {y.ndim}-D")
        parts[split] = (x[:, None].astype(np.float32) / 255.0, y)
    ds = Dataset(f"idx:{folder}", *parts["train"], *parts["test"], num_classes=0)  # C from the labels (_check)
    return _standardise(_check(ds))


def load_npz(file: str | Path, seed: int = 0) -> Dataset:
    file = Path(file)
    if not file.exists():
        raise DataError(f"npz file {file} does not exist")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"cannot read {file} as .npz ({type(e).__name__}): save it with numpy.savez") from None
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{file} must contain arrays 'x' and 'y' (has {sorted(arrays)})")
    for key in ("x", "y", "x_test", "y_test"):
        if key in arrays:
            _numeric(file, key, arrays[key])
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{file} has only one of 'x_test' and 'y_test': give both, or neither (80/20 split)")
    x, y = arrays["x"].astype(np.float32), arrays["y"]
    if len(x) == 0:
        raise DataError(f"{file}: 'x' has 0 samples: the dataset needs training samples")
    if x.ndim < 2:
        raise DataError(f"{file}: 'x' must have a sample axis and at least one feature axis, got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{file}: 'y' must be 1-D integer labels, got shape {y.shape}")
    if "x_test" in arrays and "y_test" in arrays:
        xtr, ytr, xte, yte = x, y, arrays["x_test"].astype(np.float32), arrays["y_test"]
    else:
        if len(x) != len(y):
            raise DataError(f"{file}: {len(x)} inputs but {len(y)} labels")
        _check_labels(f"npz:{file}", y, "")  # before the split, which groups by label value
        xtr, ytr, xte, yte = _split(x, y, 0.2, seed)
    return _standardise(_check(Dataset(f"npz:{file}", xtr, ytr, xte, yte, 0)))


def _with_taps(name: str, seed: int) -> Dataset:
    """``NAME+tapsKxS``: the sequence dataset NAME through a K-tap delay line of stride S."""
    from edgesp.encoding import delay_taps

    base, _, spec = name.rpartition("+taps")
    k, sep, st = spec.partition("x")
    if not (k.isdigit() and sep and st.isdigit()):
        raise DataError(f"bad delay-line suffix in {name!r}: write NAME+tapsKxS, e.g. mnist1d-seq+taps8x2")
    ds = load_dataset(base, seed)
    if not ds.sequence:
        raise DataError(f"{base!r} is not a sequence dataset: delay taps apply to sequences (e.g. mnist1d-seq)")
    taps, stride = int(k), int(st)
    return Dataset(
        name,
        delay_taps(ds.x_train, taps, stride),
        ds.y_train,
        delay_taps(ds.x_test, taps, stride),
        ds.y_test,
        ds.num_classes,
        sequence=True,
    )


def load_dataset(name: str, seed: int = 0) -> Dataset:
    if "+taps" in name:
        return _with_taps(name, seed)
    if name == "digits":
        return load_digits(seed)
    if name == "mnist1d":
        return load_mnist1d(False, seed)
    if name == "mnist1d-seq":
        return load_mnist1d(True, seed)
    if name == "spike-recall":
        return load_spike_recall(seed)
    if name.startswith("idx:"):
        return load_idx(name[4:])
    if name.startswith("npz:"):
        return load_npz(name[4:], seed)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def adapt_inputs(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Reshape a batch to the model's input shape when the sizes agree (e.g. images → flat MLP input)."""
    if tuple(x.shape[1:]) == tuple(input_shape):
        return x
    if math.prod(x.shape[1:]) == math.prod(input_shape):
        return x.reshape(x.shape[0], *input_shape)
    raise DataError(
        f"data samples have shape {tuple(x.shape[1:])} but the model expects {tuple(input_shape)}: "
        "use data that matches the model, or build the model for this dataset"
    )
