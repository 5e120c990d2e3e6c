"""``keras:NAME``: ``mnist``, ``fashion_mnist``, ``cifar10`` read from the Keras cache only (never downloads)."""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data.checks import check_labels_range, check_pair_shapes, check_x, check_y
from toolchain.data.sources.idx import load_idx_dir
from toolchain.data.splits import DatasetSplits, finish
from toolchain.errors import DatasetError, UsageError
from toolchain.specs import DatasetSpec, SourceNormalisation, SplitParams

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"]
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_DESCRIPTIONS = {"mnist": "MNIST 28x28 digits (60k/10k) from the Keras cache",
                 "fashion_mnist": "Fashion-MNIST 28x28 clothing (60k/10k) from the Keras cache",
                 "cifar10": "CIFAR-10 32x32 RGB (50k/10k) from the Keras cache"}


def rows() -> list[dict[str, Any]]:
    out = []
    for name in KERAS_DATASETS:
        cached = keras_cached_path(name)
        out.append({"spec": f"keras:{name}", "description": _DESCRIPTIONS[name], "offline": cached is not None,
                    "detail": f"cached: {cached}" if cached else f"not cached ({_keras_candidates(name)[0]})"})
    return out


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


def load(spec: DatasetSpec, split: SplitParams) -> DatasetSplits:
    name = spec.arg
    if name not in KERAS_DATASETS:
        raise UsageError(f"unknown Keras data set; valid: {', '.join('keras:' + n for n in KERAS_DATASETS)}",
                         received=spec.text)
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
        x_train = check_x(arrays["x_train"], "x_train", source)
        y_train = check_y(arrays["y_train"], "y_train", source, len(x_train))
        x_test = check_x(arrays["x_test"], "x_test", source)
        y_test = check_y(arrays["y_test"], "y_test", source, len(x_test))
        labels = [str(i) for i in range(10)]
    elif name == "fashion_mnist":
        x_train, y_train, x_test, y_test = load_idx_dir(path)
        labels = list(FASHION_MNIST_LABELS)
    else:
        xs, ys = [], []
        for f in _CIFAR_FILES[:-1]:
            x, y = _read_cifar_batch(path / f)
            xs.append(x)
            ys.append(y)
        x_train = check_x(np.concatenate(xs), "x_train", source)
        y_train = check_y(np.concatenate(ys), "y_train", source, len(x_train))
        x, y = _read_cifar_batch(path / "test_batch")
        x_test = check_x(x, "x_test", str(path / "test_batch"))
        y_test = check_y(y, "y_test", str(path / "test_batch"), len(x_test))
        labels = list(CIFAR10_LABELS)
    check_pair_shapes(x_train, x_test, source)
    labels = check_labels_range({"y_train": y_train, "y_test": y_test}, labels, source)
    return finish(spec, x_train, y_train, x_test, y_test, labels, split=split, source=source, own_test=True,
                  normalisation=SourceNormalisation(1.0 / 255.0, "declared", f"keras:{name}: 8-bit images 0..255"))

