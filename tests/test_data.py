"""Data sources, splits and preprocessing (toolchain.data) and the ``toolchain datasets`` command."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from toolchain.cli import main
from toolchain.data import (
    DatasetSplits,
    Preprocessing,
    calibration_indices,
    list_datasets,
    load_dataset,
    load_split,
    make_preprocessing,
    read_idx,
    resize_bilinear,
)
from toolchain.errors import DatasetError, UsageError


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------

def _images(n: int, h: int = 6, w: int = 5, c: int | None = None, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    x = rng.integers(0, 256, size=shape).astype(np.uint8)
    y = (np.arange(n) % classes).astype(np.int64)
    return x, y


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _good_npz(tmp_path: Path, name: str = "d.npz", **override) -> Path:
    x_tr, y_tr = _images(60)
    x_te, y_te = _images(15, seed=1)
    arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    return _npz(tmp_path / name, **arrays)


def _write_idx(path: Path, arr: np.ndarray, code: int = 0x08) -> Path:
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _idx_dir(root: Path, gz: bool, n_train: int = 40, n_test: int = 12) -> tuple[Path, dict]:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    x_tr, y_tr = _images(n_train, 28, 28, classes=10)
    x_te, y_te = _images(n_test, 28, 28, classes=10, seed=3)
    arrays = {"train-images-idx3-ubyte": x_tr, "train-labels-idx1-ubyte": y_tr.astype(np.uint8),
              "t10k-images-idx3-ubyte": x_te, "t10k-labels-idx1-ubyte": y_te.astype(np.uint8)}
    for name, arr in arrays.items():
        _write_idx(root / (name + ext), arr)
    return root, {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _image_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 10, rgb: bool = False,
                  size=(7, 9)) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    out = {}
    for c in classes:
        out[c] = []
        for i in range(per_class):
            shape = (size[0], size[1], 3) if rgb else size
            arr = rng.integers(0, 256, size=shape).astype(np.uint8)
            _png(root / c / f"img{i:03d}.png", arr)
            out[c].append(arr)
    return out


def _one_line_error(exc_info, cls, *needles: str) -> str:
    assert exc_info.type is cls, f"{exc_info.type} is not {cls}"
    text = str(exc_info.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


def _split_disjoint_complete(ds: DatasetSplits, n: int) -> None:
    """x encodes the sample id in pixel [0, 0] (+256*[0,1]); splits must partition the ids."""
    ids = []
    for x in (ds.x_train, ds.x_val, ds.x_test):
        ids.extend((x[:, 0, 0].astype(np.int64) + 256 * x[:, 0, 1].astype(np.int64)).tolist())
    assert sorted(ids) == list(range(n))


def _id_npz(tmp_path: Path, n: int = 300, classes: int = 3, weights=(0.5, 0.3, 0.2)) -> Path:
    x = np.zeros((n, 4, 4), np.uint16)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = np.arange(n) // 256
    counts = (np.array(weights) * n).astype(int)
    counts[-1] = n - counts[:-1].sum()
    y = np.repeat(np.arange(classes), counts)
    return _npz(tmp_path / "ids.npz", x=x, y=y)


# ---------------------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


def test_digits_total_and_metadata(digits):
    total = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert total == 1797
    assert digits.num_classes == 10 and digits.labels == [str(i) for i in range(10)]
    assert digits.x_train.shape[1:] == (8, 8)
    assert digits.max_value == 16.0
    assert int(digits.x_train.max()) == 16 and int(digits.x_train.min()) == 0
    assert digits.y_train.dtype == np.int64
    assert len(digits.y_test) == round(0.2 * 1797)
    assert len(digits.y_val) == round(0.1 * (1797 - len(digits.y_test)))


def test_digits_split_matches_sklearn_data(digits):
    from sklearn.datasets import load_digits

    ref = load_digits()
    all_x = np.concatenate([digits.x_train, digits.x_val, digits.x_test]).reshape(1797, 64).astype(np.float64)
    all_y = np.concatenate([digits.y_train, digits.y_val, digits.y_test])
    # the multiset of (image, label) rows is exactly sklearn's
    ours = sorted(map(tuple, np.column_stack([all_x, all_y])))
    theirs = sorted(map(tuple, np.column_stack([ref.data, ref.target])))
    assert ours == theirs


def test_digits_stratified(digits):
    total = np.bincount(np.concatenate([digits.y_train, digits.y_val, digits.y_test]), minlength=10) / 1797
    for y in (digits.y_train, digits.y_val, digits.y_test):
        frac = np.bincount(y, minlength=10) / len(y)
        assert np.abs(frac - total).max() < 0.01


# ---------------------------------------------------------------------------------------------------------------
# split determinism and stratification
# ---------------------------------------------------------------------------------------------------------------

def test_split_deterministic_and_seeded(tmp_path):
    path = _id_npz(tmp_path)
    a = load_dataset(f"npz:{path}", seed=7)
    b = load_dataset(f"npz:{path}", seed=7)
    c = load_dataset(f"npz:{path}", seed=8)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.x_test, c.x_test)
    _split_disjoint_complete(a, 300)
    _split_disjoint_complete(c, 300)
    assert a.summary()["split"] == {"seed": 7, "val_fraction": 0.1, "test_fraction": 0.2, "test_source": "split"}


def test_split_stratified_class_proportions(tmp_path):
    path = _id_npz(tmp_path, n=300, weights=(0.5, 0.3, 0.2))
    ds = load_dataset(f"npz:{path}", seed=1, val_fraction=0.25, test_fraction=0.2)
    assert len(ds.y_test) == 60 and len(ds.y_val) == 60 and len(ds.y_train) == 180
    np.testing.assert_array_equal(np.bincount(ds.y_test), [30, 18, 12])
    np.testing.assert_array_equal(np.bincount(ds.y_val), [30, 18, 12])
    np.testing.assert_array_equal(np.bincount(ds.y_train), [90, 54, 36])


def test_bad_fractions_are_usage_errors(tmp_path):
    path = _id_npz(tmp_path)
    for kwargs in ({"val_fraction": 0.0}, {"test_fraction": 1.0}, {"val_fraction": -0.1}):
        with pytest.raises(UsageError) as e:
            load_dataset(f"npz:{path}", **kwargs)
        _one_line_error(e, UsageError, "between 0 and 1")


def test_calibration_indices_deterministic_stratified():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    a = calibration_indices(y, 40, seed=0)
    b = calibration_indices(y, 40, seed=0)
    c = calibration_indices(y, 40, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 40 and len(np.unique(a)) == 40
    np.testing.assert_array_equal(np.bincount(y[a]), [20, 10, 6, 4])
    np.testing.assert_array_equal(calibration_indices(y, 1000), np.arange(200))


# ---------------------------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------------------------

def test_npz_keeps_test_split_and_labels(tmp_path):
    x_tr, y_tr = _images(60)
    x_te, y_te = _images(15, seed=1)
    path = _npz(tmp_path / "d.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                labels=np.array(["a", "b", "c"]))
    ds = load_dataset(f"npz:{path}", seed=0, val_fraction=0.2)
    np.testing.assert_array_equal(ds.x_test, x_te)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert len(ds.y_train) == 48 and len(ds.y_val) == 12
    np.testing.assert_array_equal(np.bincount(ds.y_val), [4, 4, 4])
    assert ds.labels == ["a", "b", "c"] and ds.num_classes == 3
    assert ds.max_value == 255.0
    assert ds.test_source == "dataset"
    # train + val is exactly the original train set
    merged = np.concatenate([ds.x_train, ds.x_val]).reshape(60, -1)
    assert sorted(map(bytes, merged)) == sorted(map(bytes, x_tr.reshape(60, -1)))


def test_npz_float_data_in_unit_range_and_float_integer_labels(tmp_path):
    x = np.random.default_rng(0).random((40, 3, 3)).astype(np.float32)
    y = (np.arange(40) % 2).astype(np.float32)
    path = _npz(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    ds = load_dataset(f"npz:{path}")
    assert ds.max_value == 1.0 and ds.y_train.dtype == np.int64


@pytest.mark.parametrize("case, override, needle", [
    ("mismatched lengths", {"y_train": np.zeros(59, np.int64)}, "mismatched lengths"),
    ("nan", {"x_train": np.full((60, 6, 5), np.nan, np.float32)}, "NaN or inf"),
    ("inf", {"x_test": np.where(np.eye(6, 5, dtype=bool), np.inf, 1.0)[None].repeat(15, 0)}, "NaN or inf"),
    ("non-integer labels", {"y_train": np.linspace(0, 2, 60)}, "must be integers"),
    ("string labels", {"y_test": np.array(["a"] * 15)}, "must be integers"),
    ("negative labels", {"y_test": -np.ones(15, np.int64)}, "[0, num_classes)"),
    ("wrong rank", {"x_train": np.zeros(60, np.uint8)}, "rank"),
    ("wrong rank 5", {"x_train": np.zeros((60, 1, 1, 1, 1), np.uint8)}, "rank"),
    ("empty split", {"x_test": np.zeros((0, 6, 5), np.uint8), "y_test": np.zeros(0, np.int64)}, "empty"),
    ("shape mismatch", {"x_test": np.zeros((15, 5, 5), np.uint8)}, "different shapes"),
    ("missing arrays", {"y_test": None}, "missing arrays y_test"),
])
def test_npz_bad_data(tmp_path, case, override, needle):
    path = _good_npz(tmp_path, **override)
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{path}")
    _one_line_error(e, DatasetError, needle, f"Received: {path}")


def test_npz_label_beyond_class_names(tmp_path):
    path = _good_npz(tmp_path, labels=np.array(["a", "b"]))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{path}")
    _one_line_error(e, DatasetError, "num_classes=2", "y_train contains 2", str(path))


def test_npz_missing_corrupt_and_pickled(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{missing}")
    _one_line_error(e, DatasetError, "not found", str(missing))

    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{corrupt}")
    _one_line_error(e, DatasetError, "corrupt", str(corrupt))

    obj = tmp_path / "obj.npz"
    np.savez(obj, x_train=np.array([object()] * 3, dtype=object), y_train=np.zeros(3), x_test=np.zeros((1, 2)),
             y_test=np.zeros(1))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{obj}")
    _one_line_error(e, DatasetError, "pickled", str(obj))


def test_too_few_samples_gives_empty_split_error(tmp_path):
    path = _npz(tmp_path / "tiny.npz", x=np.zeros((2, 2, 2), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"npz:{path}")
    _one_line_error(e, DatasetError, "split is empty", str(path))


# ---------------------------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_raw_and_gz(tmp_path, gz):
    root, ref = _idx_dir(tmp_path / "mnist", gz=gz)
    ds = load_dataset(f"idx:{root}", seed=0)
    np.testing.assert_array_equal(ds.x_test, ref["x_test"])
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    assert ds.x_train.shape[1:] == (28, 28) and ds.x_train.dtype == np.uint8
    assert len(ds.y_train) + len(ds.y_val) == 40 and len(ds.y_val) == 4
    assert ds.num_classes == 10 and ds.max_value == 255.0


def test_idx_reader_dtypes_and_dotted_names(tmp_path):
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "f.idx", arr, code=0x0D)), arr)
    arr16 = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "s.idx", arr16, code=0x0B)), arr16)
    # Fashion-MNIST mirrors sometimes use "train-images.idx3-ubyte"
    root, ref = _idx_dir(tmp_path / "dotted", gz=False)
    for f in root.iterdir():
        f.rename(root / f.name.replace("-idx", ".idx"))
    ds = load_dataset(f"idx:{root}")
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])


def test_idx_bad_files(tmp_path):
    root, _ = _idx_dir(tmp_path / "m", gz=False)
    target = root / "train-images-idx3-ubyte"
    good = target.read_bytes()

    target.write_bytes(b"\x08\x03" + good[2:])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "bad magic", str(target))

    target.write_bytes(good[:2] + b"\x42" + good[3:])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "unknown data type", str(target))

    target.write_bytes(good[:-10])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "does not match the header", str(target))

    target.write_bytes(good[:10])
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "truncated header", str(target))

    target.write_bytes(good)
    labels = root / "train-labels-idx1-ubyte"
    _write_idx(labels, np.zeros(39, np.uint8))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "mismatched lengths", str(labels))

    _write_idx(labels, np.zeros((40, 1, 1), np.uint8))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "1 dimension", str(labels))

    labels.unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "missing IDX files train-labels-idx1-ubyte", str(root))

    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{tmp_path / 'absent'}")
    _one_line_error(e, DatasetError, "not found", str(tmp_path / "absent"))


def test_idx_corrupt_gzip(tmp_path):
    root, _ = _idx_dir(tmp_path / "g", gz=True)
    bad = root / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"idx:{root}")
    _one_line_error(e, DatasetError, "corrupt", str(bad))


# ---------------------------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------------------------

def test_folder_with_train_test(tmp_path):
    train = _image_folder(tmp_path / "imgs" / "train", per_class=10)
    test = _image_folder(tmp_path / "imgs" / "test", per_class=3)
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", seed=0)
    assert ds.labels == ["cat", "dog", "owl"]
    assert ds.x_test.shape == (9, 7, 9) and ds.x_test.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_test, np.stack(test["cat"] + test["dog"] + test["owl"]))
    np.testing.assert_array_equal(ds.y_test, np.repeat([0, 1, 2], 3))
    assert len(ds.y_train) + len(ds.y_val) == 30 and len(ds.y_val) == 3
    np.testing.assert_array_equal(np.bincount(ds.y_val), [1, 1, 1])
    # every loaded training image is one of the written PNGs, with its class
    written = {bytes(a.tobytes()): i for i, c in enumerate(ds.labels) for a in train[c]}
    for x, y in zip(np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])):
        assert written[bytes(x.tobytes())] == y


def test_folder_without_split_rgb(tmp_path):
    _image_folder(tmp_path / "flat", classes=("a", "b"), per_class=15, rgb=True)
    (tmp_path / "flat" / "a" / "notes.txt").write_text("ignored")
    ds = load_dataset(f"folder:{tmp_path / 'flat'}", seed=3)
    assert ds.x_train.shape[1:] == (7, 9, 3)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 30
    np.testing.assert_array_equal(np.bincount(ds.y_test), [3, 3])
    again = load_dataset(f"folder:{tmp_path / 'flat'}", seed=3)
    np.testing.assert_array_equal(ds.x_test, again.x_test)


def test_folder_jpeg(tmp_path):
    from PIL import Image

    for c in ("x", "y"):
        for i in range(6):
            (tmp_path / "j" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "j" / c / f"{i}.jpg", quality=95)
    ds = load_dataset(f"folder:{tmp_path / 'j'}")
    assert ds.x_train.shape[1:] == (8, 8) and ds.num_classes == 2


def test_folder_bad_data(tmp_path):
    root = tmp_path / "bad"
    _image_folder(root, per_class=4)
    corrupt = root / "dog" / "img001.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError) as e:
        load_dataset(f"folder:{root}")
    _one_line_error(e, DatasetError, "corrupt or unreadable image", str(corrupt))

    _png(corrupt, np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError) as e:
        load_dataset(f"folder:{root}")
    _one_line_error(e, DatasetError, "same size", str(corrupt))

    corrupt.unlink()
    (root / "empty").mkdir()
    with pytest.raises(DatasetError) as e:
        load_dataset(f"folder:{root}")
    _one_line_error(e, DatasetError, "no PNG/JPEG images", str(root / "empty"))

    (tmp_path / "noclasses").mkdir()
    with pytest.raises(DatasetError) as e:
        load_dataset(f"folder:{tmp_path / 'noclasses'}")
    _one_line_error(e, DatasetError, "no class sub-folders", str(tmp_path / "noclasses"))

    with pytest.raises(DatasetError) as e:
        load_dataset(f"folder:{tmp_path / 'missing'}")
    _one_line_error(e, DatasetError, "not found", str(tmp_path / "missing"))


def test_folder_test_class_not_in_train(tmp_path):
    _image_folder(tmp_path / "s" / "train", classes=("a", "b"), per_class=5)
    _image_folder(tmp_path / "s" / "test", classes=("a", "zebra"), per_class=2)
    with pytest.raises(DatasetError) as e:
        load_dataset(f"folder:{tmp_path / 's'}")
    _one_line_error(e, DatasetError, "classes missing from train", "zebra")


# ---------------------------------------------------------------------------------------------------------------
# Keras cache
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    (home / "datasets").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def test_keras_mnist_from_fake_cache(keras_home):
    x_tr, y_tr = _images(50, 28, 28, classes=10)
    x_te, y_te = _images(20, 28, 28, classes=10, seed=2)
    np.savez(keras_home / "datasets" / "mnist.npz", x_train=x_tr, y_train=y_tr.astype(np.uint8), x_test=x_te,
             y_test=y_te.astype(np.uint8))
    ds = load_dataset("keras:mnist")
    np.testing.assert_array_equal(ds.x_test, x_te)
    assert len(ds.y_train) + len(ds.y_val) == 50 and ds.labels == [str(i) for i in range(10)]
    row = {r["spec"]: r for r in list_datasets()}["keras:mnist"]
    assert row["offline"] is True and str(keras_home) in row["detail"]


def test_keras_not_cached_is_a_clear_error(keras_home):
    with pytest.raises(DatasetError) as e:
        load_dataset("keras:mnist")
    _one_line_error(e, DatasetError, "not in the Keras cache", str(keras_home / "datasets" / "mnist.npz"),
                    "npz:PATH", "idx:DIR")
    row = {r["spec"]: r for r in list_datasets()}
    assert row["keras:mnist"]["offline"] is False and row["digits"]["offline"] is True
    with pytest.raises(UsageError) as e:
        load_dataset("keras:imagenet")
    _one_line_error(e, UsageError, "keras:mnist", "keras:cifar10", "keras:imagenet")


def test_keras_fashion_mnist_from_fake_cache(keras_home):
    d = keras_home / "datasets" / "fashion-mnist"
    d.mkdir()
    x_tr, y_tr = _images(30, 28, 28, classes=10)
    x_te, y_te = _images(10, 28, 28, classes=10, seed=5)
    _write_idx(d / "train-images-idx3-ubyte.gz", x_tr)
    _write_idx(d / "train-labels-idx1-ubyte.gz", y_tr.astype(np.uint8))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", x_te)
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", y_te.astype(np.uint8))
    ds = load_dataset("keras:fashion_mnist")
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.labels[0] == "T-shirt/top" and ds.num_classes == 10


def test_keras_cifar10_from_fake_cache_and_pickle_is_restricted(keras_home):
    d = keras_home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(10, 3072)).astype(np.uint8)
        labels = list(range(10))
        batches[name] = data
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    ds = load_dataset("keras:cifar10")
    assert ds.x_test.shape == (10, 32, 32, 3)
    # channel-first rows -> NHWC: red plane of image 0 is the first 1024 bytes
    np.testing.assert_array_equal(ds.x_test[0, :, :, 0].reshape(-1), batches["test_batch"][0, :1024])
    assert ds.labels[0] == "airplane" and len(ds.y_train) + len(ds.y_val) == 50

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DatasetError) as e:
        load_dataset("keras:cifar10")
    _one_line_error(e, DatasetError, "corrupt CIFAR-10 batch", "refusing", str(d / "test_batch"))


# ---------------------------------------------------------------------------------------------------------------
# spec parsing and CLI
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["mnist", "csv:foo.csv", "npz:", "", "digits:extra"])
def test_unknown_spec_lists_valid_forms(spec):
    with pytest.raises(UsageError) as e:
        load_dataset(spec)
    _one_line_error(e, UsageError, "digits", "npz:PATH", "idx:DIR", "folder:DIR", "keras:")


def test_cli_bad_data_exit_2_one_line(tmp_path, capsys):
    path = _good_npz(tmp_path, y_train=np.zeros(59, np.int64))
    with pytest.raises(SystemExit) as e:
        main(["datasets", f"npz:{path}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ") and "mismatched lengths" in err and str(path) in err


def test_cli_unknown_spec_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["datasets", "bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "valid forms" in err


def test_cli_lists_sources(keras_home, capsys):
    np.savez(keras_home / "datasets" / "mnist.npz", x_train=np.zeros((20, 28, 28), np.uint8),
             y_train=np.arange(20) % 10, x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10))
    main(["datasets", "--json"])
    rows = {r["spec"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"digits", "npz:PATH", "idx:DIR", "folder:DIR", "keras:mnist", "keras:fashion_mnist",
                         "keras:cifar10"}
    assert rows["keras:mnist"]["offline"] is True and rows["keras:cifar10"]["offline"] is False
    main(["datasets"])
    out = capsys.readouterr().out
    assert "keras:fashion_mnist" in out and "OFFLINE" in out


def test_cli_summarises_a_spec(tmp_path, capsys):
    path = _id_npz(tmp_path)
    main(["datasets", f"npz:{path}", "--json", "--seed", "2"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] + summary["val"] + summary["test"] == 300
    assert summary["test"] == 60 and summary["split"]["seed"] == 2


# ---------------------------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def test_resize_constant_image_stays_constant():
    x = np.full((2, 8, 8, 1), 0.375, np.float32)
    for size in ((49, 10), (3, 3), (32, 32), (8, 20)):
        out = resize_bilinear(x, size)
        assert out.shape == (2, *size, 1)
        np.testing.assert_allclose(out, 0.375, atol=1e-7)


@pytest.mark.parametrize("src, dst", [((8, 8, 1), (49, 10)), ((28, 28, 1), (32, 32)), ((32, 32, 3), (20, 13)),
                                      ((7, 9, 3), (7, 30)), ((5, 6, 1), (96, 96))])
def test_bilinear_matches_tf_image_resize(tf, src, dst):
    x = np.random.default_rng(1).random((3, *src)).astype(np.float32)
    ours = resize_bilinear(x, dst)
    ref = tf.image.resize(x, dst, method="bilinear").numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_digits_preprocessing_to_ds_cnn_shape_matches_tf(tf, digits):
    pp = make_preprocessing(digits, (49, 10, 1))
    assert (pp.scale, pp.resize, pp.channels) == (1 / 16, "bilinear", "keep")
    out = pp.apply(digits.x_test[:16])
    assert out.shape == (16, 49, 10, 1) and out.dtype == np.float32
    ref = tf.image.resize(digits.x_test[:16, :, :, None].astype(np.float32) / 16.0, (49, 10), "bilinear").numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_scale_to_unit_range(digits):
    pp = make_preprocessing(digits, (8, 8, 1))
    assert pp.resize == "none"
    out = pp.apply(digits.x_train)
    np.testing.assert_allclose(out[..., 0], digits.x_train / 16.0, atol=1e-7)
    assert out.min() == 0.0 and out.max() == 1.0
    u8 = np.array([[[0, 51], [255, 102]]], np.uint8)
    pp8 = Preprocessing(input_shape=(2, 2, 1), scale=1 / 255, resize="none", channels="keep")
    np.testing.assert_allclose(pp8.apply(u8)[0, :, :, 0], [[0, 0.2], [1.0, 0.4]], atol=1e-7)


def test_gray_to_rgb_and_back(tf, digits):
    pp = make_preprocessing(digits, (32, 32, 3))
    assert pp.channels == "gray_to_rgb"
    rgb = pp.apply(digits.x_test[:4])
    assert rgb.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_allclose(rgb[..., :1], make_preprocessing(digits, (32, 32, 1)).apply(digits.x_test[:4]))

    x = np.random.default_rng(0).integers(0, 256, (3, 6, 6, 3)).astype(np.uint8)
    to_gray = Preprocessing(input_shape=(6, 6, 1), scale=1 / 255, resize="none", channels="rgb_to_gray")
    ref = tf.image.rgb_to_grayscale(x.astype(np.float32) / 255.0).numpy()
    np.testing.assert_allclose(to_gray.apply(x), ref, atol=1e-5)


def test_one_dimensional_inputs_flatten_pad_truncate(digits):
    pp = make_preprocessing(digits, (640,))
    assert pp.resize == "flatten"
    out = pp.apply(digits.x_test[:5])
    assert out.shape == (5, 640)
    np.testing.assert_allclose(out[:, :64], digits.x_test[:5].reshape(5, 64) / 16.0, atol=1e-7)
    assert not out[:, 64:].any()
    short = Preprocessing(input_shape=(10,), scale=1 / 16, resize="flatten", channels="keep").apply(digits.x_test[:2])
    np.testing.assert_allclose(short, digits.x_test[:2].reshape(2, 64)[:, :10] / 16.0, atol=1e-7)


def test_pad_mode_centres_and_crops():
    x = np.ones((1, 28, 28), np.uint8) * 255
    pad = Preprocessing(input_shape=(32, 32, 1), scale=1 / 255, resize="pad", channels="keep").apply(x)
    assert pad[0, 2:30, 2:30, 0].min() == 1.0 and pad.sum() == 28 * 28
    src = np.arange(28 * 28, dtype=np.float32).reshape(1, 28, 28)
    crop = Preprocessing((20, 20, 1), 1 / 1000, "pad", "keep").apply(src)
    np.testing.assert_allclose(crop[0, :, :, 0], src[0, 4:24, 4:24] / 1000, rtol=1e-6)


def test_apply_large_batch_in_chunks_equals_per_sample():
    x = np.random.default_rng(0).integers(0, 256, (9000, 8, 8)).astype(np.uint8)
    pp = Preprocessing((12, 11, 1), 1 / 255, "bilinear", "keep")
    out = pp.apply(x)
    assert out.shape == (9000, 12, 11, 1)
    for i in (0, 4095, 4096, 8999):
        np.testing.assert_array_equal(out[i], pp.apply(x[i:i + 1])[0])


def test_to_dict_round_trip_and_reuse(tmp_path, digits):
    pp = make_preprocessing(digits, (49, 10, 1))
    d = json.loads(json.dumps(pp.to_dict()))
    assert d == {"input_shape": [49, 10, 1], "scale": 0.0625, "resize": "bilinear", "channels": "keep"}
    again = Preprocessing.from_dict(d)
    assert again == pp
    np.testing.assert_array_equal(again.apply(digits.x_val[:8]), pp.apply(digits.x_val[:8]))
    from toolchain.specs import DatasetSpec, ModelInputTransform, RunRecord

    record = RunRecord(DatasetSpec.parse("digits"), transform=ModelInputTransform((49, 10, 1), "bilinear"))
    reused = load_split(record, "val", input_shape=(49, 10, 1))
    assert reused.preprocessing == pp and reused.num_classes == 10 and reused.transform_source == "recorded"
    np.testing.assert_array_equal(reused.x[:8], pp.apply(digits.x_val[:8]))
    built = load_split(None, "test", dataset=DatasetSpec.parse("digits"), input_shape=(28, 28, 1))
    assert built.preprocessing.input_shape == (28, 28, 1) and built.preprocessing.scale == 1 / 16
    assert built.transform_source == "model input shape"
    with pytest.raises(UsageError, match="another input shape"):
        load_split(record, "test", input_shape=(28, 28, 1))


def test_preprocessing_validation_errors():
    with pytest.raises(UsageError) as e:
        Preprocessing.from_dict({"scale": 1.0})
    _one_line_error(e, UsageError, "input_shape")
    with pytest.raises(UsageError):
        Preprocessing((8, 8, 1), scale=0.0, resize="none")
    with pytest.raises(UsageError):
        Preprocessing((8, 8, 1), scale=1.0, resize="nearest")
    with pytest.raises(UsageError):
        Preprocessing((640,), scale=1.0, resize="bilinear")
    pp = Preprocessing((8, 8, 1), scale=1.0, resize="none")
    with pytest.raises(DatasetError) as e:
        pp.apply(np.zeros((2, 4, 4)))
    _one_line_error(e, DatasetError, "does not resize")
    with pytest.raises(DatasetError) as e:
        pp.apply(np.zeros(5))
    _one_line_error(e, DatasetError, "batch")
    with pytest.raises(DatasetError):
        pp.apply(np.zeros((2, 8, 8, 3)))


def test_npz_max_value_sets_the_scale(tmp_path):
    """Raw digits (0..16) in an npz need ``max_value=16`` to be scaled like the built-in ``digits`` source."""
    from toolchain.data import load_dataset, make_preprocessing

    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(40, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    path = tmp_path / "raw_digits.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], max_value=np.float32(16))
    ds = load_dataset(f"npz:{path}")
    pre = make_preprocessing(ds, (8, 8, 1))
    np.testing.assert_allclose(pre.apply(ds.x_test)[..., 0], np.clip(ds.x_test / 16.0, 0, 1), rtol=0, atol=1e-6)
    np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], max_value=np.float32(-1))
    with pytest.raises(DatasetError, match="max_value"):
        load_dataset(f"npz:{path}")
