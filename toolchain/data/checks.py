"""Validation of raw arrays read from a data set source (shapes, dtypes, finite values, label ranges)."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.errors import DatasetError


def check_x(x: Any, name: str, source: str) -> np.ndarray:
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


def check_y(y: Any, name: str, source: str, n: int) -> np.ndarray:
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


def check_labels_range(ys: dict[str, np.ndarray], labels: list[str] | None, source: str) -> list[str]:
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


def check_pair_shapes(x_train: np.ndarray, x_test: np.ndarray, source: str) -> None:
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError("train and test samples have different shapes",
                           received=f"{source}: {x_train.shape[1:]} vs {x_test.shape[1:]}")

