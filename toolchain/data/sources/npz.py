"""``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (or ``x, y`` to be split), optional ``labels`` and
``max_value`` (the raw value that maps to 1.0; without it the range is inferred from the dtype / values)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data.checks import check_labels_range, check_pair_shapes, check_x, check_y
from toolchain.data.splits import DatasetSplits, finish, split_all
from toolchain.errors import DatasetError
from toolchain.specs import DatasetSpec, SourceNormalisation, SplitParams

FORM = "npz:PATH"
DESCRIPTION = "NumPy .npz with x_train, y_train, x_test, y_test [, labels, max_value] (or x, y)"


def rows() -> list[dict[str, Any]]:
    return [{"spec": FORM, "description": DESCRIPTION, "offline": True, "detail": "local file"}]


def _read_max_value(arrays: dict, source: str) -> SourceNormalisation | None:
    """Optional ``max_value`` scalar: the raw value that maps to 1.0 (e.g. 16 for raw ``digits``)."""
    if "max_value" not in arrays:
        return None
    arr = np.asarray(arrays["max_value"])
    if arr.size != 1 or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all() or float(arr.reshape(-1)[0]) <= 0:
        raise DatasetError("max_value must be one positive finite number",
                           received=f"{source}: max_value={arr.reshape(-1)[:3].tolist()}")
    mv = float(arr.reshape(-1)[0])
    return SourceNormalisation(1.0 / mv, "declared", f"npz max_value={mv:g}")


def _read_labels_array(arr: Any, source: str) -> list[str]:
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.dtype.kind not in "USiu":
        raise DatasetError("'labels' must be a 1-D array of class names", received=f"{source}: labels shape={arr.shape} "
                           f"dtype={arr.dtype}")
    names = [str(v) for v in arr.tolist()]
    if len(set(names)) != len(names):
        raise DatasetError("'labels' contains duplicate class names", received=f"{source}: {names}")
    return names


def load(spec: DatasetSpec, split: SplitParams) -> DatasetSplits:
    path = Path(spec.arg).expanduser()
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
    normalisation = _read_max_value(arrays, source)
    if "x_train" not in arrays and "x" in arrays and "y" in arrays:
        x = check_x(arrays["x"], "x", source)
        y = check_y(arrays["y"], "y", source, len(x))
        labels = check_labels_range({"y": y}, labels, source)
        return split_all(spec, x, y, labels, split=split, normalisation=normalisation, source=source)
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetError("npz file is missing arrays " + ", ".join(missing) +
                           " (expected x_train, y_train, x_test, y_test, optional labels; or x, y)",
                           received=f"{path}: has {', '.join(sorted(arrays)) or 'no arrays'}")
    x_train = check_x(arrays["x_train"], "x_train", source)
    y_train = check_y(arrays["y_train"], "y_train", source, len(x_train))
    x_test = check_x(arrays["x_test"], "x_test", source)
    y_test = check_y(arrays["y_test"], "y_test", source, len(x_test))
    check_pair_shapes(x_train, x_test, source)
    labels = check_labels_range({"y_train": y_train, "y_test": y_test}, labels, source)
    return finish(spec, x_train, y_train, x_test, y_test, labels, split=split, normalisation=normalisation,
                  source=source, own_test=True)

