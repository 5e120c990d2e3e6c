"""Datasets and the one recorded preprocessing object shared by training, quantisation, verification and devices.

A dataset *spec* string selects the source:

* ``digits``          scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, pixels 0..16).
* ``npz:PATH``        arrays ``x_train, y_train, x_test, y_test`` (optional ``labels``); or ``x, y`` to be split.
* ``idx:DIR``         MNIST / Fashion-MNIST IDX files (raw or ``.gz``) with their standard names.
* ``folder:DIR``      one sub-folder per class of PNG/JPEG images (``train/`` + ``test/`` or a seeded split).
* ``keras:NAME``      ``mnist``, ``fashion_mnist``, ``cifar10`` read from the Keras cache only (never downloads).

Splits are deterministic (seeded) and stratified by class. ``val_fraction`` is the fraction of the training part
carved out for validation; ``test_fraction`` is the fraction of the whole data set held out for test when the source
has no test split of its own.

``Preprocessing`` is pure NumPy (no TensorFlow / PIL) so a device applies exactly what training applied:
``x = clip(x_raw * scale, 0, 1)``, gray<->RGB, then resize (bilinear, same maths as ``tf.image.resize``),
centred pad/crop, or flatten + pad/truncate for 1-D model inputs.

Only NumPy is imported at module import; scikit-learn and Pillow are imported lazily.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import DatasetError, UsageError

SPEC_FORMS = "digits, npz:PATH, idx:DIR, folder:DIR, keras:mnist, keras:fashion_mnist, keras:cifar10"
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
RESIZE_MODES = ("none", "bilinear", "pad", "flatten")
CHANNEL_MODES = ("keep", "gray_to_rgb", "rgb_to_gray")

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"]
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_CHUNK = 4096  # samples per preprocessing chunk

# ITU-R BT.601 luma weights (the same as tf.image.rgb_to_grayscale).
_LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Preprocessing:
    """One recorded, reusable preprocessing step (pure NumPy).

    ``input_shape``: the model's input shape without batch, e.g. ``(28, 28, 1)``, ``(49, 10, 1)`` or ``(640,)``.
    ``scale``: multiplier mapping raw values to [0, 1] (``1/255`` for uint8 images, ``1/16`` for ``digits``).
    ``resize``: ``none`` | ``bilinear`` | ``pad`` (centred zero pad / crop) | ``flatten`` (1-D: flatten, zero pad or
    truncate to ``input_shape[0]``).
    ``channels``: ``keep`` | ``gray_to_rgb`` | ``rgb_to_gray``.
    """

    input_shape: tuple[int, ...]
    scale: float
    resize: str = "bilinear"
    channels: str = "keep"

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(d) for d in self.input_shape)
        except (TypeError, ValueError):
            raise UsageError("input shape must be a sequence of positive integers",
                             received=f"input_shape={self.input_shape!r}") from None
        if not 1 <= len(shape) <= 3 or any(d <= 0 for d in shape):
            raise UsageError("input shape must be (features,), (H, W) or (H, W, C) with positive sizes",
                             received=f"input_shape={self.input_shape!r}")
        if len(shape) == 3 and shape[2] not in (1, 3):
            raise UsageError("image input shape must have 1 or 3 channels", received=f"input_shape={shape}")
        self.input_shape = shape
        try:
            self.scale = float(self.scale)
        except (TypeError, ValueError):
            raise UsageError("preprocessing scale must be a number", received=f"scale={self.scale!r}") from None
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise UsageError("preprocessing scale must be a positive finite number", received=f"scale={self.scale}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"preprocessing resize must be one of {', '.join(RESIZE_MODES)}",
                             received=f"resize={self.resize!r}")
        if self.channels not in CHANNEL_MODES:
            raise UsageError(f"preprocessing channels must be one of {', '.join(CHANNEL_MODES)}",
                             received=f"channels={self.channels!r}")
        if len(shape) == 1 and self.resize != "flatten":
            raise UsageError("a 1-D input shape needs resize='flatten'", received=f"input_shape={shape}")
        if len(shape) > 1 and self.resize == "flatten":
            raise UsageError("resize='flatten' needs a 1-D input shape", received=f"input_shape={shape}")

    # -- serialisation --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "scale": self.scale, "resize": self.resize,
                "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        if not isinstance(d, dict):
            raise UsageError("preprocessing record must be a mapping", received=type(d).__name__)
        missing = [k for k in ("input_shape", "scale") if k not in d]
        if missing:
            raise UsageError("preprocessing record is missing keys " + ", ".join(missing), received=d)
        return cls(input_shape=tuple(d["input_shape"]), scale=d["scale"], resize=d.get("resize", "bilinear"),
                   channels=d.get("channels", "keep"))

    # -- application ----------------------------------------------------------------------------------------------
    def apply(self, x_raw: np.ndarray) -> np.ndarray:
        """Map a raw batch ``(N, ...)`` to float32 ``(N, *input_shape)`` in [0, 1]."""
        x = np.asarray(x_raw)
        if x.dtype.kind not in "uifb":
            raise DatasetError("preprocessing input must be numeric", received=f"dtype={x.dtype}")
        if x.ndim < 2:
            raise DatasetError("preprocessing input must be a batch (N, ...)", received=f"shape={x.shape}")
        if x.shape[0] > _CHUNK:  # bound the float32 intermediates for large data sets
            return np.concatenate([self._apply(x[i:i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)])
        return self._apply(x)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        x_raw = x
        x = np.clip(x.astype(np.float32) * np.float32(self.scale), 0.0, 1.0)
        n = x.shape[0]
        if len(self.input_shape) == 1:
            flat = x.reshape(n, -1)
            if flat.shape[1] >= self.input_shape[0]:
                return np.ascontiguousarray(flat[:, : self.input_shape[0]], dtype=np.float32)
            out = np.zeros((n, self.input_shape[0]), np.float32)
            out[:, : flat.shape[1]] = flat
            return out
        # image: to (N, H, W, C)
        if x.ndim == 3:
            x = x[..., None]
        elif x.ndim != 4:
            raise DatasetError("image preprocessing needs (N, H, W) or (N, H, W, C) input", received=f"shape={x.shape}")
        target_c = self.input_shape[2] if len(self.input_shape) == 3 else 1
        src_c = x.shape[3]
        if self.channels == "gray_to_rgb":
            if src_c != 1:
                raise DatasetError("gray_to_rgb expects 1-channel input", received=f"shape={x_raw.shape}")
            x = np.repeat(x, 3, axis=3)
        elif self.channels == "rgb_to_gray":
            if src_c != 3:
                raise DatasetError("rgb_to_gray expects 3-channel input", received=f"shape={x_raw.shape}")
            x = np.tensordot(x, _LUMA, axes=([3], [0]))[..., None].astype(np.float32)
        if x.shape[3] != target_c:
            raise DatasetError(f"input has {x.shape[3]} channels, the model expects {target_c}",
                               received=f"shape={x_raw.shape}")
        h, w = self.input_shape[0], self.input_shape[1]
        if x.shape[1:3] != (h, w):
            if self.resize == "bilinear":
                x = resize_bilinear(x, (h, w))
            elif self.resize == "pad":
                x = pad_or_crop(x, (h, w))
            else:
                raise DatasetError(f"input is {x.shape[1]}x{x.shape[2]} but the model expects {h}x{w} "
                                   "and the preprocessing does not resize", received=f"shape={x_raw.shape}")
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
        return np.ascontiguousarray(x.reshape((n,) + self.input_shape))


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, H, W, C)`` to ``size`` with half-pixel centres (== ``tf.image.resize`` bilinear,
    antialias off)."""
    x = np.asarray(x, dtype=np.float32)
    out_h, out_w = int(size[0]), int(size[1])
    x = _lerp_axis(x, out_h, axis=1)
    x = _lerp_axis(x, out_w, axis=2)
    return x


def _lerp_axis(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    scale = np.float32(in_size) / np.float32(out_size)
    centre = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    lo_f = np.floor(centre)
    frac = (centre - lo_f).astype(np.float32)
    lo = np.clip(lo_f.astype(np.int64), 0, in_size - 1)
    hi = np.clip(lo_f.astype(np.int64) + 1, 0, in_size - 1)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_size
    frac = frac.reshape(shape)
    return (a + (b - a) * frac).astype(np.float32)


def pad_or_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centred zero padding (or centred crop) of ``(N, H, W, C)`` to ``size``."""
    out = np.zeros((x.shape[0], size[0], size[1], x.shape[3]), np.float32)
    src_slices, dst_slices = [], []
    for src, dst in ((x.shape[1], size[0]), (x.shape[2], size[1])):
        if src >= dst:
            start = (src - dst) // 2
            src_slices.append(slice(start, start + dst))
            dst_slices.append(slice(0, dst))
        else:
            start = (dst - src) // 2
            src_slices.append(slice(0, src))
            dst_slices.append(slice(start, start + src))
    out[:, dst_slices[0], dst_slices[1], :] = x[:, src_slices[0], src_slices[1], :]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Dataset container
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class DatasetSplits:
    """Raw arrays (x as stored by the source, y int64) and class names."""

    spec: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    max_value: float | None = None  # raw value mapping to 1.0 (e.g. 16 for digits, 255 for uint8 images)
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "sample_shape": list(self.sample_shape),
            "dtype": str(self.x_train.dtype),
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "train": int(len(self.y_train)),
            "val": int(len(self.y_val)),
            "test": int(len(self.y_test)),
            "max_value": self.max_value,
            "split": dict(self.split),
        }


# ----------------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------------

def _allocate(counts: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Split ``total`` across classes proportionally to ``counts`` (largest remainder, never above ``cap``)."""
    counts = counts.astype(np.float64)
    exact = counts * (total / counts.sum()) if counts.sum() else counts
    take = np.minimum(np.floor(exact).astype(np.int64), cap)
    remainder = exact - np.floor(exact)
    order = np.lexsort((np.arange(len(counts)), -remainder))  # largest remainder first, then class order
    left = total - int(take.sum())
    while left > 0:
        progressed = False
        for k in order:
            if left == 0:
                break
            if take[k] < cap[k]:
                take[k] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return take


def _stratified_take(y: np.ndarray, fraction: float, rng: np.random.Generator,
                     keep_one: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest_idx, taken_idx): a stratified, seeded ``fraction`` of ``y`` taken out."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    total = int(round(len(y) * fraction))
    if fraction > 0:
        total = max(total, 1)
    cap = counts - 1 if keep_one else counts
    take = _allocate(counts, total, np.maximum(cap, 0))
    rest, taken = [], []
    for k in range(len(classes)):
        idx = np.flatnonzero(inverse == k)
        idx = idx[rng.permutation(len(idx))]
        taken.append(idx[: take[k]])
        rest.append(idx[take[k]:])
    rest_idx = np.concatenate(rest) if rest else np.zeros(0, np.int64)
    taken_idx = np.concatenate(taken) if taken else np.zeros(0, np.int64)
    return rest_idx[rng.permutation(len(rest_idx))], taken_idx[rng.permutation(len(taken_idx))]


def calibration_indices(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` deterministic, class-stratified indices into ``y`` (sorted). All indices if ``n >= len(y)``."""
    y = np.asarray(y).reshape(-1)
    if n <= 0:
        raise UsageError("number of calibration samples must be positive", received=n)
    if n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    _, taken = _stratified_take(y, n / len(y), rng, keep_one=False)
    return np.sort(taken[:n]).astype(np.int64)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
            raise UsageError(f"{name} must be a number strictly between 0 and 1", received=f"{name}={v}")


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------

def _check_x(x: Any, name: str, source: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "uifb":
        raise DatasetError(f"{name} must be a numeric array", received=f"{source}: {name} dtype={x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DatasetError(f"{name} must have rank 2 (N, features), 3 (N, H, W) or 4 (N, H, W, C)",
                           received=f"{source}: {name} shape={x.shape}")
    if x.shape[0] == 0:
        raise DatasetError(f"{name} is empty (empty split)", received=f"{source}: {name} shape={x.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DatasetError(f"{name} contains NaN or inf values", received=f"{source}: {bad} non-finite values")
    return x


def _check_y(y: Any, name: str, source: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DatasetError(f"{name} must be a 1-D vector of class indices", received=f"{source}: {name} shape={y.shape}")
    if len(y) != n:
        xname = "x" + name[1:]
        raise DatasetError(f"{xname} and {name} have mismatched lengths",
                           received=f"{source}: {n} samples vs {len(y)} labels")
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DatasetError(f"{name} contains NaN or inf values", received=f"{source}: {name}")
        if np.any(y != np.round(y)):
            bad = y[y != np.round(y)][0]
            raise DatasetError(f"{name} labels must be integers", received=f"{source}: {name} contains {bad}")
        return y.astype(np.int64)
    raise DatasetError(f"{name} labels must be integers", received=f"{source}: {name} dtype={y.dtype}")


def _check_labels_range(ys: dict[str, np.ndarray], labels: list[str] | None, source: str) -> list[str]:
    lo = min(int(v.min()) for v in ys.values())
    if lo < 0:
        name = next(k for k, v in ys.items() if int(v.min()) == lo)
        raise DatasetError("labels must be integers in [0, num_classes)", received=f"{source}: {name} contains {lo}")
    hi = max(int(v.max()) for v in ys.values())
    if labels is None:
        return [str(i) for i in range(hi + 1)]
    if hi >= len(labels):
        name = next(k for k, v in ys.items() if int(v.max()) == hi)
        raise DatasetError(f"labels must be integers in [0, num_classes={len(labels)})",
                           received=f"{source}: {name} contains {hi}")
    return labels


def _check_pair_shapes(x_train: np.ndarray, x_test: np.ndarray, source: str) -> None:
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError("train and test samples have different shapes",
                           received=f"{source}: {x_train.shape[1:]} vs {x_test.shape[1:]}")


def _finish(spec: str, x_train, y_train, x_test, y_test, labels, *, seed: int, val_fraction: float,
            test_fraction: float, max_value: float | None, source: str, own_test: bool,
            rng: np.random.Generator | None = None) -> DatasetSplits:
    """Carve the validation split from train (stratified, seeded) and validate every split."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    tr, va = _stratified_take(y_train, val_fraction, rng)
    splits = {"x_train": x_train[tr], "y_train": y_train[tr], "x_val": x_train[va], "y_val": y_train[va],
              "x_test": x_test, "y_test": y_test}
    for part in ("train", "val", "test"):
        if len(splits["y_" + part]) == 0:
            raise DatasetError(f"the {part} split is empty (too few samples for the requested fractions)",
                               received=f"{source}: {len(y_train) + (len(y_test) if own_test else 0)} samples")
    if max_value is None:
        max_value = _guess_max_value(x_train)
    split_info = {"seed": int(seed), "val_fraction": float(val_fraction),
                  "test_fraction": None if own_test else float(test_fraction),
                  "test_source": "dataset" if own_test else "split"}
    return DatasetSplits(spec=spec, labels=list(labels), max_value=max_value, split=split_info, **splits)


def _read_max_value(arrays: dict, source: str) -> float | None:
    """Optional ``max_value`` scalar in an npz: the raw value that maps to 1.0 (e.g. 16 for raw ``digits``)."""
    if "max_value" not in arrays:
        return None
    arr = np.asarray(arrays["max_value"])
    if arr.size != 1 or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all() or float(arr.reshape(-1)[0]) <= 0:
        raise DatasetError("max_value must be one positive finite number",
                           received=f"{source}: max_value={arr.reshape(-1)[:3].tolist()}")
    return float(arr.reshape(-1)[0])


def _guess_max_value(x: np.ndarray) -> float:
    if x.dtype == np.uint8:
        return 255.0
    if x.dtype.kind == "b":
        return 1.0
    hi = float(np.max(x)) if x.size else 1.0
    if x.dtype.kind in "iu":
        return 255.0 if hi <= 255 else float(hi)
    if hi <= 1.0:
        return 1.0
    if hi <= 255.0:
        return 255.0
    return hi


def _split_all(spec, x, y, labels, *, seed, val_fraction, test_fraction, max_value, source) -> DatasetSplits:
    rng = np.random.default_rng(seed)
    rest, te = _stratified_take(y, test_fraction, rng)
    if len(te) == 0 or len(rest) == 0:
        raise DatasetError("the test split is empty (too few samples for the requested fractions)",
                           received=f"{source}: {len(y)} samples")
    return _finish(spec, x[rest], y[rest], x[te], y[te], labels, seed=seed, val_fraction=val_fraction,
                   test_fraction=test_fraction, max_value=max_value, source=source, own_test=False, rng=rng)


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------

def _load_digits(spec: str, seed: int, val_fraction: float, test_fraction: float) -> DatasetSplits:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the 'digits' data set needs scikit-learn", received="digits",
                           hint="pip install scikit-learn") from None
    d = load_digits()
    x = np.asarray(d.images).astype(np.uint8)  # values 0..16, exact integers
    y = np.asarray(d.target).astype(np.int64)
    labels = [str(int(t)) for t in d.target_names]
    return _split_all(spec, x, y, labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      max_value=16.0, source="digits (scikit-learn)")


def _read_labels_array(arr: Any, source: str) -> list[str]:
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.dtype.kind not in "USiu":
        raise DatasetError("'labels' must be a 1-D array of class names", received=f"{source}: labels shape={arr.shape} "
                           f"dtype={arr.dtype}")
    names = [str(v) for v in arr.tolist()]
    if len(set(names)) != len(names):
        raise DatasetError("'labels' contains duplicate class names", received=f"{source}: {names}")
    return names


def _load_npz(spec: str, path_text: str, seed: int, val_fraction: float, test_fraction: float) -> DatasetSplits:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DatasetError("npz file not found", received=str(path))
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DatasetError("corrupt or unreadable npz file", received=f"{path}: {exc}") from None
    except ValueError as exc:
        raise DatasetError("npz file holds object (pickled) arrays or is corrupt; only numeric arrays are read",
                           received=f"{path}: {exc}") from None
    source = str(path)
    labels = _read_labels_array(arrays["labels"], source) if "labels" in arrays else None
    max_value = _read_max_value(arrays, source)
    if "x_train" not in arrays and "x" in arrays and "y" in arrays:
        x = _check_x(arrays["x"], "x", source)
        y = _check_y(arrays["y"], "y", source, len(x))
        labels = _check_labels_range({"y": y}, labels, source)
        return _split_all(spec, x, y, labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                          max_value=max_value, source=source)
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetError("npz file is missing arrays " + ", ".join(missing) +
                           " (expected x_train, y_train, x_test, y_test, optional labels; or x, y)",
                           received=f"{path}: has {', '.join(sorted(arrays)) or 'no arrays'}")
    x_train = _check_x(arrays["x_train"], "x_train", source)
    y_train = _check_y(arrays["y_train"], "y_train", source, len(x_train))
    x_test = _check_x(arrays["x_test"], "x_test", source)
    y_test = _check_y(arrays["y_test"], "y_test", source, len(x_test))
    _check_pair_shapes(x_train, x_test, source)
    labels = _check_labels_range({"y_train": y_train, "y_test": y_test}, labels, source)
    return _finish(spec, x_train, y_train, x_test, y_test, labels, seed=seed, val_fraction=val_fraction,
                   test_fraction=test_fraction, max_value=max_value, source=source, own_test=True)


_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (raw or gzip) with NumPy, validating magic, dtype code and sizes."""
    p = Path(path)
    try:
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                data = f.read()
        else:
            data = p.read_bytes()
    except FileNotFoundError:
        raise DatasetError("IDX file not found", received=str(p)) from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError("corrupt or unreadable IDX file", received=f"{p}: {exc}") from None
    if len(data) < 4:
        raise DatasetError("corrupt IDX file: shorter than the 4-byte magic number", received=f"{p}: {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError("not an IDX file: bad magic number (must start with two zero bytes)",
                           received=f"{p}: magic 0x{data[:4].hex()}")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DatasetError("not an IDX file: unknown data type code in the magic number",
                           received=f"{p}: type code 0x{code:02x}")
    if ndim == 0:
        raise DatasetError("corrupt IDX file: zero dimensions", received=str(p))
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError("corrupt IDX file: truncated header", received=f"{p}: {len(data)} bytes, header needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError("corrupt IDX file: data size does not match the header dimensions",
                           received=f"{p}: dims {dims} need {expected} data bytes, file has {len(data) - header}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: Path, base: str) -> Path | None:
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _load_idx_dir(directory: Path) -> tuple[np.ndarray, ...]:
    if not directory.is_dir():
        raise DatasetError("IDX directory not found", received=str(directory))
    found: dict[str, Path] = {}
    missing = []
    for key, base in _IDX_NAMES.items():
        p = _find_idx(directory, base)
        if p is None:
            missing.append(base + "[.gz]")
        else:
            found[key] = p
    if missing:
        raise DatasetError("missing IDX files " + ", ".join(missing), received=f"{directory}")
    out = []
    for key in ("x_train", "y_train", "x_test", "y_test"):
        arr = read_idx(found[key])
        src = str(found[key])
        if key.startswith("x"):
            if arr.ndim != 3:
                raise DatasetError("IDX image file must have 3 dimensions (N, rows, cols)",
                                   received=f"{src}: dims {arr.shape}")
            arr = _check_x(arr, key, src)
        else:
            if arr.ndim != 1:
                raise DatasetError("IDX label file must have 1 dimension", received=f"{src}: dims {arr.shape}")
            arr = _check_y(arr, key, src, len(out[-1]))
        out.append(arr)
    return tuple(out)


def _load_idx(spec: str, dir_text: str, seed: int, val_fraction: float, test_fraction: float) -> DatasetSplits:
    directory = Path(dir_text).expanduser()
    x_train, y_train, x_test, y_test = _load_idx_dir(directory)
    source = str(directory)
    _check_pair_shapes(x_train, x_test, source)
    labels = _check_labels_range({"y_train": y_train, "y_test": y_test}, None, source)
    return _finish(spec, x_train, y_train, x_test, y_test, labels, seed=seed, val_fraction=val_fraction,
                   test_fraction=test_fraction, max_value=255.0 if x_train.dtype == np.uint8 else None,
                   source=source, own_test=True)


def _list_class_folder(root: Path) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError("class folder has no PNG/JPEG images", received=str(sub))
        classes[sub.name] = files
    if not classes:
        raise DatasetError("image folder has no class sub-folders (expected DIR/<class>/*.png or "
                           "DIR/train/<class>/ + DIR/test/<class>/)", received=str(root))
    return classes


def _read_images(files: list[Path], mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    arrays = []
    size = None
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError("corrupt or unreadable image", received=f"{f}: {exc}") from None
        if size is None:
            size = arr.shape
            first = f
        elif arr.shape != size:
            raise DatasetError("all images must have the same size",
                               received=f"{f}: {arr.shape[1]}x{arr.shape[0]} vs {size[1]}x{size[0]} of {first}")
        arrays.append(arr)
    return np.stack(arrays)


def _image_mode(files: list[Path]) -> str:
    """'L' if every image is single-channel, else 'RGB' (palette/alpha images are converted)."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                mode = im.mode
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError("corrupt or unreadable image", received=f"{f}: {exc}") from None
        if mode not in ("1", "L", "LA", "I", "I;16", "F"):
            return "RGB"
    return "L"


def _load_folder(spec: str, dir_text: str, seed: int, val_fraction: float, test_fraction: float) -> DatasetSplits:
    root = Path(dir_text).expanduser()
    if not root.is_dir():
        raise DatasetError("image folder not found", received=str(root))
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DatasetError("folder data sets need Pillow", received=str(root), hint="pip install pillow") from None
    has_split = (root / "train").is_dir() and (root / "test").is_dir()
    if has_split:
        train = _list_class_folder(root / "train")
        test = _list_class_folder(root / "test")
        extra = sorted(set(test) - set(train))
        if extra:
            raise DatasetError("test folder has classes missing from train", received=f"{root / 'test'}: {extra}")
        labels = sorted(train)
        all_files = [f for fs in train.values() for f in fs] + [f for fs in test.values() for f in fs]
        mode = _image_mode(all_files)
        x_parts, y_parts = [], []
        for part in (train, test):
            files = [f for c in labels for f in part.get(c, [])]
            ys = [labels.index(c) for c in labels for _ in part.get(c, [])]
            x_parts.append(_read_images(files, mode))
            y_parts.append(np.array(ys, np.int64))
        _check_pair_shapes(x_parts[0], x_parts[1], str(root))
        return _finish(spec, x_parts[0], y_parts[0], x_parts[1], y_parts[1], labels, seed=seed,
                       val_fraction=val_fraction, test_fraction=test_fraction, max_value=255.0, source=str(root),
                       own_test=True)
    classes = _list_class_folder(root)
    labels = sorted(classes)
    files = [f for c in labels for f in classes[c]]
    y = np.array([i for i, c in enumerate(labels) for _ in classes[c]], np.int64)
    x = _read_images(files, _image_mode(files))
    return _split_all(spec, x, y, labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      max_value=255.0, source=str(root))


def keras_cache_dir() -> Path:
    """The Keras datasets cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser() / "datasets"
    return Path("~/.keras").expanduser() / "datasets"


def _keras_candidates(name: str) -> list[Path]:
    """Candidate cache locations (first = the canonical one) for a Keras data set."""
    bases = [keras_cache_dir()]
    if "KERAS_HOME" not in os.environ:
        bases.append(Path("/tmp/.keras/datasets"))  # Keras' fallback when the home folder is not writable
    out = []
    for b in bases:
        if name == "mnist":
            out.append(b / "mnist.npz")
        elif name == "fashion_mnist":
            out.append(b / "fashion-mnist")
        else:
            out.append(b / "cifar-10-batches-py-target" / "cifar-10-batches-py")
            out.append(b / "cifar-10-batches-py")
    return out


_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz")
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def keras_cached_path(name: str) -> Path | None:
    """The cached file/folder for ``keras:NAME`` if complete, else None. Never touches the network."""
    for p in _keras_candidates(name):
        if name == "mnist" and p.is_file():
            return p
        if name == "fashion_mnist" and all((p / f).is_file() for f in _FASHION_FILES):
            return p
        if name == "cifar10" and all((p / f).is_file() for f in _CIFAR_FILES):
            return p
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Only rebuilds NumPy arrays (CIFAR batches are pickles); anything else is refused."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"])
        x = data.reshape(data.shape[0], 3, 32, 32).transpose(0, 2, 3, 1)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, AttributeError, TypeError) as exc:
        raise DatasetError("corrupt CIFAR-10 batch file", received=f"{path}: {exc}") from None
    return np.ascontiguousarray(x), labels


def _load_keras(spec: str, name: str, seed: int, val_fraction: float, test_fraction: float) -> DatasetSplits:
    if name not in KERAS_DATASETS:
        raise UsageError(f"unknown Keras data set; valid: {', '.join('keras:' + n for n in KERAS_DATASETS)}",
                         received=spec)
    path = keras_cached_path(name)
    if path is None:
        where = _keras_candidates(name)[0]
        raise DatasetError(f"keras:{name} is not in the Keras cache and downloads are disabled",
                           received=f"{where} not found",
                           hint="copy the file there, or use npz:PATH, idx:DIR or the embedded digits")
    source = str(path)
    labels: list[str] | None
    if name == "mnist":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise DatasetError("corrupt cached mnist.npz", received=f"{path}: {exc}") from None
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
        if missing:
            raise DatasetError("cached mnist.npz is missing arrays " + ", ".join(missing), received=source)
        x_train = _check_x(arrays["x_train"], "x_train", source)
        y_train = _check_y(arrays["y_train"], "y_train", source, len(x_train))
        x_test = _check_x(arrays["x_test"], "x_test", source)
        y_test = _check_y(arrays["y_test"], "y_test", source, len(x_test))
        labels = [str(i) for i in range(10)]
    elif name == "fashion_mnist":
        x_train, y_train, x_test, y_test = _load_idx_dir(path)
        labels = list(FASHION_MNIST_LABELS)
    else:
        xs, ys = [], []
        for f in _CIFAR_FILES[:-1]:
            x, y = _read_cifar_batch(path / f)
            xs.append(x)
            ys.append(y)
        x_train = _check_x(np.concatenate(xs), "x_train", source)
        y_train = _check_y(np.concatenate(ys), "y_train", source, len(x_train))
        x, y = _read_cifar_batch(path / "test_batch")
        x_test = _check_x(x, "x_test", str(path / "test_batch"))
        y_test = _check_y(y, "y_test", str(path / "test_batch"), len(x_test))
        labels = list(CIFAR10_LABELS)
    _check_pair_shapes(x_train, x_test, source)
    labels = _check_labels_range({"y_train": y_train, "y_test": y_test}, labels, source)
    return _finish(spec, x_train, y_train, x_test, y_test, labels, seed=seed, val_fraction=val_fraction,
                   test_fraction=test_fraction, max_value=255.0, source=source, own_test=True)


# ----------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[str, str]:
    """Split a spec into (kind, argument); UsageError listing the valid forms if unknown."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"empty dataset spec; valid forms: {SPEC_FORMS}", received=repr(spec))
    spec = spec.strip()
    if spec == "digits":
        return "digits", ""
    kind, sep, arg = spec.partition(":")
    if sep and kind in ("npz", "idx", "folder", "keras"):
        if not arg:
            raise UsageError(f"dataset spec '{kind}:' needs a value; valid forms: {SPEC_FORMS}", received=spec)
        return kind, arg
    raise UsageError(f"unknown dataset spec; valid forms: {SPEC_FORMS}", received=spec)


def load_dataset(spec: str, *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> DatasetSplits:
    """Load and split a data set (see the module docstring for spec forms)."""
    kind, arg = parse_spec(spec)
    _check_fractions(val_fraction, test_fraction)
    spec = spec.strip()
    if kind == "digits":
        return _load_digits(spec, seed, val_fraction, test_fraction)
    if kind == "npz":
        return _load_npz(spec, arg, seed, val_fraction, test_fraction)
    if kind == "idx":
        return _load_idx(spec, arg, seed, val_fraction, test_fraction)
    if kind == "folder":
        return _load_folder(spec, arg, seed, val_fraction, test_fraction)
    return _load_keras(spec, arg, seed, val_fraction, test_fraction)


def make_preprocessing(ds: DatasetSplits, input_shape: tuple[int, ...] | list[int], resize: str = "auto"
                       ) -> Preprocessing:
    """Build the preprocessing mapping ``ds``'s raw samples to a model input of ``input_shape``.

    ``resize='auto'``: ``flatten`` for 1-D inputs, ``none`` when the sizes already match, else ``bilinear``.
    """
    shape = tuple(int(d) for d in input_shape)
    max_value = ds.max_value if ds.max_value else _guess_max_value(ds.x_train)
    src = ds.sample_shape
    if len(shape) == 1:
        mode = "flatten"
        channels = "keep"
    else:
        if len(src) == 1:
            raise DatasetError("the data set holds 1-D feature vectors; an image model input needs image data",
                               received=f"{ds.spec}: sample shape {src}, model input {shape}")
        src_c = src[2] if len(src) == 3 else 1
        dst_c = shape[2] if len(shape) == 3 else 1
        if src_c == dst_c:
            channels = "keep"
        elif src_c == 1 and dst_c == 3:
            channels = "gray_to_rgb"
        elif src_c == 3 and dst_c == 1:
            channels = "rgb_to_gray"
        else:
            raise DatasetError(f"cannot map {src_c}-channel samples to a {dst_c}-channel model input",
                               received=f"{ds.spec}: sample shape {src}, model input {shape}")
        if resize == "auto":
            mode = "none" if tuple(src[:2]) == shape[:2] else "bilinear"
        elif resize in ("none", "bilinear", "pad"):
            mode = resize
            if mode == "none" and tuple(src[:2]) != shape[:2]:
                raise UsageError("resize 'none' needs samples of the model's input size",
                                 received=f"{ds.spec}: {src[:2]} vs {shape[:2]}")
        else:
            raise UsageError("resize must be auto, none, bilinear or pad", received=resize)
    return Preprocessing(input_shape=shape, scale=1.0 / float(max_value), resize=mode, channels=channels)


def load_prepared(spec: str, input_shape: tuple[int, ...] | list[int] | None, seed: int = 0,
                  preprocessing: dict[str, Any] | None = None, *, val_fraction: float = 0.1,
                  test_fraction: float = 0.2) -> tuple[DatasetSplits, Preprocessing]:
    """Load ``spec`` and build (or reuse a recorded) preprocessing for ``input_shape``."""
    if preprocessing is not None:
        pp = Preprocessing.from_dict(preprocessing)
        if input_shape is not None and tuple(int(d) for d in input_shape) != pp.input_shape:
            raise UsageError("recorded preprocessing is for a different input shape",
                             received=f"{pp.input_shape} vs {tuple(input_shape)}")
    elif input_shape is None:
        raise UsageError("input_shape is required when no recorded preprocessing is given", received=None)
    ds = load_dataset(spec, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if preprocessing is None:
        pp = make_preprocessing(ds, input_shape)
    return ds, pp


def list_datasets() -> list[dict[str, Any]]:
    """The data set sources and whether each is usable offline right now."""
    import importlib.util

    has_sklearn = importlib.util.find_spec("sklearn") is not None
    has_pil = importlib.util.find_spec("PIL") is not None
    rows: list[dict[str, Any]] = [
        {"spec": "digits", "description": "scikit-learn 8x8 handwritten digits (1,797 images, 10 classes, embedded)",
         "offline": has_sklearn, "detail": "bundled with scikit-learn" if has_sklearn else "needs scikit-learn"},
        {"spec": "npz:PATH", "description": "NumPy .npz with x_train, y_train, x_test, y_test [, labels, max_value] (or x, y)",
         "offline": True, "detail": "local file"},
        {"spec": "idx:DIR", "description": "MNIST / Fashion-MNIST IDX files (raw or .gz) in DIR",
         "offline": True, "detail": "local files"},
        {"spec": "folder:DIR", "description": "DIR/<class>/*.png|jpg (or DIR/train/<class>, DIR/test/<class>)",
         "offline": has_pil, "detail": "local images" if has_pil else "needs pillow"},
    ]
    descriptions = {"mnist": "MNIST 28x28 digits (60k/10k) from the Keras cache",
                    "fashion_mnist": "Fashion-MNIST 28x28 clothing (60k/10k) from the Keras cache",
                    "cifar10": "CIFAR-10 32x32 RGB (50k/10k) from the Keras cache"}
    for name in KERAS_DATASETS:
        cached = keras_cached_path(name)
        rows.append({"spec": f"keras:{name}", "description": descriptions[name], "offline": cached is not None,
                     "detail": f"cached: {cached}" if cached else f"not cached ({_keras_candidates(name)[0]})"})
    return rows
