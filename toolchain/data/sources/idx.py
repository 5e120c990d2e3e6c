"""``idx:DIR``: MNIST / Fashion-MNIST IDX files (raw or ``.gz``) with their standard names. The value range is
inferred (uint8 images: 0..255)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data.checks import check_labels_range, check_pair_shapes, check_x, check_y
from toolchain.data.splits import DatasetSplits, finish
from toolchain.errors import DatasetError
from toolchain.specs import DatasetSpec, SplitParams

FORM = "idx:DIR"
DESCRIPTION = "MNIST / Fashion-MNIST IDX files (raw or .gz) in DIR"


def rows() -> list[dict[str, Any]]:
    return [{"spec": FORM, "description": DESCRIPTION, "offline": True, "detail": "local files"}]


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


def load_idx_dir(directory: Path) -> tuple[np.ndarray, ...]:
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
            arr = check_x(arr, key, src)
        else:
            if arr.ndim != 1:
                raise DatasetError("IDX label file must have 1 dimension", received=f"{src}: dims {arr.shape}")
            arr = check_y(arr, key, src, len(out[-1]))
        out.append(arr)
    return tuple(out)


def load(spec: DatasetSpec, split: SplitParams) -> DatasetSplits:
    directory = Path(spec.arg).expanduser()
    x_train, y_train, x_test, y_test = load_idx_dir(directory)
    source = str(directory)
    check_pair_shapes(x_train, x_test, source)
    labels = check_labels_range({"y_train": y_train, "y_test": y_test}, None, source)
    return finish(spec, x_train, y_train, x_test, y_test, labels, split=split, normalisation=None, source=source,
                  own_test=True)

